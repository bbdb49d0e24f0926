"""The one bounded time series llmtop keeps: samples of (time, value) in time order.

Every history in llmtop is one of these — the dashboard's plots (`ui/series.py`), the thermal
tracker's per-GPU points (`diagnosis/thermal.py`) and the GPU sampler's recent readings
(`sources/gpu.py`) — so bounding, windowing and downsampling are written (and tested) once.

Why bounded: a dashboard left open for a week must use the memory it used after an hour, so the
oldest sample goes when a new one comes past `maxlen` (a `deque(maxlen=…)`: O(1), no copy).

Why the reads walk from the newest end: callers ask for recent windows (the last 5 minutes of an
hour kept, the last `width` points of a plot), so `since()` and `tail()` cost what they return,
not what is kept. Nothing here allocates on `append`.

`SeriesGroup` is several float series sampled at the same instants (one snapshot gives CPU,
tokens/s and each GPU's temperature): every member gets a value (None for a gap) each time, so
all share one time axis and plot side by side.

Part of the model layer: imports nothing else of llmtop.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(frozen=True)
class Summary:
    """Min, max and mean of the readings in a window (gaps left out)."""

    count: int
    min: float
    max: float
    mean: float


def _reading(value: float | None) -> bool:
    """A value that is a reading: not a gap (None) and not NaN/inf."""
    return value is not None and math.isfinite(value)


def downsample_values(values: Sequence[float | None], width: int) -> list[float | None]:
    """At most *width* points, oldest first: the mean of each bucket of consecutive values.

    A bucket with no reading gives None (a gap), so a plot never invents values. Fewer values
    than *width* come back as they are (a plot never stretches a short history)."""
    if width <= 0:
        return []
    if len(values) <= width:
        return list(values)
    out: list[float | None] = []
    step = len(values) / width
    for i in range(width):
        bucket = [v for v in values[int(i * step) : int((i + 1) * step)] if v is not None]
        out.append(sum(bucket) / len(bucket) if bucket else None)
    return out


class TimeSeries(Generic[V]):
    """The last `maxlen` samples of one thing, oldest first: a float (None = no reading), a GPU
    reading, a thermal point. Times are unix seconds and must not go backwards (the window reads
    stop at the first older sample); `append_newer` enforces it for callers that may see the
    same instant twice."""

    __slots__ = ("_times", "_values")

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, not {maxlen}")
        self._times: deque[float] = deque(maxlen=maxlen)
        self._values: deque[V] = deque(maxlen=maxlen)

    @property
    def maxlen(self) -> int:
        return self._times.maxlen or 0

    # -- writing ----------------------------------------------------------------------------
    def append(self, time: float, value: V) -> None:
        """Add a sample (the oldest goes when full)."""
        self._times.append(time)
        self._values.append(value)

    def append_newer(self, time: float, value: V) -> bool:
        """Add a sample only if it is newer than the newest; False when it was dropped.

        The same snapshot may be recorded twice (on every tick, and again when a hidden tab's
        panel is mounted): it stays one sample, and the axis stays in time order."""
        if self._times and time <= self._times[-1]:
            return False
        self._times.append(time)
        self._values.append(value)
        return True

    def fill(self, times: Iterable[float], value: V) -> None:
        """Add *value* at each of *times* (a member that joins a group late is padded)."""
        for t in times:
            self.append(t, value)

    def clear(self) -> None:
        self._times.clear()
        self._values.clear()

    # -- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._times)

    def __iter__(self) -> Iterator[V]:
        """The values, oldest first (as a deque of values iterates)."""
        return iter(self._values)

    def items(self) -> Iterator[tuple[float, V]]:
        return zip(self._times, self._values, strict=True)

    def times(self) -> list[float]:
        return list(self._times)

    def values(self) -> list[V]:
        return list(self._values)

    @property
    def first_time(self) -> float | None:
        return self._times[0] if self._times else None

    @property
    def last_time(self) -> float | None:
        return self._times[-1] if self._times else None

    @property
    def span_s(self) -> float:
        """Seconds from the oldest sample to the newest (0 with fewer than two)."""
        return self._times[-1] - self._times[0] if len(self._times) > 1 else 0.0

    def last(self) -> V | None:
        """The newest value (None when empty)."""
        return self._values[-1] if self._values else None

    def tail(self, n: int) -> list[V]:
        """The newest *n* values, oldest first (a last-N view: what a plot of N points shows)."""
        if n <= 0:
            return []
        if n >= len(self._values):
            return list(self._values)
        out = list(islice(reversed(self._values), n))
        out.reverse()
        return out

    def since(self, t0: float) -> list[V]:
        """The values at or after *t0*, oldest first, read from the newest end: a 5-minute window
        of an hour kept costs the 5 minutes (8 GPUs × 3600 points were ~7 ms of CPU a tick)."""
        out: list[V] = []
        for t, v in zip(reversed(self._times), reversed(self._values), strict=True):
            if t < t0:
                break
            out.append(v)
        out.reverse()
        return out

    # -- float series -----------------------------------------------------------------------
    def latest(self: TimeSeries[float | None]) -> float | None:
        """The newest reading (gaps skipped)."""
        for v in reversed(self._values):
            if _reading(v):
                return v
        return None

    def summary(self: TimeSeries[float | None], since: float | None = None) -> Summary | None:
        """Min, max and mean of the readings (at or after *since*); None without any. Walks the
        window in place: no list of it is made."""
        count = 0
        lo = math.inf
        hi = -math.inf
        total = 0.0
        for t, v in zip(reversed(self._times), reversed(self._values), strict=True):
            if since is not None and t < since:
                break
            if v is None or not math.isfinite(v):
                continue
            count += 1
            total += v
            if v < lo:
                lo = v
            if v > hi:
                hi = v
        if not count:
            return None
        return Summary(count, lo, hi, total / count)

    def downsample(
        self: TimeSeries[float | None], width: int
    ) -> tuple[list[float], list[float | None]]:
        """At most *width* points for a plot: each the mean time and mean reading of its bucket
        (None where a bucket has no reading)."""
        values = [v if _reading(v) else None for v in self._values]
        times = downsample_values(list(self._times), width)
        return [t for t in times if t is not None], downsample_values(values, width)


class SeriesGroup:
    """Named float series sampled at the same instants, sharing one bound and one time axis.

    `record(time, values)` gives every member a sample: the named value, or None (a gap) for a
    member not named this time; a new member is padded with gaps back to the axis' start. So a
    GPU that appears late (or is lost) keeps its plot aligned with the others'. A time not newer
    than the last recorded one is dropped (the same snapshot recorded twice stays one sample)."""

    def __init__(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._axis: TimeSeries[None] = TimeSeries(maxlen)
        self._series: dict[str, TimeSeries[float | None]] = {}

    def record(
        self,
        time: float,
        values: Mapping[str, float | None] | None = None,
        /,
        **named: float | None,
    ) -> bool:
        """One sample of every member at *time*; False when *time* is not newer (dropped)."""
        if not self._axis.append_newer(time, None):
            return False
        given = {**values, **named} if values is not None else named
        for name, series in self._series.items():
            if name not in given:
                series.append(time, None)
        for name, value in given.items():
            known = self._series.get(name)
            if known is None:
                known = self._series[name] = TimeSeries(self.maxlen)
                known.fill(self._axis.times()[:-1], None)  # joined late: gaps before
            known.append(time, value)
        return True

    def __getitem__(self, name: str) -> TimeSeries[float | None]:
        return self._series[name]

    def get(self, name: str) -> TimeSeries[float | None] | None:
        return self._series.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self._series

    def __len__(self) -> int:
        return len(self._axis)

    def names(self) -> list[str]:
        return list(self._series)

    def times(self) -> list[float]:
        return self._axis.times()

    @property
    def span_s(self) -> float:
        return self._axis.span_s

    @property
    def last_time(self) -> float | None:
        return self._axis.last_time

    def clear(self) -> None:
        """Forget every sample (the members stay, empty: views holding them stay valid)."""
        self._axis.clear()
        for series in self._series.values():
            series.clear()
