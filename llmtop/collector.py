"""Assembles one `Snapshot` per tick, for the dashboard and the headless commands alike.

One `collect()` asks the server (async HTTP, concurrent endpoints) while host and process stats
(psutil, blocking) are read in a thread. Optional parts may be None; each is typed by the
protocol below that says what the collector asks of it (the real classes and the tests' stand-ins
alike):

- supervisor (`ServerProcess`): `.pid`, `.spec`, `.status() -> SupervisorStatus`
- gpu_monitor (`GpuReadings`): `.latest() -> GpuReading(samples, note)` (non-blocking),
  `.set_server(pid, spec)`
- unit_monitor (`UnitReader`): `.read() -> UnitStatus` (blocking: run in a thread), `.spec`
  (the ExecStart's LaunchSpec, never blocks; in unit mode it is the spec the collector uses)
- alert_engine (`AlertRules`): `.evaluate(snapshot) -> tuple[Alert, ...]`,
  `.thermal(snapshot) -> ThermalReport | None`, `.set_spec(spec)`

Every tick the collector tells the GPU monitor (`set_server(pid, spec)`) and the alert engine
(`set_spec(spec)`) which process and launch spec the server is — the supervised child's, the
unit's MainPID and ExecStart, or the pid found listening on the port — so per-GPU server VRAM,
CUDA_VISIBLE_DEVICES and the CPU-fallback check follow restarts in every mode. A unit's checks
(`UnitStatus.warnings`) become alerts (`unit_alerts`), each with the time it was first seen.

Rates come from the /metrics counters differenced between ticks (`CounterRates`). A failing
optional part is logged and left out of that tick, and says so where the operator looks: a GPU
reading that failed becomes `gpu_note`, a thermal verdict that failed becomes the verdict's text;
`collect()` never raises for server faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Protocol

from llmtop.model.launch_spec import LaunchSpec
from llmtop.snapshot import (
    Alert,
    GpuSample,
    HostStats,
    ServerStatus,
    Snapshot,
    SupervisorStatus,
    ThermalReport,
    UnitStatus,
)
from llmtop.sources.llama_http import LlamaClient
from llmtop.sources.process import ProcessSampler, pid_listening_on
from llmtop.sources.prometheus import CounterRates, Rates
from llmtop.sources.router import RouterWatch, with_model_vram

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from llmtop.diagnosis.checks import Check
    from llmtop.sources.gpu import GpuReading

PID_LOOKUP_RETRY_S = 5.0


# The host/process stats of a tick and the server pid they were read for.
_HostResult = tuple[HostStats, int | None]


class ServerProcess(Protocol):
    """The supervised server as the collector reads it (ChildSupervisor, UnitController)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def spec(self) -> LaunchSpec: ...

    def status(self) -> SupervisorStatus: ...


class UnitReader(Protocol):
    """A systemd unit's state (sources.unit_status.UnitMonitor)."""

    @property
    def spec(self) -> LaunchSpec | None:  # from ExecStart, as last read: never blocks
        ...

    def read(self) -> UnitStatus:  # blocking: the collector runs it in a thread
        ...


class GpuReadings(Protocol):
    """The GPU sampler (sources.gpu.GpuMonitor)."""

    def latest(self) -> GpuReading:  # non-blocking
        ...

    def set_server(self, pids: int | None, spec: LaunchSpec | None = None) -> None: ...


class AlertRules(Protocol):
    """The alert rules and thermal verdict (diagnosis.alerts.AlertEngine): pure and fast."""

    def evaluate(self, snapshot: Snapshot) -> tuple[Alert, ...]: ...

    def thermal(self, snapshot: Snapshot) -> ThermalReport | None: ...

    def set_spec(self, spec: LaunchSpec | None) -> None: ...


