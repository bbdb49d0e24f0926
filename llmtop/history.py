"""Bounded time series for plots: a ring buffer of (time, value) and downsampling to a width."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator


class Series:
    """The last `maxlen` samples of one quantity. `None` values mean "no reading" (gaps)."""

    def __init__(self, maxlen: int = 3600) -> None:
        self._times: deque[float] = deque(maxlen=maxlen)
        self._values: deque[float | None] = deque(maxlen=maxlen)

    @property
    def maxlen(self) -> int:
        return self._times.maxlen or 0

    def append(self, time: float, value: float | None) -> None:
        if value is not None and (math.isnan(value) or math.isinf(value)):
            value = None
        self._times.append(time)
        self._values.append(value)

    def __len__(self) -> int:
        return len(self._times)

    def __iter__(self) -> Iterator[tuple[float, float | None]]:
        return iter(zip(self._times, self._values, strict=True))

    def clear(self) -> None:
        self._times.clear()
        self._values.clear()

    def times(self) -> list[float]:
        return list(self._times)

    def values(self) -> list[float | None]:
        return list(self._values)

    def latest(self) -> float | None:
        for v in reversed(self._values):
            if v is not None:
                return v
        return None

    def since(self, t0: float) -> list[tuple[float, float | None]]:
        return [(t, v) for t, v in self if t >= t0]

    def downsample(self, n: int) -> tuple[list[float], list[float | None]]:
        """At most `n` points: each bucket is the mean time and mean value of its samples.

        Buckets with no readings give None (a gap), so the plot never invents values.
        """
        times, values = list(self._times), list(self._values)
        if n <= 0 or not times:
            return [], []
        if len(times) <= n:
            return times, values
        out_t: list[float] = []
        out_v: list[float | None] = []
        size = len(times) / n
        for i in range(n):
            a, b = int(i * size), int((i + 1) * size)
            b = max(b, a + 1)
            chunk_t = times[a:b]
            chunk_v = [v for v in values[a:b] if v is not None]
            out_t.append(sum(chunk_t) / len(chunk_t))
            out_v.append(sum(chunk_v) / len(chunk_v) if chunk_v else None)
        return out_t, out_v


class History:
    """Named series sharing one length bound, e.g. history["gen_tokens_per_s"]."""

    def __init__(self, maxlen: int = 3600) -> None:
        self.maxlen = maxlen
        self._series: dict[str, Series] = {}

    def __getitem__(self, name: str) -> Series:
        s = self._series.get(name)
        if s is None:
            s = self._series[name] = Series(self.maxlen)
        return s

    def __contains__(self, name: str) -> bool:
        return name in self._series

    def names(self) -> list[str]:
        return list(self._series)

    def record(self, time: float, **values: float | None) -> None:
        for name, value in values.items():
            self[name].append(time, value)
