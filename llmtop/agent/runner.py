"""The agent's loop: the dashboard's session and collector, one snapshot per interval, no UI.

There is no second sampler: the runner calls `Session.collect()` — the same `Collector`, alert
engine, GPU monitor and log followers the dashboard runs — and hands each `Snapshot` to every
sink. The GPUs are read on the runner's own tick (`sample_once` just before the collect), so a
recorded sample's GPU fields belong to its time stamp: a throttle span recorded at 1 s starts
and ends within one interval of the real change, not one interval plus the GPU thread's phase.

Ticks run on a fixed schedule (start + n·interval); a tick that overruns skips the missed slots
instead of queueing them (latest value wins). A failing sink is logged and the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmtop.agent.sinks import ProbeSink, SnapshotSink

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.session import Session
    from llmtop.snapshot import Snapshot
    from llmtop.sources.probe import ProbeRequest

log = logging.getLogger(__name__)

# The probe the agent fires with --probe-every: short, deterministic, little load.
DEFAULT_PROBE_PROMPT = "Write one short sentence about the weather."
DEFAULT_PROBE_TOKENS = 32


@dataclass
class AgentRunner:
    """Collects a snapshot every `interval_s` and gives it to `sinks`, until `stop()`."""

    session: Session
    sinks: list[SnapshotSink]
    interval_s: float = 1.0
    probe_every_s: float | None = None  # None: no probes (a probe is load on the server)
    # Called after each tick with its snapshot (the service's watchdog ping and READY=1).
    on_tick: list[Callable[[Snapshot], None]] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    ticks: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _probe_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _last_probe_at: float = field(default=float("-inf"), repr=False)

    def stop(self) -> None:
        """Ask the loop to end after the tick in flight (safe from a signal handler)."""
        self._stop.set()

    async def run(self, max_ticks: int | None = None) -> None:
        """Start the session, tick until stopped (or *max_ticks*), then close sinks and session."""
        await self.session.start()
        start = self.clock()
        try:
            while not self._stop.is_set():
                await self.tick()
                if max_ticks is not None and self.ticks >= max_ticks:
                    break
                # the next slot on the fixed schedule; slots an overrun missed are skipped
                elapsed = self.clock() - start
                next_slot = (math.floor(elapsed / self.interval_s) + 1) * self.interval_s
                delay = max(0.0, next_slot - elapsed)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        finally:
            await self.close()

    async def tick(self) -> Snapshot | None:
        """One sample: read the GPUs, collect, hand the snapshot to every sink."""
        gpu = self.session.gpu_monitor
        if gpu is not None:
            try:
                await asyncio.to_thread(gpu.sample_once)
            except Exception:  # noqa: BLE001 - the snapshot carries the GPU note instead
                log.exception("GPU sample failed")
        snap = await self.session.collect()
        if snap is None:
            return None
        self.ticks += 1
        for sink in self.sinks:
            try:
                sink.on_snapshot(snap)
            except Exception:  # noqa: BLE001 - one broken sink must not stop the others
                log.exception("sink %s failed", type(sink).__name__)
        for hook in self.on_tick:
            try:
                hook(snap)
            except Exception:  # noqa: BLE001
                log.exception("tick hook failed")
        self._maybe_probe()
        return snap

    # ------------------------------------------------------------------ probes
    def _maybe_probe(self) -> None:
        if self.probe_every_s is None or self.session.url is None:
            return
        if self._probe_task is not None and not self._probe_task.done():
            return  # one probe at a time: a slow server is not probed harder
        now = self.clock()
        if now - self._last_probe_at < self.probe_every_s:
            return
        self._last_probe_at = now
        self._probe_task = asyncio.ensure_future(self._probe())

    async def _probe(self) -> None:
        from llmtop.sources.probe import ProbeRequest

        request: ProbeRequest = ProbeRequest(DEFAULT_PROBE_PROMPT, DEFAULT_PROBE_TOKENS, 0.0)
        try:
            result = await self.session.probe(request)
        except Exception as exc:  # noqa: BLE001 - a failed probe is a recorded result too
            log.warning("probe failed: %s", exc)
            return
        for sink in self.sinks:
            if isinstance(sink, ProbeSink):
                try:
                    sink.on_probe(result)
                except Exception:  # noqa: BLE001
                    log.exception("probe sink %s failed", type(sink).__name__)

    async def close(self) -> None:
        if self._probe_task is not None and not self._probe_task.done():
            self._probe_task.cancel()
            with contextlib.suppress(BaseException):  # cancelled on the way out
                await self._probe_task
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # noqa: BLE001
                log.exception("closing sink %s failed", type(sink).__name__)
        await self.session.close()
