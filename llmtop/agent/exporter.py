"""The agent's Prometheus exporter: the latest snapshot as `llmtop_*` metrics on `/metrics`.

Operators who outgrow one box already run Prometheus; llmtop's own signals (throttle reasons,
the server's VRAM, supervisor state, CPU fallback, probe latency) belong in that stack. This
sink keeps only the latest `Snapshot` (a reference swap on the agent's loop) plus the few
counters that need history (seconds each clock event reason was active, restarts, probe
histograms); `collect()` turns them into metric families when Prometheus scrapes, on the
HTTP server's thread. Nothing is computed between scrapes, so an idle exporter costs nothing
and a scrape always sees the newest tick.

What is deliberately not here: llama-server's own `/metrics` (Prometheus scrapes the server
directly, `llamacpp:*`), host metrics (node_exporter's job), and anything that could carry a
secret: labels are GPU identity, reason and alert names, the model's file name, llmtop's version
and mode — and every label value is checked against the agent's secrets before it is served.

Conventions (docs: ../shared/reference/prometheus.md): base units in the names, `_total`
counters, an `_info` gauge, bounded label sets. With `dcgm_names=True` the fields that
dcgm-exporter has are also served under its `DCGM_FI_*` names and units (MHz, W, MiB, %), so
existing GPU dashboards work unchanged.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from llmtop import __version__
from llmtop.snapshot import GpuSample, Snapshot
from llmtop.sources.gpu import REASON_BITS

if TYPE_CHECKING:  # pragma: no cover - typing only (the probe module pulls in httpx)
    from llmtop.sources.probe import ProbeResult

# Every NVML clock event reason gets a 1/0 series, so a reason that switches on is a change of
# value (graphable, alertable with `for:`) rather than a series appearing from nothing.
REASONS: tuple[str, ...] = tuple(name for _, name in REASON_BITS)
_REASON_BIT = {name: bit for bit, name in REASON_BITS}

# The states `llmtop_server_state{state}` can have (one is 1, the others 0): the supervisor's
# states in child/unit mode, and what the server's health says when llmtop only watches it.
SERVER_STATES: tuple[str, ...] = (
    "ready",
    "loading",
    "sleeping",
    "starting",
    "stopping",
    "restarting",
    "exited",
    "failed",
    "stopped",
    "down",
    "unauthorized",
    "error",
)
_HEALTH_STATE = {
    "ok": "ready",
    "loading": "loading",
    "sleeping": "sleeping",
    "unreachable": "down",
    "unauthorized": "unauthorized",
    "error": "error",
}
# Health values in which the server answered HTTP (llmtop_server_up 1).
_UP_HEALTH = ("ok", "loading", "sleeping", "unauthorized")

# Probe latency buckets (seconds). TTFT spans a warm tiny model (ms) to a cold 70B (tens of s);
# inter-token latency a fast GPU (a few ms) to a CPU fallback (a second).
TTFT_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
ITL_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

# A gap between two snapshots longer than this (a suspended agent) is not counted as time
# spent in the clock event reasons of the earlier snapshot: nobody saw what happened meanwhile.
MAX_INTEGRATION_GAP_S = 60.0
REDACTED = "***"
GPU_LABELS = ("gpu", "uuid", "name")
DCGM_LABELS = ("gpu", "UUID", "device", "modelName", "pci_bus_id", "Hostname")


class Stoppable(Protocol):
    """What serves the exporter (`exporter_http.ExporterServer`): stopped with the sink."""

    def stop(self) -> None: ...


@dataclass
class _Histogram:
    """Cumulative bucket counts, as a Prometheus histogram keeps them."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: int = 0
    sum: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.bounds)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out = [(_go_float(b), float(c)) for b, c in zip(self.bounds, self.counts, strict=True)]
        out.append(("+Inf", float(self.total)))
        return out


def _go_float(value: float) -> str:
    """A bucket bound as Prometheus' clients write it (`0.5`, `1.0`, `60.0`)."""
    return repr(float(value))


