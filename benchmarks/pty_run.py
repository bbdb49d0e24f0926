"""Run a terminal program in a pseudo-terminal and measure it (CPU, RSS, time to a marker).

Used by the overhead and startup benchmarks for llmtop and for the peer (llamastat) alike, so both
are measured the same way: a real pty of a given size, output drained continuously, CPU time from
/proc via psutil (user + system, children included), RSS sampled every 100 ms.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time
from dataclasses import dataclass

import psutil

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[a-zA-Z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]|\x1b[=>]")


@dataclass
class PtyRun:
    cpu_percent_of_core: float
    peak_rss_bytes: int
    wall_s: float
    marker_s: float | None
    output_tail: str


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def run_in_pty(
    argv: list[str],
    seconds: float,
    *,
    cols: int = 160,
    rows: int = 48,
    marker: bytes | None = None,
    warmup_s: float = 0.0,
    env: dict[str, str] | None = None,
    stop_at_marker: bool = False,
) -> PtyRun:
    """Run argv in a pty for `seconds` (after `warmup_s`, which is not measured)."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.environ.update(env or {})
        os.environ.setdefault("TERM", "xterm-256color")
        os.execvp(argv[0], argv)
    _set_size(fd, cols, rows)
    start = time.perf_counter()
    proc = psutil.Process(pid)
    buf = bytearray()
    seen = bytearray()
    marker_s: float | None = None
    peak = 0
    cpu0: float | None = None
    t0 = start
    next_sample = start
    deadline = start + warmup_s + seconds
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline:
                break
            if cpu0 is None and now - start >= warmup_s:
                c = proc.cpu_times()
                cpu0 = c.user + c.system + c.children_user + c.children_system
                t0 = now
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    break
                if not data:
                    break
                buf.extend(data)
                del buf[:-20000]
                if marker is not None and marker_s is None:
                    seen.extend(_ANSI.sub(b"", data))
                    if marker in seen:
                        marker_s = time.perf_counter() - start
                        if stop_at_marker:
                            break
                    del seen[:-4096]
            if now >= next_sample:
                next_sample = now + 0.1
                try:
                    peak = max(peak, proc.memory_info().rss)
                except psutil.NoSuchProcess:
                    break
        end = time.perf_counter()
        try:
            c = proc.cpu_times()
            cpu1 = c.user + c.system + c.children_user + c.children_system
        except psutil.NoSuchProcess:
            cpu1 = cpu0 or 0.0
        if cpu0 is None:
            cpu0, t0 = 0.0, start
        wall = max(end - t0, 1e-9)
        cpu_pct = 100.0 * (cpu1 - cpu0) / wall
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            done, _status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            select.select([fd], [], [], 0.1)
            with contextlib.suppress(OSError):
                os.read(fd, 65536)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
    tail = _ANSI.sub(b"", bytes(buf[-4000:])).decode(errors="replace")
    return PtyRun(cpu_pct, peak, end - start, marker_s, tail)
