"""Supervise a llama-server that runs as a systemd unit (the playbook's production setup).

`UnitController` implements the Controller protocol (docs/ARCHITECTURE.md): status / start /
stop / restart, and restart with new launch arguments through a drop-in.

Why `systemctl --no-ask-password` and not the D-Bus API: systemctl is on every systemd host and
needs no extra library; it reaches the user manager through its private socket even where no
session bus runs (containers, SSH sessions without lingering D-Bus); polkit checks happen exactly
as for an operator typing the command, and its error words ("Access denied", "Interactive
authentication required") are what we show. `--no-ask-password` makes it fail instead of
prompting. Actions are rare, so one process per action costs nothing; the same argv runs inside
a confined test manager by prefixing `nsenter` (`command_prefix`). llmtop never calls sudo.

Changing launch arguments writes `/etc/systemd/system/UNIT.d/50-llmtop.conf` (user units:
`$XDG_CONFIG_HOME/systemd/user/UNIT.d/50-llmtop.conf`) that resets and replaces ExecStart,
then daemon-reload and restart. The write is atomic (temp file + rename), mode 0644, and the
previous drop-in is kept as `50-llmtop.conf.bak` (systemd only reads `*.conf`). The unit file
itself is never edited.

A drop-in never holds a secret: it is world-readable like every unit file. A key that came on
the command line (`--api-key K`) moves to `UNIT.d/llmtop-api-key` (mode 0600, owned by the
unit's User=) and the drop-in passes `--api-key-file` instead; other secret variables go to
`UNIT.d/llmtop-secrets.env` (0600, read by the service manager) through `EnvironmentFile=`. Keys
the unit already keeps out of its argv (EnvironmentFile=, `--api-key-file`, LoadCredential=)
stay as they are. Backups (`.bak`) written by older llmtop versions with a key inside are
rewritten the same way the next time llmtop touches the directory. `revert()` removes the drop-in (kept as .bak), reloads and restarts.
Quitting llmtop never touches the unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from llmtop.model.redaction import is_secret_env, is_secret_flag
from llmtop.snapshot import SupervisorStatus, UnitStatus
from llmtop.sources.unit_status import Systemctl, SystemctlError, UnitMonitor, user_unit_dir

if TYPE_CHECKING:
    from llmtop.model.launch_spec import LaunchSpec
    from llmtop.sources.journal import JournalFollower
    from llmtop.sources.logs import LogStore

DROP_IN_NAME = "50-llmtop.conf"
KEY_FILE_NAME = "llmtop-api-key"
SECRETS_ENV_NAME = "llmtop-secrets.env"
SECRET_MODE = 0o600
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")

_DENIED_WORDS = (
    "access denied",
    "permission denied",
    "interactive authentication required",
    "not authorized",
    "operation not permitted",
)


class UnitError(RuntimeError):
    """A unit action failed; the message is meant for the operator."""


class UnitPermissionError(UnitError):
    """Not allowed to control this unit; the message says what is needed (root / polkit rule)."""


def current_user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def polkit_rule(unit: str, user_name: str | None = None) -> str:
    """A polkit rule that lets `user_name` start/stop/restart this one system unit."""
    user_name = user_name or current_user_name()
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", unit)
    return (
        f"// /etc/polkit-1/rules.d/50-llmtop-{safe}.rules\n"
        "polkit.addRule(function(action, subject) {\n"
        '    if (action.id == "org.freedesktop.systemd1.manage-units" &&\n'
        f'        action.lookup("unit") == "{unit}" &&\n'
        f'        subject.user == "{user_name}") {{\n'
        '        var verb = action.lookup("verb");\n'
        '        if (verb == "start" || verb == "stop" || verb == "restart") {\n'
        "            return polkit.Result.YES;\n"
        "        }\n"
        "    }\n"
        "});\n"
    )


def permission_message(unit: str, user: bool, action: str, detail: str) -> str:
    """What the operator needs to do so that llmtop may `action` this unit."""
    who = current_user_name()
    if user:
        return (
            f"not allowed to {action} user unit {unit}: {detail}. A user unit belongs to the user "
            f"whose manager runs it: run llmtop as that user (with XDG_RUNTIME_DIR pointing at its "
            f"runtime directory), not as {who}. llmtop never calls sudo."
        )
    return (
        f"not allowed to {action} {unit} as {who}: {detail}. Needed: root, or a polkit rule "
        f"granting {who} start/stop/restart of this unit (changing launch arguments also needs "
        f"write access to {SYSTEM_UNIT_DIR}/{unit}.d and daemon-reload, i.e. root). "
        f"llmtop never calls sudo. A working rule:\n\n{polkit_rule(unit, who)}"
    )


def _looks_denied(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in _DENIED_WORDS)


_SAFE_WORD = re.compile(r"^[A-Za-z0-9_@+=:,./-]+$")


def systemd_quote(arg: str) -> str:
    """Quote one argument for an ExecStart= line (specifiers % and variables $ escaped)."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if arg and _SAFE_WORD.match(arg):
        return escaped
    inner = escaped.replace("\\", "\\\\").replace('"', '\\"')
    inner = inner.replace("\n", "\\n").replace("\t", "\\t")
    return f'"{inner}"'


