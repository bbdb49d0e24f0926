"""ChildSupervisor against the real llama-server: start, crash, restart, fail, stop, no orphans.

One test (SIGTERM ignored) runs a small Python script as the "server": a real llama-server exits
cleanly on SIGTERM, so it cannot show the SIGKILL-after-timeout path.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import shutil
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import psutil
import pytest

from llmtop.control.supervisor import ChildSupervisor, RestartPolicy, describe_exit
from llmtop.model.launch_spec import LaunchSpec
from llmtop.snapshot import SupervisorStatus
from llmtop.sources.logs import LogStore
from tests.realserver import RunningServer, free_port, server_argv

pytestmark = pytest.mark.real_server

READY_TIMEOUT = 60.0  # generous: 2 shared cores


def gone(pid: int) -> bool:
    """True when pid no longer runs (exited; a zombie awaiting its reaper counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_for(
    cond: Callable[[], bool], timeout: float = READY_TIMEOUT, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or cond}")
        await asyncio.sleep(0.02)


def server_spec(binary: Path, model: Path, *extra: str, port: int | None = None) -> LaunchSpec:
    return LaunchSpec.from_argv(server_argv(binary, model, port or free_port(), *extra))


Make = Callable[..., ChildSupervisor]


@pytest.fixture
async def supervise() -> AsyncIterator[Make]:
    """Build supervisors that are stopped at teardown, even when the test fails."""
    made: list[ChildSupervisor] = []

    def make(spec: LaunchSpec, policy: RestartPolicy | None = None) -> ChildSupervisor:
        sup = ChildSupervisor(spec, LogStore(), policy or RestartPolicy(restart_sec=0.1))
        made.append(sup)
        return sup

    yield make
    for sup in made:
        try:
            await asyncio.wait_for(sup.stop(), 30)
        finally:
            sup.shutdown_sync(5)


async def test_start_reaches_ready_with_logs_and_stops_cleanly(
    llama_server_bin: Path, tiny_model: Path, supervise: Make
) -> None:
    spec = server_spec(llama_server_bin, tiny_model, "--api-key", "sk-test-secret")
    sup = supervise(spec)
    seen: list[SupervisorStatus] = []
    sup.on_change.append(seen.append)

    await sup.start()
    assert sup.pid is not None
    pid = sup.pid
    await wait_for(lambda: sup.state == "ready", what="ready")
    states = [s.state for s in seen]
    assert states[0] == "starting"
    assert states[-1] == "ready"
    assert set(states) <= {"starting", "loading", "ready"}
    assert psutil.Process(pid).is_running()
    assert os.getpgid(pid) == pid  # its own process group

    kinds = lambda: {e.kind for e in sup.log_store.events()}  # noqa: E731
    await wait_for(lambda: {"loading_model", "model_loaded", "listening"} <= kinds(), 10, "events")
    lines = sup.log_store.lines()
    assert {ln.stream for ln in lines} & {"stdout", "stderr"}
    assert any("model loaded" in ln.text for ln in lines)

    st = sup.status()
    assert (st.mode, st.state, st.can_control, st.restarts) == ("child", "ready", True, 0)
    assert "***" in st.argv
    assert "sk-test-secret" not in " ".join(st.argv)
    assert not any("sk-test-secret" in ln.text for ln in sup.log_store.lines())
    started = [ln.text for ln in sup.log_store.lines() if ln.stream == "llmtop"]
    assert started[0].startswith("llmtop: starting ") and "--api-key ***" in started[0]

    await sup.stop()
    assert sup.state == "stopped"
    assert sup.status().last_exit == "exit code 0"  # llama-server exits cleanly on SIGTERM
    assert sup.pid is None
    await wait_for(lambda: gone(pid), 10, "child gone")
    assert [s.state for s in seen][-2:] == ["stopping", "stopped"]
    assert sup.spawns == 1  # a stop is not a failure: no restart


async def test_sigkill_restarts_with_backoff_and_comes_back(
    llama_server_bin: Path, tiny_model: Path, supervise: Make
) -> None:
    sup = supervise(
        server_spec(llama_server_bin, tiny_model),
        RestartPolicy(restart_sec=0.3, max_restart_sec=5.0),
    )
    seen: list[SupervisorStatus] = []
    sup.on_change.append(seen.append)
    await sup.start()
    await wait_for(lambda: sup.state == "ready", what="ready")

    for round_no, delay in ((1, "0.3 s"), (2, "0.6 s")):
        old = sup.pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        await wait_for(lambda: sup.restarts == round_no, 30, "restart")  # noqa: B023
        await wait_for(lambda: sup.state == "ready", what="ready again")
        assert sup.pid not in (None, old)
        assert gone(old)
        restarting = [e for e in sup.log_store.events() if e.kind == "restarting"]
        assert delay in restarting[-1].message  # exponential backoff: 0.3 s, then 0.6 s

    states = [s.state for s in seen]
    assert states.count("exited") == 2
    assert states[states.index("exited") + 1] == "restarting"
    waiting = [s for s in seen if s.state == "restarting"]
    assert len(waiting) == 2
    assert all(s.next_restart_in_s is not None and s.next_restart_in_s > 0 for s in waiting)
    st = sup.status()
    assert (st.state, st.restarts, st.last_exit) == ("ready", 2, "killed by SIGKILL")
    exits = [e for e in sup.log_store.events() if e.kind == "exited"]
    assert exits[-1].message == "llama-server exited: killed by SIGKILL"
    assert sup.spawns == 3


@pytest.mark.parametrize(
    ("extra", "model_name", "expect"),
    [
        (("--no-such-flag",), None, "--no-such-flag"),
        ((), "missing-model.gguf", "missing-model.gguf"),
    ],
    ids=["unknown-flag", "missing-model"],
)
async def test_argv_that_fails_at_once_is_failed_without_restart_storm(
    llama_server_bin: Path,
    tiny_model: Path,
    tmp_path: Path,
    supervise: Make,
    extra: tuple[str, ...],
    model_name: str | None,
    expect: str,
) -> None:
    model = tmp_path / model_name if model_name else tiny_model
    sup = supervise(server_spec(llama_server_bin, model, *extra), RestartPolicy(restart_sec=0.01))
    await sup.start()
    await wait_for(lambda: sup.state == "failed", 30, "failed")
    await asyncio.sleep(0.5)  # would a restart storm start? (spawn count below)
    st = sup.status()
    assert st.state == "failed"
    assert sup.spawns == 1
    assert st.restarts == 0
    assert st.last_exit == "exit code 1"
    assert any(expect in line for line in st.last_error_lines), st.last_error_lines
    assert any(e.kind == "start_failed" for e in sup.log_store.events())


async def test_port_taken_by_another_server_is_failed_not_ready(
    llama_server_bin: Path,
    tiny_model: Path,
    server_factory: Callable[..., RunningServer],
    supervise: Make,
) -> None:
    other = server_factory()  # a healthy server already answers /health on this port
    sup = supervise(server_spec(llama_server_bin, tiny_model, port=other.port))
    seen: list[str] = []
    sup.on_change.append(lambda st: seen.append(st.state))
    await sup.start()
    await wait_for(lambda: sup.state == "failed", 30, "failed")
    assert "ready" not in seen
    assert sup.spawns == 1
    assert any("bind" in line for line in sup.status().last_error_lines)
    assert any(e.kind == "bind_failed" for e in sup.log_store.events())


async def test_crash_loop_stops_retrying(
    llama_server_bin: Path, tiny_model: Path, tmp_path: Path, supervise: Make
) -> None:
    model = tmp_path / "vanishing.gguf"
    shutil.copy(tiny_model, model)
    policy = RestartPolicy(restart_sec=0.02, max_restart_sec=0.1, burst=3, burst_window_s=60)
    sup = supervise(server_spec(llama_server_bin, model), policy)
    await sup.start()
    await wait_for(lambda: sup.state == "ready", what="ready")
    model.unlink()  # every restart now fails while loading
    assert sup.pid is not None
    os.kill(sup.pid, signal.SIGKILL)
    await wait_for(lambda: sup.state == "failed", 60, "failed")
    await asyncio.sleep(0.3)
    assert sup.spawns == 3  # the first run + 2 restarts = 3 failures within the window
    st = sup.status()
    assert (st.state, st.restarts) == ("failed", 2)
    assert any("vanishing.gguf" in line for line in st.last_error_lines), st.last_error_lines
    loop_events = [e for e in sup.log_store.events() if e.kind == "crash_loop"]
    assert len(loop_events) == 1 and loop_events[0].severity == "critical"
    assert "3 times" in loop_events[0].message

    shutil.copy(tiny_model, model)  # the operator fixes it and presses start
    await sup.start()
    await wait_for(lambda: sup.state == "ready", what="ready after fix")


async def test_restart_applies_new_arguments(
    llama_server_bin: Path, tiny_model: Path, supervise: Make
) -> None:
    sup = supervise(server_spec(llama_server_bin, tiny_model))
    await sup.start()
    await wait_for(lambda: sup.state == "ready", what="ready")
    old = sup.pid
    new_spec = sup.spec.with_option("ctx_size", 256).with_option("metrics", True)
    await sup.restart(new_spec)
    await wait_for(lambda: sup.state == "ready", what="ready after restart")
    assert sup.pid != old and old is not None and gone(old)
    assert sup.spec.ctx_size == 256
    assert "256" in sup.status().argv and "--metrics" in sup.status().argv
    assert sup.restarts == 0  # a user restart is not a failure restart


SIGTERM_IGNORING_SERVER = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(f"grandchild {child.pid}", flush=True)
print("ignoring SIGTERM", file=sys.stderr, flush=True)
time.sleep(600)
"""


async def test_child_ignoring_sigterm_gets_sigkill_and_its_group_goes_too(
    tmp_path: Path, supervise: Make
) -> None:
    # A Python script stands in for llama-server here (see module docstring).
    port = str(free_port())  # nothing listens there: health stays "starting"
    spec = LaunchSpec.from_argv([sys.executable, "-c", SIGTERM_IGNORING_SERVER, "--port", port])
    sup = supervise(spec, RestartPolicy(stop_timeout_s=1.0))
    await sup.start()
    pid = sup.pid
    assert pid is not None
    out: dict[str, str] = {}

    def both_lines() -> bool:
        out.update((ln.stream, ln.text) for ln in sup.log_store.lines())
        return "stdout" in out and "stderr" in out

    await wait_for(both_lines, 30, "the script's two lines")
    grandchild = int(out["stdout"].split()[1])
    assert out["stderr"] == "ignoring SIGTERM"

    await sup.stop()
    assert sup.state == "stopped"
    assert sup.status().last_exit == describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert any(e.kind == "stop_timeout" for e in sup.log_store.events())
    await wait_for(lambda: gone(pid) and gone(grandchild), 10, "no orphans")


async def test_shutdown_sync_leaves_no_orphan(
    llama_server_bin: Path, tiny_model: Path, supervise: Make
) -> None:
    sup = supervise(server_spec(llama_server_bin, tiny_model))
    await sup.start()
    await wait_for(lambda: sup.state == "ready", what="ready")
    pid = sup.pid
    assert pid is not None
    sup.shutdown_sync(timeout=10)  # as a signal handler or atexit would
    assert gone(pid)
    await wait_for(lambda: sup.state == "stopped" and not sup.running, 10, "loop noticed")
    assert sup.spawns == 1  # no restart after a shutdown
    assert sup.status().last_exit == "exit code 0"


async def test_missing_binary_is_failed_in_words(tmp_path: Path, supervise: Make) -> None:
    sup = supervise(LaunchSpec.from_argv([str(tmp_path / "no-llama-server"), "-m", "x.gguf"]))
    await sup.start()
    assert sup.state == "failed"
    assert sup.spawns == 0
    assert "No such file" in sup.status().last_error_lines[0]


def _drain(fd: int) -> None:
    """Read the TUI's terminal output so it never blocks on a full pty."""
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_llmtop_child_mode_stops_its_child_on_signal(
    sig: signal.Signals, llama_server_bin: Path, tiny_model: Path
) -> None:
    """`python -m llmtop -- llama-server …` in a terminal; a signal to llmtop leaves no orphan."""
    port = free_port()
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    argv = [sys.executable, "-m", "llmtop", "--", *server_spec(llama_server_bin, tiny_model,
            port=port).argv]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env={**os.environ, "TERM": "xterm-256color"},
        cwd=Path(__file__).resolve().parent.parent,
    )
    os.close(slave)
    threading.Thread(target=_drain, args=(master,), daemon=True).start()
    child_pid: int | None = None
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while child_pid is None:
            assert proc.poll() is None, f"llmtop exited early: {proc.returncode}"
            assert time.monotonic() < deadline, "llmtop did not start llama-server"
            kids = psutil.Process(proc.pid).children()
            child_pid = next((k.pid for k in kids if "llama-server" in k.name()), None)
            time.sleep(0.05)
        while True:  # the child is up and serving before llmtop is told to go
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "llama-server never became healthy"
            time.sleep(0.05)
        os.kill(proc.pid, sig)
        proc.wait(60)
        deadline = time.monotonic() + 10
        while not gone(child_pid):
            assert time.monotonic() < deadline, "llama-server outlived llmtop"
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if child_pid is not None and not gone(child_pid):
            os.killpg(child_pid, signal.SIGKILL)
        os.close(master)


