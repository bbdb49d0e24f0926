"""Start/stop the confined systemd box and run commands inside it with nsenter.

The box is a real `systemd --user` manager and a real `systemd-journald`, confined to their own
cgroup, PID and mount namespaces (issue 4's recipe, see box.sh). The host network namespace is
shared, so a llama-server unit listening on 127.0.0.1 inside the box is reachable from the tests.

Teardown SIGKILLs the box's PID 1 by its PID (everything inside dies with it) and removes the
cgroup directories deepest first — `SystemdBox.close()` is safe to call more than once and is
called from a fixture finalizer, so it happens even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BOX_SH = Path(__file__).with_name("box.sh")
CGROUP_ROOT = Path("/sys/fs/cgroup")
RUNTIME_DIR = "/run/user/0"  # inside the box (its /run is a private tmpfs)


def why_no_box() -> str | None:
    """The reason the box cannot run here, or None."""
    if os.geteuid() != 0:
        return "systemd box needs root (cgroup directories, unshare, nsenter)"
    for tool in ("unshare", "nsenter", "systemctl", "journalctl"):
        if shutil.which(tool) is None:
            return f"systemd box needs {tool}"
    for exe in ("/lib/systemd/systemd", "/lib/systemd/systemd-journald"):
        if not os.access(exe, os.X_OK):
            return f"systemd box needs {exe}"
    if not (CGROUP_ROOT / "unified").is_dir() and not (CGROUP_ROOT / "cgroup.procs").exists():
        return "systemd box needs a cgroup2 hierarchy"
    return None


def cgroup_layout() -> str:
    """'hybrid' (v1 name=systemd + /sys/fs/cgroup/unified) or 'v2' (pure cgroup2 host)."""
    if (CGROUP_ROOT / "cgroup.procs").exists() and not (CGROUP_ROOT / "systemd").is_dir():
        return "v2"
    return "hybrid"


def wait_until(
    cond: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> object:
    """Poll `cond` until it returns something truthy; raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while True:
        try:
            value = cond()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 — keep waiting, report the last error
            last_exc = e
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or cond}: {last_exc}")
        time.sleep(interval)


@dataclass
class SystemdBox:
    name: str
    pid: int  # host PID of the box's PID 1 (the box.sh shell)
    launcher: subprocess.Popen[bytes]
    cgroup_dirs: list[Path]
    config_home: Path  # private XDG_CONFIG_HOME (a host path; the box shares the filesystem)
    log_path: Path
    closed: bool = field(default=False)

    # -- what the code under test needs -------------------------------------------------------
    @property
    def command_prefix(self) -> list[str]:
        """argv prefix that runs a command inside the box with the user manager's environment."""
        return [
            "nsenter", "-t", str(self.pid), "-a",
            "env", f"XDG_RUNTIME_DIR={RUNTIME_DIR}", f"XDG_CONFIG_HOME={self.config_home}",
        ]  # fmt: skip

    @property
    def journal_dir(self) -> Path:
        """The box's journal directory as seen from the host."""
        return Path(f"/proc/{self.pid}/root/run/log/journal")

    @property
    def unit_dir(self) -> Path:
        return self.config_home / "systemd" / "user"

    def proc_path(self, box_pid: int, *parts: str) -> Path:
        """/proc/<box_pid>/... of a process inside the box (MainPID is a box PID)."""
        return Path(f"/proc/{self.pid}/root/proc/{box_pid}", *parts)

    def cmdline(self, box_pid: int) -> list[str]:
        raw = self.proc_path(box_pid, "cmdline").read_bytes()
        return [a.decode() for a in raw.split(b"\0") if a]

    # -- running things inside ----------------------------------------------------------------
    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command_prefix, *argv],
            capture_output=True, text=True, check=check, timeout=timeout,
        )  # fmt: skip

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--user", "--no-ask-password", *args], check=check)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def write_unit(self, name: str, text: str) -> Path:
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        path = self.unit_dir / name
        path.write_text(text)
        self.systemctl("daemon-reload")
        return path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- teardown -------------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        try:
            self.launcher.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.launcher.pid, signal.SIGKILL)
            self.launcher.wait(10)
        remove_cgroup_dirs(self.cgroup_dirs)


