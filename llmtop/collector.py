"""Assembles one `Snapshot` per tick, for the dashboard and the headless commands alike.

One `collect()` asks the server (async HTTP, concurrent endpoints) while host and process stats
(psutil, blocking) are read in a thread. Optional parts are duck-typed and may be None:

- supervisor: `.pid`, `.status() -> SupervisorStatus`
- gpu_monitor: `.latest() -> GpuReading(samples, note)` (non-blocking)
- unit_monitor: `.read() -> UnitStatus` (blocking: run in a thread)
- alert_engine: `.evaluate(snapshot) -> tuple[Alert, ...]`; optional `.thermal(snapshot)`
  `-> ThermalReport | None`

Rates come from the /metrics counters differenced between ticks (`CounterRates`). A failing
optional part is logged and left out of that tick; `collect()` never raises for server faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import Any

from llmtop.snapshot import HostStats, ServerStatus, Snapshot, SupervisorStatus, UnitStatus
from llmtop.sources.llama_http import LlamaClient
from llmtop.sources.process import ProcessSampler, pid_listening_on
from llmtop.sources.prometheus import CounterRates, Rates

log = logging.getLogger(__name__)

PID_LOOKUP_RETRY_S = 5.0


class Collector:
    def __init__(
        self,
        client: LlamaClient,
        *,
        supervisor: Any | None = None,
        gpu_monitor: Any | None = None,
        unit_monitor: Any | None = None,
        alert_engine: Any | None = None,
        pid_hint: int | None = None,
    ) -> None:
        self.client = client
        self.supervisor = supervisor
        self.gpu_monitor = gpu_monitor
        self.unit_monitor = unit_monitor
        self.alert_engine = alert_engine
        self.pid_hint = pid_hint
        self.rates = CounterRates()
        self.last_rates: Rates | None = None
        self.last: Snapshot | None = None
        self._sampler = ProcessSampler()
        self._found_pid: int | None = None
        self._pid_lookup_at = float("-inf")
        self._unit: UnitStatus | None = None
        self._inflight: asyncio.Task[Snapshot] | None = None
        self._last_health: str | None = None
        self._told_gpu_pid: int | None = None

    @property
    def url(self) -> str:
        return self.client.url

    async def aclose(self) -> None:
        await self.client.aclose()

    async def collect(self) -> Snapshot:
        """One tick. Overlapping calls share the tick in flight (latest value wins, no queue)."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._collect())
        return await asyncio.shield(self._inflight)

    # -- pid ------------------------------------------------------------------------------
    def _known_pid(self) -> int | None:
        sup_pid = getattr(self.supervisor, "pid", None) if self.supervisor is not None else None
        if isinstance(sup_pid, int):
            return sup_pid
        if self.supervisor is not None:
            return None  # supervised but not running: no process to show
        if self._unit is not None and self._unit.main_pid:
            return self._unit.main_pid
        if self.pid_hint is not None:
            return self.pid_hint
        return None

    def _lookup_pid(self) -> int | None:
        """The pid listening on the server's port (cached; re-looked up when it goes away)."""
        import psutil

        if self._found_pid is not None:
            if psutil.pid_exists(self._found_pid):
                return self._found_pid
            self._found_pid = None  # it went away: look again now
            self._pid_lookup_at = float("-inf")
        now = time.monotonic()
        if now - self._pid_lookup_at < PID_LOOKUP_RETRY_S:
            return None
        self._pid_lookup_at = now
        self._found_pid = pid_listening_on(self.client.url)
        return self._found_pid

    def _host(self, pid: int | None, look_up: bool) -> tuple[HostStats, int | None]:
        import psutil

        if look_up and (pid is None or not psutil.pid_exists(pid)):
            pid = self._lookup_pid()  # nothing known, or the hinted process is gone
        return self._sampler.host(pid), pid

    # -- the tick ------------------------------------------------------------------------
    async def _collect(self) -> Snapshot:
        pid = self._known_pid()
        look_up = self.supervisor is None and self._unit is None
        unit_task = (
            asyncio.to_thread(self.unit_monitor.read) if self.unit_monitor is not None else None
        )
        server_r, host_r, unit_r = await asyncio.gather(
            self.client.poll(),
            asyncio.to_thread(self._host, pid, look_up),
            unit_task if unit_task is not None else _none(),
            return_exceptions=True,
        )
        now = time.time()
        if isinstance(server_r, asyncio.CancelledError):
            raise server_r
        if isinstance(server_r, BaseException):
            log.exception("server poll failed", exc_info=server_r)
            server = ServerStatus(
                url=self.client.url, health="error", detail=f"internal error: {server_r}"
            )
        else:
            server = server_r
        if isinstance(host_r, BaseException):
            log.warning("host stats failed: %s", host_r)
            host, pid = HostStats(), pid
        else:
            host, pid = host_r
        unit: UnitStatus | None = None
        if isinstance(unit_r, UnitStatus):
            unit = self._unit = unit_r
        elif isinstance(unit_r, BaseException):
            log.warning("unit status failed: %s", unit_r)
            unit = self._unit

        found_by_port = pid is not None and pid == self._found_pid
        # a server that went away, came back or restarted may have a new pid: look again now
        if server.health != self._last_health:
            self._found_pid = None
            self._pid_lookup_at = float("-inf")
        self._last_health = server.health

        if found_by_port and pid != self._told_gpu_pid:
            # only the collector knows this pid (found by port): tell the GPU sampler
            set_server = getattr(self.gpu_monitor, "set_server", None)
            if callable(set_server):
                try:
                    set_server(pid)
                    self._told_gpu_pid = pid
                except Exception:  # noqa: BLE001
                    log.exception("gpu_monitor.set_server() failed")

        rates = self._rates(server)
        server = dataclasses.replace(
            server,
            pid=pid,
            gen_tokens_per_s=rates.gen_tokens_per_s if rates else None,
            prompt_tokens_per_s=rates.prompt_tokens_per_s if rates else None,
        )

        supervisor: SupervisorStatus | None = None
        if self.supervisor is not None:
            try:
                supervisor = self.supervisor.status()
            except Exception:  # noqa: BLE001 - a broken part must not stop the tick
                log.exception("supervisor.status() failed")

        gpus: tuple[Any, ...] = ()
        gpu_note: str | None = None
        if self.gpu_monitor is not None:
            try:
                reading = self.gpu_monitor.latest()
                if reading is not None:
                    gpus = tuple(getattr(reading, "samples", ()) or ())
                    gpu_note = getattr(reading, "note", None)
            except Exception as exc:  # noqa: BLE001
                log.exception("gpu_monitor.latest() failed")
                gpu_note = f"GPU reading failed: {exc}"

        snap = Snapshot(
            time=now,
            server=server,
            host=host,
            supervisor=supervisor,
            gpus=gpus,
            gpu_note=gpu_note,
            unit=unit,
        )
        if self.alert_engine is not None:
            try:
                snap = dataclasses.replace(
                    snap, alerts=tuple(self.alert_engine.evaluate(snap) or ())
                )
            except Exception:  # noqa: BLE001
                log.exception("alert_engine.evaluate() failed")
            thermal = getattr(self.alert_engine, "thermal", None)
            if callable(thermal):
                with contextlib.suppress(Exception):
                    snap = dataclasses.replace(snap, thermal=thermal(snap))
        self.last = snap
        return snap

    def _rates(self, server: ServerStatus) -> Rates | None:
        metrics = self.client.last_metrics
        at = self.client.last_metrics_time
        if server.health != "ok" or metrics is None or at is None:
            return None
        self.last_rates = self.rates.update(metrics, at, server.process_start_time)
        return self.last_rates


async def _none() -> None:
    return None