async def test_stop_right_after_start_leaves_nothing_running(
    llama_server_bin: Path, tiny_model: Path, supervise: Make
) -> None:
    sup = supervise(server_spec(llama_server_bin, tiny_model))
    start = asyncio.create_task(sup.start())
    await asyncio.sleep(0)  # the spawn is under way
    await asyncio.wait_for(sup.stop(), 30)
    await start
    assert sup.state == "stopped"
    assert sup.pid is None and not sup.running
    assert sup.spawns in (0, 1)
    assert not [p for p in psutil.Process().children() if "llama-server" in p.name()]


@pytest.mark.parametrize(
    ("on_failure", "sig", "last_exit"),
    [
        (True, signal.SIGTERM, "exit code 0"),  # a clean exit is not a failure: no restart
        (False, signal.SIGKILL, "killed by SIGKILL"),  # --no-restart
    ],
    ids=["clean-exit", "no-restart-policy"],
)
async def test_exits_that_are_not_restarted(
    llama_server_bin: Path,
    tiny_model: Path,
    supervise: Make,
    on_failure: bool,
    sig: signal.Signals,
    last_exit: str,
) -> None:
    sup = supervise(
        server_spec(llama_server_bin, tiny_model),
        RestartPolicy(on_failure=on_failure, restart_sec=0.01),
    )
    await sup.start()
    await wait_for(lambda: sup.state == "ready", what="ready")
    assert sup.pid is not None
    os.kill(sup.pid, sig)  # from outside llmtop
    await wait_for(lambda: not sup.running, 30, "supervision to end")
    await asyncio.sleep(0.2)
    st = sup.status()
    assert (st.state, st.last_exit, st.restarts) == ("exited", last_exit, 0)
    assert sup.spawns == 1


async def test_output_is_split_into_lines_whatever_the_chunking() -> None:
    """The pipe reader: lines cut across reads, CRLF, no final newline, a key to hide."""
    sup = ChildSupervisor(LaunchSpec.from_argv(["llama-server"]), LogStore())
    reader = asyncio.StreamReader()
    payload = b"".join(f"line {i} with sk-hidden\r\n".encode() for i in range(5000))
    payload += b"bad \xff byte\n" + b"tail"
    for i in range(0, len(payload), 777):  # chunks that cut lines anywhere
        reader.feed_data(payload[i : i + 777])
    reader.feed_eof()
    await sup._pump(reader, "stderr", "sk-hidden")
    lines = sup.log_store.lines()
    assert sup.log_store.total_written == 5002
    assert lines[0].text == "line 0 with ***"
    assert lines[4999].text == "line 4999 with ***"
    assert lines[-2].text == "bad \ufffd byte"  # undecodable bytes do not stop the reader
    assert lines[-1].text == "tail"
    assert {ln.stream for ln in lines} == {"stderr"}