class Collector:
    def __init__(
        self,
        client: LlamaClient,
        *,
        supervisor: ServerProcess | None = None,
        gpu_monitor: GpuReadings | None = None,
        unit_monitor: UnitReader | None = None,
        alert_engine: AlertRules | None = None,
        pid_hint: int | None = None,
        router: bool = False,
        sampler: ProcessSampler | None = None,
    ) -> None:
        self.client = client
        self.supervisor = supervisor
        self.gpu_monitor = gpu_monitor
        self.unit_monitor = unit_monitor
        self.alert_engine = alert_engine
        self.pid_hint = pid_hint
        # Router mode (--router, or found out): /models and each loaded model (sources/router.py)
        self.router = RouterWatch(client, forced=router)
        self.rates = CounterRates()
        self.last_rates: Rates | None = None
        self.last: Snapshot | None = None
        # One of several servers' collectors reads its process only (multi_server.py).
        self._sampler = sampler or ProcessSampler()
        self._found_pid: int | None = None
        self._pid_lookup_at = float("-inf")
        self._unit: UnitStatus | None = None
        self._inflight: asyncio.Task[Snapshot] | None = None
        self._last_health: str | None = None
        self._unit_warning_since: dict[str, float] = {}
        # `llmtop check`'s launch checks (ctx vs training context, Q2/Q3 of a large model,
        # exposed without a key) for the spec they were computed for, and when each was first
        # seen. Child and attach mode; a unit's own checks come with its status.
        self._checked_spec: LaunchSpec | None = None
        self._launch_checks: list[Check] = []
        self._check_since: dict[str, float] = {}
        self._checking: asyncio.Future[list[Check]] | None = None  # the checks running now
        self._stopped_pid: int | None = None  # the server's process was stopped last tick
        self._argv_pid: int | None = None  # the pid _attached_spec was read from
        self._attached_spec: LaunchSpec | None = None  # read from that pid (attach mode)

    @property
    def url(self) -> str:
        return self.client.url

    async def aclose(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
        await self.client.aclose()

    async def collect(self) -> Snapshot:
        """One tick. Overlapping calls share the tick in flight (latest value wins, no queue)."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._collect())
        return await asyncio.shield(self._inflight)

    # -- pid ------------------------------------------------------------------------------
    def _known_pid(self) -> int | None:
        if self.supervisor is not None:
            return self.supervisor.pid  # None: supervised but not running, no process to show
        if self._unit is not None and self._unit.main_pid:
            return self._unit.main_pid
        if self.pid_hint is not None:
            return self.pid_hint
        return None

    def _lookup_pid(self) -> int | None:
        """The pid listening on the server's port (cached; looked up again, at most every
        PID_LOOKUP_RETRY_S, when none is known)."""
        if self._found_pid is not None:
            return self._found_pid
        now = time.monotonic()
        if now - self._pid_lookup_at < PID_LOOKUP_RETRY_S:
            return None
        self._pid_lookup_at = now
        self._found_pid = pid_listening_on(self.client.url)
        return self._found_pid

    def _host(self, pid: int | None, look_up: bool) -> _HostResult:
        if look_up and pid is None:
            pid = self._lookup_pid()
        host = self._sampler.host(pid)
        if look_up and pid is not None and host.process is None:
            # the process went away (the hinted one, or the one found on the port): look for
            # the server's process again now, and show it on this tick if it is there
            if pid == self.pid_hint:
                self.pid_hint = None
            self._found_pid = None
            self._pid_lookup_at = float("-inf")
            pid = self._lookup_pid()
            if pid is not None:
                host = self._sampler.host(pid)
        if pid is not None and pid != self._argv_pid and self._own_spec() is None:
            # attach mode: the server's own argv and environment are its launch spec (its
            # --sleep-idle-seconds, --gpu-layers for the CPU-fallback rule, CUDA_VISIBLE_DEVICES);
            # read in this thread, once per pid
            self._argv_pid = pid
            self._attached_spec = _process_spec(pid)
        return host, pid

    def _update_launch_checks(self) -> None:
        """Run the launch checks again, in a thread of their own, when the launch spec changed.

        No tick waits for them: reading the GGUF header imports the gguf library (and numpy),
        a few hundred milliseconds that must not delay the first frame; their alerts join
        the snapshot from the tick after they finish (the `snapshot` command's second scrape)."""
        if self.unit_monitor is not None:
            return  # the unit's checks (sources.unit_status.unit_checks) cover it
        spec = self.server_spec()
        if spec is None or spec == self._checked_spec or self._checking is not None:
            return
        self._checked_spec = spec

        def done(task: asyncio.Future[list[Check]]) -> None:
            self._checking = None
            if not task.cancelled() and task.exception() is None:
                self._launch_checks = task.result()

        self._checking = asyncio.ensure_future(asyncio.to_thread(_launch_problems, spec))
        self._checking.add_done_callback(done)

    def _launch_alerts(self, now: float) -> tuple[Alert, ...]:
        checks = self._launch_checks
        self._check_since = {c.name: self._check_since.get(c.name, now) for c in checks}
        if not checks:
            return ()
        from llmtop.diagnosis.checks import check_alerts  # imported off start-up

        return check_alerts(checks, self._check_since)

    # -- the tick ------------------------------------------------------------------------
    async def _collect(self) -> Snapshot:
        pid = self._known_pid()
        look_up = self.supervisor is None and self._unit is None
        server_r, host_r, unit_r = await self._gather(pid, look_up)
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

        # a server that went away, came back or restarted may have a new pid: look again now
        if server.health != self._last_health:
            self._found_pid = None
            self._pid_lookup_at = float("-inf")
        self._last_health = server.health

        # a unit's MainPID is read this tick; the pid above may be from the last one
        self._tell_server(unit.main_pid if unit is not None and unit.main_pid else pid)
        self._tell_client_about_sleep()

        rates = self._rates(server)
        server = dataclasses.replace(
            server,
            pid=pid,
            gen_tokens_per_s=rates.gen_tokens_per_s if rates else server.gen_tokens_per_s,
            prompt_tokens_per_s=rates.prompt_tokens_per_s if rates else None,
        )

        supervisor: SupervisorStatus | None = None
        if self.supervisor is not None:
            try:
                supervisor = self.supervisor.status()
            except Exception:  # noqa: BLE001 - a broken part must not stop the tick
                log.exception("supervisor.status() failed")

        gpus: tuple[GpuSample, ...] = ()
        gpu_note: str | None = None
        if self.gpu_monitor is not None:
            try:
                reading = self.gpu_monitor.latest()
                gpus = reading.samples
                gpu_note = reading.note
            except Exception as exc:  # noqa: BLE001
                log.exception("gpu_monitor.latest() failed")
                gpu_note = f"GPU reading failed: {exc}"

        snap = Snapshot(
            time=now,
            server=with_model_vram(server, gpus),  # router mode: VRAM of each model's child
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
            snap = dataclasses.replace(snap, thermal=self._thermal(snap))
        self._update_launch_checks()
        unit_alerts = (*self._unit_alerts(unit, now), *self._launch_alerts(now))
        if unit_alerts:
            snap = dataclasses.replace(snap, alerts=(*snap.alerts, *unit_alerts))
        self.last = snap
        return snap

    async def _gather(
        self, pid: int | None, look_up: bool
    ) -> tuple[ServerStatus | Exception, _HostResult | Exception, UnitStatus | Exception | None]:
        """Server poll, host/process stats and unit status side by side (each result or its
        exception).

        A stopped server process (SIGSTOP: psutil says "stopped") cannot answer: its poll is
        cancelled as soon as the process stats say so, and not even started while it stays
        stopped, so the dashboard says "not responding" at once instead of after the poll's
        timeout, and no connection piles up in the stopped server's accept queue."""
        loop = asyncio.get_running_loop()
        host_f = loop.create_task(asyncio.to_thread(self._host, pid, look_up))
        unit_f = (
            loop.create_task(asyncio.to_thread(self.unit_monitor.read))
            if self.unit_monitor is not None
            else None
        )
        poll_f = None if self._stopped_pid is not None else loop.create_task(self.router.poll())
        try:
            host_r: _HostResult | Exception
            try:
                host_r = await host_f
            except Exception as exc:  # noqa: BLE001 - reported by the caller
                host_r = exc
            stopped = _stopped_pid(host_r)
            self._stopped_pid = stopped
            server_r: ServerStatus | Exception
            if stopped is not None:
                if poll_f is not None:
                    poll_f.cancel()
                    # cancelled on purpose: its end (cancelled, or a late error) is moot
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await poll_f
                server_r = ServerStatus(
                    url=self.client.url,
                    health="unreachable",
                    detail=f"not responding: process {stopped} is stopped",
                )
            else:
                if poll_f is None:
                    poll_f = loop.create_task(self.router.poll())
                try:
                    server_r = await poll_f
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - reported by the caller
                    server_r = exc
            unit_r: UnitStatus | Exception | None = None
            if unit_f is not None:
                try:
                    unit_r = await unit_f
                except Exception as exc:  # noqa: BLE001 - reported by the caller
                    unit_r = exc
            return server_r, host_r, unit_r
        finally:
            for f in (host_f, unit_f, poll_f):
                if f is not None and not f.done():
                    f.cancel()

    # -- the server, as the GPU sampler and the alert rules need it ---------------------------
    def _thermal(self, snap: Snapshot) -> ThermalReport | None:
        """The alert engine's thermal verdict; one that failed says so in the verdict (the
        thermal panel's line), and is logged, instead of vanishing."""
        assert self.alert_engine is not None
        try:
            return self.alert_engine.thermal(snap)
        except Exception as exc:  # noqa: BLE001 - a broken verdict must not stop the tick
            log.exception("alert_engine.thermal() failed")
            return ThermalReport(window_s=0.0, verdict=f"thermal verdict failed: {exc}")

    def _own_spec(self) -> LaunchSpec | None:
        """The LaunchSpec llmtop controls: the unit's ExecStart (the unit monitor's, never
        blocks), else the supervised child's; None when attached."""
        if self.unit_monitor is not None:
            return self.unit_monitor.spec
        if self.supervisor is not None:
            return self.supervisor.spec
        return None

    def server_spec(self) -> LaunchSpec | None:
        """The server's LaunchSpec: llmtop's own (unit, child), else — attached — the one read
        from the server process's argv and environment (None until its process is known or
        when they cannot be read: another user's process without root, a remote server)."""
        own = self._own_spec()
        if own is not None:
            return own
        return self._attached_spec  # of the last process found for the server

    def _tell_server(self, pid: int | None) -> None:
        """Tell the GPU sampler and the alert rules which process and launch spec the server is.

        Every tick (both calls are cheap): the pid changes when a child restarts, a unit gets a
        new MainPID or a server is found by port, and the GPU monitor may have been replaced.
        """
        spec = self.server_spec()
        if spec is not None and self.alert_engine is not None:  # attach: keep the engine's
            try:
                self.alert_engine.set_spec(spec)
            except Exception:  # noqa: BLE001
                log.exception("alert_engine.set_spec() failed")
        if self.gpu_monitor is not None:
            try:
                self.gpu_monitor.set_server(pid, spec)
            except Exception:  # noqa: BLE001
                log.exception("gpu_monitor.set_server() failed")

    def _tell_client_about_sleep(self) -> None:
        """The server's --sleep-idle-seconds, from its launch spec (child, unit, or the argv of
        the process found for it when attached): the client then spaces its activity-counting
        requests so that watching an idle server lets it fall asleep. A server known to have
        no --sleep-idle-seconds (the flag has no environment form) cannot fall asleep, so its
        /props is not asked every tick: a third of the idle poll's CPU."""
        spec = self.server_spec()
        argv = list(spec.argv) if spec is not None else []
        self.client.sleep_idle_s = sleep_idle_seconds(argv)
        # unknown argv, or one the unit's shell-like `$VAR` expansion fills in: it may sleep
        self.client.may_sleep = (
            spec is None or self.client.sleep_idle_s is not None or any("$" in a for a in argv)
        )

    def _unit_alerts(self, unit: UnitStatus | None, now: float) -> tuple[Alert, ...]:
        """The unit's checks as alerts; each keeps the time its warning was first seen."""
        if unit is None or not unit.warnings:
            self._unit_warning_since.clear()
            return ()
        from llmtop.sources.unit_status import unit_alerts

        since = {w: self._unit_warning_since.get(w, now) for w in unit.warnings}
        self._unit_warning_since = since
        out: list[Alert] = []
        for warning, first_seen in since.items():
            one = dataclasses.replace(unit, warnings=(warning,))
            out.extend(unit_alerts(one, first_seen))
        return tuple(out)

    def _rates(self, server: ServerStatus) -> Rates | None:
        metrics = self.client.last_metrics
        at = self.client.last_metrics_time
        if server.health != "ok" or metrics is None or at is None:
            return None
        self.last_rates = self.rates.update(metrics, at, server.process_start_time)
        return self.last_rates


def _stopped_pid(host_r: _HostResult | Exception) -> int | None:
    """The server's pid when psutil says its process is stopped (SIGSTOP, a debugger)."""
    proc = host_r[0].process if not isinstance(host_r, Exception) else None
    if proc is not None and proc.status in ("stopped", "tracing-stop"):
        return int(proc.pid)
    return None


def sleep_idle_seconds(argv: list[str] | tuple[str, ...]) -> float | None:
    """`--sleep-idle-seconds N` (or `=N`) from a llama-server argv; None when absent, off
    (N <= 0) or not a number."""
    value: str | None = None
    for i, arg in enumerate(argv):
        if arg == "--sleep-idle-seconds" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--sleep-idle-seconds="):
            value = arg.partition("=")[2]
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 < seconds < float("inf") else None


def _process_spec(pid: int) -> LaunchSpec | None:
    """The launch spec of a running server from its argv and environment (None when its argv
    cannot be read: gone, another user's, not local). The environment may hold an API key: it
    stays inside the spec, whose every displayed form is redacted."""
    import psutil

    try:
        proc = psutil.Process(pid)
        argv = proc.cmdline()
    except (psutil.Error, OSError):
        return None
    if not argv:
        return None
    try:
        env: dict[str, str] = proc.environ()
    except (psutil.Error, OSError):
        env = {}  # another user's process: argv is world-readable, the environment is not
    return LaunchSpec.from_argv(argv, env)


def _launch_problems(spec: LaunchSpec) -> list[Check]:
    """The launch checks of *spec* that are not ok (the model's GGUF header read for the
    training context and the quantisation; a model that cannot be read skips those two)."""
    from llmtop.diagnosis.checks import launch_checks  # in the host thread, off start-up
    from llmtop.sources.gguf_info import read_gguf_info

    gguf = None
    if spec.model:
        try:
            gguf = read_gguf_info(spec.model)
        except Exception:  # noqa: BLE001 - any unreadable model: the checks that need it skip
            gguf = None
    return [c for c in launch_checks(spec, gguf) if c.status != "ok"]
