"""What the dashboard runs on: collector + log store + controller + probe target.

`commands/dashboard.py` builds a `Session` from the command line; the Textual app (llmtop/ui)
only calls the methods below, so the UI never touches httpx, psutil or NVML itself.

Modes: "child" (llmtop started llama-server and supervises it), "unit" (a systemd unit),
"attach" (a server llmtop did not start) and "none" (nothing found yet: the UI shows how to
start one, or a pick list of discovered servers).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmtop.control.protocols import Controller, GpuSampler, LogFollower, SyncStoppable
from llmtop.sources.logs import LogStore

if TYPE_CHECKING:  # pragma: no cover - typing only
    import httpx

    from llmtop.agent.sinks import SnapshotSink
    from llmtop.collector import Collector
    from llmtop.diagnosis.alerts import AlertEngine
    from llmtop.diagnosis.thresholds import Thresholds
    from llmtop.multi_server import MultiCollector
    from llmtop.operations.actions import Operations
    from llmtop.snapshot import Snapshot
    from llmtop.sources.probe import ProbeRequest, ProbeResult
    from llmtop.sources.process import ProcessSampler
    from llmtop.sources.unit_status import UnitMonitor

log = logging.getLogger(__name__)

# Probe history kept for the latency table/plot (bounded).
PROBE_HISTORY = 200
# The history the dashboard opens with (plots keep what fits them).
HISTORY_PREFILL_S = 3600.0
# Snapshots handed to the recorder thread and not yet written, at most.
RECORD_BACKLOG = 30


@dataclass
class DiscoveredTarget:
    """One local llama-server found by discovery, as the pick list shows it.

    A server run by a systemd unit carries the unit's name (and whether it is a user unit):
    picking it opens unit mode, so restart goes through systemd.
    """

    url: str
    pid: int | None = None
    label: str = ""  # redacted argv / model, for the pick list
    unit: str | None = None  # systemd unit name ("llama.service") when a unit runs it
    user: bool = False  # the unit is a user unit (systemctl --user)
    api_key: str | None = field(default=None, repr=False)  # from its argv/env; never rendered


@dataclass
class ServerEntry:
    """One of several servers the dashboard watches (`--url A --url B`, `--unit X --unit Y`,
    discovery of several): what the session's own mode, url, key and controller are while this
    server has the focus (keys, probes and the title then apply to it)."""

    mode: str  # "unit" | "attach"
    url: str
    api_key: str | None = field(default=None, repr=False)  # never rendered
    controller: Controller | None = None
    unit_monitor: UnitMonitor | None = None
    pid_hint: int | None = None
    collector: Collector | None = None
    # This server's own log (a unit's journal); the logs tab shows the focused server's.
    log_store: LogStore = field(default_factory=LogStore)


@dataclass(frozen=True)
class UnitAccess:
    """How unit mode reaches systemd. The defaults are the product's (the local managers);
    tests point them into a confined systemd box."""

    command_prefix: tuple[str, ...] = ()
    journal_directory: str | None = None


@dataclass
class Session:
    """The dashboard's world: what it reads (collector, log store) and what it may act on
    (controller, through `operations`). Every action on the server goes through `operations`."""

    mode: str  # "child" | "unit" | "attach" | "none"
    url: str | None
    api_key: str | None = field(default=None, repr=False)  # never rendered
    collector: Collector | None = None
    log_store: LogStore = field(default_factory=LogStore)
    controller: Controller | None = None  # ChildSupervisor or UnitController; None in attach mode
    refresh_s: float = 1.0
    gpu_monitor: GpuSampler | None = None
    log_followers: list[LogFollower] = field(default_factory=list)
    alert_engine: AlertEngine | None = None
    unit_monitor: UnitMonitor | None = None
    pid_hint: int | None = None
    router: bool = False  # --router: a router-mode llama-server (sources/router.py)
    # Built in start() (off the first frame): NVML/simulator and alert rules import slowly.
    gpu_factory: Callable[[], GpuSampler | None] | None = field(default=None, repr=False)
    alert_factory: Callable[[], AlertEngine | None] | None = field(default=None, repr=False)
    # Discovery results when mode == "none" and several servers were found (pick list).
    candidates: list[DiscoveredTarget] = field(default_factory=list)
    # Several servers (open_several): one entry each, the focused one mirrored in the fields
    # above; empty with one server. `multi` polls them all (built in start()).
    servers: list[ServerEntry] = field(default_factory=list)
    focus_index: int = 0
    multi: MultiCollector | None = field(default=None, repr=False)
    # The agent's history DB: the dashboard's plots open with its last hour of this server.
    history_db: str | None = None
    # `--record`: sinks (the agent's HistoryRecorder) that get every snapshot the dashboard shows.
    recorders: list[SnapshotSink] = field(default_factory=list)
    record_dropped: int = 0
    _record_pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _record_backlog: int = field(default=0, repr=False)
    _record_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _probe_client: httpx.AsyncClient | None = field(default=None, repr=False)
    _operations: Operations | None = field(default=None, repr=False)
    _started: bool = field(default=False, repr=False)
    _closed: bool = field(default=False, repr=False)

    # ------------------------------------------------------------------ building
    @property
    def can_control(self) -> bool:
        return self.controller is not None

    @property
    def operations(self) -> Operations | None:
        """The actions on the supervised server (None in attach mode): restart, stop, start,
        revert, apply with rollback, sweep. Built once per controller; the tuning change log
        lives in it, so it survives the tuning tab being remounted."""
        if self.controller is None:
            return None
        ops = self._operations
        if ops is None or ops.controller is not self.controller:
            from llmtop.operations.actions import Operations

            ops = self._operations = Operations(
                self.controller, self.log_store, api_key=self.api_key
            )
        ops.use_gpu_monitor(self.gpu_monitor)
        return ops

    def choose(self, target: DiscoveredTarget, access: UnitAccess | None = None) -> None:
        """The operator picked *target* from the pick list: unit mode for a unit, else attach."""
        if self.api_key is None and target.api_key:
            self.api_key = target.api_key
        if target.unit:
            self.use_unit(target.unit, user=target.user, url=target.url, access=access)
        elif self._started:
            self.attach(target.url, pid_hint=target.pid)
        else:  # the collector is built in start(), off the first frame
            self.mode, self.url, self.pid_hint = "attach", target.url.rstrip("/"), target.pid
        self.candidates = []

    def pick(self, target: DiscoveredTarget) -> None:
        """The operator's choice from the pick list, with its collector built now.

        Blocking for a unit (one `systemctl show`): the UI calls it off its event loop."""
        self.choose(target)
        if self.collector is None and self.url is not None:
            self.attach(self.url, pid_hint=self.pid_hint)

    def open_several(
        self, targets: list[DiscoveredTarget], access: UnitAccess | None = None
    ) -> None:
        """Watch every one of *targets* (units in unit mode, the rest attached) in one
        dashboard, the first focused. Before start(); reads each unit once (blocking)."""
        operator_key = self.api_key
        first_store = self.log_store
        entries: list[ServerEntry] = []
        for i, target in enumerate(targets):
            self.api_key = operator_key or target.api_key
            self.controller, self.unit_monitor, self.pid_hint = None, None, target.pid
            # each server its own log: two units' journals in one store would be one stream
            if i:
                self.log_store = LogStore(
                    maxlen=first_store.maxlen, max_chars=first_store.max_chars
                )
            if target.unit:
                self.use_unit(target.unit, user=target.user, url=target.url or None, access=access)
            else:
                self.mode, self.url = "attach", target.url.rstrip("/")
            assert self.url is not None
            entries.append(
                ServerEntry(
                    self.mode, self.url, self.api_key, self.controller, self.unit_monitor,
                    self.pid_hint, log_store=self.log_store,
                )
            )  # fmt: skip
        self.candidates = []
        self.servers = entries
        self._mirror(0)

    def focus_server(self, index: int) -> ServerEntry | None:
        """Give server *index* (modulo the count) the focus: the snapshot's `server`, the keys
        (restart only where it is controllable), probes and the title follow it. None with one
        server."""
        if not self.servers:
            return None
        index %= len(self.servers)
        if self.multi is not None:
            self.multi.focus(index)
        self._mirror(index)
        return self.servers[index]

    def _mirror(self, index: int) -> None:
        e = self.servers[index]
        self.focus_index = index
        self.mode, self.url, self.api_key, self.pid_hint = e.mode, e.url, e.api_key, e.pid_hint
        self.controller, self.unit_monitor, self.collector = (
            e.controller,
            e.unit_monitor,
            e.collector,
        )
        self.log_store = e.log_store
        from llmtop.agent.sinks import LogSink

        for sink in self.recorders:  # --record: the focused server's samples, and its log
            if isinstance(sink, LogSink):
                sink.use_log(e.log_store)

    def _build_multi(self) -> None:
        """One collector per server: the first samples the host, the focused one gets the GPU
        monitor and alert rules (handed over in start())."""
        from llmtop.multi_server import MultiCollector, ProcessOnlySampler

        collectors: list[Collector] = []
        for i, e in enumerate(self.servers):
            e.collector = build_collector(
                e.url,
                e.api_key,
                supervisor=e.controller,
                unit_monitor=e.unit_monitor,
                pid_hint=e.pid_hint,
                sampler=ProcessOnlySampler() if i else None,
                router=self.router,  # --router: every server is a router (else each is found out)
            )
            collectors.append(e.collector)
        self.multi = MultiCollector(collectors, self.focus_index, lean_background=True)
        self.collector = self.servers[self.focus_index].collector

    def use_unit(
        self,
        name: str,
        *,
        user: bool = False,
        url: str | None = None,
        access: UnitAccess | None = None,
    ) -> None:
        """Unit mode on systemd unit *name*: controller, monitor, journal follower and collector.

        URL and API key come from the unit's ExecStart unless given (reads the unit once:
        one `systemctl show`). Raises ImportError when unit support is missing.
        """
        from llmtop.control.systemd_unit import open_unit_session

        access = access or UnitAccess()
        ctl, monitor, follower = open_unit_session(
            name,
            user,
            self.log_store,
            command_prefix=access.command_prefix,
            journal_directory=access.journal_directory,
        )
        spec = monitor.spec
        if spec is not None:
            if self.api_key is None and spec.api_key:
                self.api_key = spec.api_key
            url = url or spec.url
        self.mode = "unit"
        self.controller = ctl
        self.unit_monitor = monitor
        self.log_followers.append(follower)
        self.url = (url or "http://127.0.0.1:8080").rstrip("/")
        if self._started:  # picked after start-up: build the collector now
            self.attach(self.url)

    def attach(self, url: str, *, pid_hint: int | None = None) -> None:
        """Point the session at *url* (attach mode), building the HTTP client and collector."""
        self.url = url.rstrip("/")
        self.pid_hint = pid_hint
        if self.mode == "none":
            self.mode = "attach"
        self.collector = build_collector(
            self.url,
            self.api_key,
            supervisor=self.controller,
            gpu_monitor=self.gpu_monitor,
            alert_engine=self.alert_engine,
            unit_monitor=self.unit_monitor,
            pid_hint=pid_hint,
            router=self.router,
        )

    # ------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Start what the session owns: the child (child mode), GPU sampler, log followers."""
        if self._started:
            return
        self._started = True
        # NVML start-up (a thread: ctypes calls release the GIL) overlaps building the alert
        # engine and the collector; the collector gets the monitor before its first collect.
        gpu_future: asyncio.Future[GpuSampler | None] | None = None
        if self.gpu_monitor is None and self.gpu_factory is not None:
            gpu_future = asyncio.ensure_future(asyncio.to_thread(self.gpu_factory))
        if self.alert_engine is None and self.alert_factory is not None:
            self.alert_engine = self.alert_factory()
        if self.servers and self.multi is None:
            self._build_multi()
        if self.collector is None and self.url is not None:
            # Built here, not in the command: the HTTP client's imports stay off the first frame.
            self.attach(self.url, pid_hint=self.pid_hint)
        if gpu_future is not None:
            self.gpu_monitor = await gpu_future
        if self.collector is not None:  # hand over what was built meanwhile (or before: pick list)
            if self.collector.gpu_monitor is None:
                self.collector.gpu_monitor = self.gpu_monitor
            if self.collector.alert_engine is None:
                self.collector.alert_engine = self.alert_engine
        if self.gpu_monitor is not None:
            try:
                self.gpu_monitor.start()
            except Exception as exc:  # noqa: BLE001 - the GPU panels say "no reading"
                self._trouble("the GPU sampler did not start", exc)
        for follower in self.log_followers:
            try:
                await follower.start()
            except Exception as exc:  # noqa: BLE001 - the follower's own error is on screen
                self._trouble("a log follower did not start", exc)
        if self.mode == "child" and self.controller is not None:
            await self.controller.start()

    async def close(self) -> None:
        """Stop a child (never touches a unit), followers, samplers and HTTP clients."""
        if self._closed:
            return
        self._closed = True
        if self.mode == "child" and self.controller is not None:
            try:
                await self.controller.stop()
            except Exception:  # noqa: BLE001 - last resort below
                log.exception("stopping the child failed; killing it")
                self.shutdown_sync()
        for follower in self.log_followers:
            try:
                await follower.stop()
            except Exception as exc:  # noqa: BLE001 - closing: go on with the rest
                self._trouble("stopping a log follower failed", exc)
        if self.gpu_monitor is not None:
            try:
                self.gpu_monitor.stop()
            except Exception as exc:  # noqa: BLE001 - closing: go on with the rest
                self._trouble("stopping the GPU sampler failed", exc)
        closing = self.multi or self.collector  # several servers: every collector
        if closing is not None:
            try:
                await closing.aclose()
            except Exception as exc:  # noqa: BLE001 - closing: go on with the rest
                self._trouble("closing the HTTP client failed", exc)
        await self._close_recorders()
        if self._probe_client is not None:
            try:
                await self._probe_client.aclose()
            except Exception as exc:  # noqa: BLE001 - closing: go on with the rest
                self._trouble("closing the probe client failed", exc)
        self._probe_client = None

    def shutdown_sync(self, timeout: float = 10.0) -> None:
        """Stop a child from a signal handler or atexit (no event loop needed)."""
        ctl = self.controller
        if self.mode == "child" and isinstance(ctl, SyncStoppable):
            try:
                ctl.shutdown_sync(timeout)
            except Exception:  # noqa: BLE001 - last resort; nothing left to try
                log.exception("stopping the child without a loop failed")

    def _trouble(self, what: str, exc: BaseException) -> None:
        """A start-up or shutdown step failed: logged, and noted in the log the operator sees."""
        log.warning("%s: %s", what, exc, exc_info=exc)
        self.log_store.note("error", f"llmtop: {what}: {exc}", "warning")

    # ------------------------------------------------------------------ history
    def read_history(self, window_s: float = HISTORY_PREFILL_S) -> list[Snapshot]:
        """This server's recorded snapshots of the last *window_s* from `history_db` (oldest
        first; empty when there is none). Blocking: the UI calls it in a thread."""
        if self.history_db is None or self.url is None:
            return []
        from llmtop.sources.prefill import read_prefill

        return read_prefill(self.history_db, self.url, time.time(), window_s)

    def feed_history(self, snapshots: list[Snapshot], live: list[Snapshot] | None = None) -> None:
        """The recorded past into the alert engine's thermal window (its verdict then covers
        it), before the *live* snapshots it has seen already. Not while a collect runs (the
        dashboard pauses its ticks); cheap but O(samples)."""
        if self.alert_engine is not None and snapshots:
            self.alert_engine.refeed_history(snapshots, live or [])

    def record(self, snap: Snapshot) -> None:
        """Hand *snap* to the recorders on their own thread (one small transaction each, in
        order), so a slow disk never stalls the screen. A backlog beyond RECORD_BACKLOG drops
        ticks (counted) rather than queueing without bound."""
        if not self.recorders:
            return
        with self._record_lock:
            if self._record_backlog >= RECORD_BACKLOG:
                self.record_dropped += 1
                return
            self._record_backlog += 1
        if self._record_pool is None:
            self._record_pool = ThreadPoolExecutor(1, thread_name_prefix="llmtop-record")
        self._record_pool.submit(self._record_one, snap)

    def _record_one(self, snap: Snapshot) -> None:
        try:
            for sink in self.recorders:
                try:
                    sink.on_snapshot(snap)
                except Exception:  # noqa: BLE001 - one broken sink must not stop the others
                    log.exception("recorder %s failed", type(sink).__name__)
        finally:
            with self._record_lock:
                self._record_backlog -= 1

    async def _close_recorders(self) -> None:
        pool, self._record_pool = self._record_pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, True)  # what was handed over is written
        for sink in self.recorders:
            try:
                await asyncio.to_thread(sink.close)
            except Exception as exc:  # noqa: BLE001 - closing: go on with the rest
                self._trouble("closing the recorder failed", exc)
        self.recorders = []

    # ------------------------------------------------------------------ data
    async def collect(self) -> Snapshot | None:
        """One collector tick (None when not attached to anything yet)."""
        if self.multi is not None:
            return await self.multi.collect()
        if self.collector is None:
            return None
        return await self.collector.collect()

    def validate_probe(
        self, prompt: str, n_predict: str, temperature: str
    ) -> tuple[ProbeRequest | None, list[str]]:
        """Check the prompt panel's fields; (request, []) when valid, (None, errors) otherwise."""
        return validate_probe_fields(prompt, n_predict, temperature)

    async def probe(
        self, request: ProbeRequest, on_chunk: Callable[[str], None] | None = None
    ) -> ProbeResult:
        """Fire one streaming /completion probe at the session's server.

        /props is asked first (it does not wake a sleeping server): a probe sent to a server
        asleep (--sleep-idle-seconds) waits for the model to load, and its result says so
        (`includes_model_load`) instead of passing the load off as the first-token latency."""
        import dataclasses

        import httpx

        from llmtop.sources.probe import run_probe, server_sleeping

        if self.url is None:
            raise RuntimeError("no server to probe")
        if self._probe_client is None:
            self._probe_client = httpx.AsyncClient(
                timeout=httpx.Timeout(60.0, connect=3.0), trust_env=False
            )
        asleep = await server_sleeping(self._probe_client, self.url, self.api_key)
        result = await run_probe(
            self._probe_client,
            self.url,
            request.prompt,
            request.n_predict,
            request.temperature,
            api_key=self.api_key,
            on_chunk=on_chunk,
        )
        return dataclasses.replace(result, includes_model_load=True) if asleep else result

    def redacted_argv(self) -> list[str]:
        if self.controller is None:
            return []
        return list(self.controller.spec.redacted())