def remove_cgroup_dirs(tops: Sequence[Path], timeout: float = 10.0) -> None:
    """rmdir every cgroup directory below and including `tops`, deepest first (retrying while
    the killed processes are still being reaped)."""
    deadline = time.monotonic() + timeout
    for top in tops:
        while top.exists():
            dirs = sorted(
                (Path(d) for d, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True
            )
            busy = False
            for d in dirs:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    busy = True
            if not busy:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not remove cgroup {top}")
            time.sleep(0.05)


def remove_stale_cgroups() -> None:
    """Remove empty cgroup directories left by a test run that was killed (its pid is gone)."""
    parents = [CGROUP_ROOT / "systemd", CGROUP_ROOT / "unified"]
    if cgroup_layout() == "v2":
        parents = [CGROUP_ROOT]
    for parent in parents:
        for d in parent.glob("llmtop-test-*"):
            try:
                owner = int(d.name.split("-")[2])
            except (IndexError, ValueError):
                continue
            if owner == os.getpid() or Path(f"/proc/{owner}").exists():
                continue
            procs = [p for p in d.rglob("cgroup.procs") if p.read_text().strip()]
            if not procs:  # never kill anything here: only empty leftovers go
                with contextlib.suppress(OSError, RuntimeError):
                    remove_cgroup_dirs([d], timeout=1.0)


def start_box(work_dir: Path, name: str | None = None, timeout: float = 30.0) -> SystemdBox:
    """Start the box; on any failure everything already created is torn down again."""
    reason = why_no_box()
    if reason:
        raise RuntimeError(reason)
    remove_stale_cgroups()
    name = name or f"llmtop-test-{os.getpid()}-{time.monotonic_ns() % 100000}"
    layout = cgroup_layout()
    if layout == "hybrid":
        tops = [CGROUP_ROOT / "systemd" / name, CGROUP_ROOT / "unified" / name]
    else:
        tops = [CGROUP_ROOT / name]
    config_home = work_dir / "config"
    config_home.mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "box.log"
    for d in tops:
        d.mkdir()
    launcher: subprocess.Popen[bytes] | None = None
    try:
        procs = " ".join(f"{d}/cgroup.procs" for d in tops)
        # The launcher moves itself into the box's cgroups, then becomes unshare; unshare forks
        # box.sh as PID 1 of the new namespaces.
        script = (
            f'for f in {procs}; do echo $$ > "$f"; done; '
            'exec unshare --cgroup --pid --mount --fork --mount-proc sh "$@"'
        )
        with open(log_path, "wb") as log:
            launcher = subprocess.Popen(
                ["sh", "-c", script, "launcher", str(BOX_SH), layout, RUNTIME_DIR, str(config_home)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

        def box_pid() -> int | None:
            assert launcher is not None
            if launcher.poll() is not None:
                raise RuntimeError(f"box launcher exited: {log_path.read_text(errors='replace')}")
            try:
                kids = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text()
            except OSError:
                return None
            # The launcher has exec'd unshare once it has a child (box.sh).
            return int(kids.split()[0]) if kids.split() else None

        pid = int(wait_until(box_pid, timeout, what="box PID 1"))  # type: ignore[arg-type]
        box = SystemdBox(name, pid, launcher, tops, config_home, log_path)
    except BaseException:
        if launcher is not None and launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(10)
        remove_cgroup_dirs(tops)
        raise
    try:

        def manager_up() -> bool:
            r = box.systemctl("is-system-running", check=False)
            return r.stdout.strip() in ("running", "degraded")

        wait_until(manager_up, timeout, interval=0.1, what="systemd --user in the box")
        wait_until(lambda: box.journal_dir.is_dir(), timeout, what="journald in the box")
    except BaseException:
        box.close()
        raise
    return box
