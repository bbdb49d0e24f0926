"""One multi-row braille time plot: rows of series on one shared time axis.

Why a plot of our own: the thermal story needs several rows (temperature with its slowdown
line, SM clock, tokens/s) on one time axis with the throttled spans marked across all of them,
so a reader sees *when* the clock fell and what the temperature did then. plotext draws one
figure through a module-global state and costs ~19 ms for 120 points; this draws braille dots
(2 × 4 per cell) straight into rich segments, ~1 ms a plot, and a `TimePlot` renders again
only when its data or its size changed.

The API is data, not drawing: a `PlotData` holds `PlotRow`s (each one or more `Series` of
(unix time, value) points, optional `RefLine`s such as "slowdown 87 °C", a fixed or a data
scale), the `Span`s to mark (throttled intervals) and the time window [start, end]. Points
outside the window are ignored; several points in one dot column draw their range (so a
minute's min and max given at one time show as a bar); a step longer than `gap_s` is a gap.

Layout of one plot, `width` × `height` cells:

    title (optional)                                   one line of markup
    row title  │ braille dots …                   │ ref-line labels, top/bottom scale
    current    │                                  │
    throttled  │ ████       ██                    │ share of the window
    window     │ 14:02      14:03     …        now│ key hint

`render_plot` is the pure function (tests and benchmarks call it); `TimePlot` is the widget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

from llmtop.ui.format import keep_gaps

Point = tuple[float, float | None]

# Braille dot bits: (column 0/1, dot row 0..3 top to bottom) → bit.
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
SPAN_MARK = "█"
MARKUP = "\0markup"  # the style of a run that is markup (the title line)
LEFT_W = 10  # row titles and current values
RIGHT_W_WIDE = 13  # ref-line labels ("slowdown 87") and scale values
RIGHT_W_NARROW = 13
NARROW = 90  # below this plot width the right gutter is narrower


@dataclass(frozen=True)
class Series:
    """One line: (unix time, value) points in time order; a None value is a gap."""

    points: Sequence[Point]
    style: str = "cyan"


@dataclass(frozen=True)
class RefLine:
    """A horizontal line at *value* with its label in the right gutter ("slowdown 87")."""

    value: float
    label: str
    style: str = "red"


@dataclass(frozen=True)
class Span:
    """An interval to mark on the time axis (a throttled span), in unix seconds."""

    start: float
    end: float
    style: str = "red"


@dataclass(frozen=True)
class PlotRow:
    """One row of the plot. *low*/*high* fix the scale (None: from the data and the lines);
    *weight* is its share of the plot's height; *value* the current value shown under the
    title (default: the last point of the first series, formatted with *fmt*)."""

    title: str
    series: Sequence[Series]
    lines: Sequence[RefLine] = ()
    low: float | None = None
    high: float | None = None
    weight: int = 1
    value: str | None = None
    fmt: str = "{:.0f}"


@dataclass(frozen=True)
class PlotData:
    """Everything one plot shows. Frozen: equal data renders equal lines (the widget's cache
    compares it), so build a new one when something changed."""

    rows: Sequence[PlotRow]
    start: float
    end: float
    spans: Sequence[Span] = ()
    span_title: str = "throttled"
    title: str = ""  # markup for a header line; "" draws none
    window_label: str = ""  # "5 min", "1 h", "24 h": the axis row says which window is shown
    hint: str = ""  # right end of the axis row ("w window")
    gap_s: float | None = None  # a step between points longer than this draws no line
    empty: str = "no data yet"  # shown when no row has a point in the window
    span_share: bool = True  # the span row's right gutter says what share of the window it is
    extra: tuple[object, ...] = field(default=())  # caller's cache key parts (not drawn)


@lru_cache(maxsize=256)
def _style(spec: str) -> Style:
    return Style.parse(spec) if spec else Style()


def _fmt_tick(t: float, window_s: float) -> str:
    return time.strftime("%H:%M:%S" if window_s < 600 else "%H:%M", time.localtime(t))


def _fmt_value(fmt: str, v: float) -> str:
    try:
        return fmt.format(v)
    except (ValueError, TypeError):
        return f"{v:g}"


# _RUN[x & 1][a][b]: the bits of dot rows a..b (0..3) of one cell column.
_RUN = tuple(
    tuple(tuple(sum(_DOTS[c][r] for r in range(i, j + 1)) for j in range(4)) for i in range(4))
    for c in (0, 1)
)


class _Canvas:
    """The dots and styles of one row: *w* cells × *h* lines."""

    __slots__ = ("bits", "h", "styles", "w")

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.bits = [[0] * w for _ in range(h)]
        self.styles: list[list[str]] = [[""] * w for _ in range(h)]

    def hline(self, y: int, style: str) -> None:
        """A dotted line at dot-row *y* (every other dot), under the data already drawn."""
        cy = y >> 2
        if not 0 <= cy < self.h:
            return
        bit = _DOTS[0][y & 3]
        bits, styles = self.bits[cy], self.styles[cy]
        for cx in range(self.w):
            if not bits[cx]:
                styles[cx] = style
            bits[cx] |= bit

    def vline(self, x: int, y0: int, y1: int, style: str) -> None:
        """Dots at dot-column *x* from dot-row *y0* to *y1* (either order), in *style*."""
        if y0 > y1:
            y0, y1 = y1, y0
        cx = x >> 1
        if not 0 <= cx < self.w:
            return
        run = _RUN[x & 1]
        c0, c1 = max(0, y0 >> 2), min(self.h - 1, y1 >> 2)
        for cy in range(c0, c1 + 1):
            a = y0 & 3 if cy == y0 >> 2 else 0
            b = y1 & 3 if cy == y1 >> 2 else 3
            self.bits[cy][cx] |= run[a][b]
            self.styles[cy][cx] = style


def _scale(row: PlotRow, lo_data: float | None, hi_data: float | None) -> tuple[float, float]:
    """The row's value range: fixed ends where given, else the data's and the lines' range."""
    values = [v for v in (lo_data, hi_data) if v is not None]
    values += [line.value for line in row.lines]
    lo = row.low if row.low is not None else (min(values) if values else 0.0)
    hi = row.high if row.high is not None else (max(values) if values else 1.0)
    if values:
        pad = (hi - lo) * 0.08 or 1.0
        if row.low is None:
            lo -= pad
        if row.high is None:
            hi += pad
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


# One dot column of a series: lowest, highest, first and last value, first and last time.
_Bin = tuple[float, float, float, float, float, float]


def _bins(points: Sequence[Point], start: float, end: float, ncols: int) -> dict[int, _Bin]:
    """The points of [start, end] by dot column."""
    out: dict[int, _Bin] = {}
    span = end - start
    if span <= 0 or ncols <= 0:
        return out
    k = ncols / span
    last = ncols - 1
    isfinite = math.isfinite
    for t, v in points:
        if v is None or t < start or t > end or not isfinite(v):
            continue
        x = int((t - start) * k)
        if x > last:
            x = last
        cur = out.get(x)
        if cur is None:
            out[x] = (v, v, v, v, t, t)
        else:
            lo, hi, first, _, t0, _ = cur
            out[x] = (v if v < lo else lo, v if v > hi else hi, first, v, t0, t)
    return out


def _draw_row(row: PlotRow, data: PlotData, w: int, h: int) -> tuple[_Canvas, float, float]:
    canvas = _Canvas(w, h)
    ncols, nrows = 2 * w, 4 * h
    binned = [(_bins(s.points, data.start, data.end, ncols), s.style) for s in row.series]
    lows = [b[0] for bins, _ in binned for b in bins.values()]
    highs = [b[1] for bins, _ in binned for b in bins.values()]
    lo, hi = _scale(row, min(lows) if lows else None, max(highs) if highs else None)
    k = (nrows - 1) / (hi - lo)
    top = nrows - 1

    def ydot(v: float) -> int:
        return top - round(((hi if v > hi else lo if v < lo else v) - lo) * k)

    gap = data.gap_s
    for bins, style in binned:
        px = -1  # the previous column with points, its last value and time
        pv = pt = 0.0
        for x in sorted(bins):
            b_lo, b_hi, first, last_v, t_first, t_last = bins[x]
            y_lo, y_hi = ydot(b_lo), ydot(b_hi)
            if px >= 0 and (x - px == 1 or gap is None or t_first - pt <= gap + 1e-9):
                # joined to the previous column: a line, not scattered dots
                y_prev = ydot(pv)
                for xi in range(px + 1, x):  # columns between sparse points: interpolate
                    y_i = ydot(pv + (first - pv) * (xi - px) / (x - px))
                    canvas.vline(xi, y_prev, y_i, style)
                    y_prev = y_i
                y_lo, y_hi = max(y_lo, y_prev), min(y_hi, y_prev)
            canvas.vline(x, y_lo, y_hi, style)
            px, pv, pt = x, last_v, t_last
    for line in row.lines:  # under the data: drawn last, they keep the data's colour
        if lo <= line.value <= hi:
            canvas.hline(ydot(line.value), line.style)
    return canvas, lo, hi


def _span_cells(data: PlotData, w: int) -> list[str]:
    """The span style covering each cell column ('' for none)."""
    out = [""] * w
    span = data.end - data.start
    if span <= 0:
        return out
    dt = span / w
    for s in data.spans:
        if s.end < data.start or s.start > data.end:
            continue
        c0 = max(0, int((s.start - data.start) / dt))
        c1 = min(w - 1, int((s.end - data.start) / dt))
        for c in range(c0, c1 + 1):
            out[c] = s.style
    return out


def _covered_s(data: PlotData) -> float:
    """Seconds of the window under any span (overlaps counted once)."""
    parts = sorted(
        (max(s.start, data.start), min(s.end, data.end))
        for s in data.spans
        if s.end >= data.start and s.start <= data.end
    )
    total, cur_a, cur_b = 0.0, None, None
    for a, b in parts:
        if cur_b is None or a > cur_b:
            if cur_b is not None and cur_a is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total


Line = list[tuple[str, str]]  # (text, style spec) runs


def _gutter(text: str, width: int, style: str = "", *, right: bool = False) -> tuple[str, str]:
    text = text[:width]
    return (text.rjust(width) if right else text.ljust(width), style)


def _row_lines(
    row: PlotRow, data: PlotData, w: int, h: int, right_w: int, spans: list[str]
) -> list[Line]:
    canvas, lo, hi = _draw_row(row, data, w, h)
    # left gutter: title, then the current value
    value = row.value
    if value is None:
        pts = row.series[0].points if row.series else ()
        last = next((v for _, v in reversed(pts) if v is not None), None)
        value = "" if last is None else _fmt_value(row.fmt, last)
    left = [row.title] if h > 1 else [f"{row.title} {value}".rstrip()]
    if h > 1:
        left.append(value)
    # right gutter: reference-line labels where they are, the scale at the ends if free
    right: list[tuple[str, str]] = [("", "")] * h
    nrows = 4 * h
    for line in sorted(row.lines, key=lambda ln: -ln.value):  # the higher line's label above
        if lo <= line.value <= hi:
            cy = (nrows - 1 - round((line.value - lo) * (nrows - 1) / (hi - lo))) >> 2
            free = [y for y in (cy, cy - 1, cy + 1) if 0 <= y < h and not right[y][0]]
            if free:
                right[free[0]] = (line.label, line.style)
    if h > 1:
        if not right[0][0]:
            right[0] = (_fmt_value(row.fmt, hi), "dim")
        if not right[h - 1][0]:
            right[h - 1] = (_fmt_value(row.fmt, lo), "dim")
    out: list[Line] = []
    for y in range(h):
        parts: Line = [_gutter(left[y] if y < len(left) else "", LEFT_W - 1, "bold" if y else "")]
        parts.append(("│", "dim"))
        parts += _cells(canvas.bits[y], canvas.styles[y], spans)
        label, lstyle = right[y]
        parts.append(("│", "dim"))
        parts.append(_gutter(" " + label if label else "", right_w - 1, lstyle))
        out.append(parts)
    return out


def _cells(bits: list[int], styles: list[str], spans: list[str]) -> Line:
    """One line of plot cells as runs of one style each (a braille plot is mostly blank or one
    colour: a few runs per line instead of a tuple per cell, for this and for `to_strip`)."""
    out: Line = []
    run: list[str] = []
    run_style = ""
    for b, style, span in zip(bits, styles, spans, strict=True):
        if b:
            ch = _BRAILLE[b]
        else:
            ch, style = " ", ""
        if span:
            style = _on_span(style, span)
        if style != run_style and run:
            out.append(("".join(run), run_style))
            run = []
        run_style = style
        run.append(ch)
    if run:
        out.append(("".join(run), run_style))
    return out


_BRAILLE = tuple(chr(0x2800 + b) for b in range(256))


@lru_cache(maxsize=256)
def _on_span(style: str, span: str) -> str:
    """A cell's style over a span's tint."""
    return f"{style} on {_span_bg(span)}".strip()


@lru_cache(maxsize=32)
def _span_bg(style: str) -> str:
    """A dark tint of the span's colour for the cells under it (rows stay readable)."""
    color = _style(style).color
    if color is None:
        return "grey11"
    triplet = color.get_truecolor()
    r, g, b = (int(c * 0.22) for c in triplet)
    return f"rgb({r},{g},{b})"


def _span_line(data: PlotData, w: int, right_w: int, spans: list[str]) -> Line:
    parts: Line = [_gutter(data.span_title, LEFT_W - 1), ("│", "dim")]
    for x in range(w):
        parts.append((SPAN_MARK, spans[x]) if spans[x] else (" ", ""))
    parts.append(("│", "dim"))
    share = ""
    window = data.end - data.start
    if data.span_share and window > 0:
        covered = _covered_s(data)
        share = f" {100.0 * covered / window:.0f} %" if covered else " none"
    parts.append(
        _gutter(share, right_w - 1, "bold red" if share.strip() not in ("", "none") else "dim")
    )
    return parts


def _axis_line(data: PlotData, w: int, right_w: int) -> Line:
    window = data.end - data.start
    cells = [" "] * w
    n = max(1, w // 16)
    for i in range(n + 1):
        t = data.start + window * i / n
        label = _fmt_tick(t, window)
        pos = w - len(label) if i == n else round(w * i / n)
        if pos < 0 or pos + len(label) > w:
            continue
        if any(c != " " for c in cells[max(0, pos - 1) : pos + len(label) + 1]):
            continue
        cells[pos : pos + len(label)] = list(label)
    return [
        _gutter(data.window_label, LEFT_W - 1, "bold"),
        ("╰", "dim"),
        ("".join(cells), "dim"),
        ("╯", "dim"),
        _gutter(" " + data.hint if data.hint else "", right_w - 1, "dim"),
    ]


def _heights(rows: Sequence[PlotRow], total: int) -> list[int]:
    """Each row's share of *total* lines by weight, at least one line each."""
    if not rows:
        return []
    weights = [max(1, r.weight) for r in rows]
    hs = [1] * len(rows)
    left = total - len(rows)
    if left <= 0:
        return hs
    wsum = sum(weights)
    extra = [left * wt / wsum for wt in weights]
    for i, e in enumerate(extra):
        hs[i] += int(e)
    rest = total - sum(hs)
    order = sorted(range(len(rows)), key=lambda i: extra[i] - int(extra[i]), reverse=True)
    for i in order[:rest]:
        hs[i] += 1
    return hs


def render_plot(data: PlotData | None, width: int, height: int) -> list[Line]:
    """The plot as *height* lines of (text, style) runs, each *width* cells wide."""
    if width <= 0 or height <= 0:
        return []
    lines: list[Line] = []
    if data is not None and data.title:
        lines.append([(data.title, MARKUP)])
    if data is None or not any(
        p[1] is not None and data.start <= p[0] <= data.end
        for r in data.rows
        for s in r.series
        for p in s.points
    ):
        lines.append([(data.empty if data is not None else "no data yet", "dim")])
        return lines[:height]
    right_w = RIGHT_W_WIDE if width >= NARROW else RIGHT_W_NARROW
    w = width - LEFT_W - right_w
    if w < 4:
        return [[("(too narrow for a plot)", "dim")]][:height]
    spans = _span_cells(data, w)
    body = height - len(lines) - 2  # the span row and the axis
    for row, h in zip(data.rows, _heights(data.rows, max(body, 0)), strict=True):
        if len(lines) + h > height - 2 and body < len(data.rows):
            break
        lines += _row_lines(row, data, w, h, right_w, spans)
    lines.append(_span_line(data, w, right_w, spans))
    lines.append(_axis_line(data, w, right_w))
    return lines[:height]


def plot_text(data: PlotData | None, width: int, height: int) -> list[str]:
    """The plot's lines as plain text (tests, benchmarks, `TimePlot.text`)."""
    out = []
    for line in render_plot(data, width, height):
        out.append("".join(Text.from_markup(t).plain if s == MARKUP else t for t, s in line))
    return out


def to_strip(line: Line, width: int, base: Style) -> Strip:
    """One rendered line as a Strip on the widget's base style, runs of one style merged.

    A plot line is exactly *width* cells of one-cell characters (the gutters are cut and padded
    to their widths), so it is measured by its length instead of cropped and padded again."""
    segments: list[Segment] = []
    run_text: list[str] = []
    run_style: str | None = None
    for text, spec in line:
        if spec != run_style and run_text:
            segments.append(Segment("".join(run_text), _on_base(base, run_style or "")))
            run_text = []
        run_style = spec
        run_text.append(text)
    if run_text:
        segments.append(Segment("".join(run_text), _on_base(base, run_style or "")))
    if sum(len(seg.text) for seg in segments) == width:
        return Strip(segments, width)
    return Strip(segments).crop_extend(0, width, base)


@lru_cache(maxsize=512)
def _on_base(base: Style, spec: str) -> Style:
    return base + _style(spec)


class TimePlot(Widget):
    """A `PlotData` on screen. `set_data` is cheap when nothing changed (an equality test);
    the lines are rendered once per data and size and kept for every repaint."""

    DEFAULT_CSS = """
    TimePlot {
        height: 1fr;
        min-height: 6;
    }
    """

    def __init__(self, data: PlotData | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._data = data
        self._strips: list[Strip] | None = None
        self._strips_size: tuple[int, int] = (-1, -1)
        self.renders = 0  # how many times the lines were rendered (tests, benchmarks)

    @property
    def data(self) -> PlotData | None:
        return self._data

    def set_data(self, data: PlotData | None) -> bool:
        """Show *data*; False (and no repaint) when it equals what is shown."""
        if data == self._data:
            return False
        self._data = data
        self._strips = None
        self.refresh()
        return True

    def _lines(self) -> list[Strip]:
        size = (self.size.width, self.size.height)
        if self._strips is None or size != self._strips_size:
            base = self.rich_style
            strips = []
            for line in render_plot(self._data, *size):
                if len(line) == 1 and line[0][1] == MARKUP:  # the title: markup of its own
                    # keep_gaps: SVG screenshots drop a run's leading spaces ("GPU0NVIDIA")
                    text = keep_gaps(Text.from_markup(line[0][0], overflow="ellipsis"))
                    text.no_wrap = True
                    text.truncate(size[0], overflow="ellipsis")
                    strip = Strip(text.render(self.app.console)).apply_style(base)
                    strips.append(strip.crop_extend(0, size[0], base))
                else:
                    strips.append(to_strip(line, size[0], base))
            self._strips = strips
            self._strips_size = size
            self.renders += 1
        return self._strips

    def render_line(self, y: int) -> Strip:
        strips = self._lines()
        if y < len(strips):
            return strips[y]
        return Strip.blank(self.size.width, self.rich_style)

    @property
    def text(self) -> str:
        """What the plot shows as plain text, at its current size."""
        return "\n".join(plot_text(self._data, self.size.width, self.size.height))
