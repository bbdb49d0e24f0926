"""Where a load test's latency knee is, and whether `--parallel` causes it.

`llmtop load` measures p95 time-to-first-token at rising concurrency. While every request finds
a free slot, TTFT stays near the single-request figure; past the knee it climbs. Two reasons
look alike from the client:

- the slots run out (`--parallel N` < concurrency): a request waits in llama-server's queue
  (`requests_deferred` on /metrics) until a whole other request has finished, so its TTFT jumps
  by a request's generation time. More slots (or fewer clients at once) fixes it.
- the hardware is the limit: every request has a slot, but batched decoding of many sequences
  slows each step. More slots do not help.

The knee is the first level whose p95 TTFT is past both `CLIMB_FACTOR` times and
`CLIMB_FLOOR_MS` more than the lowest p95 of the levels below it.

Pure: levels in, a `Knee` with one sentence for the operator out. No I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

CLIMB_FACTOR = 1.5
"""p95 TTFT more than this many times the lowest concurrency's counts as climbing…"""
CLIMB_FLOOR_MS = 5.0
"""…and only when it is also this many milliseconds more: a 2 → 4 ms step on a tiny model is
scheduling noise, not a knee an operator should act on."""


@dataclass(frozen=True)
class LevelPoint:
    """One concurrency level as the knee sees it."""

    concurrency: int
    ttft_p95_ms: float | None  # None: no request finished at this level
    requests_deferred: int | None  # max seen on /metrics during the level; None: unknown


@dataclass(frozen=True)
class Knee:
    """The knee of p95 TTFT over concurrency and what limits it."""

    knee_concurrency: int | None  # first level whose p95 TTFT climbed; None: no knee seen
    best_concurrency: int | None  # the most clients at once before the knee (or the most tested)
    # True: at the knee or past it requests waited for a slot (--parallel limits); False: none
    # did; None: no knee, or no way to tell (no /metrics and no slot count)
    parallel_limited: bool | None
    baseline_ttft_p95_ms: float | None  # the lowest p95 below the knee (of all levels: no knee)
    knee_ttft_p95_ms: float | None
    recommendation: str


def climbed(
    baseline_ms: float,
    value_ms: float,
    factor: float = CLIMB_FACTOR,
    floor_ms: float = CLIMB_FLOOR_MS,
) -> bool:
    """True when *value_ms* is past the knee relative to *baseline_ms* (both rules hold)."""
    return value_ms > baseline_ms * factor and value_ms - baseline_ms >= floor_ms


def _usable(v: float | None) -> bool:
    return v is not None and math.isfinite(v) and v >= 0


def _slots_words(total_slots: int | None) -> str:
    if total_slots is None:
        return "slot count unknown"
    return f"{total_slots} slot" + ("" if total_slots == 1 else "s")


def _deferred_words(deferred: int | None) -> str:
    if deferred is None:
        return "deferred requests unknown (/metrics off)"
    if deferred == 0:
        return "none deferred"
    return f"{deferred} request{'' if deferred == 1 else 's'} deferred"


def _limited(concurrency: int, deferred: int | None, total_slots: int | None) -> bool | None:
    """Did the slots run out at this level? Deferred requests say so directly; more clients
    than slots means some had to wait even if no /metrics sample caught the queue."""
    if deferred is not None and deferred > 0:
        return True
    if total_slots is not None and concurrency > total_slots:
        return True
    if deferred is None and total_slots is None:
        return None
    return False  # nothing queued on /metrics, or every client had a slot of its own


def _facts(lv: LevelPoint, total_slots: int | None) -> str:
    """ "2 slots, 3 requests deferred" — or, when /metrics saw no queue but there were more
    clients than slots, "2 slots for 4 requests at once" (some waited all the same)."""
    over = total_slots is not None and lv.concurrency > total_slots
    if over and not (lv.requests_deferred or 0) > 0:
        return f"{_slots_words(total_slots)} for {lv.concurrency} requests at once"
    return f"{_slots_words(total_slots)}, {_deferred_words(lv.requests_deferred)}"


