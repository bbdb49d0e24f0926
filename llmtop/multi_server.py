"""Several servers in one dashboard: one collector per server, still one Snapshot per tick.

A box often runs several llama-servers (a chat model and an embedding model). `llmtop --url A
--url B`, `--unit X --unit Y` or discovery of several watch them all at once. Each server keeps
its own `Collector` — its HTTP poller (one kept-alive connection), its process, its unit — and
all of them are polled side by side each tick. The host and the GPUs are read once per tick,
not once per server: the first server's collector samples the host (the others read only their
process), and the focused server's collector holds the GPU monitor and the alert rules. So the
Snapshot that comes out is the focused server's, exactly as with one server (every consumer
keeps working), plus `servers` (every server's status, for the server bar) and each GPU's memory
attributed to each server (`GpuSample.server_memory_by_url`, by PID in NVML's process list).

Changing the focus moves the GPU monitor and the alert rules to the other server's collector;
every server keeps being polled (in the dashboard, those without the focus for their server bar
line only: no /slots). A server that answers slowly never holds the others up: the
tick waits for the focused server as before, for the others at most SLOW_SERVER_WAIT_S more,
and shows the last answer of one still polling.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence

from llmtop.collector import Collector, GpuReadings
from llmtop.snapshot import GpuSample, HostStats, ServerMemory, ServerStatus, Snapshot
from llmtop.sources.process import ProcessSampler

log = logging.getLogger(__name__)

# How long a tick waits for the other servers once the focused one has answered.
SLOW_SERVER_WAIT_S = 0.5


class ProcessOnlySampler(ProcessSampler):
    """A server's process only: host CPU, RAM and load are read once per tick, by the first
    server's collector, not once per server."""

    def host(self, pid: int | None = None) -> HostStats:
        return HostStats(process=self.process(pid) if pid is not None else None)


class MultiCollector:
    """Several collectors, one Snapshot per tick: the focused server's, with every server's
    status in `servers` and the GPUs' memory attributed to each server.

    Built from one collector per server; the first one samples the host (give the others a
    `ProcessOnlySampler`), the focused one holds the GPU monitor and the alert engine."""

    def __init__(
        self, collectors: Sequence[Collector], focus: int = 0, *, lean_background: bool = False
    ) -> None:
        if not collectors:
            raise ValueError("MultiCollector needs at least one collector")
        self.collectors = list(collectors)
        self.focus_index = focus % len(self.collectors)
        # the dashboard: servers without the focus are polled for their bar line only
        # (LlamaClient.background); `snapshot --all` wants every server's whole snapshot
        self.lean_background = lean_background
        self._mark_background()
        self.last: Snapshot | None = None
        self._last_each: list[Snapshot | None] = [None] * len(self.collectors)
        self._tick: list[Snapshot] = []  # every server's snapshot of the last tick
        self._tick_focus = self.focus_index
        self._inflight: asyncio.Task[Snapshot] | None = None
        self._polling: set[asyncio.Future[Snapshot]] = set()

    @property
    def focused(self) -> Collector:
        return self.collectors[self.focus_index]

    @property
    def url(self) -> str:
        return self.focused.url

    @property
    def gpu_monitor(self) -> GpuReadings | None:
        """The one GPU monitor (held by the focused server's collector)."""
        return self.focused.gpu_monitor

    def focus(self, index: int) -> int:
        """Make server *index* (modulo the count) the focused one: the GPU monitor and the alert
        rules move to its collector, so GPU and alert fields follow it from the next tick."""
        index %= len(self.collectors)
        old, new = self.focused, self.collectors[index]
        if new is not old:  # swapped: a server's own alert rules (snapshot --all) stay its own
            new.gpu_monitor, old.gpu_monitor = old.gpu_monitor, new.gpu_monitor
            new.alert_engine, old.alert_engine = old.alert_engine, new.alert_engine
        self.focus_index = index
        self._mark_background()
        return index

    def _mark_background(self) -> None:
        for i, collector in enumerate(self.collectors):
            collector.client.background = self.lean_background and i != self.focus_index

    async def collect(self) -> Snapshot:
        """One tick. Overlapping calls share the tick in flight (latest value wins, no queue)."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._collect())
        return await asyncio.shield(self._inflight)

    async def _collect(self) -> Snapshot:
        focus = self.focus_index
        polls = [asyncio.ensure_future(c.collect()) for c in self.collectors]
        for poll in polls:  # a poll outliving this tick is joined by the next one
            self._polling.add(poll)
            poll.add_done_callback(self._poll_done)
        await asyncio.wait({polls[focus]})
        others = [p for i, p in enumerate(polls) if i != focus and not p.done()]
        if others:
            await asyncio.wait(others, timeout=SLOW_SERVER_WAIT_S)
        snaps = [self._result(i, poll) for i, poll in enumerate(polls)]
        merged = merge(snaps, focus)
        self._tick, self._tick_focus, self.last = snaps, focus, merged
        return merged

    def _poll_done(self, poll: asyncio.Future[Snapshot]) -> None:
        self._polling.discard(poll)
        if not poll.cancelled() and poll.exception() is not None:  # retrieved, never lost
            log.debug("a server's poll failed: %s", poll.exception())

    def _result(self, index: int, poll: asyncio.Future[Snapshot]) -> Snapshot:
        """Server *index*'s snapshot of this tick, else its last one (still polling), else a
        placeholder that says so. The focused server's failure is raised, as with one server."""
        url = self.collectors[index].url
        if poll.done() and not poll.cancelled():
            exc = poll.exception()
            if exc is None:
                snap = self._last_each[index] = poll.result()
                return snap
            if index == self.focus_index:
                raise exc
            log.warning("collecting %s failed: %s", url, exc, exc_info=exc)
            return Snapshot(
                time=time.time(),
                server=ServerStatus(url=url, health="error", detail=f"internal error: {exc}"),
            )
        if poll.cancelled() and index == self.focus_index:
            raise asyncio.CancelledError
        last = self._last_each[index]
        if last is not None:
            return last
        detail = "no answer yet (still polling)"
        return Snapshot(time=time.time(), server=ServerStatus(url=url, detail=detail))

    def each(self) -> tuple[Snapshot, ...]:
        """Every server's complete snapshot of the last tick (`llmtop snapshot --json --all`):
        the host and GPU readings shared, each GPU's `server_memory_bytes` that server's share,
        the process and alerts its own (the alert rules run for the focused server only)."""
        merged = self.last
        if merged is None:
            return ()
        out: list[Snapshot] = []
        for i, snap in enumerate(self._tick):
            if i == self._tick_focus:
                out.append(dataclasses.replace(merged, servers=()))
                continue
            url = snap.server.url
            out.append(
                dataclasses.replace(
                    snap,
                    host=dataclasses.replace(merged.host, process=snap.host.process),
                    gpus=tuple(_as_servers(g, url) for g in merged.gpus),
                    gpu_note=merged.gpu_note,
                )
            )
        return tuple(out)

    async def aclose(self) -> None:
        for poll in list(self._polling):
            poll.cancel()
        for collector in self.collectors:
            try:
                await collector.aclose()
            except Exception:  # noqa: BLE001 - closing: go on with the others
                log.exception("closing the client of %s failed", collector.url)


