"""`llmtop -- llama-server …` in a real pseudo-terminal: q, SIGTERM and SIGHUP stop the child
cleanly (no orphan) and restore the terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.realserver import free_port, server_argv

pytestmark = pytest.mark.real_server

ROOT = Path(__file__).resolve().parents[1]


class PtyRun:
    """llmtop on a pty; everything it writes is collected by a reader thread."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = os.openpty()
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30"}
        env.pop("LLMTOP_API_KEY", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llmtop", *argv],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.output += data

    def child_pids(self) -> list[int]:
        try:
            kids = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [k.pid for k in kids if "llama-server" in (k.name() or "")]

    def close(self) -> None:
        for pid in self.child_pids():
            os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)
        self._reader.join(5)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("how", ["q", "SIGTERM", "SIGHUP"])
def test_quit_stops_the_child_and_restores_the_terminal(
    how: str, llama_server_bin: Path, tiny_model: Path
) -> None:
    port = free_port()
    run = PtyRun(["--", *server_argv(llama_server_bin, tiny_model, port)])
    try:
        deadline = time.monotonic() + 60
        while not run.child_pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        children = run.child_pids()
        assert children, "llmtop did not start llama-server"
        while b"ready" not in run.output and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b"ready" in run.output, "the dashboard never showed the server ready"
        if how == "q":
            os.write(run.master, b"q")
        else:
            run.proc.send_signal(getattr(signal, how))
        rc = run.proc.wait(30)
        assert rc == 0
        assert all(_gone(pid) for pid in children), "llama-server outlived llmtop"
        assert b"\x1b[?1049l" in run.output  # left the alternate screen: terminal restored
    finally:
        run.close()
