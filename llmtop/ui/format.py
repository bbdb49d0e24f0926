"""Rich text helpers for panels (number formatting lives in llmtop.model.units)."""

from __future__ import annotations

from rich.style import Style
from rich.text import Span, Text


def keep_gaps(text: Text) -> Text:
    """Make every run of spaces that starts a line or follows a style change its own run.

    Terminals show "● ok  http://…" either way, but SVG screenshots (rsvg, some browsers) drop
    the leading spaces of a text run, which printed "● okhttp://…" and lost indentation. Spaces
    marked dim (invisible on a space) form a run of their own, so the next word keeps its column.
    """
    plain = text.plain
    n = len(plain)
    starts = {0} | {i + 1 for i, ch in enumerate(plain) if ch == "\n"}
    starts |= {span.end for span in text.spans if span.end < n}
    gaps: list[Span] = []
    for start in sorted(starts):
        end = start
        while end < n and plain[end] == " ":
            end += 1
        if end == start or end >= n or plain[end] == "\n":
            continue
        if any(_reversed(sp) for sp in text.spans if sp.start < end and sp.end > start):
            continue
        gaps.append(Span(start, end, _GAP))
    text.spans.extend(gaps)
    return text


_GAP = Style(dim=True, italic=False)  # a style no markup here uses: never merged with a neighbour


def _reversed(span: Span) -> bool:
    try:
        style = Style.parse(span.style) if isinstance(span.style, str) else span.style
    except Exception:  # noqa: BLE001 - an odd style: leave its spaces alone
        return True
    return bool(style.reverse)