class MetricsExporter(Collector):
    """A `SnapshotSink` and `ProbeSink` that is also a prometheus_client `Collector`.

    Register it on a private `CollectorRegistry` (see `registry()`): the process-global default
    registry would add Python/process metrics that are node_exporter's business and would make
    two exporters in one process (the tests) collide.
    """

    def __init__(
        self,
        *,
        mode: str,
        secrets: Sequence[str] = (),
        dcgm_names: bool = False,
        probes: bool = False,
        hostname: str | None = None,
    ) -> None:
        self.mode = mode
        self.dcgm_names = dcgm_names
        self.probes = probes  # histograms are served (empty at first) when the agent probes
        self.hostname = hostname or socket.gethostname()
        self._secrets = tuple(s for s in secrets if s)
        self._lock = threading.Lock()
        self._latest: Snapshot | None = None
        self._reason_seconds: dict[tuple[str, str, str], dict[str, float]] = {}
        self._restarts_seen = 0  # attach mode: restarts the exporter saw itself
        self._last_start_time: float | None = None
        self._ttft = _Histogram(TTFT_BUCKETS)
        self._itl = _Histogram(ITL_BUCKETS)
        self._probe_failures = 0
        self._registry: CollectorRegistry | None = None
        self.server: Stoppable | None = None  # set by whoever serves the registry

    # ------------------------------------------------------------------ sink side (agent loop)
    def on_snapshot(self, snap: Snapshot) -> None:
        """Keep *snap* as the one served; add the time since the previous snapshot to the
        reasons that were active then (left sum: a reason counts from the tick it was seen)."""
        with self._lock:
            prev = self._latest
            if prev is not None:
                dt = snap.time - prev.time
                if 0 < dt <= MAX_INTEGRATION_GAP_S:
                    for g in prev.gpus:
                        if g.lost or not g.throttle_reasons:
                            continue
                        per = self._reason_seconds.setdefault(self._gpu_key(g), {})
                        for reason in g.throttle_reasons:
                            if reason in _REASON_BIT:
                                per[reason] = per.get(reason, 0.0) + dt
            for g in snap.gpus:  # a GPU's counters exist (at 0) from its first sample on
                if not g.lost and g.throttle_reasons is not None:
                    self._reason_seconds.setdefault(self._gpu_key(g), {})
            start = snap.server.process_start_time
            if start is not None:
                if self._last_start_time is not None and start != self._last_start_time:
                    self._restarts_seen += 1
                self._last_start_time = start
            self._latest = snap

    def on_probe(self, result: ProbeResult) -> None:
        """One probe into the histograms. A probe that found the server asleep measures the
        model load, not the server's latency, so it is left out (as the dashboard does)."""
        with self._lock:
            if not result.ok:
                self._probe_failures += 1
                return
            if result.includes_model_load:
                return
            if result.ttft_ms is not None:
                self._ttft.observe(result.ttft_ms / 1000.0)
            if result.itl_ms_mean is not None:
                # one observation per probe: its mean gap between tokens
                self._itl.observe(result.itl_ms_mean / 1000.0)

    def close(self) -> None:
        """Stop serving (the agent is ending): the port is free again at once."""
        server, self.server = self.server, None
        if server is not None:
            server.stop()

    # ------------------------------------------------------------------ scrape side (HTTP thread)
    def registry(self) -> CollectorRegistry:
        """A private registry holding only this exporter (made once)."""
        if self._registry is None:
            reg = CollectorRegistry(auto_describe=False)
            reg.register(self)
            self._registry = reg
        return self._registry

    def describe(self) -> Iterable[Metric]:
        """No up-front description: families depend on what the snapshot holds."""
        return ()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snap = self._latest
            reason_seconds = {k: dict(v) for k, v in self._reason_seconds.items()}
            restarts_seen = self._restarts_seen
            ttft = (self._ttft.buckets(), self._ttft.sum) if self.probes else None
            itl = (self._itl.buckets(), self._itl.sum) if self.probes else None
            failures = self._probe_failures
        yield from self._info(snap)
        if snap is None:
            return
        yield from self._server(snap, restarts_seen)
        yield from self._alerts(snap)
        yield from self._gpus(snap, reason_seconds)
        if self.dcgm_names:
            yield from self._dcgm(snap)
        if ttft is not None and itl is not None:
            h = HistogramMetricFamily(
                "llmtop_probe_ttft_seconds",
                "Time to first token of the agent's latency probes (client side).",
                buckets=ttft[0],
                sum_value=ttft[1],
            )
            yield h
            h = HistogramMetricFamily(
                "llmtop_probe_itl_seconds",
                "Mean inter-token latency of each of the agent's latency probes.",
                buckets=itl[0],
                sum_value=itl[1],
            )
            yield h
            yield CounterMetricFamily(
                "llmtop_probe_failures",
                "Latency probes that failed (error or cancelled).",
                value=float(failures),
            )

    # ------------------------------------------------------------------ families
    def _label(self, value: str | None) -> str:
        """A label value that never carries a secret (the API key, whole or in part)."""
        text = value or ""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text

    def _gpu_key(self, g: GpuSample) -> tuple[str, str, str]:
        return (str(g.index), self._label(g.uuid), self._label(g.name))

    def _info(self, snap: Snapshot | None) -> Iterator[Metric]:
        model = ""
        if snap is not None:
            path = snap.server.model_path or snap.server.model_alias or ""
            model = os.path.basename(path.rstrip("/")) if path else ""
        info = GaugeMetricFamily(
            "llmtop_info",
            "llmtop's version, how it watches the server (attach/child/unit) and the model file.",
            labels=("version", "mode", "model"),
        )
        info.add_metric((__version__, self.mode, self._label(model)), 1.0)
        yield info
        if snap is not None:
            yield GaugeMetricFamily(
                "llmtop_snapshot_timestamp_seconds",
                "Unix time of the snapshot served: an old value means the agent is stuck.",
                value=snap.time,
            )

    def _server(self, snap: Snapshot, restarts_seen: int) -> Iterator[Metric]:
        s = snap.server
        yield GaugeMetricFamily(
            "llmtop_server_up",
            "1 when llama-server answers HTTP (ready, loading, sleeping or refusing the key).",
            value=1.0 if s.health in _UP_HEALTH else 0.0,
        )
        yield GaugeMetricFamily(
            "llmtop_server_sleeping",
            "1 when --sleep-idle-seconds has unloaded the model (the next request reloads it).",
            value=1.0 if s.health == "sleeping" else 0.0,
        )
        state = _server_state(snap)
        fam = GaugeMetricFamily(
            "llmtop_server_state",
            "The server's state: 1 for the current one, 0 for the others.",
            labels=("state",),
        )
        for name in SERVER_STATES:
            fam.add_metric((name,), 1.0 if name == state else 0.0)
        yield fam
        if snap.supervisor is not None and snap.supervisor.mode != "attach":
            restarts = float(snap.supervisor.restarts)
        elif snap.unit is not None and snap.unit.n_restarts is not None:
            restarts = float(snap.unit.n_restarts)
        else:
            restarts = float(restarts_seen)
        yield CounterMetricFamily(
            "llmtop_server_restarts",
            "Restarts of llama-server: the supervisor's or systemd's count, else the restarts"
            " the agent saw (a new process start time).",
            value=restarts,
        )

    def _alerts(self, snap: Snapshot) -> Iterator[Metric]:
        counts: dict[tuple[str, str], int] = {}
        for a in snap.alerts:
            key = (a.kind, a.severity)
            counts[key] = counts.get(key, 0) + 1
        fam = GaugeMetricFamily(
            "llmtop_alert_active",
            "llmtop's active alerts (with its hysteresis): how many of this kind and severity.",
            labels=("kind", "severity"),
        )
        for (kind, severity), n in sorted(counts.items()):
            fam.add_metric((self._label(kind), severity), float(n))
        yield fam

    def _gpus(
        self, snap: Snapshot, reason_seconds: dict[tuple[str, str, str], dict[str, float]]
    ) -> Iterator[Metric]:
        gauges: list[tuple[str, str, float, str]] = [
            # (name, help, scale, GpuSample attribute)
            ("llmtop_gpu_temperature_celsius", "GPU core temperature.", 1.0, "temperature_c"),
            (
                "llmtop_gpu_temperature_slowdown_celsius",
                "Temperature at which the GPU slows its clocks (NVML slowdown threshold).",
                1.0,
                "temp_slowdown_c",
            ),
            (
                "llmtop_gpu_temperature_shutdown_celsius",
                "Temperature at which the GPU shuts down (NVML shutdown threshold).",
                1.0,
                "temp_shutdown_c",
            ),
            ("llmtop_gpu_sm_clock_hertz", "Current SM clock.", 1e6, "sm_clock_mhz"),
            ("llmtop_gpu_sm_clock_max_hertz", "Maximum SM clock.", 1e6, "sm_clock_max_mhz"),
            ("llmtop_gpu_power_watts", "Power draw.", 1.0, "power_w"),
            ("llmtop_gpu_power_limit_watts", "Enforced power limit.", 1.0, "power_limit_w"),
            ("llmtop_gpu_memory_used_bytes", "GPU memory in use.", 1.0, "memory_used_bytes"),
            ("llmtop_gpu_memory_total_bytes", "GPU memory in all.", 1.0, "memory_total_bytes"),
            (
                "llmtop_gpu_utilization_ratio",
                "Share of the last sample period a kernel ran (0-1).",
                0.01,
                "utilization_percent",
            ),
            (
                "llmtop_gpu_fan_ratio",
                "Fan speed as a share of its maximum (0-1).",
                0.01,
                "fan_percent",
            ),
        ]
        live = [g for g in snap.gpus if not g.lost]
        keys = {g.index: self._gpu_key(g) for g in snap.gpus}
        for name, doc, scale, attr in gauges:
            fam = GaugeMetricFamily(name, doc, labels=GPU_LABELS)
            for g in live:
                v = getattr(g, attr)
                if v is not None:
                    fam.add_metric(keys[g.index], float(v) * scale)
            yield fam
        lost = GaugeMetricFamily("llmtop_gpu_lost", "1 when NVML says the GPU fell off the bus.",
                                 labels=GPU_LABELS)  # fmt: skip
        for g in snap.gpus:
            lost.add_metric(keys[g.index], 1.0 if g.lost else 0.0)
        yield lost
        server = GaugeMetricFamily(
            "llmtop_server_gpu_memory_bytes",
            "GPU memory llama-server (and its children) holds on this GPU.",
            labels=GPU_LABELS,
        )
        for g in live:
            if g.server_memory_bytes is not None:
                server.add_metric(keys[g.index], float(g.server_memory_bytes))
        yield server
        active = GaugeMetricFamily(
            "llmtop_gpu_clock_event_active",
            "1 while NVML reports this clock event (throttle) reason, 0 otherwise.",
            labels=(*GPU_LABELS, "reason"),
        )
        for g in live:
            if g.throttle_reasons is None:
                continue
            on = set(g.throttle_reasons)
            for reason in REASONS:
                active.add_metric((*keys[g.index], reason), 1.0 if reason in on else 0.0)
        yield active
        seconds = CounterMetricFamily(
            "llmtop_gpu_clock_event_seconds",
            "Seconds this clock event reason was seen active (sampled on the agent's tick).",
            labels=(*GPU_LABELS, "reason"),
        )
        for key, per in reason_seconds.items():
            for reason in REASONS:
                seconds.add_metric((*key, reason), per.get(reason, 0.0))
        yield seconds

    def _dcgm(self, snap: Snapshot) -> Iterator[Metric]:
        fields: list[tuple[str, str, str]] = [
            ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "temperature_c"),
            ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", "sm_clock_mhz"),
            ("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", "mem_clock_mhz"),
            ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "power_w"),
            ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "utilization_percent"),
            (
                "DCGM_FI_DEV_MEM_COPY_UTIL",
                "Memory utilization (in %).",
                "memory_utilization_percent",
            ),
        ]
        live = [g for g in snap.gpus if not g.lost]
        labels = {g.index: self._dcgm_labels(g) for g in live}
        for name, doc, attr in fields:
            fam = GaugeMetricFamily(name, doc, labels=DCGM_LABELS)
            for g in live:
                v = getattr(g, attr)
                if v is not None:
                    fam.add_metric(labels[g.index], float(v))
            yield fam
        used = GaugeMetricFamily("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).",
                                 labels=DCGM_LABELS)  # fmt: skip
        free = GaugeMetricFamily("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).",
                                 labels=DCGM_LABELS)  # fmt: skip
        for g in live:
            if g.memory_used_bytes is not None:
                used.add_metric(labels[g.index], float(g.memory_used_bytes // (1 << 20)))
            free_b = g.memory_free_bytes
            if (
                free_b is None
                and g.memory_total_bytes is not None
                and g.memory_used_bytes is not None
            ):
                free_b = g.memory_total_bytes - g.memory_used_bytes
            if free_b is not None:
                free.add_metric(labels[g.index], float(free_b // (1 << 20)))
        yield used
        yield free
        # dcgm-exporter has served the mask under both names (CLOCK_THROTTLE_REASONS, then
        # CLOCKS_EVENT_REASONS as NVML renamed it): both, so dashboards of either age work.
        for name in ("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "DCGM_FI_DEV_CLOCKS_EVENT_REASONS"):
            fam = GaugeMetricFamily(name, "Current clock event (throttle) reasons (bitmask).",
                                    labels=DCGM_LABELS)  # fmt: skip
            for g in live:
                if g.throttle_reasons is not None:
                    fam.add_metric(labels[g.index], float(reason_mask(g.throttle_reasons)))
            yield fam

    def _dcgm_labels(self, g: GpuSample) -> tuple[str, ...]:
        return (
            str(g.index),
            self._label(g.uuid),
            f"nvidia{g.index}",
            self._label(g.name),
            self._label(g.pci_bus_id),
            self._label(self.hostname),
        )


def reason_mask(reasons: Iterable[str]) -> int:
    """NVML's bitmask for reason names (names llmtop does not know, e.g. '0x200', as hex)."""
    mask = 0
    for r in reasons:
        bit = _REASON_BIT.get(r)
        if bit is not None:
            mask |= bit
        elif r.startswith("0x"):
            try:
                mask |= int(r, 16)
            except ValueError:
                continue
    return mask


def _server_state(snap: Snapshot) -> str:
    """One word for `llmtop_server_state`: the supervisor's state where llmtop supervises the
    server (a sleeping ready server says sleeping), else what its health says."""
    health_state = _HEALTH_STATE.get(snap.server.health, "error")
    sup = snap.supervisor
    if sup is not None and sup.mode != "attach" and sup.state in SERVER_STATES:
        if sup.state == "ready" and health_state != "ready":
            return health_state
        return sup.state
    return health_state


# ---------------------------------------------------------------------------- text exposition
class TextRenderer:
    """Prometheus text format 0.0.4 for a registry's families, quickly.

    prometheus_client's `generate_latest` validates and escapes every label name of every
    sample (its UTF-8 name support): ~6 µs a sample, 1.8 ms for an 8-GPU agent, which with the
    HTTP layer put a scrape's p95 over the 5 ms budget. The label sets here are few and stable
    (the GPUs, the reasons), so each rendered `{...}` is cached; names are llmtop's own, valid
    by construction. The output parses to the same samples as `generate_latest` (tested).
    Text 0.0.4 is what Go exporters serve by default too, whatever Prometheus' Accept says.
    """

    MAX_CACHED = 4096

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._labels: dict[tuple[tuple[str, str], ...], str] = {}

    def render(self) -> bytes:
        out: list[str] = []
        cache = self._labels
        if len(cache) > self.MAX_CACHED:  # label values churned (GPU names, alert kinds)
            cache.clear()
        for fam in self.registry.collect():
            name = fam.name + "_total" if fam.type == "counter" else fam.name
            kind = fam.type if fam.type in ("counter", "gauge", "histogram") else "untyped"
            doc = fam.documentation.replace("\\", r"\\").replace("\n", r"\n")
            out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
            for s in fam.samples:
                if s.labels:
                    key = tuple(s.labels.items())
                    text = cache.get(key)
                    if text is None:
                        text = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in key) + "}"
                        cache[key] = text
                    out.append(f"{s.name}{text} {_number(s.value)}\n")
                else:
                    out.append(f"{s.name} {_number(s.value)}\n")
        return "".join(out).encode()


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))