def exec_start_line(argv: Sequence[str]) -> str:
    """ExecStart=… with one flag (and its value) per continued line, like the playbook."""
    lines: list[list[str]] = [[systemd_quote(argv[0])]]
    for arg in argv[1:]:
        if arg.startswith("-") and not _is_number(arg):
            lines.append([systemd_quote(arg)])
        else:
            lines[-1].append(systemd_quote(arg))
    return "ExecStart=" + " \\\n    ".join(" ".join(words) for words in lines)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def environment_lines(env: Mapping[str, str]) -> list[str]:
    out = []
    for key, value in env.items():
        text = f"{key}={value}".replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'Environment="{text}"')
    return out


def drop_in_text(
    unit: str,
    user: bool,
    argv: Sequence[str],
    env_changes: Mapping[str, str] | None = None,
    environment_file: Path | None = None,
) -> str:
    scope = " --user" if user else ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    body = [
        f"# Written by llmtop {stamp}: new launch arguments for {unit}.",
        f"# The unit file itself is unchanged. Undo with: llmtop unit revert {unit}{scope}",
        "[Service]",
        "ExecStart=",
        exec_start_line(argv),
        *environment_lines(env_changes or {}),
        *([f"EnvironmentFile={systemd_quote(str(environment_file))}"] if environment_file else []),
    ]
    return "\n".join(body) + "\n"


def atomic_write(
    path: Path,
    text: str,
    mode: int = 0o644,
    *,
    backup_text: str | None = None,
    keep_backup: bool = True,
    owner: tuple[int, int] | None = None,
) -> Path | None:
    """Write `text` to `path` atomically (temp file in the same directory, fsync, rename).

    An existing file is first copied to `<name>.bak` (as `backup_text` when given: the caller's
    scrubbed copy); returns the backup path (or None). The file is created with `mode` from the
    start (never briefly readable by others) and chowned to `owner` before it is renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    backup: Path | None = None
    if keep_backup and path.exists():
        backup = path.with_name(path.name + ".bak")
        tmp_bak = path.with_name(f".{path.name}.bak.tmp")
        data = path.read_bytes() if backup_text is None else backup_text.encode()
        fd = os.open(tmp_bak, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp_bak, mode)
        os.replace(tmp_bak, backup)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a stale temp file from a crash could carry a looser mode
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # umask must not change the mode
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return backup


# -- secrets out of world-readable files ---------------------------------------------------------

_API_KEY_ENV = ("LLAMA_API_KEY", "LLAMA_ARG_API_KEY")
# `--api-key V` / `--api-key=V` inside an ExecStart= line written by systemd_quote (old drop-ins).
_KEY_IN_DROP_IN = re.compile(
    r"(?<![\w-])--api[-_]key(?:=|[ \t]+)(?P<value>\"(?:[^\"\\]|\\.)*\"|[^\s\"\\]+)"
)
_ENV_LINE = re.compile(r'^Environment=(?P<body>"(?:[^"\\]|\\.)*"|\S+)[ \t]*$', re.M)


def _systemd_unquote(word: str) -> str:
    if len(word) >= 2 and word[0] == word[-1] == '"':
        word = word[1:-1]
        out, i = [], 0
        while i < len(word):
            if word[i] == "\\" and i + 1 < len(word):
                out.append({"n": "\n", "t": "\t"}.get(word[i + 1], word[i + 1]))
                i += 2
            else:
                out.append(word[i])
                i += 1
        word = "".join(out)
    return word.replace("%%", "%").replace("$$", "$")


def key_file_text(keys: str) -> str:
    """llama-server's --api-key-file format: one key per line (a comma list splits)."""
    return "".join(k.strip() + "\n" for k in keys.split(",") if k.strip())