def _knee_at(
    measured: Sequence[LevelPoint], i: int, base: LevelPoint, total_slots: int | None
) -> Knee:
    """The knee is `measured[i]` (climbed past *base*): say what limits it there, or past it."""
    lv = measured[i]
    base_ms = float(base.ttft_p95_ms or 0.0)
    value = float(lv.ttft_p95_ms or 0.0)
    best = measured[i - 1].concurrency
    head = (
        f"p95 TTFT climbs at concurrency {lv.concurrency} "
        f"({base_ms:.1f} ms at concurrency {base.concurrency} → {value:.1f} ms); "
    )
    raise_it = (
        "raise --parallel (each slot then holds ctx-size / parallel of the context unless the "
        f"KV cache is unified) or send at most {best} at once"
    )
    limited = _limited(lv.concurrency, lv.requests_deferred, total_slots)
    later = next(
        (x for x in measured[i + 1 :] if _limited(x.concurrency, x.requests_deferred, total_slots)),
        None,
    )
    if limited is True:
        tail = (
            f"--parallel limits it ({_facts(lv, total_slots)}): requests wait in the queue for "
            f"a free slot — {raise_it}"
        )
    elif later is not None:
        limited = True
        tail = (
            f"every request still had a slot there ({_facts(lv, total_slots)}), so the compute "
            f"limits first; from concurrency {later.concurrency} --parallel limits it too "
            f"({_facts(later, total_slots)}) — {raise_it}"
        )
    elif limited is False:
        tail = (
            f"--parallel does not limit it ({_facts(lv, total_slots)}): every request had a "
            f"slot, the compute is the limit — more slots will not help; send at most {best} "
            "at once for the lowest latency"
        )
    else:
        tail = (
            "whether the slots (--parallel) are the limit is unknown: no slot count and no "
            f"/metrics (start llama-server with --metrics); send at most {best} at once for the "
            "lowest latency"
        )
    return Knee(lv.concurrency, best, limited, base_ms, value, head + tail)


def find_knee(
    levels: Sequence[LevelPoint],
    total_slots: int | None,
    *,
    factor: float = CLIMB_FACTOR,
    floor_ms: float = CLIMB_FLOOR_MS,
) -> Knee:
    """The first concurrency whose p95 TTFT climbed past every lower concurrency's, and why.

    Levels are taken in concurrency order; levels without a TTFT (nothing finished) are left
    out. A level is compared with the lowest p95 among the levels below it, so one slow request
    at concurrency 1 (a p95 of two requests is nearly their maximum) does not hide the knee."""
    measured = sorted(
        (lv for lv in levels if _usable(lv.ttft_p95_ms)), key=lambda lv: lv.concurrency
    )
    if not measured:
        return Knee(None, None, None, None, None, "no level finished a request: no recommendation")
    base = measured[0]
    for i, lv in enumerate(measured[1:], 1):
        if climbed(float(base.ttft_p95_ms or 0.0), float(lv.ttft_p95_ms or 0.0), factor, floor_ms):
            return _knee_at(measured, i, base, total_slots)
        if float(lv.ttft_p95_ms or 0.0) < float(base.ttft_p95_ms or 0.0):
            base = lv
    base_ms = float(base.ttft_p95_ms or 0.0)
    top = measured[-1]
    if len(measured) == 1:
        text = (
            f"only concurrency {base.concurrency} measured ({base_ms:.1f} ms p95 TTFT): give "
            "several levels (e.g. --concurrency 1,2,4,8) to find the knee"
        )
    else:
        text = (
            f"no knee up to concurrency {top.concurrency}: p95 TTFT stays within {factor:g}× "
            f"of its lowest ({base_ms:.1f} ms at concurrency {base.concurrency})"
        )
    waited = [lv for lv in measured if _limited(lv.concurrency, lv.requests_deferred, total_slots)]
    if waited:
        text += (
            f"; requests waited for a slot from concurrency {waited[0].concurrency} "
            f"({_facts(waited[0], total_slots)}): --parallel is where it will limit first"
        )
    elif len(measured) > 1:
        text += " — try higher concurrency to find where it climbs"
    return Knee(None, top.concurrency, None, base_ms, None, text)