def validate_probe_fields(
    prompt: str, n_predict: str, temperature: str
) -> tuple[ProbeRequest | None, list[str]]:
    """The prompt panel's check: `llmtop.sources.probe.validate_probe_input` (errors in words)."""
    from llmtop.sources.probe import validate_probe_input

    request, error = validate_probe_input(prompt, n_predict, temperature)
    if error or request is None:
        return None, [error or "invalid input"]
    return request, []


def build_collector(
    url: str,
    api_key: str | None,
    *,
    supervisor: Controller | None = None,
    gpu_monitor: GpuSampler | None = None,
    alert_engine: AlertEngine | None = None,
    unit_monitor: UnitMonitor | None = None,
    sampler: ProcessSampler | None = None,
    pid_hint: int | None = None,
    router: bool = False,
) -> Collector:
    """The Collector for *url* (imports the HTTP client lazily: not needed to draw a frame)."""
    from llmtop.collector import Collector
    from llmtop.sources.llama_http import LlamaClient

    client = LlamaClient(url, api_key=api_key)
    return Collector(
        client,
        router=router,
        supervisor=supervisor,
        gpu_monitor=gpu_monitor,
        unit_monitor=unit_monitor,
        alert_engine=alert_engine,
        sampler=sampler,
        pid_hint=pid_hint,
    )


def make_gpu_monitor(refresh_s: float = 1.0, *, demo: bool = False) -> GpuSampler | None:
    """The NVML sampler from llmtop.sources.gpu (issue 3); None when that module is absent.

    For the demo, `demo_gpu_monitor()` gives the real driver when present, else a simulated GPU
    (its readings are labelled SIMULATED); None when neither is available.
    """
    try:
        from llmtop.sources import gpu
    except ImportError:
        return None
    try:
        if demo:
            return gpu.demo_gpu_monitor(refresh_s)
        return gpu.default_gpu_monitor(refresh_s)
    except Exception:  # noqa: BLE001 - no GPU panels rather than no dashboard
        log.exception("GPU monitor unavailable")
        return None


def make_alert_engine(thresholds: Thresholds | None = None) -> AlertEngine | None:
    """The alert engine from llmtop.diagnosis (issue 3), if present, with *thresholds*
    (a `Thresholds` from the config file and flags; None: the defaults)."""
    try:
        from llmtop.diagnosis import alerts
    except ImportError:
        return None
    try:
        return alerts.AlertEngine(thresholds)
    except Exception:  # noqa: BLE001 - the dashboard runs without alerts rather than not at all
        log.exception("alert engine unavailable")
        return None
