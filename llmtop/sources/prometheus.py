"""llama-server's /metrics: Prometheus text parser and throughput from the counters.

llama-server's averaged gauges (`llamacpp:prompt_tokens_seconds`, `predicted_tokens_seconds`) are
reset by every scrape, so two scrapers corrupt each other's values. Throughput here is always the
difference of the `*_total` counters over the wall time between two scrapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PREFIX = "llamacpp:"


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition → {name: value}. The `llamacpp:` prefix is removed.

    Labels are kept in the name (`name{a="b"}`); comments, blank lines and unparsable lines are
    skipped; NaN/Inf values are dropped.
    """
    out: dict[str, float] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "}" in line:
            brace = line.rindex("}")
            name, rest = line[: brace + 1], line[brace + 1 :].split()
        else:
            parts = line.split()
            name, rest = parts[0], parts[1:]
        if not rest:
            continue
        try:
            value = float(rest[0])
        except ValueError:
            continue
        if math.isnan(value) or math.isinf(value):
            continue
        if name.startswith(PREFIX):
            name = name[len(PREFIX) :]
        out[name] = value
    return out


@dataclass(frozen=True)
class Rates:
    """Throughput between two scrapes of /metrics.

    Wall-time rates (tokens per wall second) are what the dashboard plots. The busy-time figures
    come from the `_seconds_total` counters: tokens per second of actual decoding/prompt work,
    and the fraction of the interval the server spent on it.
    """

    interval_s: float
    gen_tokens_per_s: float
    prompt_tokens_per_s: float
    gen_tokens_per_busy_s: float | None = None
    prompt_tokens_per_busy_s: float | None = None
    gen_busy_fraction: float | None = None
    prompt_busy_fraction: float | None = None


_GEN = "tokens_predicted_total"
_GEN_S = "tokens_predicted_seconds_total"
_PROMPT = "prompt_tokens_total"
_PROMPT_S = "prompt_seconds_total"


class CounterRates:
    """Differences successive /metrics scrapes into rates.

    A restart (new `Process-Start-Time-Unix`, or any counter going down) restarts the baseline:
    the next update returns None instead of a negative or bogus rate.
    """

    def __init__(self, min_interval_s: float = 0.05) -> None:
        self.min_interval_s = min_interval_s
        self._prev: dict[str, float] | None = None
        self._prev_time: float | None = None
        self._start_time: float | None = None
        self.last: Rates | None = None
        self.resets = 0

    def reset(self) -> None:
        self._prev = None
        self._prev_time = None
        self._start_time = None
        self.last = None

    def update(
        self, metrics: dict[str, float], now: float, start_time: float | None = None
    ) -> Rates | None:
        """Feed one scrape taken at `now` (monotonic seconds). Returns rates since the last one."""
        if _GEN not in metrics or _PROMPT not in metrics:
            return self.last
        restarted = (
            start_time is not None
            and self._start_time is not None
            and start_time != self._start_time
        )
        if self._prev is not None and not restarted:
            restarted = any(
                key in self._prev and key in metrics and metrics[key] < self._prev[key]
                for key in (_GEN, _PROMPT, _GEN_S, _PROMPT_S)
            )
        if restarted:
            self.resets += 1
            self._prev = None
            self.last = None
        if start_time is not None:
            self._start_time = start_time
        if self._prev is None or self._prev_time is None:
            self._prev, self._prev_time = dict(metrics), now
            return None
        dt = now - self._prev_time
        if dt < self.min_interval_s:
            return self.last
        prev = self._prev
        d_gen = metrics[_GEN] - prev[_GEN]
        d_prompt = metrics[_PROMPT] - prev[_PROMPT]
        d_gen_s = _delta(metrics, prev, _GEN_S)
        d_prompt_s = _delta(metrics, prev, _PROMPT_S)
        self.last = Rates(
            interval_s=dt,
            gen_tokens_per_s=d_gen / dt,
            prompt_tokens_per_s=d_prompt / dt,
            gen_tokens_per_busy_s=d_gen / d_gen_s if d_gen_s else None,
            prompt_tokens_per_busy_s=d_prompt / d_prompt_s if d_prompt_s else None,
            gen_busy_fraction=min(1.0, d_gen_s / dt) if d_gen_s is not None else None,
            prompt_busy_fraction=min(1.0, d_prompt_s / dt) if d_prompt_s is not None else None,
        )
        self._prev, self._prev_time = dict(metrics), now
        return self.last


def _delta(cur: dict[str, float], prev: dict[str, float], key: str) -> float | None:
    if key in cur and key in prev:
        return max(0.0, cur[key] - prev[key])
    return None
