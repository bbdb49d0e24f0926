"""Host and server-process statistics from psutil (blocking: call from a thread).

`ProcessSampler` keeps one `psutil.Process` per pid so `cpu_percent()` measures the interval
between two calls (a fresh Process object would always say 0.0 the first time). It also reads
the process state (`ProcessStats.status`: "stopped" after SIGSTOP, "zombie" …): a server that
does not answer is hung, stopped or gone, and only the state tells which.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit

import psutil

from llmtop.snapshot import HostStats, ProcessStats

REUSE_CHECK_S = 5.0  # how often a watched pid is checked for reuse by another process


class ProcessSampler:
    """Host CPU/RAM/load plus one process's CPU, RSS, threads and uptime."""

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}
        self._checked_at: dict[int, float] = {}
        psutil.cpu_percent(None)  # prime the system-wide counter

    def process(self, pid: int) -> ProcessStats | None:
        """Stats of `pid`, or None when it is gone or not ours to read."""
        proc = self._procs.get(pid)
        now = time.monotonic()
        try:
            # A gone process fails the reads below; a reused pid (another process with the
            # same number) is caught by is_running(), every few seconds: each /proc open costs
            # ~0.1 ms here and the idle dashboard reads this every second.
            if proc is not None and now - self._checked_at.get(pid, now) >= REUSE_CHECK_S:
                self._checked_at[pid] = now
                if not proc.is_running():
                    proc = None
            if proc is None:
                proc = psutil.Process(pid)
                self._procs[pid] = proc
                self._checked_at[pid] = now
                proc.cpu_percent(None)  # first call primes; the next one measures
            with proc.oneshot():
                cpu = proc.cpu_percent(None)
                mem = proc.memory_info()
                threads = proc.num_threads()
                created = proc.create_time()
                status = proc.status()  # same /proc/PID/stat read as the rest (oneshot)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self._procs.pop(pid, None)
            self._checked_at.pop(pid, None)
            return None
        except psutil.AccessDenied:
            return ProcessStats(pid=pid)
        # forget other processes (the server's pid changed: a restart)
        for other in [p for p in self._procs if p != pid]:
            del self._procs[other]
            self._checked_at.pop(other, None)
        return ProcessStats(
            pid=pid,
            cpu_percent=cpu,
            rss_bytes=int(mem.rss),
            threads=threads,
            uptime_s=max(0.0, time.time() - created),
            create_time=created,
            status=str(status),
        )

    def host(self, pid: int | None = None) -> HostStats:
        vm = psutil.virtual_memory()
        try:
            load = os.getloadavg()
        except OSError:
            load = None
        return HostStats(
            cpu_percent=psutil.cpu_percent(None),
            memory_used_bytes=int(vm.total - vm.available),
            memory_total_bytes=int(vm.total),
            load_avg=(load[0], load[1], load[2]) if load else None,
            process=self.process(pid) if pid is not None else None,
        )


def pid_listening_on(url: str) -> int | None:
    """The pid of the local process listening on the url's port (None if unknown or remote)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if host not in ("127.0.0.1", "localhost", "::1", "0.0.0.0", "") and not _is_local(host):
        return None
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, OSError):
        conns = []
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return int(c.pid)
    # net_connections needs privileges on some systems: fall back to our own children's view
    for proc in psutil.process_iter(["pid"]):
        try:
            for c in proc.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
                    return int(proc.pid)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess, OSError):
            continue
    return None


def _is_local(host: str) -> bool:
    try:
        addrs = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    except OSError:
        return False
    return host in addrs
