"""What systemd says about a llama-server unit: state, restarts, launch arguments, unit checks.

`UnitMonitor(name, user=...).read()` runs `systemctl show` once and returns a `UnitStatus`
(llmtop/snapshot.py). It blocks for a few milliseconds: the collector calls it in a thread.
ExecStart is parsed into the same `LaunchSpec` as child mode, so URL, model, gpu-layers,
ctx-size and API key are known without flags. `discover_units()` finds units (system and user)
whose ExecStart runs llama-server.

Every systemctl call can be prefixed (`command_prefix`), which the tests use to reach a confined
systemd manager with nsenter; in the product the prefix is empty. This module only reads.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from llmtop.diagnosis.checks import ctx_check, exposure_check
from llmtop.model.redaction import redact_argv, redact_environment
from llmtop.snapshot import Alert, UnitStatus

if TYPE_CHECKING:
    from llmtop.model.launch_spec import LaunchSpec

SHOW_PROPERTIES = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "MainPID",
    "NRestarts",
    "Result",
    "ExecMainStartTimestamp",
    "ExecMainCode",
    "ExecMainStatus",
    "ExecStart",
    "Environment",
    "User",
    "FragmentPath",
    "DropInPaths",
    "Restart",
    "RestartUSec",
    "SyslogIdentifier",
    "Description",
)


class SystemctlError(RuntimeError):
    """systemctl failed; `stderr` holds its words (e.g. "Failed to connect to bus: …")."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(self.stderr or f"systemctl exited with {returncode}")


