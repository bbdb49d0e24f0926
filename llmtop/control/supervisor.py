"""Child mode: run llama-server as llmtop's child, watch it, restart it like systemd would.

States: starting → loading (/health 503) → ready → stopping → stopped (a user stop) or exited (it
exited by itself) → restarting (waiting RestartSec, exponential backoff) → starting …; "failed"
when it keeps crashing (RestartPolicy.burst failures within burst_window_s) or when it fails
before ever becoming ready (unknown flag, missing model file, port taken): no restart storm, and
`status().last_error_lines` carries the server's own error lines.

The child runs in its own session/process group (argv list, never a shell); stop sends SIGTERM to
the group, then SIGKILL after `stop_timeout_s`; a `kill -9` of llmtop itself ends it too (the
kernel's parent-death signal, `sources/child_death`). stdout and stderr go line by line into a LogStore
(read in chunks, appended in batches). `shutdown_sync()` does the stop synchronously for signal
handlers and atexit.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from llmtop.model.launch_spec import LaunchSpec
from llmtop.snapshot import SupervisorStatus
from llmtop.sources.child_death import die_with_parent
from llmtop.sources.logs import KEEP_CHARS, LogStore, truncation_marker

# A line longer than this keeps its head and says how many bytes were cut (the rest is read and
# thrown away, never buffered): a 10 MB prompt dump or a binary flood costs no memory.
MAX_LINE_BYTES = KEEP_CHARS
_READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class RestartPolicy:
    """Like systemd's Restart=on-failure + RestartSec, with exponential backoff."""

    on_failure: bool = True
    restart_sec: float = 2.0
    max_restart_sec: float = 30.0
    burst: int = 5  # this many failures …
    burst_window_s: float = 60.0  # … within this window → "failed" (crash loop)
    stop_timeout_s: float = 10.0  # SIGTERM, then SIGKILL after this

    def delay_s(self, consecutive_failures: int) -> float:
        """Wait before restart number n (1-based) of a run of failures."""
        n = max(1, consecutive_failures)
        return min(self.restart_sec * (2 ** (n - 1)), max(self.max_restart_sec, self.restart_sec))