def env_file_text(env: Mapping[str, str]) -> str:
    """An EnvironmentFile= body (systemd reads NAME=VALUE lines; quotes keep spaces)."""
    lines = []
    for k, v in env.items():
        q = v.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{k}="{q}"')
    return "\n".join(lines) + "\n"


def scrub_drop_in_text(text: str, key_file: Path) -> tuple[str, str | None, dict[str, str]]:
    """A drop-in's text with its secrets taken out: (text, api key or None, other secrets).

    `--api-key V` becomes `--api-key-file KEY_FILE`; `Environment="SECRET=V"` lines go (their
    values are returned for an EnvironmentFile). For drop-ins and backups written before llmtop
    kept keys out of them."""
    key: str | None = None
    env: dict[str, str] = {}

    def sub_key(m: re.Match[str]) -> str:
        nonlocal key
        key = key or _systemd_unquote(m.group("value"))
        return f"--api-key-file {systemd_quote(str(key_file))}"

    text = _KEY_IN_DROP_IN.sub(sub_key, text)

    def sub_env(m: re.Match[str]) -> str:
        nonlocal key
        body = _systemd_unquote(m.group("body"))
        name, eq, value = body.partition("=")
        if not eq or not is_secret_env(name):
            return m.group(0)
        if name in _API_KEY_ENV:
            key = key or value
        else:
            env[name] = value
        return f"# {name}: moved out of this file by llmtop"

    text = _ENV_LINE.sub(sub_env, text)
    return text, key, env


def split_secrets(
    spec: LaunchSpec, env_changes: Mapping[str, str], key_file: Path
) -> tuple[LaunchSpec, dict[str, str], str | None, dict[str, str]]:
    """(spec without secrets in argv, env changes without secrets, api key, other secrets).

    An `--api-key` on the command line is replaced by `--api-key-file key_file`; `--hf-token` and
    secret variables come back separately for an EnvironmentFile. Keys the spec does not pass on
    its command line or in `env_changes` are left where they are."""
    changes = dict(env_changes)
    key: str | None = None
    other: dict[str, str] = {}
    if spec.flag_value("api_key") is not None:
        key = spec.flag_value("api_key")
        spec = spec.with_option("api_key", None)
    token = spec.flag_value("hf_token")
    if token is not None:
        other["HF_TOKEN"] = token
        spec = spec.with_option("hf_token", None)
    for name in list(changes):
        if not is_secret_env(name):
            continue
        value = changes.pop(name)
        if name in _API_KEY_ENV:
            key = key or value
        else:
            other[name] = value
    if key:
        spec = spec.with_option("api_key_file", str(key_file))
    if any(is_secret_flag(tok.split("=", 1)[0]) for tok in spec.argv[1:]):
        raise UnitError("a secret flag is still on the command line; nothing was written")
    return spec, changes, key, other


_STATE = {
    ("active", "running"): "ready",
    ("active", "exited"): "exited",
    ("reloading", None): "ready",
    ("activating", "auto-restart"): "restarting",
    ("activating", None): "starting",
    ("deactivating", None): "stopping",
    ("failed", None): "failed",
    ("inactive", None): "stopped",
}


def supervisor_state(active: str | None, sub: str | None) -> str:
    if active is None:
        return "stopped"
    return _STATE.get((active, sub)) or _STATE.get((active, None)) or active


def last_exit_text(props: Mapping[str, str]) -> str | None:
    code = props.get("ExecMainCode")
    status = props.get("ExecMainStatus")
    if code in (None, "", "0"):
        return None
    if code == "1":
        return f"exit code {status}"
    if code in ("2", "3"):
        import signal as _signal

        try:
            name = _signal.Signals(int(status or 0)).name
        except ValueError:
            name = f"signal {status}"
        return f"killed by {name}" + (" (core dumped)" if code == "3" else "")
    return None


