"""What happened while nobody watched: pure analysis of recorded history rows.

`build_report(window)` turns the rows of one time window (read by sources/history_db.py) into a
`HistoryReport`: throttled spans per GPU tied to the server's decode speed during and outside
them, alerts with their durations, the server's events with the log lines before them, VRAM
peaks per GPU and for the server, and TTFT/ITL percentiles per hour from recorded probes.

A throttled span is a run of consecutive samples of one GPU whose clock-event reasons include a
limiting one (diagnosis/thermal.py `limiting_reasons`: thermal slowdown, power brake, power
cap; GpuIdle and application clocks are not throttling). It starts at the first throttled
sample and ends at the first sample without throttling, so both ends are within one sampling
interval of the real change; a gap in the recording (agent stopped) ends it at the last
throttled sample. Decode speed counts samples where the server was generating (tokens/s > 0),
so idle time does not pass for slowness.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from llmtop.diagnosis.thermal import limiting_reasons
from llmtop.sources.history_db import AlertRow, EventRow, GpuRow, ProbeRow, ServerRow

# A recording gap longer than this many sampling intervals ends a span.
GAP_INTERVALS = 3.0
HOUR_S = 3600.0


@dataclass(frozen=True)
class HistoryWindow:
    """The rows of one window, as the reader returned them (time-ordered)."""

    start: float
    end: float
    gpus: Sequence[GpuRow]
    servers: Sequence[ServerRow]
    alerts: Sequence[AlertRow] = ()
    events: Sequence[EventRow] = ()
    probes: Sequence[ProbeRow] = ()
    gpu_names: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ThrottleSpan:
    gpu_index: int
    start: float
    end: float
    duration_s: float
    reasons: tuple[str, ...]
    peak_temperature_c: float | None
    min_sm_clock_percent: float | None
    gen_tokens_per_s_during: float | None
    gen_tokens_per_s_outside: float | None
    ongoing: bool = False  # still throttled at the window's last sample


@dataclass(frozen=True)
class AlertSpan:
    kind: str
    severity: str
    message: str
    start: float
    end: float
    duration_s: float
    ongoing: bool


@dataclass(frozen=True)
class ReportEvent:
    time: float
    kind: str
    severity: str
    message: str
    source: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class GpuVramPeak:
    gpu_index: int
    name: str | None
    peak_memory_used_bytes: int | None
    peak_memory_used_at: float | None
    memory_total_bytes: int | None
    peak_server_memory_bytes: int | None
    peak_server_memory_at: float | None


@dataclass(frozen=True)
class ServerVramPeak:
    """The server's VRAM summed over its GPUs, at its highest sample."""

    peak_bytes: int
    at: float


@dataclass(frozen=True)
class VramPeaks:
    gpus: tuple[GpuVramPeak, ...]
    server: ServerVramPeak | None


@dataclass(frozen=True)
class LatencyHour:
    start: float
    probes: int
    failed: int
    ttft_ms_p50: float | None
    ttft_ms_p95: float | None
    itl_ms_p50: float | None
    itl_ms_p95: float | None


@dataclass(frozen=True)
class HistoryReport:
    throttle_spans: tuple[ThrottleSpan, ...]
    alerts: tuple[AlertSpan, ...]
    events: tuple[ReportEvent, ...]
    vram_peaks: VramPeaks
    latency: tuple[LatencyHour, ...]

    def to_json_dict(self) -> dict[str, object]:
        """The documented JSON form: exactly the five top-level keys."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: object) -> object:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def build_report(window: HistoryWindow) -> HistoryReport:
    return HistoryReport(
        throttle_spans=throttle_spans(window.gpus, window.servers),
        alerts=alert_spans(window.alerts, window.start, window.end),
        events=tuple(
            ReportEvent(
                e.time, e.kind, e.severity, e.message, e.source, tuple((e.lines or "").splitlines())
            )  # fmt: skip
            for e in window.events
        ),
        vram_peaks=vram_peaks(window.gpus, window.gpu_names),
        latency=latency_by_hour(window.probes),
    )


# ---------------------------------------------------------------------- throttling
def sampling_interval(times: Sequence[float]) -> float:
    """The recording's interval: the median step between samples (1 s when unknown)."""
    steps = [b - a for a, b in zip(times, times[1:], strict=False) if b > a]
    return statistics.median(steps) if steps else 1.0


