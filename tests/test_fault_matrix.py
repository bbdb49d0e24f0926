"""The fault matrix (issue 13, hardening): each fault done to the REAL component, and what the
operator must see.

- SSH drop: llmtop runs in a real pty with a supervised child; the pty master is closed (the
  kernel sends SIGHUP) → llmtop exits and no orphan llama-server is left.
- `kill -STOP` of llama-server → "not responding" (with the process state) within 3 s, keys
  still work, quitting is prompt (the stop sends SIGCONT after SIGTERM).
- Server restarted with another API key → "unauthorized" in words; recovers with the right key.
- A 10 MB log line and a flood of invalid UTF-8 (with terminal escapes) on the server's output →
  lines kept, cut visibly, control characters defused, memory bounded.
- Killed, hung (SIGSTOP) or crash-looping server → a critical alert (server_down,
  server_not_responding, crash_loop) in the alerts strip and in `llmtop snapshot --json`.

No fault-injecting stand-in is needed here: the real llama-server writes the 10 MB line and the
invalid UTF-8 itself, when it loads a GGUF whose metadata key names are that long or those bytes
(it prints every key at `-lv 4`); see `noisy_model`. Every process a test starts is ended by the
test's fixtures, by PID, even when the test fails; every wait is on a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from llmtop.control.supervisor import ChildSupervisor, RestartPolicy
from llmtop.diagnosis.alerts import AlertEngine
from llmtop.model.launch_spec import LaunchSpec
from llmtop.session import Session
from llmtop.snapshot import Snapshot
from llmtop.sources.logs import MAX_LINE_CHARS, LogStore
from llmtop.ui.app import LlmtopApp, create_app
from llmtop.ui.panels.alerts import AlertsStrip
from tests.realserver import RunningServer, free_port, server_argv, wait_healthy
from tests.screen_text import screen_text

pytestmark = pytest.mark.real_server

REPO = Path(__file__).resolve().parent.parent


# -- helpers ------------------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while pid runs (a zombie counts as gone: it has exited)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> None:
    """Block until cond() is true; fail with *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


async def wait_until(pilot: object, cond: Callable[[], object], timeout: float, what: str) -> float:
    """Let the app run until cond() is true; the seconds it took."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await pilot.pause(0.02)  # type: ignore[attr-defined]
    return time.monotonic() - start


def kinds(snapshot: Snapshot | None) -> set[str]:
    return {a.kind for a in snapshot.alerts} if snapshot is not None else set()


def strip_text(app: LlmtopApp) -> str:
    return app.query_one(AlertsStrip).text


def end_pid(pid: int) -> None:
    """Teardown: resume (it may be stopped) and kill pid's process group, then pid; by PID."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """PIDs appended here are resumed and killed at teardown (pass or fail)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            end_pid(pid)


def child_app(
    binary: Path, model: Path, *extra: str, policy: RestartPolicy | None = None
) -> LlmtopApp:
    """The real app in child mode (it starts llama-server itself), alerts on."""
    port = free_port()
    argv = server_argv(binary, model, port, "--metrics", *extra)
    store = LogStore()
    sup = ChildSupervisor(LaunchSpec.from_argv(argv), store, policy or RestartPolicy())
    session = Session(
        mode="child",
        url=f"http://127.0.0.1:{port}",
        controller=sup,
        log_store=store,
        refresh_s=0.5,
        alert_engine=AlertEngine(),
    )
    return create_app(session)


def attach_app(url: str, api_key: str | None = None) -> LlmtopApp:
    session = Session(
        mode="attach", url=url, api_key=api_key, refresh_s=0.5, alert_engine=AlertEngine()
    )
    return create_app(session)


# -- SSH drop: SIGHUP from a closed pty -----------------------------------------------------------