def merge(snaps: Sequence[Snapshot], focus: int) -> Snapshot:
    """The tick's snapshot: the focused server's, with the host read by the first server's
    collector, every server's status and the GPUs' memory attributed to each server."""
    base = snaps[focus]
    host = base.host
    if focus != 0:
        host = dataclasses.replace(snaps[0].host, process=base.host.process)
    servers = tuple(s.server for s in snaps)
    return dataclasses.replace(
        base, host=host, servers=servers, gpus=attribute_gpu_memory(base.gpus, servers, focus)
    )


def attribute_gpu_memory(
    gpus: Sequence[GpuSample], servers: Sequence[ServerStatus], focus: int
) -> tuple[GpuSample, ...]:
    """Each GPU with the memory each server holds on it (`server_memory_by_url`, servers
    holding some only). The focused server's share is the GPU monitor's own figure (its process
    and children); another server's is its PID's line in NVML's process list (a router's: its
    models' child processes' too)."""
    out: list[GpuSample] = []
    for g in gpus:
        shares: list[ServerMemory] = []
        for i, server in enumerate(servers):
            used = _share(g, server, i == focus)
            if used:
                shares.append(ServerMemory(server.url, used))
        out.append(dataclasses.replace(g, server_memory_by_url=tuple(shares)) if shares else g)
    return tuple(out)


def _share(g: GpuSample, server: ServerStatus, focused: bool) -> int | None:
    if g.lost:
        return None
    if focused and g.server_memory_bytes is not None:
        return g.server_memory_bytes
    # a router's models run as its children: their memory is the router's
    pids = {m.pid for m in server.models if m.pid is not None}
    if server.pid is not None:
        pids.add(server.pid)
    if g.processes is None or not pids:
        return None
    return sum(p.used_memory_bytes or 0 for p in g.processes if p.pid in pids)


def _as_servers(g: GpuSample, url: str) -> GpuSample:
    """*g* as server *url*'s own snapshot sees it: its share as `server_memory_bytes`."""
    if g.lost or g.processes is None:
        return dataclasses.replace(g, used_by_server=None, server_memory_bytes=None)
    used = next((m.used_memory_bytes for m in g.server_memory_by_url if m.url == url), 0)
    return dataclasses.replace(g, used_by_server=None, server_memory_bytes=used)
