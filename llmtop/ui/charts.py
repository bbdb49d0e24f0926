"""Cheap text charts for always-on series: a one-line sparkline and a small braille plot.

Both downsample to the width they are given and return plain strings, so a panel redraws them
with one `Static.update` only when the text changed (see docs on CPU budget: plots are the cost).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

_BLOCKS = " ▁▂▃▄▅▆▇█"
# Braille dot bits: (column, row) → bit, rows 0..3 top to bottom.
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))


def _clean(values: Sequence[float | None]) -> list[float | None]:
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values]


def downsample(values: Sequence[float | None], width: int) -> list[float | None]:
    """At most *width* points: the mean of each bucket (None where a bucket has no value)."""
    vals = _clean(values)
    if width <= 0:
        return []
    if len(vals) <= width:
        return vals
    out: list[float | None] = []
    step = len(vals) / width
    for i in range(width):
        bucket = [v for v in vals[int(i * step) : int((i + 1) * step)] if v is not None]
        out.append(sum(bucket) / len(bucket) if bucket else None)
    return out


def sparkline(
    values: Sequence[float | None],
    width: int,
    top: float | None = None,
    bottom: float = 0.0,
    *,
    zero_blank: bool = False,
) -> str:
    """One line of block characters, right-aligned (newest at the right edge).

    Values map from *bottom* (lowest block) to *top* (full block; default: the largest value).
    *zero_blank*: a value of 0 draws nothing (tokens/s: an idle server shows no bars, and an
    idle line that does not change is not repainted)."""
    pts = downsample(values, width)
    nums = [v for v in pts if v is not None]
    hi = top if top is not None else (max(nums) if nums else 0.0)
    span = hi - bottom
    chars = []
    for v in pts:
        if v is None or (zero_blank and v == 0):
            chars.append(" ")
        elif span <= 0:
            chars.append(_BLOCKS[1])
        else:
            frac = max(0.0, min(v, hi) - bottom) / span
            chars.append(_BLOCKS[1 + round((len(_BLOCKS) - 2) * frac)])
    return "".join(chars).rjust(width)


def braille_plot(
    values: Sequence[float | None], width: int, height: int, top: float | None = None
) -> list[str]:
    """A *height*-row braille line plot, *width* characters (2 points per character)."""
    width = max(1, width)
    height = max(1, height)
    pts = downsample(values, width * 2)
    nums = [v for v in pts if v is not None]
    hi = top if top is not None else (max(nums) if nums else 1.0)
    hi = hi if hi > 0 else 1.0
    rows = height * 4
    grid = [[0] * width for _ in range(height)]
    offset = width * 2 - len(pts)  # right-align
    for i, v in enumerate(pts):
        if v is None:
            continue
        x = i + offset
        level = round((rows - 1) * max(0.0, min(v, hi)) / hi)
        y = rows - 1 - level
        grid[y // 4][x // 2] |= _DOTS[x % 2][y % 4]
    return ["".join(chr(0x2800 + c) if c else " " for c in row) for row in grid]
