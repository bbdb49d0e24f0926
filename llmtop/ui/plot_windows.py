"""What the GPU tab's plots show over 5 min, 1 h or 24 h, kept from the same snapshots.

Three bounded tiers (llmtop.model.timeseries.SeriesGroup), fed by every snapshot even while
the tab is hidden: the samples themselves for 5 minutes, 5-second buckets for an hour and
minute buckets for a day. A bucket keeps what a plot of that width can show — the lowest and
highest temperature and SM clock (so a one-second peak or clock cut stays visible in a day's
plot), the worst throttle, the mean tokens/s — and the buckets are filled from the history DB
(`load`, llmtop.sources.history_plot) where one exists: the dashboard opens with a day behind it,
and replay refills the window that ends at its cursor after a jump.

Memory: 600 + 760 + 1 460 points × (5 per GPU + 1): ~1 MB for 8 GPUs, whatever the uptime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmtop.model.timeseries import SeriesGroup
from llmtop.snapshot import Snapshot
from llmtop.sources.history_plot import (
    NOT_THROTTLED,
    POWER_LIMITED,
    PlotHistory,
    throttle_level,
)
from llmtop.ui.widgets.time_plot import Span


@dataclass(frozen=True)
class Window:
    key: str  # what the axis row and the toast say: "5m", "1h", "24h"
    seconds: float
    label: str
    bucket_s: float  # 0: the samples themselves
    keep: int  # points kept (a little more than the window)


WINDOWS = (
    Window("5m", 300.0, "5 min", 0.0, 600),
    Window("1h", 3600.0, "1 h", 5.0, 760),
    Window("24h", 86400.0, "24 h", 60.0, 1460),
)
SPAN_STYLE = {POWER_LIMITED: "yellow"}  # thermal (and unknown) limits: red


def _keys(i: int) -> tuple[str, str, str, str, str]:
    return (f"t_lo/{i}", f"t_hi/{i}", f"c_lo/{i}", f"c_hi/{i}", f"thr/{i}")


def _values(snap: Snapshot) -> dict[str, float | None]:
    out: dict[str, float | None] = {"gen": snap.server.gen_tokens_per_s}
    for g in snap.gpus:
        t_lo, t_hi, c_lo, c_hi, thr = _keys(g.index)
        temp = None if g.lost or g.temperature_c is None else float(g.temperature_c)
        pct = None
        if not g.lost and g.sm_clock_mhz is not None and g.sm_clock_max_mhz:
            pct = 100.0 * g.sm_clock_mhz / g.sm_clock_max_mhz
        out[t_lo] = out[t_hi] = temp
        out[c_lo] = out[c_hi] = pct
        out[thr] = None if g.lost else float(throttle_level(g.throttle_reasons))
    return out


def _merge(acc: dict[str, list[float]], values: dict[str, float | None]) -> None:
    """Fold one sample into a bucket: lows keep the min, highs and throttle the max, gen sums."""
    for name, v in values.items():
        if v is None or not math.isfinite(v):
            continue
        cur = acc.get(name)
        if cur is None:
            acc[name] = [v, 1.0]
        elif name == "gen":
            cur[0] += v
            cur[1] += 1.0
        elif name.startswith(("t_lo", "c_lo")):
            cur[0] = min(cur[0], v)
        else:
            cur[0] = max(cur[0], v)


def _result(acc: dict[str, list[float]]) -> dict[str, float | None]:
    return {n: (v[0] / v[1] if n == "gen" else v[0]) for n, v in acc.items()}


class _Tier:
    """One window's points: samples, or buckets of `bucket_s` (the newest one still filling)."""

    def __init__(self, window: Window) -> None:
        self.window = window
        self.group = SeriesGroup(window.keep)
        self._bucket: float | None = None  # start of the bucket being filled
        self._acc: dict[str, list[float]] = {}

    def add(self, t: float, values: dict[str, float | None]) -> None:
        b = self.window.bucket_s
        if not b:
            self.group.record(t, values)
            return
        start = math.floor(t / b) * b
        if self._bucket is not None and start > self._bucket:
            self.group.record(self._bucket, _result(self._acc))
            self._acc = {}
        if self._bucket is None or start >= self._bucket:
            self._bucket = start
            _merge(self._acc, values)

    @property
    def newest(self) -> float | None:
        return self._bucket if self.window.bucket_s else self.group.last_time

    def points(self, name: str, t0: float) -> list[tuple[float, float | None]]:
        """(time, value) of member *name* at or after *t0*, the filling bucket last."""
        series = self.group.get(name)
        out = [(t, v) for t, v in series.items() if t >= t0] if series is not None else []
        if self._bucket is not None and self._bucket >= t0:
            cur = self._acc.get(name)
            out.append((self._bucket, None if cur is None else _result({name: cur})[name]))
        return out

    def clear(self) -> None:
        self.group.clear()
        self._bucket = None
        self._acc = {}


