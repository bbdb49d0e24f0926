"""Thermal diagnosis: what limited the GPU, for how long, and what it cost in decode speed.

Pure over `ThermalPoint`s (one GPU sample + the server's generation tokens/s at that instant).
`ThermalTracker` keeps a bounded history per GPU (a `TimeSeries` of points) and turns reason changes into events:
"14:02:11 HW thermal slowdown started — 87 °C, SM 1980→1410 MHz; gen 52→38 tok/s".
"""

from __future__ import annotations

import statistics
import time as _time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from llmtop.model.timeseries import TimeSeries
from llmtop.snapshot import GpuSample, ThermalEvent, ThermalReport

# Reasons that limit the clocks, in the verdict's words (HwSlowdown is the umbrella of the two
# hardware brakes; it only speaks for itself when neither specific bit is set).
LIMITING: dict[str, str] = {
    "HwThermalSlowdown": "thermal (HW slowdown)",
    "SwThermalSlowdown": "thermal (SW slowdown)",
    "HwPowerBrakeSlowdown": "power brake (HW)",
    "HwSlowdown": "HW slowdown",
    "SwPowerCap": "power cap (SW)",
}
EVENT_WORDS: dict[str, str] = {
    "HwThermalSlowdown": "HW thermal slowdown",
    "SwThermalSlowdown": "SW thermal slowdown",
    "HwPowerBrakeSlowdown": "HW power brake",
    "HwSlowdown": "HW slowdown",
    "SwPowerCap": "SW power cap",
}
# Reasons that mean the card is braking because of heat or a power brake (alerts use these).
BRAKES = frozenset({"HwThermalSlowdown", "SwThermalSlowdown", "HwPowerBrakeSlowdown", "HwSlowdown"})
MAX_EVENTS = 50


def limiting_reasons(reasons: Sequence[str] | None) -> frozenset[str]:
    """The limiting reasons among *reasons*, the HwSlowdown umbrella folded into specific bits."""
    if not reasons:
        return frozenset()
    active = frozenset(r for r in reasons if r in LIMITING)
    if "HwSlowdown" in active and active & {"HwThermalSlowdown", "HwPowerBrakeSlowdown"}:
        active = active - {"HwSlowdown"}
    return active


@dataclass(frozen=True)
class ThermalPoint:
    time: float
    gpu_index: int
    temperature_c: float | None = None
    sm_clock_mhz: int | None = None
    reasons: tuple[str, ...] | None = None
    gen_tokens_per_s: float | None = None

    @classmethod
    def of(cls, time: float, gpu: GpuSample, gen_tokens_per_s: float | None) -> ThermalPoint:
        return cls(
            time,
            gpu.index,
            gpu.temperature_c,
            gpu.sm_clock_mhz,
            gpu.throttle_reasons,
            gen_tokens_per_s,
        )


def fmt_span(seconds: float) -> str:
    """300 → "5 min", 45 → "45 s", 150 → "2m30s"."""
    s = int(round(seconds))
    if s >= 60 and s % 60 == 0:
        return f"{s // 60} min"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s} s"


def fmt_signed_pct(v: float) -> str:
    """−24 % / +3 % (a real minus sign, as printed for people)."""
    r = round(v)
    return f"−{abs(r)} %" if r < 0 else f"+{r} %"


def clock_str(t: float) -> str:
    return _time.strftime("%H:%M:%S", _time.localtime(t))


def _weights(points: Sequence[ThermalPoint], now: float) -> list[float]:
    """Seconds each point stands for: until the next point (gaps capped at 3× the usual step)."""
    if not points:
        return []
    steps = [b.time - a.time for a, b in zip(points, points[1:], strict=False)]
    usual = statistics.median(steps) if steps else 1.0
    usual = usual if usual > 0 else 1.0
    out = [min(max(s, 0.0), 3 * usual) for s in steps]
    out.append(min(max(now - points[-1].time, 0.0), usual) if now > points[-1].time else 0.0)
    return out


def thermal_report(
    points: Sequence[ThermalPoint],
    now: float,
    window_s: float = 300.0,
    events: Sequence[ThermalEvent] = (),
) -> ThermalReport:
    """The verdict over the last *window_s* seconds of one GPU's points (sorted by time)."""
    pts = [p for p in points if p.time >= now - window_s and p.time <= now]
    if len(pts) < 2 or all(p.reasons is None for p in pts):
        return ThermalReport(window_s=window_s, events=tuple(events))
    weights = _weights(pts, now)
    covered = sum(weights)
    if covered <= 0:
        return ThermalReport(window_s=window_s, events=tuple(events))
    throttled_s = 0.0
    per_reason: dict[str, float] = {}
    gen_in: list[float] = []
    gen_out: list[float] = []
    for p, w in zip(pts, weights, strict=True):
        active = limiting_reasons(p.reasons)
        if active:
            throttled_s += w
            for r in active:
                per_reason[r] = per_reason.get(r, 0.0) + w
        if p.gen_tokens_per_s is not None and p.gen_tokens_per_s > 0:
            (gen_in if active else gen_out).append(p.gen_tokens_per_s)
    span = fmt_span(min(window_s, pts[-1].time - pts[0].time + weights[-1]))
    pct = 100.0 * throttled_s / covered
    change = None
    if gen_in and gen_out:
        change = 100.0 * (statistics.fmean(gen_in) / statistics.fmean(gen_out) - 1.0)
    if throttled_s <= 0:
        verdict = f"not throttled in the last {span}"
    else:
        top = max(per_reason, key=lambda r: (per_reason[r], r))
        verdict = f"{LIMITING[top]} {pct:.0f} % of the last {span}"
        if change is not None:
            verdict += f"; decode {fmt_signed_pct(change)} while throttled"
    return ThermalReport(
        window_s=window_s,
        verdict=verdict,
        throttled_percent=pct,
        decode_change_percent=change,
        events=tuple(events),
    )