def _llmtop_on_a_pty(binary: Path, model: Path, reaper: list[int]) -> tuple[int, int, int]:
    """`llmtop -- llama-server …` on a pty of its own, as over SSH, until its child is healthy:
    (llmtop's pid, the pty master, the llama-server child's pid)."""
    port = free_port()
    argv = [sys.executable, "-m", "llmtop", "--refresh", "0.5", "--"]
    argv += server_argv(binary, model, port)
    pid, fd = pty.fork()
    if pid == 0:  # the child: llmtop on the pty (session leader, controlling terminal)
        os.chdir(REPO)
        os.environ["TERM"] = "xterm-256color"
        os.execv(argv[0], argv)
    reaper.append(pid)
    import fcntl
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    me = psutil.Process(pid)
    server: list[int] = []

    def server_ready() -> bool:
        # drain the screen output (a full pty would block llmtop), look for the child
        while select.select([fd], [], [], 0)[0]:
            try:
                if not os.read(fd, 65536):
                    break
            except OSError:
                break
        if not server:
            for p in me.children():
                with contextlib.suppress(psutil.Error):
                    if "llama-server" in p.name() or "llama-server" in " ".join(p.cmdline()):
                        server.append(p.pid)
                        reaper.append(p.pid)
        if not server:
            return False
        try:
            wait_healthy(f"http://127.0.0.1:{port}", timeout=0.2)
            return True
        except TimeoutError:
            return False

    try:
        wait_for(server_ready, 60, "llmtop started llama-server and it became healthy")
    except BaseException:
        os.close(fd)
        raise
    return pid, fd, server[0]