@dataclass(frozen=True)
class Systemctl:
    """How to call systemctl for one manager: `--user` or the system one, plus a prefix."""

    user: bool = False
    command_prefix: tuple[str, ...] = ()
    timeout_s: float = 30.0

    def argv(self, *args: str) -> list[str]:
        scope = ["--user"] if self.user else []
        return [*self.command_prefix, "systemctl", *scope, "--no-ask-password", *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Blocking: call from a thread (or a CLI command)."""
        argv = self.argv(*args)
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=self.timeout_s, check=False
            )
        except FileNotFoundError as e:
            raise SystemctlError(argv, 127, f"{e.filename}: not found") from e
        if check and proc.returncode != 0:
            raise SystemctlError(argv, proc.returncode, proc.stderr)
        return proc

    def show(
        self, units: Sequence[str], props: Sequence[str] = SHOW_PROPERTIES
    ) -> list[dict[str, str]]:
        """`systemctl show` of several units in one call: one dict per unit, in order."""
        args = ["show", "--timestamp=us+utc", *(f"--property={p}" for p in props), "--", *units]
        out = self.run(*args).stdout
        blocks: list[dict[str, str]] = []
        current: dict[str, str] = {}
        for line in out.split("\n"):  # not splitlines(): a value may hold \x1c, U+2028 …
            if not line.strip():
                if current:
                    blocks.append(current)
                    current = {}
                continue
            key, sep, value = line.partition("=")
            if sep:
                current[key] = value
        if current:
            blocks.append(current)
        return blocks


# -- parsing `systemctl show` values -----------------------------------------------------------


def parse_exec_start(value: str) -> list[list[str]]:
    """ExecStart's `{ path=… ; argv[]=… ; … }` entries → argv lists (one per command line).

    systemctl prints argv joined by single spaces without quoting, so an argument containing a
    space is split in two; llama-server arguments practically never contain spaces.
    """
    commands: list[list[str]] = []
    rest = value
    while True:
        start = rest.find("argv[]=")
        if start < 0:
            break
        rest = rest[start + len("argv[]=") :]
        end = rest.find(" ; ignore_errors=")
        if end < 0:
            end = rest.find(" ; ")
        text = rest if end < 0 else rest[:end]
        commands.append(text.split())
        if end < 0:
            break
        rest = rest[end:]
    return commands


def exec_start_from_unit_text(text: str) -> list[str] | None:
    """The effective ExecStart argv from `systemctl cat` output (unit file + drop-ins), quoting
    kept intact. None when there is none or it uses specifiers we cannot resolve (%h, %i …)."""
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        s = raw.strip()
        if s.startswith(("#", ";")):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append(buf + s)
        buf = ""
    if buf:
        lines.append(buf)
    section = ""
    value: str | None = None
    for line in lines:
        if line.startswith("["):
            section = line
            continue
        if section != "[Service]":
            continue
        key, sep, val = line.partition("=")
        if sep and key.strip() == "ExecStart":
            val = val.strip()
            value = None if not val else (val if value is None else value)
    if not value:
        return None
    try:
        words = shlex.split(value)
    except ValueError:
        return None
    if not words:
        return None
    words[0] = words[0].lstrip("-@:+!")
    out = []
    for w in words:
        if re.search(r"%[^%]", w.replace("%%", "")):
            return None
        out.append(w.replace("%%", "%"))
    return out


def parse_environment(value: str) -> dict[str, str]:
    """`Environment=A=1 "B=x y"` → {"A": "1", "B": "x y"}."""
    env: dict[str, str] = {}
    try:
        words = shlex.split(value)
    except ValueError:
        words = value.split()
    for word in words:
        key, sep, val = word.partition("=")
        if sep and key:
            env[key] = val
    return env


def parse_timestamp(value: str) -> float | None:
    """'Wed 2026-11-25 17:22:40.123456 UTC' or '@1795627360' → unix seconds; '' / 'n/a' → None."""
    value = value.strip()
    if not value or value == "n/a" or value == "0":
        return None
    if value.startswith("@"):
        try:
            t = float(value[1:])
        except ValueError:
            return None
        return t if math.isfinite(t) else None  # "@1e999", "@nan": no time
    for fmt in ("%a %Y-%m-%d %H:%M:%S.%f %Z", "%a %Y-%m-%d %H:%M:%S %Z"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "", "[not set]") else None
    except ValueError:
        return None


def _redact(argv: Sequence[str]) -> tuple[str, ...]:
    return tuple(redact_argv(argv))


def is_llama_server_argv(argv: Sequence[str]) -> bool:
    """True when a command line runs llama-server (directly or through env/a wrapper)."""
    return any(os.path.basename(a).startswith("llama-server") for a in argv[:3])


# -- unit checks -------------------------------------------------------------------------------

_ctx_train_cache: dict[tuple[str, float], int | None] = {}
_ctx_lock = threading.Lock()


def model_training_context(path: str | None) -> int | None:
    """The model's training context from its GGUF metadata (cached per file and mtime)."""
    if not path:
        return None
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    key = (path, mtime)
    with _ctx_lock:
        if key in _ctx_train_cache:
            return _ctx_train_cache[key]
    value: int | None
    try:
        from llmtop.sources.gguf_info import read_gguf_info

        value = int(read_gguf_info(path).context_length) or None
    except Exception:  # noqa: BLE001 — a model we cannot read gives no check, not a crash
        value = None
    with _ctx_lock:
        _ctx_train_cache[key] = value
    return value


def _gpu_present() -> bool:
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")


def _explicit_gpu_layers(spec: LaunchSpec) -> bool:
    return spec.is_set("gpu_layers")


def unit_checks(
    spec: LaunchSpec | None, env: Mapping[str, str], restart: str | None
) -> list[tuple[str, str]]:
    """(alert kind, message) for each problem the playbook warns about."""
    problems: list[tuple[str, str]] = []
    if restart is not None and restart in ("", "no"):
        problems.append(
            ("unit_no_restart", "unit has no Restart= (add Restart=on-failure and RestartSec=15)")
        )
    if spec is None:
        return problems
    gpu_layers = spec.gpu_layers
    gpu_server = gpu_layers not in (None, 0) and (_explicit_gpu_layers(spec) or _gpu_present())
    if gpu_server:
        missing = [k for k in ("CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH") if k not in env]
        if missing:
            problems.append(
                (
                    "unit_env_missing",
                    f"GPU server but {' and '.join(missing)} missing from the unit's Environment= "
                    "(systemd's minimal environment can make it silently fall back to CPU)",
                )
            )
    # The same checks `llmtop check` runs (one implementation), as (kind, message) here.
    exposed = exposure_check(spec)
    if exposed.status != "ok":
        problems.append(("unit_exposed_no_key", exposed.message))
    ctx = ctx_check(spec, model_training_context(spec.model))
    if ctx is not None and ctx.status != "ok":
        problems.append(("unit_ctx_over_train", ctx.message))
    return problems


def unit_alerts(status: UnitStatus, since: float) -> tuple[Alert, ...]:
    """The unit's warnings as alerts for the alerts strip (kind unit_check)."""
    return tuple(Alert("unit_check", "warning", w, since) for w in status.warnings)


# -- the monitor -------------------------------------------------------------------------------


class UnitMonitor:
    """Reads one unit's state from systemd. `read()` blocks briefly: run it in a thread."""

    def __init__(
        self, name: str, *, user: bool = False, command_prefix: Sequence[str] = ()
    ) -> None:
        self.name = name if "." in name else f"{name}.service"
        self.user = user
        self.systemctl = Systemctl(user=user, command_prefix=tuple(command_prefix))
        self.last: UnitStatus | None = None
        self.last_properties: dict[str, str] = {}
        self.last_exit_properties: dict[str, str] = {}
        self.spec: LaunchSpec | None = None
        self.error: str | None = None
        self._exact_argv: tuple[str, list[str] | None] = ("", None)

    def _exact_exec_start(self, props: Mapping[str, str]) -> list[str] | None:
        """ExecStart with quoting intact (from `systemctl cat`, only when ExecStart changed):
        used when it agrees with what systemd reports, since `show` splits quoted arguments."""
        shown = parse_exec_start(props.get("ExecStart", ""))
        if not shown:
            return None
        key = " ".join(shown[0])
        if self._exact_argv[0] != key:
            exact: list[str] | None = None
            try:
                text = self.systemctl.run("cat", "--", self.name).stdout
                exact = exec_start_from_unit_text(text)
            except (SystemctlError, subprocess.TimeoutExpired):
                exact = None
            if exact is not None and " ".join(" ".join(exact).split()) != " ".join(key.split()):
                exact = None
            if exact is not None:
                exact = [w.replace("$$", "$") for w in exact]
            self._exact_argv = (key, exact)
        return self._exact_argv[1]

    def read(self) -> UnitStatus:
        try:
            props = self.systemctl.show([self.name])[0]
        except (SystemctlError, IndexError, subprocess.TimeoutExpired) as e:
            self.error = f"systemctl show {self.name}: {e}"
            status = UnitStatus(name=self.name, user=self.user, warnings=(self.error,))
            if self.last is not None:  # keep what we knew, flag the failure
                status = replace(self.last, warnings=(self.error,))
            self.last = status
            return status
        self.error = None
        self.last_properties = props
        if props.get("ExecMainCode") not in (None, "", "0"):
            # systemd forgets the exit once the next process runs: remember the last one seen
            self.last_exit_properties = {
                k: props.get(k, "") for k in ("ExecMainCode", "ExecMainStatus", "Result")
            }
        exact = self._exact_exec_start(props)
        status = status_from_properties(self.name, self.user, props, exact)
        self.spec = spec_from_properties(props, exact)
        self.last = status
        return status


def spec_from_properties(
    props: Mapping[str, str], exact_argv: Sequence[str] | None = None
) -> LaunchSpec | None:
    from llmtop.model.launch_spec import LaunchSpec

    commands = [list(exact_argv)] if exact_argv else parse_exec_start(props.get("ExecStart", ""))
    argv = next((c for c in commands if is_llama_server_argv(c)), commands[0] if commands else None)
    if not argv:
        return None
    return LaunchSpec.from_argv(argv, parse_environment(props.get("Environment", "")))


def status_from_properties(
    name: str, user: bool, props: Mapping[str, str], exact_argv: Sequence[str] | None = None
) -> UnitStatus:
    env = parse_environment(props.get("Environment", ""))
    spec = spec_from_properties(props, exact_argv)
    commands = parse_exec_start(props.get("ExecStart", ""))
    argv = spec.argv if spec is not None else (commands[0] if commands else ())
    warnings: list[str] = []
    if props.get("LoadState") == "not-found":
        warnings.append(f"unit {name} not found ({'user' if user else 'system'} manager)")
    else:
        warnings += [msg for _, msg in unit_checks(spec, env, props.get("Restart"))]
    main_pid = _int_or_none(props.get("MainPID"))
    drop_ins = tuple(p for p in props.get("DropInPaths", "").split() if p)
    return UnitStatus(
        name=props.get("Id") or name,
        user=user,
        active_state=props.get("ActiveState") or None,
        sub_state=props.get("SubState") or None,
        main_pid=main_pid or None,
        n_restarts=_int_or_none(props.get("NRestarts")),
        result=props.get("Result") or None,
        exec_main_start_timestamp=parse_timestamp(props.get("ExecMainStartTimestamp", "")),
        exec_start=_redact(argv),
        environment=redact_environment(env),
        fragment_path=props.get("FragmentPath") or None,
        drop_in_paths=drop_ins,
        warnings=tuple(warnings),
    )


# -- discovery ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiscoveredUnit:
    name: str
    user: bool
    active_state: str | None
    sub_state: str | None
    exec_start: tuple[str, ...]  # redacted
    description: str | None = None
    main_pid: int | None = None  # the running llama-server (None when the unit is not running)
    url: str | None = None  # where the server listens (from ExecStart and Environment=)

    @property
    def label(self) -> str:
        scope = "user" if self.user else "system"
        return f"{self.name} ({scope}, {self.active_state or '?'})"


def _unit_names(ctl: Systemctl) -> list[str]:
    names: list[str] = []
    for args in (
        ("list-units", "--type=service", "--all", "--no-legend", "--plain"),
        ("list-unit-files", "--type=service", "--no-legend", "--plain"),
    ):
        try:
            out = ctl.run(*args).stdout
        except (SystemctlError, subprocess.TimeoutExpired):
            continue
        for line in out.splitlines():
            words = line.split()
            if not words:
                continue
            name = words[0].lstrip("●*")
            if name.endswith(".service") and "@." not in name and name not in names:
                names.append(name)
    return names


def manager_running(scope: str) -> bool:
    """Whether the system (or this user's) service manager runs here, the way sd_booted() tells:
    without one, systemctl takes a while only to fail."""
    if scope == "system":
        return os.path.isdir("/run/systemd/system")
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
    return os.path.exists(os.path.join(runtime, "systemd", "private"))


def discover_units(
    *, scopes: Sequence[str] = ("system", "user"), command_prefix: Sequence[str] = ()
) -> list[DiscoveredUnit]:
    """Units whose ExecStart runs llama-server, system and user managers. Blocking (thread)."""
    found: list[DiscoveredUnit] = []
    for scope in scopes:
        if not command_prefix and not manager_running(scope):
            continue
        ctl = Systemctl(user=scope == "user", command_prefix=tuple(command_prefix))
        names = _unit_names(ctl)
        if not names:
            continue
        try:
            blocks = ctl.show(
                names,
                ("Id", "ActiveState", "SubState", "ExecStart", "Description", "MainPID",
                 "Environment"),
            )  # fmt: skip
        except (SystemctlError, subprocess.TimeoutExpired):
            continue
        for props in blocks:
            for argv in parse_exec_start(props.get("ExecStart", "")):
                if is_llama_server_argv(argv):
                    spec = spec_from_properties(props)  # URL from ExecStart + Environment=
                    found.append(
                        DiscoveredUnit(
                            name=props.get("Id", "?"),
                            user=ctl.user,
                            active_state=props.get("ActiveState") or None,
                            sub_state=props.get("SubState") or None,
                            exec_start=_redact(argv),
                            description=props.get("Description") or None,
                            main_pid=_int_or_none(props.get("MainPID")) or None,
                            url=spec.url if spec is not None else None,
                        )
                    )
                    break
    return found


def user_unit_dir(config_home: str | Path | None = None) -> Path:
    """Where user units (and their drop-ins) live: $XDG_CONFIG_HOME/systemd/user."""
    base = config_home or os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "systemd" / "user"