class UnitController:
    """Controller for a llama-server systemd unit (system or --user)."""

    mode = "unit"

    def __init__(
        self,
        name: str,
        *,
        user: bool = False,
        command_prefix: Sequence[str] = (),
        monitor: UnitMonitor | None = None,
        log_store: LogStore | None = None,
        config_home: str | Path | None = None,
        system_unit_dir: Path = SYSTEM_UNIT_DIR,
    ) -> None:
        self.name = name if "." in name else f"{name}.service"
        self.user = user
        self.systemctl = Systemctl(user=user, command_prefix=tuple(command_prefix))
        self.monitor = monitor or UnitMonitor(self.name, user=user, command_prefix=command_prefix)
        self.log_store = log_store
        self._unit_dir = user_unit_dir(config_home) if user else system_unit_dir
        self.last_error: str | None = None
        self.denied = False
        self.on_change: list[Callable[[], None]] = []

    # -- what the UI reads ----------------------------------------------------------------------
    @property
    def drop_in_dir(self) -> Path:
        return self._unit_dir / f"{self.name}.d"

    @property
    def drop_in_path(self) -> Path:
        return self.drop_in_dir / DROP_IN_NAME

    @property
    def has_drop_in(self) -> bool:
        return self.drop_in_path.exists()

    @property
    def unit_status(self) -> UnitStatus | None:
        return self.monitor.last

    @property
    def spec(self) -> LaunchSpec:
        if self.monitor.spec is None:
            self.monitor.read()
        if self.monitor.spec is None:
            raise UnitError(
                f"{self.name}: no ExecStart to parse ({self.monitor.error or 'unknown'})"
            )
        return self.monitor.spec

    @property
    def pid(self) -> int | None:
        last = self.monitor.last
        return last.main_pid if last else None

    def refresh(self) -> UnitStatus:
        """Re-read the unit (blocking: thread)."""
        return self.monitor.read()

    def status(self) -> SupervisorStatus:
        last = self.monitor.last
        props = self.monitor.last_properties
        errors: tuple[str, ...] = ()
        if self.log_store is not None:
            with contextlib.suppress(Exception):
                errors = tuple(self.log_store.tail_errors(5))
        if self.last_error:
            errors = (*errors, self.last_error)
        return SupervisorStatus(
            mode="unit",
            state=supervisor_state(last.active_state, last.sub_state) if last else "stopped",
            restarts=(last.n_restarts or 0) if last else 0,
            last_exit=last_exit_text(props) or last_exit_text(self.monitor.last_exit_properties),
            last_error_lines=errors,
            argv=last.exec_start if last else (),
            can_control=not self.denied,
        )

    # -- actions --------------------------------------------------------------------------------
    async def _systemctl(self, action: str, *args: str) -> None:
        argv = self.systemctl.argv(*args)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except FileNotFoundError as e:
            raise UnitError(f"cannot {action} {self.name}: {e.filename} not found") from e
        out, err = await proc.communicate()
        text = (err or out).decode(errors="replace").strip()
        if proc.returncode != 0:
            if _looks_denied(text):
                self.denied = True
                msg = permission_message(self.name, self.user, action, text)
                self.last_error = msg.splitlines()[0]
                raise UnitPermissionError(msg)
            self.last_error = f"{action} {self.name} failed: {text}"
            raise UnitError(self.last_error)
        self.last_error = None
        self.denied = False

    async def _after(self) -> None:
        await asyncio.to_thread(self.monitor.read)
        for cb in list(self.on_change):
            cb()

    async def start(self) -> None:
        await self._systemctl("start", "start", self.name)
        await self._after()

    async def stop(self) -> None:
        await self._systemctl("stop", "stop", self.name)
        await self._after()

    async def restart(self, spec: LaunchSpec | None = None) -> None:
        """Restart; with `spec`, first write the drop-in with its argv and daemon-reload."""
        if spec is not None:
            await asyncio.to_thread(self.write_drop_in, spec)
            await self._systemctl("reload", "daemon-reload")
        await self._systemctl("restart", "restart", self.name)
        await self._after()

    async def daemon_reload(self) -> None:
        await self._systemctl("reload", "daemon-reload")

    @property
    def key_file_path(self) -> Path:
        return self.drop_in_dir / KEY_FILE_NAME

    @property
    def secrets_env_path(self) -> Path:
        return self.drop_in_dir / SECRETS_ENV_NAME

    def _secret_owner(self) -> tuple[int, int] | None:
        """Who must read the key file: the unit's User= (system units), else whoever we are."""
        user = self.monitor.last_properties.get("User") if not self.user else None
        if not user:
            return None
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            return None
        return pw.pw_uid, pw.pw_gid

    def scrub_backups(self) -> list[Path]:
        """Rewrite llmtop's drop-in and its backup if they hold a key (older llmtop versions
        wrote one there): the key moves to a 0600 file beside them. Returns what was rewritten."""
        rewritten: list[Path] = []
        for path in (self.drop_in_path, self.drop_in_path.with_name(DROP_IN_NAME + ".bak")):
            try:
                text = path.read_text()
            except OSError:
                continue
            suffix = ".bak" if path.name.endswith(".bak") else ""
            key_file = self.drop_in_dir / (KEY_FILE_NAME + suffix)
            env_file = self.drop_in_dir / (SECRETS_ENV_NAME + suffix)
            clean, key, env = scrub_drop_in_text(text, key_file)
            if clean == text:
                continue
            owner = self._secret_owner()
            if key:
                atomic_write(key_file, key_file_text(key), SECRET_MODE, keep_backup=False,
                             owner=owner)  # fmt: skip
            if env:
                atomic_write(env_file, env_file_text(env), SECRET_MODE, keep_backup=False)
                clean += f"EnvironmentFile={systemd_quote(str(env_file))}\n"
            atomic_write(path, clean, keep_backup=False)
            rewritten.append(path)
        return rewritten

    def write_drop_in(self, spec: LaunchSpec) -> Path:
        """Write the drop-in for `spec` (blocking, small). Returns its path.

        Secrets never go into the drop-in (see the module docstring)."""
        current_env = dict(self.monitor.spec.env) if self.monitor.spec is not None else {}
        changes = {k: v for k, v in dict(spec.env).items() if current_env.get(k) != v}
        try:
            self.scrub_backups()
            spec, changes, key, other = split_secrets(spec, changes, self.key_file_path)
            owner = self._secret_owner()
            if key:
                atomic_write(self.key_file_path, key_file_text(key), SECRET_MODE,
                             keep_backup=False, owner=owner)  # fmt: skip
            env_file = None
            if other:
                env_file = self.secrets_env_path
                atomic_write(env_file, env_file_text(other), SECRET_MODE, keep_backup=False)
            text = drop_in_text(self.name, self.user, list(spec.argv), changes, env_file)
            atomic_write(self.drop_in_path, text)
        except PermissionError as e:
            self.denied = True
            raise UnitPermissionError(
                permission_message(self.name, self.user, "change launch arguments of", str(e))
            ) from e
        return self.drop_in_path

    async def revert(self) -> bool:
        """Remove llmtop's drop-in (kept as .bak), daemon-reload, restart. False if none."""
        path = self.drop_in_path
        if not path.exists():
            return False
        try:
            self.scrub_backups()
            os.replace(path, path.with_name(path.name + ".bak"))
        except PermissionError as e:
            self.denied = True
            raise UnitPermissionError(
                permission_message(self.name, self.user, "revert the drop-in of", str(e))
            ) from e
        with contextlib.suppress(OSError):
            self.drop_in_dir.rmdir()  # only if now empty (never, while the .bak is there)
        await self._systemctl("reload", "daemon-reload")
        await self._systemctl("restart", "restart", self.name)
        await self._after()
        return True