@dataclass
class _GpuState:
    active: frozenset[str] = frozenset()
    started: dict[str, float] | None = None
    sm_before: int | None = None  # SM clock at the last unthrottled point
    gen_before: float | None = None  # gen tok/s at the last unthrottled point (when generating)


class ThermalTracker:
    """Bounded per-GPU history of points; emits start/end events as reasons change."""

    def __init__(self, maxlen: int = 3600) -> None:
        self.maxlen = maxlen
        self.points: dict[int, TimeSeries[ThermalPoint]] = {}
        self.events: deque[ThermalEvent] = deque(maxlen=MAX_EVENTS)
        self.events_seen = 0  # every event ever added (the deque keeps the last MAX_EVENTS)
        self.last_limited_at = float("-inf")  # the last point with a limiting reason (any GPU)
        self._state: dict[int, _GpuState] = {}

    def add(self, p: ThermalPoint) -> list[ThermalEvent]:
        series = self.points.get(p.gpu_index)
        if series is None:
            series = self.points[p.gpu_index] = TimeSeries(self.maxlen)
        if not series.append_newer(p.time, p):
            return []  # the same snapshot again (or an older one): nothing new
        st = self._state.setdefault(p.gpu_index, _GpuState(started={}))
        assert st.started is not None
        new: list[ThermalEvent] = []
        if p.reasons is None:
            return new
        active = limiting_reasons(p.reasons)
        if active:
            self.last_limited_at = max(self.last_limited_at, p.time)
        if active == st.active:  # nothing started or ended (every idle tick): no words to build
            if not active:
                if p.sm_clock_mhz is not None:
                    st.sm_before = p.sm_clock_mhz
                if p.gen_tokens_per_s is not None and p.gen_tokens_per_s > 0:
                    st.gen_before = p.gen_tokens_per_s
            return new
        hhmmss = clock_str(p.time)
        temp = f"{p.temperature_c:.0f} °C" if p.temperature_c is not None else "— °C"
        for r in sorted(active - st.active, key=list(LIMITING).index):
            st.started[r] = p.time
            sm = ""
            if p.sm_clock_mhz is not None:
                before = st.sm_before if st.sm_before is not None else p.sm_clock_mhz
                sm = f", SM {before}→{p.sm_clock_mhz} MHz"
            gen = ""
            if st.gen_before is not None and p.gen_tokens_per_s is not None:
                gen = f"; gen {st.gen_before:.0f}→{p.gen_tokens_per_s:.0f} tok/s"
            msg = f"{hhmmss} {EVENT_WORDS[r]} started — {temp}{sm}{gen}"
            new.append(ThermalEvent(p.time, p.gpu_index, "throttle_start", msg))
        for r in sorted(st.active - active, key=list(LIMITING).index):
            began = st.started.pop(r, p.time)
            sm = f", SM {p.sm_clock_mhz} MHz" if p.sm_clock_mhz is not None else ""
            msg = f"{hhmmss} {EVENT_WORDS[r]} ended after {fmt_span(p.time - began)} — {temp}{sm}"
            new.append(ThermalEvent(p.time, p.gpu_index, "throttle_end", msg))
        st.active = active
        if not active:
            if p.sm_clock_mhz is not None:
                st.sm_before = p.sm_clock_mhz
            if p.gen_tokens_per_s is not None and p.gen_tokens_per_s > 0:
                st.gen_before = p.gen_tokens_per_s
        self.events.extend(new)
        self.events_seen += len(new)
        return new

    def active_since(self, gpu_index: int) -> dict[str, float]:
        """Limiting reasons active now on the GPU → when each started."""
        st = self._state.get(gpu_index)
        return dict(st.started or {}) if st else {}

    def report(
        self, now: float, window_s: float = 300.0, gpu_indexes: Sequence[int] | None = None
    ) -> ThermalReport | None:
        """The verdict for the most throttled GPU (among *gpu_indexes*), with all events."""
        idx = list(gpu_indexes) if gpu_indexes is not None else list(self.points)
        best: ThermalReport | None = None
        best_idx = -1
        events = tuple(self.events)
        for i in idx:
            pts = self.points.get(i)
            if not pts:
                continue
            # the window only, read from the newest end: a tick costs 5 min, not the hour kept
            r = thermal_report(pts.since(now - window_s), now, window_s, events)
            if best is None or (r.throttled_percent or -1) > (best.throttled_percent or -1):
                best, best_idx = r, i
        if best is not None and best.verdict and len(self.points) > 1:
            best = ThermalReport(
                best.window_s,
                f"GPU{best_idx}: {best.verdict}",
                best.throttled_percent,
                best.decode_change_percent,
                best.events,
            )
        return best