class GpuPlotHistory:
    """The three windows' points; `record` every snapshot (a repeated or older one is dropped)."""

    def __init__(self) -> None:
        self.tiers = {w.key: _Tier(w) for w in WINDOWS}
        self.last_time: float | None = None
        self.interval_s = 1.0  # the step between the last two samples (spans' right edges)

    def record(self, snap: Snapshot) -> bool:
        if self.last_time is not None and snap.time <= self.last_time:
            return False
        if self.last_time is not None:
            self.interval_s = min(60.0, max(0.05, snap.time - self.last_time))
        self.last_time = snap.time
        values = _values(snap)
        for tier in self.tiers.values():
            tier.add(snap.time, values)
        return True

    def clear(self) -> None:
        """Forget everything (replay, before the window at the cursor is loaded)."""
        for tier in self.tiers.values():
            tier.clear()
        self.last_time = None

    def load(self, window: Window, past: PlotHistory) -> None:
        """Put the recorded buckets of *past* before what this window holds already."""
        tier = self.tiers[window.key]
        first = tier.group.times()[:1] or ([tier._bucket] if tier._bucket is not None else [])
        keep_from = first[0] if first else math.inf
        live_times = tier.group.times()
        live = {n: tier.group[n].values() for n in tier.group.names()}
        bucket, acc = tier._bucket, tier._acc
        tier.group.clear()
        rows: dict[float, dict[str, float | None]] = {}
        for t, v in past.gen:
            rows.setdefault(t, {})["gen"] = v
        for gpu, buckets in past.gpus.items():
            t_lo, t_hi, c_lo, c_hi, thr = _keys(gpu)
            for bk in buckets:
                row = rows.setdefault(bk.time, {})
                row[t_lo], row[t_hi] = bk.temp_min, bk.temp_max
                row[c_lo], row[c_hi] = bk.clock_min_pct, bk.clock_max_pct
                row[thr] = float(bk.throttle)
        for t in sorted(rows):
            if t < keep_from:
                tier.group.record(t, rows[t])
        for i, t in enumerate(live_times):
            tier.group.record(t, {n: vals[i] for n, vals in live.items()})
        tier._bucket, tier._acc = bucket, acc
        if self.last_time is None and rows:
            self.last_time = past.end

    # ------------------------------------------------------------------ reading
    def gpus(self, window: Window) -> list[int]:
        """The GPUs with points in *window*'s tier (recorded live or loaded)."""
        tier = self.tiers[window.key]
        names = set(tier.group.names()) | set(tier._acc)
        return sorted(int(n.split("/")[1]) for n in names if n.startswith("thr/"))

    def temperature(self, window: Window, gpu: int, t0: float) -> list[tuple[float, float | None]]:
        return self._range(window, gpu, t0, 0)

    def clock_pct(self, window: Window, gpu: int, t0: float) -> list[tuple[float, float | None]]:
        return self._range(window, gpu, t0, 2)

    def _range(
        self, window: Window, gpu: int, t0: float, which: int
    ) -> list[tuple[float, float | None]]:
        tier = self.tiers[window.key]
        keys = _keys(gpu)
        lows = tier.points(keys[which], t0)
        if not window.bucket_s:
            return lows
        highs = tier.points(keys[which + 1], t0)
        out: list[tuple[float, float | None]] = []
        for lo, hi in zip(lows, highs, strict=False):
            out.append(lo)
            out.append(hi)
        return out

    def gen(self, window: Window, t0: float) -> list[tuple[float, float | None]]:
        return self.tiers[window.key].points("gen", t0)

    def spans(self, window: Window, gpu: int, t0: float) -> list[Span]:
        """The throttled stretches of GPU *gpu* since *t0* (each to the end of its last point)."""
        step = window.bucket_s or self.interval_s
        out: list[Span] = []
        start: float | None = None
        last = 0.0
        worst = NOT_THROTTLED
        for t, v in self.tiers[window.key].points(_keys(gpu)[4], t0):
            level = int(v or 0)
            if level > NOT_THROTTLED and start is not None and t - last <= 3 * step:
                last, worst = t, max(worst, level)
                continue
            if start is not None:
                out.append(Span(start, last + step, SPAN_STYLE.get(worst, "red")))
                start = None
            if level > NOT_THROTTLED:
                start, last, worst = t, t, level
        if start is not None:
            out.append(Span(start, last + step, SPAN_STYLE.get(worst, "red")))
        return out