def open_unit_session(
    name: str,
    user: bool,
    log_store: LogStore,
    *,
    command_prefix: Sequence[str] = (),
    journal_directory: str | Path | None = None,
) -> tuple[UnitController, UnitMonitor, JournalFollower]:
    """Everything unit mode needs, for the dashboard: controller, monitor (read() in a thread,
    hand it to the Collector as unit_monitor) and a journal follower feeding `log_store`
    (`await follower.start()` on the app's loop, `await follower.stop()` when closing)."""
    from llmtop.sources.journal import JournalFollower

    monitor = UnitMonitor(name, user=user, command_prefix=command_prefix)
    controller = UnitController(
        name, user=user, command_prefix=command_prefix, monitor=monitor, log_store=log_store
    )
    status = monitor.read()
    if monitor.spec is not None:
        # The journal may echo the unit's command line: its key is hidden by value too.
        log_store.redactor.add(monitor.spec.api_key)
    with contextlib.suppress(OSError):
        controller.scrub_backups()
    ident = monitor.last_properties.get("SyslogIdentifier") or None
    follower = JournalFollower(
        controller.name,
        log_store,
        user=user,
        syslog_identifier=ident,
        since=status.exec_main_start_timestamp,
        directory=journal_directory,
        command_prefix=command_prefix,
    )
    return controller, monitor, follower


def describe_error(e: BaseException) -> str:
    """Operator words for a failed unit action (SystemctlError/UnitError)."""
    if isinstance(e, SystemctlError):
        return e.stderr or str(e)
    return str(e)
