"""What happened while nobody watched: pure analysis of recorded history rows.

`build_report(window)` turns what the reader (sources/history_db.py) found in one window into a
`HistoryReport`: throttled spans per GPU tied to the server's decode speed during and outside
them, alerts with their durations, the server's events with the log lines before them, VRAM
peaks per GPU and for the server, and TTFT/ITL percentiles per hour from recorded probes.

A throttled span is a run of consecutive samples of one GPU whose clock-event reasons include a
limiting one (diagnosis/thermal.py `limiting_reasons`: thermal slowdown, power brake, power
cap; GpuIdle and application clocks are not throttling). It starts at the first throttled
sample and ends at the first sample without throttling, so both ends are within one sampling
interval of the real change; a gap in the recording (agent stopped) ends it at the last
throttled sample. Decode speed counts samples where the server was generating (tokens/s > 0),
so idle time does not pass for slowness. The runs are found by the reader in SQL; only their
own samples are loaded, so a report over a week of 1 s samples stays fast.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmtop.diagnosis.thermal import LIMITING, limiting_reasons
from llmtop.sources.history_db import (
    AlertRow,
    EventRow,
    GpuPeak,
    ProbeRow,
    ThrottleRun,
)
from llmtop.sources.history_schema import REASONS_SEPARATOR

# A recording gap longer than this many sampling intervals ends a span.
GAP_INTERVALS = 3.0
# The reasons that make a sample throttled (thermal slowdown, power brake, power cap).
THROTTLE_REASONS = tuple(LIMITING)
HOUR_S = 3600.0


@dataclass(frozen=True)
class ThrottledRun:
    """One run of throttled samples of a GPU (found and summarised by the reader) with the
    server's decode speeds (> 0) during it."""

    run: ThrottleRun
    gen_during: Sequence[float]


@dataclass(frozen=True)
class HistoryWindow:
    """What the reader returned for one window (small: a 7-day window is never loaded whole)."""

    start: float
    end: float
    runs: Sequence[ThrottledRun] = ()
    gen_total: tuple[float, int] = (0.0, 0)  # (sum, count) of decode tok/s > 0 in the window
    gpu_peaks: Sequence[GpuPeak] = ()
    server_peak: tuple[int, float] | None = None
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
        throttle_spans=throttle_spans(window.runs, window.gen_total),
        alerts=alert_spans(window.alerts, window.start, window.end),
        events=tuple(
            ReportEvent(
                e.time, e.kind, e.severity, e.message, e.source, tuple((e.lines or "").splitlines())
            )  # fmt: skip
            for e in window.events
        ),
        vram_peaks=vram_peaks(window.gpu_peaks, window.server_peak, window.gpu_names),
        latency=latency_by_hour(window.probes),
    )


# ---------------------------------------------------------------------- throttling
def throttle_spans(
    runs: Sequence[ThrottledRun], gen_total: tuple[float, int]
) -> tuple[ThrottleSpan, ...]:
    """Spans from the reader's runs. Decode speed outside = the window's generating samples
    less those inside this GPU's spans."""
    inside: dict[int, tuple[float, int]] = {}
    for r in runs:
        s, n = inside.get(r.run.gpu_index, (0.0, 0))
        inside[r.run.gpu_index] = (s + sum(r.gen_during), n + len(r.gen_during))
    spans: list[ThrottleSpan] = []
    for r in runs:
        run = r.run
        s_in, n_in = inside[run.gpu_index]
        n_out = gen_total[1] - n_in
        outside = round((gen_total[0] - s_in) / n_out, 2) if n_out > 0 else None
        reasons: set[str] = set()
        for names in run.reason_lists:
            reasons |= limiting_reasons(names.split(REASONS_SEPARATOR))
        stop = run.next_time if run.next_time is not None else run.last
        spans.append(
            ThrottleSpan(
                gpu_index=run.gpu_index,
                start=run.first,
                end=stop,
                duration_s=round(stop - run.first, 3),
                reasons=tuple(sorted(reasons)),
                peak_temperature_c=run.peak_temperature_c,
                min_sm_clock_percent=run.min_sm_clock_percent,
                gen_tokens_per_s_during=(
                    round(statistics.fmean(r.gen_during), 2) if r.gen_during else None
                ),
                gen_tokens_per_s_outside=outside,
                ongoing=run.next_time is None,
            )
        )
    spans.sort(key=lambda s: (s.start, s.gpu_index))
    return tuple(spans)


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
def vram_peaks(
    peaks: Sequence[GpuPeak], server: tuple[int, float] | None, names: dict[int, str]
) -> VramPeaks:
    gpus = tuple(
        GpuVramPeak(
            p.gpu_index,
            names.get(p.gpu_index),
            p.peak_memory_used_bytes,
            p.peak_memory_used_at,
            p.memory_total_bytes,
            p.peak_server_memory_bytes,
            p.peak_server_memory_at,
        )  # fmt: skip
        for p in sorted(peaks, key=lambda p: p.gpu_index)
    )
    return VramPeaks(gpus, ServerVramPeak(*server) if server is not None else None)


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