def describe_exit(returncode: int) -> str:
    """An exit status in words: "exit code 1", "killed by SIGKILL"."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _term(pgid: int) -> None:
    """SIGTERM, then SIGCONT (as systemd does): a stopped (SIGSTOP) server cannot act on the
    SIGTERM until it runs again, and would otherwise sit out the whole stop timeout."""
    _killpg(pgid, signal.SIGTERM)
    _killpg(pgid, signal.SIGCONT)


def _exited(pid: int) -> bool:
    """True once pid has exited (zombie or reaped); does not reap it (asyncio's watcher does)."""
    try:
        res = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # already reaped (or not our child): gone for us
    return res is not None


def _wait_exited(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    pause = threading.Event()
    while True:
        if _exited(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        pause.wait(0.005)


StatusCallback = Callable[[SupervisorStatus], None]


class ChildSupervisor:
    """Runs one llama-server child per `spec`; implements the Controller protocol."""

    mode = "child"

    def __init__(
        self,
        spec: LaunchSpec,
        log_store: LogStore,
        policy: RestartPolicy | None = None,
        *,
        health_interval_s: float = 0.25,
        health_timeout_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self.log_store = log_store
        self.policy = policy or RestartPolicy()
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.state = "stopped"
        self.pid: int | None = None
        self.on_change: list[StatusCallback] = []
        self.restarts = 0  # automatic restarts (like systemd's NRestarts)
        self.spawns = 0  # processes started, for tests and the curious
        self.last_exit: str | None = None
        self.last_error_lines: tuple[str, ...] = ()
        self._proc: asyncio.subprocess.Process | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop_requested = False
        self._wake: asyncio.Event | None = None
        self._spawned: asyncio.Event | None = None
        self._failures: deque[float] = deque()
        self._consecutive = 0
        self._ever_ready = False  # since the last start() by the user
        self._milestone = False  # "model loaded"/"listening" seen in this run's output
        self._next_restart_at: float | None = None
        self._atexit_registered = False

    # -- Controller API ------------------------------------------------------------------------

    def status(self) -> SupervisorStatus:
        nxt = None
        if self.state == "restarting" and self._next_restart_at is not None:
            nxt = max(0.0, self._next_restart_at - time.monotonic())
        return SupervisorStatus(
            mode="child",
            state=self.state,
            restarts=self.restarts,
            last_exit=self.last_exit,
            last_error_lines=self.last_error_lines,
            argv=tuple(self.spec.redacted()),
            next_restart_in_s=nxt,
            can_control=True,
            recent_failures=self.recent_failures(),
        )

    def recent_failures(self) -> int:
        """Failures within the policy's burst window (what the crash-loop rule counts); once it
        gave up ("failed"), the failures that made it give up, for as long as it stays so."""
        if self.state == "failed":
            return len(self._failures)
        now = time.monotonic()
        return sum(1 for at in self._failures if now - at <= self.policy.burst_window_s)

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._runner.done()

    async def start(self) -> None:
        """Start the child (no-op while running). Returns once it is spawned or has failed."""
        if self.running:
            return
        self._stop_requested = False
        self._ever_ready = False
        self._failures.clear()
        self._consecutive = 0
        self.last_error_lines = ()
        self._wake = asyncio.Event()
        self._spawned = asyncio.Event()
        if not self._atexit_registered:
            atexit.register(self.shutdown_sync)
            self._atexit_registered = True
        runner = asyncio.create_task(self._run(), name="llmtop-child-supervisor")
        self._runner = runner
        spawned = asyncio.create_task(self._spawned.wait())
        try:
            await asyncio.wait({runner, spawned}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            spawned.cancel()

    async def stop(self) -> None:
        """SIGTERM to the child's process group, SIGKILL after the policy's stop timeout."""
        self._stop_requested = True
        if self._wake is not None:
            self._wake.set()
        proc = self._proc
        if proc is not None and proc.returncode is None:
            self._set_state("stopping")
            await self._terminate(proc)
        runner = self._runner
        if runner is not None and not runner.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(runner)
        if self.state != "stopped":
            self._set_state("stopped")

    async def restart(self, spec: LaunchSpec | None = None) -> None:
        """Stop, then start again — with new arguments when spec is given."""
        await self.stop()
        if spec is not None:
            self.spec = spec
        await self.start()

    def shutdown_sync(self, timeout: float | None = None) -> None:
        """Stop the child without the event loop (signal handlers, atexit): no orphan left."""
        self._stop_requested = True
        pid = self.pid
        proc = self._proc
        if pid is None or (proc is not None and proc.returncode is not None):
            return
        limit = self.policy.stop_timeout_s if timeout is None else timeout
        self.state = "stopping"
        _term(pid)
        if not _wait_exited(pid, limit):
            _killpg(pid, signal.SIGKILL)
            _wait_exited(pid, 5.0)
        _killpg(pid, signal.SIGKILL)  # anything left in its process group
        self.state = "stopped"

    # -- internals -----------------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        if not self.on_change:
            return
        st = self.status()
        for cb in list(self.on_change):
            try:
                cb(st)
            except Exception as e:  # a broken callback must not kill supervision
                self.log_store.note("error", f"llmtop: on_change callback failed: {e!r}", "warning")

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        pgid = proc.pid
        _term(pgid)
        try:
            await asyncio.wait_for(proc.wait(), self.policy.stop_timeout_s)
        except TimeoutError:
            self.log_store.note(
                "stop_timeout",
                f"llama-server ignored SIGTERM for {self.policy.stop_timeout_s:g} s: SIGKILL",
                "warning",
            )
            _killpg(pgid, signal.SIGKILL)
            await proc.wait()
        _killpg(pgid, signal.SIGKILL)  # anything left in its process group

    async def _run(self) -> None:
        client = httpx.AsyncClient(trust_env=False, timeout=self.health_timeout_s)
        try:
            await self._loop(client)
        except Exception as e:
            msg = f"llmtop: supervisor error: {e!r}"
            self.log_store.note("error", msg, "critical")
            self.last_error_lines = (msg,)
            proc = self._proc
            if proc is not None and proc.returncode is None:
                await self._terminate(proc)
            self._set_state("failed")
        finally:
            await client.aclose()
            self._proc = None
            self.pid = None
            if self._spawned is not None:
                self._spawned.set()

    async def _loop(self, client: httpx.AsyncClient) -> None:
        while True:
            if self._stop_requested:
                self._set_state("stopped")
                return
            result = await self._run_once(client)
            if result is None:
                return  # could not spawn: state is "failed"
            rc, ready_for_s, first_seq = result
            if self._stop_requested:
                self._set_state("stopped")
                return
            if rc != 0:
                self.last_error_lines = tuple(self.log_store.tail_errors(5, since_seq=first_seq))
            if rc == 0 or not self.policy.on_failure:
                self._set_state("exited")
                return
            now = time.monotonic()
            if not self._ever_ready:
                self.log_store.note(
                    "start_failed",
                    f"llama-server failed before it was ready ({self.last_exit}): not restarting",
                    "critical",
                )
                self._set_state("failed")
                return
            self._failures.append(now)
            while self._failures and now - self._failures[0] > self.policy.burst_window_s:
                self._failures.popleft()
            if len(self._failures) >= self.policy.burst:
                self.log_store.note(
                    "crash_loop",
                    f"llama-server failed {len(self._failures)} times within "
                    f"{self.policy.burst_window_s:g} s: not restarting",
                    "critical",
                )
                self._set_state("failed")
                return
            if ready_for_s is not None and ready_for_s >= self.policy.burst_window_s:
                self._consecutive = 0  # it had been healthy for a while: backoff starts over
            self._consecutive += 1
            delay = self.policy.delay_s(self._consecutive)
            self._next_restart_at = now + delay
            self.log_store.note(
                "restarting", f"restarting llama-server in {delay:.1f} s", "warning"
            )
            self._set_state("restarting")
            assert self._wake is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._next_restart_at = None
            if self._stop_requested:
                self._set_state("stopped")
                return
            self.restarts += 1

    async def _run_once(self, client: httpx.AsyncClient) -> tuple[int, float | None, int] | None:
        """One child's life: spawn, watch health, wait for exit → (rc, ready_for_s, first_seq)."""
        spec = self.spec
        argv = list(spec.argv)
        first_seq = self.log_store.last_seq
        self._milestone = False
        self._set_state("starting")
        if not argv:
            self._spawn_failed("no llama-server command given")
            return None
        self.log_store.append(f"llmtop: starting {spec.command_line()}", "llmtop", level="info")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env=spec.child_env(),
                preexec_fn=die_with_parent(),  # no orphan when llmtop is killed (child_death)
            )
        except OSError as e:
            self._spawn_failed(f"cannot run {argv[0]}: {e.strerror or e}")
            return None
        self._proc = proc
        self.pid = proc.pid
        self.spawns += 1
        if self._spawned is not None:
            self._spawned.set()
        if self._stop_requested:  # stop() came while we were spawning: it found no process
            self._set_state("stopping")
            await self._terminate(proc)
        secret = spec.api_key
        self.log_store.redactor.add(secret)  # every line the store takes is redacted by value
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            asyncio.create_task(self._pump(proc.stdout, "stdout", secret)),
            asyncio.create_task(self._pump(proc.stderr, "stderr", secret)),
        ]
        waiter = asyncio.create_task(proc.wait())
        ready_at: float | None = None
        oks = 0
        try:
            while not waiter.done():
                if self.state in ("starting", "loading") and not self._stop_requested:
                    health = await self._probe_health(client, spec.url)
                    if health == "ok":
                        oks += 1
                        # The port may answer for another server: trust a 200 once this child
                        # said "model loaded"/"listening", or after two 200s while it lives.
                        trusted = self._milestone or oks >= 2
                        if trusted and not waiter.done() and not self._stop_requested:
                            ready_at = time.monotonic()
                            self._ever_ready = True
                            self._set_state("ready")
                    elif health == "loading":
                        oks = 0
                        if not self._stop_requested:
                            self._set_state("loading")
                    else:
                        oks = 0
                    await asyncio.wait({waiter}, timeout=self.health_interval_s)
                else:
                    await asyncio.wait({waiter})
        finally:
            if not waiter.done():  # cancelled: do not leave the child behind
                await self._terminate(proc)
            rc = await waiter
            # Whatever it left in its process group (helpers, router-mode children) goes too.
            _killpg(proc.pid, signal.SIGKILL)
            # Pipes close at exit (unless something inherited them): drain, but do not hang.
            _done, pending = await asyncio.wait(pumps, timeout=2.0)
            for t in pending:
                t.cancel()
            self._proc = None
            self.pid = None
        self.last_exit = describe_exit(rc)
        failure = rc != 0 and not self._stop_requested
        self.log_store.note(
            "exited",
            f"llama-server exited: {self.last_exit}",
            "critical" if failure else "info",
        )
        if not self._stop_requested:
            self._set_state("exited")  # then restarting, failed, or it stays exited
        ready_for_s = None if ready_at is None else time.monotonic() - ready_at
        return rc, ready_for_s, first_seq

    def _spawn_failed(self, msg: str) -> None:
        self.log_store.note("start_failed", msg, "critical")
        self.last_error_lines = (msg,)
        self.last_exit = None
        self._set_state("failed")
        return None

    async def _probe_health(self, client: httpx.AsyncClient, url: str) -> str:
        try:
            r = await client.get(url + "/health", timeout=self.health_timeout_s)
        except (httpx.HTTPError, OSError):
            return "down"
        if r.status_code == 200:
            return "ok"
        if r.status_code == 503:
            return "loading"
        return "other"

    async def _pump(self, stream: asyncio.StreamReader, name: str, secret: str | None) -> None:
        """Read a pipe in chunks; append whole lines in batches; never let a key through.

        Memory stays bounded whatever the child writes: a line keeps at most MAX_LINE_BYTES
        and counts the bytes past that (shown as "… [truncated N bytes]")."""
        buf = bytearray()  # the unfinished line, at most MAX_LINE_BYTES
        dropped = 0  # bytes of that line thrown away
        while True:
            chunk = await stream.read(_READ_CHUNK)
            if not chunk:
                break
            parts = chunk.split(b"\n")
            tail = parts.pop()  # after the last newline (b"" when the chunk ended with one)
            lines: list[tuple[bytes, int]] = []
            for i, part in enumerate(parts):
                if i == 0 and (buf or dropped):  # ends the line carried over
                    room = MAX_LINE_BYTES - len(buf)
                    buf += part[:room]
                    lines.append((bytes(buf), dropped + max(0, len(part) - room)))
                    buf.clear()
                    dropped = 0
                elif len(part) > MAX_LINE_BYTES:
                    lines.append((part[:MAX_LINE_BYTES], len(part) - MAX_LINE_BYTES))
                else:
                    lines.append((part, 0))
            room = MAX_LINE_BYTES - len(buf)
            buf += tail[:room]
            dropped += max(0, len(tail) - room)
            if lines:
                self._add_lines(lines, name, secret)
        if buf or dropped:
            self._add_lines([(bytes(buf), dropped)], name, secret)

    def _add_lines(self, parts: list[tuple[bytes, int]], name: str, secret: str | None) -> None:
        """(head, bytes cut) pairs → LogStore lines; invalid UTF-8 becomes U+FFFD."""
        texts = [
            p.decode("utf-8", "replace").rstrip("\r") + (truncation_marker(cut) if cut else "")
            for p, cut in parts
        ]
        if secret:
            texts = [t.replace(secret, "***") if secret in t else t for t in texts]
        events = self.log_store.extend((t, name) for t in texts)
        if events and any(ev.kind in ("model_loaded", "listening") for ev in events):
            self._milestone = True