def throttle_spans(
    gpus: Sequence[GpuRow], servers: Sequence[ServerRow]
) -> tuple[ThrottleSpan, ...]:
    gen = {s.time: s.gen_tokens_per_s for s in servers}
    by_gpu: dict[int, list[GpuRow]] = {}
    for g in gpus:
        by_gpu.setdefault(g.gpu_index, []).append(g)
    spans: list[ThrottleSpan] = []
    for index, rows in sorted(by_gpu.items()):
        rows.sort(key=lambda r: r.time)
        gap = GAP_INTERVALS * sampling_interval([r.time for r in rows])
        runs = _throttled_runs(rows, gap)
        inside = {r.time for run, _ in runs for r in run}
        outside = _mean_generating(gen.get(r.time) for r in rows if r.time not in inside)
        for run, end in runs:
            reasons: set[str] = set()
            for r in run:
                reasons |= limiting_reasons(r.reasons)
            temps = [r.temperature_c for r in run if r.temperature_c is not None]
            clocks = [
                100.0 * r.sm_clock_mhz / r.sm_clock_max_mhz
                for r in run
                if r.sm_clock_mhz is not None and r.sm_clock_max_mhz
            ]
            start = run[0].time
            stop = end if end is not None else run[-1].time
            spans.append(
                ThrottleSpan(
                    gpu_index=index,
                    start=start,
                    end=stop,
                    duration_s=round(stop - start, 3),
                    reasons=tuple(sorted(reasons)),
                    peak_temperature_c=max(temps) if temps else None,
                    min_sm_clock_percent=round(min(clocks), 1) if clocks else None,
                    gen_tokens_per_s_during=_mean_generating(gen.get(r.time) for r in run),
                    gen_tokens_per_s_outside=outside,
                    ongoing=end is None and run[-1] is rows[-1],
                )
            )
    spans.sort(key=lambda s: (s.start, s.gpu_index))
    return tuple(spans)


def _throttled_runs(rows: Sequence[GpuRow], gap: float) -> list[tuple[list[GpuRow], float | None]]:
    """Runs of throttled samples, each with the time of the first unthrottled sample after it
    (None when the recording stops or has a gap first)."""
    runs: list[tuple[list[GpuRow], float | None]] = []
    run: list[GpuRow] = []
    for r in rows:
        if run and r.time - run[-1].time > gap:
            runs.append((run, None))  # the agent stopped watching: end at the last sample
            run = []
        if limiting_reasons(r.reasons):
            run.append(r)
        elif run:
            runs.append((run, r.time))
            run = []
    if run:
        runs.append((run, None))
    return runs


def _mean_generating(values: Iterable[float | None]) -> float | None:
    xs = [v for v in values if v is not None and v > 0]
    return round(statistics.fmean(xs), 2) if xs else None


# ---------------------------------------------------------------------- alerts
def alert_spans(alerts: Sequence[AlertRow], start: float, end: float) -> tuple[AlertSpan, ...]:
    """Each alert clipped to the window; duration from its start (`since`) to its end (or the
    last sample that still showed it)."""
    out = []
    for a in alerts:
        stop = a.ended if a.ended is not None else a.last_seen
        begin = max(a.since, start)
        stop = min(stop, end)
        out.append(
            AlertSpan(
                a.kind,
                a.severity,
                a.message,
                begin,
                stop,
                round(max(0.0, stop - begin), 3),
                ongoing=a.ended is None,
            )  # fmt: skip
        )
    return tuple(out)


# ---------------------------------------------------------------------- VRAM
def vram_peaks(gpus: Sequence[GpuRow], names: dict[int, str]) -> VramPeaks:
    per: dict[int, list[GpuRow]] = {}
    server_at: dict[float, int] = {}
    for g in gpus:
        per.setdefault(g.gpu_index, []).append(g)
        if g.server_memory_bytes is not None:
            server_at[g.time] = server_at.get(g.time, 0) + g.server_memory_bytes
    peaks = []
    for index, rows in sorted(per.items()):
        used = [r for r in rows if r.memory_used_bytes is not None]
        srv = [r for r in rows if r.server_memory_bytes is not None]
        top = max(used, key=lambda r: r.memory_used_bytes or 0) if used else None
        stop = max(srv, key=lambda r: r.server_memory_bytes or 0) if srv else None
        peaks.append(
            GpuVramPeak(
                gpu_index=index,
                name=names.get(index),
                peak_memory_used_bytes=top.memory_used_bytes if top else None,
                peak_memory_used_at=top.time if top else None,
                memory_total_bytes=next(
                    (r.memory_total_bytes for r in rows if r.memory_total_bytes), None
                ),
                peak_server_memory_bytes=stop.server_memory_bytes if stop else None,
                peak_server_memory_at=stop.time if stop else None,
            )
        )
    server = None
    if server_at:
        t, peak = max(server_at.items(), key=lambda kv: kv[1])
        server = ServerVramPeak(peak, t)
    return VramPeaks(tuple(peaks), server)


# ---------------------------------------------------------------------- latency
def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    xs = sorted(values)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(xs) - 1)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (k - lo), 3)


def latency_by_hour(probes: Sequence[ProbeRow]) -> tuple[LatencyHour, ...]:
    """TTFT p50/p95 over the hour's probes; ITL p50 of their medians, p95 of their p95s."""
    hours: dict[float, list[ProbeRow]] = {}
    for p in probes:
        hours.setdefault(math.floor(p.time / HOUR_S) * HOUR_S, []).append(p)
    out = []
    for start, rows in sorted(hours.items()):
        ok = [p for p in rows if p.ok]
        ttft = [p.ttft_ms for p in ok if p.ttft_ms is not None]
        out.append(
            LatencyHour(
                start=start,
                probes=len(rows),
                failed=len(rows) - len(ok),
                ttft_ms_p50=percentile(ttft, 50),
                ttft_ms_p95=percentile(ttft, 95),
                itl_ms_p50=percentile([p.itl_ms_p50 for p in ok if p.itl_ms_p50 is not None], 50),
                itl_ms_p95=percentile([p.itl_ms_p95 for p in ok if p.itl_ms_p95 is not None], 95),
            )
        )
    return tuple(out)