def _end_llmtop(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        if alive(pid):
            end_pid(pid)
        os.waitpid(pid, 0)


def test_ssh_drop_sighup_ends_llmtop_and_its_child(
    llama_server_bin: Path, tiny_model: Path, reaper: list[int]
) -> None:
    """Closing the pty master is what sshd does when the connection drops: the kernel sends
    SIGHUP to the session. llmtop must stop its llama-server child and exit — an orphan would
    keep the port and the memory (GPU memory, on a real box) with nobody watching it."""
    pid, fd, child = _llmtop_on_a_pty(llama_server_bin, tiny_model, reaper)
    try:
        os.close(fd)  # the SSH connection is gone
        t0 = time.monotonic()

        def llmtop_exited() -> bool:
            done, _status = os.waitpid(pid, os.WNOHANG)
            return done == pid

        wait_for(llmtop_exited, 20, "llmtop exited after SIGHUP")
        wait_for(lambda: not alive(child), 20, f"llama-server (pid {child}) ended with llmtop")
        assert time.monotonic() - t0 < 20
    finally:
        _end_llmtop(pid)


def test_kill_9_of_llmtop_ends_its_child(
    llama_server_bin: Path, tiny_model: Path, reaper: list[int]
) -> None:
    """`kill -9` (or the OOM killer) gives llmtop no chance to stop its child, and the child's
    own session shields it from the terminal's hangup: the kernel's parent-death signal
    (PR_SET_PDEATHSIG, set before exec) ends it, so no orphan keeps the port and the memory, and
    the next llmtop can start a server on that port again."""
    pid, fd, child = _llmtop_on_a_pty(llama_server_bin, tiny_model, reaper)
    try:
        port = next(
            c.laddr.port
            for c in psutil.Process(child).net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        )
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        wait_for(lambda: not alive(child), 20, f"llama-server (pid {child}) ended with llmtop")
        with socket.socket() as sock:  # the port is free for the next server (as it binds:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT polls)
            sock.bind(("127.0.0.1", port))
            sock.listen()
    finally:
        os.close(fd)
        _end_llmtop(pid)


# -- SIGSTOP: not responding, UI responsive, quit prompt ------------------------------------------


async def test_sigstop_says_not_responding_keys_work_quit_is_prompt(
    llama_server_bin: Path, tiny_model: Path, reaper: list[int]
) -> None:
    """A stopped server accepts connections (the kernel does) and never answers: without the
    process state the dashboard could only say "timed out" after its poll timeout, and a stop
    would wait out the whole SIGTERM timeout on a process that cannot act on it."""
    app = child_app(llama_server_bin, tiny_model)
    sup = app.session.controller
    assert isinstance(sup, ChildSupervisor)
    try:
        async with app.run_test(size=(140, 40)) as pilot:
            await wait_until(
                pilot,
                lambda: sup.state == "ready" and app.latest and app.latest.server.health == "ok",
                60,
                "child ready and healthy",
            )
            pid = sup.pid
            assert pid is not None
            reaper.append(pid)
            os.kill(pid, signal.SIGSTOP)
            took = await wait_until(
                pilot,
                lambda: "not responding" in screen_text(app),
                3.0,
                "the dashboard says 'not responding'",
            )
            assert took < 3.0
            assert "server_not_responding" in kinds(app.latest)
            alert = next(a for a in app.latest.alerts if a.kind == "server_not_responding")
            assert alert.severity == "critical"
            assert "stopped (SIGSTOP)" in alert.message and str(pid) in alert.message
            assert "stopped (SIGSTOP)" in strip_text(app)
            assert "no alerts" not in strip_text(app)
            # keys still work while the server is stopped
            for key, tab in (("2", "logs"), ("1", "overview"), ("4", None), ("1", "overview")):
                start = time.monotonic()
                await pilot.press(key)
                if tab is not None:
                    await wait_until(pilot, lambda t=tab: app.active_tab == t, 1.0, f"tab {tab}")
                assert time.monotonic() - start < 1.0
            # it stays an alert while stopped (the poll is skipped, not left to time out)
            await pilot.pause(1.2)
            assert "server_not_responding" in kinds(app.latest)
            start = time.monotonic()
            await pilot.press("q")
            await wait_until(pilot, lambda: not alive(pid), 5.0, "quit ends the stopped child")
            assert time.monotonic() - start < 5.0  # well inside the 10 s SIGTERM timeout
    finally:
        app.session.shutdown_sync(5.0)


# -- a different API key ------------------------------------------------------------------------


async def test_restarted_with_another_key_says_unauthorized_then_recovers(
    server_factory: Callable[..., RunningServer],
) -> None:
    """The operator restarts the server with a new key; llmtop still sends the old one."""
    key, other = "sk-fault-matrix-RIGHT-1234", "sk-fault-matrix-OTHER-5678"
    srv = server_factory("--metrics", api_key=key)
    app = attach_app(srv.url, api_key=key)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(
            pilot, lambda: app.latest and app.latest.server.model_path, 30, "attached, ok"
        )
        srv.stop()
        srv2 = server_factory("--metrics", api_key=other, port=srv.port)
        await wait_until(
            pilot, lambda: "unauthorized" in screen_text(app), 30, "'unauthorized' shown"
        )
        text = screen_text(app)
        assert "Invalid API Key" in text  # in words: what is wrong and where to fix it
        assert "server_unauthorized" in kinds(app.latest)
        assert "refuses llmtop's API key" in strip_text(app)
        assert key not in text and other not in text
        srv2.stop()
        server_factory("--metrics", api_key=key, port=srv.port)  # the key is fixed
        await wait_until(
            pilot,
            lambda: app.latest.server.health == "ok" and not kinds(app.latest),
            30,
            "recovered: ok and no alerts",
        )
        assert "no alerts" in strip_text(app)
        await pilot.press("q")


# -- a 10 MB log line and a flood of invalid UTF-8 ------------------------------------------------

BIG_KEY_BYTES = 10 << 20
JUNK = bytes(range(0x80, 0x100)) + b"\x1b]0;owned\x07\x1b[2J"  # invalid UTF-8 + escapes
JUNK_KEYS = 2000


def add_gguf_keys(src: Path, dst: Path, keys: list[bytes]) -> None:
    """Copy a GGUF with extra string metadata under the given raw key names.

    GGUF v3: header (magic, version, n_tensors, n_kv), then the key/values, tensor infos,
    padding to the alignment (32) and the data. Tensor offsets are relative to the data, so
    inserting key/values after the header keeps the file valid if the inserted size is a
    multiple of the alignment (each value is padded to make it so)."""
    data = src.read_bytes()
    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", data, 0)
    assert magic == b"GGUF" and version == 3
    blob = bytearray()
    for k in keys:
        blob += struct.pack("<Q", len(k)) + k + struct.pack("<I", 8)  # 8: string
        pad = (-(len(blob) + 8)) % 32
        blob += struct.pack("<Q", pad) + b"v" * pad
    header = struct.pack("<4sIQQ", magic, version, n_tensors, n_kv + len(keys))
    dst.write_bytes(header + bytes(blob) + data[24:])


@pytest.fixture(scope="module")
def noisy_model(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """The tiny model plus a 10 MB key name and 2000 keys of invalid UTF-8 and escapes:
    llama-server prints each key on one line when it loads the model with -lv 4."""
    keys = [b"llmtop.big." + b"x" * BIG_KEY_BYTES]
    keys += [b"llmtop.junk.%d." % i + JUNK for i in range(JUNK_KEYS)]
    out = tmp_path_factory.mktemp("noisy") / "noisy.gguf"
    add_gguf_keys(tiny_model, out, keys)
    return out


async def test_huge_line_and_invalid_utf8_flood_are_kept_cut_and_bounded(
    llama_server_bin: Path, noisy_model: Path, reaper: list[int]
) -> None:
    """A prompt dump or a binary on stdout must not take llmtop's memory, nor its terminal."""
    port = free_port()
    argv = server_argv(llama_server_bin, noisy_model, port, "-lv", "4")
    store = LogStore()
    sup = ChildSupervisor(LaunchSpec.from_argv(argv), store, RestartPolicy(on_failure=False))
    me = psutil.Process()
    rss0 = me.memory_info().rss
    peak = rss0
    try:
        await sup.start()
        assert sup.pid is not None
        reaper.append(sup.pid)
        deadline = time.monotonic() + 60
        while sup.state != "ready":
            assert time.monotonic() < deadline, f"not ready: {sup.state} {sup.last_error_lines}"
            assert sup.state not in ("failed", "exited"), sup.last_error_lines
            peak = max(peak, me.memory_info().rss)
            await _sleep(0.05)
        # the key lines come before "listening"; give the pipe reader time to drain the rest
        deadline = time.monotonic() + 30
        while sum("llmtop.junk." in ln.text for ln in store.lines()) < JUNK_KEYS:
            assert time.monotonic() < deadline, "the junk lines did not all arrive"
            peak = max(peak, me.memory_info().rss)
            await _sleep(0.05)
    finally:
        await sup.stop()
    lines = store.lines()
    big = [ln for ln in lines if "llmtop.big.xxx" in ln.text]
    assert len(big) == 1, "the 10 MB line is one line, not ten pieces"
    text = big[0].text
    assert len(text) <= MAX_LINE_CHARS
    marker = text[text.rindex(" … [truncated ") :]
    cut = int(marker.split()[2])
    assert marker == f" … [truncated {cut} bytes]"
    assert BIG_KEY_BYTES - MAX_LINE_CHARS < cut < BIG_KEY_BYTES + 1000
    junk = [ln for ln in lines if "llmtop.junk." in ln.text]
    assert len(junk) == JUNK_KEYS  # every line kept
    for ln in junk:
        assert "\ufffd" in ln.text  # invalid UTF-8 shown as U+FFFD, the line not dropped
        assert "\x1b" not in ln.text and "\x07" not in ln.text  # no escape reaches a terminal
        assert "␛]0;owned␇" in ln.text  # … but visibly there
    assert all(ln.text.isprintable() or "\t" in ln.text for ln in lines)
    assert store.stored_chars <= store.max_chars
    assert store.stored_chars < 2_000_000  # 10 MB arrived; well under 2 M characters kept
    assert peak - rss0 < 64 << 20, f"RSS grew by {(peak - rss0) >> 20} MiB"


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


# -- down, hung and crash-looping servers are alerts ----------------------------------------------


def snapshot_json(url: str) -> dict[str, object]:
    """`llmtop snapshot --json` as the operator (or a cron job) would run it."""
    r = subprocess.run(
        [sys.executable, "-m", "llmtop", "snapshot", "--json", "--url", url, "--interval", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert r.stdout, r.stderr
    out: dict[str, object] = json.loads(r.stdout)
    return out


async def test_killed_and_stopped_servers_are_critical_alerts_everywhere(
    server_factory: Callable[..., RunningServer], reaper: list[int]
) -> None:
    """Found by hand: "unreachable" in the header, "✓ no alerts" in the strip."""
    srv = server_factory("--metrics")
    reaper.append(srv.pid)
    app = attach_app(srv.url)
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_until(pilot, lambda: app.latest and app.latest.server.health == "ok", 30, "ok")
        assert not kinds(app.latest)
        # stopped: the snapshot command sees it too, with the process state
        os.kill(srv.pid, signal.SIGSTOP)
        await wait_until(
            pilot, lambda: "server_not_responding" in kinds(app.latest), 3.0, "stopped → alert"
        )
        doc = snapshot_json(srv.url)
        alerts = {a["kind"]: a for a in doc["alerts"]}  # type: ignore[index, union-attr]
        assert alerts["server_not_responding"]["severity"] == "critical"
        assert "stopped (SIGSTOP)" in alerts["server_not_responding"]["message"]
        assert doc["host"]["process"]["status"] == "stopped"  # type: ignore[index]
        # killed: down, in the strip and in the JSON
        os.kill(srv.pid, signal.SIGKILL)
        srv.proc.wait(10)
        await wait_until(pilot, lambda: "server_down" in kinds(app.latest), 5.0, "killed → alert")
        alert = next(a for a in app.latest.alerts if a.kind == "server_down")
        assert alert.severity == "critical"
        assert "llama-server is down" in strip_text(app)
        assert "no alerts" not in strip_text(app)
        doc = snapshot_json(srv.url)
        assert [a["kind"] for a in doc["alerts"]] == ["server_down"]  # type: ignore[index, union-attr]
        assert doc["alerts"][0]["severity"] == "critical"  # type: ignore[index]
        # back up: the alert clears
        server_factory("--metrics", port=srv.port)
        await wait_until(
            pilot, lambda: app.latest.server.health == "ok" and not kinds(app.latest), 30, "ok"
        )
        await pilot.press("q")


async def test_crash_loop_is_a_critical_alert(
    llama_server_bin: Path, tiny_model: Path, reaper: list[int]
) -> None:
    """The real child is killed (SIGKILL, as the OOM killer does) each time it is ready: after
    the restart policy's burst llmtop gives up, and says so as an alert, not only in the log."""
    policy = RestartPolicy(restart_sec=0.1, max_restart_sec=0.2, burst=3, burst_window_s=120)
    app = child_app(llama_server_bin, tiny_model, policy=policy)
    sup = app.session.controller
    assert isinstance(sup, ChildSupervisor)
    killed: list[int] = []
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            while sup.state != "failed":
                await wait_until(
                    pilot,
                    lambda: sup.state in ("ready", "failed") and sup.pid not in killed,
                    60,
                    "child ready again (or given up)",
                )
                if sup.state == "failed":
                    break
                pid = sup.pid
                assert pid is not None
                reaper.append(pid)
                killed.append(pid)
                os.kill(pid, signal.SIGKILL)
                if len(killed) == 2:  # restarting after the 2nd crash: a crash loop already
                    await wait_until(
                        pilot, lambda: "crash_loop" in kinds(app.latest), 10, "crash_loop"
                    )
            assert len(killed) == policy.burst
            await wait_until(
                pilot,
                lambda: (
                    "crash_loop" in kinds(app.latest) and "stopped restarting" in strip_text(app)
                ),
                10,
                "crash_loop alert after giving up",
            )
            alert = next(a for a in app.latest.alerts if a.kind == "crash_loop")
            assert alert.severity == "critical"
            assert "killed by SIGKILL" in alert.message
            assert "server_down" not in kinds(app.latest)  # one alert, the specific one
            await pilot.press("q")
    finally:
        app.session.shutdown_sync(5.0)
