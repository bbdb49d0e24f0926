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
itself is never edited. `revert()` removes the drop-in (kept as .bak), reloads and restarts.
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
from typing import TYPE_CHECKING, Any

from llmtop.snapshot import SupervisorStatus, UnitStatus
from llmtop.sources.unit_status import Systemctl, SystemctlError, UnitMonitor, user_unit_dir

if TYPE_CHECKING:
    from llmtop.model.launch_spec import LaunchSpec
    from llmtop.sources.journal import JournalFollower

DROP_IN_NAME = "50-llmtop.conf"
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
    unit: str, user: bool, argv: Sequence[str], env_changes: Mapping[str, str] | None = None
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
    ]
    return "\n".join(body) + "\n"


def atomic_write(path: Path, text: str, mode: int = 0o644) -> Path | None:
    """Write `text` to `path` atomically (temp file in the same directory, fsync, rename).

    An existing file is first copied to `<name>.bak`; returns the backup path (or None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    backup: Path | None = None
    if path.exists():
        backup = path.with_name(path.name + ".bak")
        tmp_bak = path.with_name(f".{path.name}.bak.tmp")
        tmp_bak.write_bytes(path.read_bytes())
        os.chmod(tmp_bak, mode)
        os.replace(tmp_bak, backup)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # umask must not change the mode
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return backup


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
        log_store: Any | None = None,
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
        if self.log_store is not None and hasattr(self.log_store, "tail_errors"):
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

    def write_drop_in(self, spec: LaunchSpec) -> Path:
        """Write the drop-in for `spec` (blocking, small). Returns its path."""
        current_env = dict(self.monitor.spec.env) if self.monitor.spec is not None else {}
        changes = {k: v for k, v in dict(spec.env).items() if current_env.get(k) != v}
        text = drop_in_text(self.name, self.user, list(spec.argv), changes)
        try:
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
    log_store: Any,
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
