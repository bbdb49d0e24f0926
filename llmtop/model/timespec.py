"""Durations and times as an operator types them on the command line.

`--keep 7d`, `--probe-every 5m`, `--since 24h` are durations; `--from`/`--to` are points in
time: ISO dates ("2026-12-02 03:14", local time unless an offset is given), unix seconds, or a
duration ago ("3h ago", "-3h"). Every parser raises ValueError with the accepted forms in
words, so argparse shows a message instead of a traceback.
"""

from __future__ import annotations

import math
import re
from datetime import datetime

_UNIT_S = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*(ms|sec|min|s|m|h|d|w)", re.IGNORECASE)
_DURATION_HELP = "a duration like 30s, 5m, 24h, 7d or 1h30m"


def parse_duration(text: str) -> float:
    """'7d' → 604800.0; '1h30m' → 5400.0; a bare number is seconds. Positive and finite."""
    s = text.strip().lower()
    if not s:
        raise ValueError(f"empty duration: expected {_DURATION_HELP}")
    try:
        value = float(s)
    except ValueError:
        pos = 0
        value = 0.0
        for m in _PART.finditer(s):
            if m.start() != pos and s[pos : m.start()].strip():
                break
            value += float(m.group(1)) * _UNIT_S[m.group(2)]
            pos = m.end()
        if pos == 0 or s[pos:].strip():
            raise ValueError(f"not a duration: {text!r} (expected {_DURATION_HELP})") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return value


def parse_time(text: str, *, now: float) -> float:
    """A point in time → unix seconds: ISO date/time, unix seconds, or 'DURATION ago' / '-DURATION'.

    *now* is passed in (tests and reports choose it); naive ISO times are local time."""
    s = text.strip()
    low = s.lower()
    if low == "now":
        return now
    if low.endswith(" ago") or low.startswith("-"):
        body = low[:-4] if low.endswith(" ago") else low[1:]
        return now - parse_duration(body)
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"not a time: {text!r}")
        return value
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise ValueError(
            f"not a time: {text!r} (expected 2026-12-02T03:14:07, 2026-12-02 03:14, "
            "unix seconds, or '3h ago')"
        ) from None
    try:
        return dt.timestamp()
    except (OverflowError, OSError):
        raise ValueError(f"not a time this system can place: {text!r}") from None
