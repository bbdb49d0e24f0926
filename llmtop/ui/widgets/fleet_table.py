"""The fleet table: one line per host/GPU, worst first, drawn line by line from a cache.

Why not Textual's DataTable: it renders every cell through Rich (padding, styles) and any cell
update invalidates all of its caches, so a 5 s refresh of 500 rows re-rendered every visible
cell (~80 ms on the event loop) and PgDn at 160×48 took 350–650 ms — the issue's budget is
50 ms key-to-frame. Here a row is a tuple of (text, style) cells; its line (a Strip) is made
once per content and cursor state and kept, so scrolling draws cached lines and a refresh
redraws only the rows whose text changed. Stale rows (data from an earlier refresh) are dimmed
and marked `~`; down targets say DOWN in red.

Keys: ↑/↓, PgUp/PgDn, Home/End move the cursor (the view follows it); Enter posts `Selected`.
After a refresh the cursor stays on the host/GPU it was on.
"""

from __future__ import annotations

from functools import lru_cache

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from llmtop.model.fleet import FleetRow
from llmtop.model.units import DASH

Cell = tuple[str, str]  # (text, style spec)

# (key, header, width); the host column is as wide as the longest host (HOST_WIDTH at most),
# alerts take what is left of the line.
HOST_WIDTH = (4, 24)
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("host", "host", HOST_WIDTH[1]),
    ("gpu", "GPU", 3),
    ("state", "state", 8),
    ("temp", "temp", 4),
    ("margin", "margin", 6),
    ("thr", "thr5m", 5),
    ("vram", "VRAM", 4),
    ("gen", "gen t/s", 7),
    ("ttft", "TTFT p95", 7),
    ("alerts", "alerts", 0),
)
ALERTS_MIN = 12
STATE_STYLE = {
    "ready": "green",
    "sleeping": "blue",
    "loading": "yellow",
    "starting": "yellow",
    "restarting": "yellow",
    "stopping": "yellow",
}
CURSOR_BG = "on #264f78"


def row_key(row: FleetRow) -> str:
    return f"{row.instance}\0{row.gpu or ''}"


def _num(v: float | None, fmt: str) -> str:
    return DASH if v is None else fmt.format(v)


def row_cells(row: FleetRow) -> tuple[Cell, ...]:
    """The row as the table shows it: plain text and a style per cell (labels are outside
    input: never parsed as markup)."""
    dim = " dim" if row.stale else ""

    def cell(text: str, style: str = "") -> Cell:
        return (text, (style + dim).strip())

    if not row.up:
        state = cell("DOWN", "bold red")
    else:
        st = row.server_state or DASH
        state = cell(st, STATE_STYLE.get(st, "bold red" if row.server_state else ""))
    m = row.margin_c
    margin_style = "" if m is None else "bold red" if m <= 0 else "yellow" if m <= 5 else "green"
    thr = row.throttled_share_5m
    thr_style = "" if not thr else "bold red" if thr >= 0.5 else "yellow"
    vram = row.vram_percent
    vram_style = (
        "" if vram is None else "bold red" if vram >= 95 else "yellow" if vram >= 85 else ""
    )
    alerts = ", ".join(a.name.removeprefix("Llmtop") for a in row.alerts)
    if not row.up:  # the state column says DOWN; here why
        alerts = (row.down_reason or "not scraped") + (f" · {alerts}" if alerts else "")
    alert_style = "bold red" if not row.up or row.critical else "yellow" if row.alerts else ""
    ttft = row.ttft_p95_s
    return (
        cell(row.host + (" ~" if row.stale else ""), "bold" if not row.up or row.critical else ""),
        cell(row.gpu if row.gpu is not None else DASH),
        state,
        cell(_num(row.temperature_c, "{:.0f}°")),
        cell(_num(m, "{:+.0f}°C"), margin_style),
        cell(_num(None if thr is None else 100 * thr, "{:.0f}%"), thr_style),
        cell(_num(vram, "{:.0f}%"), vram_style),
        cell(_num(row.gen_tokens_per_s, "{:.1f}")),
        cell(DASH if ttft is None else f"{ttft * 1000:.0f} ms" if ttft < 1 else f"{ttft:.2f} s"),
        cell(alerts or DASH, alert_style),
    )


@lru_cache(maxsize=512)
def _style(spec: str) -> Style:
    return Style.parse(spec) if spec else Style()


def _fit(text: str, width: int) -> str:
    if len(text) <= width:
        return text.ljust(width)
    return text[: max(0, width - 1)] + "…" if width > 0 else ""


class FleetTable(ScrollView, can_focus=True):
    """`show_rows(rows)` with the rows already ranked; `selected_row()`; `Selected` on Enter."""

    BINDINGS = [
        Binding("up", "cursor(-1)", "up", show=False),
        Binding("down", "cursor(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "to(0)", "first", show=False),
        Binding("end", "to(-1)", "last", show=False),
        Binding("enter", "select", "history", show=False),
    ]
    DEFAULT_CSS = """
    FleetTable {
        height: 1fr;
        scrollbar-size-horizontal: 0;
    }
    """

    class Selected(Message):
        """Enter on a row."""

        def __init__(self, row: FleetRow) -> None:
            super().__init__()
            self.row = row

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._keys: list[str] = []  # row_key of the row at each position
        self._cells: list[tuple[Cell, ...]] = []
        self._rows: dict[str, FleetRow] = {}
        self._strips: dict[tuple[int, bool], Strip] = {}  # (position, cursor) → line
        self._widths: tuple[int, ...] = ()
        self._host_width = HOST_WIDTH[0]
        self.cursor_row = 0
        self.lines_rendered = 0  # lines made (tests, benchmarks)

    # ------------------------------------------------------------------ data
    def show_rows(self, rows: tuple[FleetRow, ...]) -> None:
        """Show *rows* (ranked): lines whose text changed are made again, the rest kept."""
        selected = self._keys[self.cursor_row] if 0 <= self.cursor_row < len(self._keys) else None
        keys = [row_key(r) for r in rows]
        cells = [row_cells(r) for r in rows]
        longest = max((len(r.host) + 2 for r in rows), default=0)
        host_width = max(HOST_WIDTH[0], min(HOST_WIDTH[1], longest))
        if host_width != self._host_width:
            self._host_width = host_width
            self._strips.clear()
        old = self._cells
        changed = [i for i, c in enumerate(cells) if i >= len(old) or old[i] != c]
        for i in changed:
            self._strips.pop((i, False), None)
            self._strips.pop((i, True), None)
        for i in range(len(cells), len(old)):
            self._strips.pop((i, False), None)
            self._strips.pop((i, True), None)
        self._keys, self._cells = keys, cells
        self._rows = dict(zip(keys, rows, strict=True))
        if selected is not None and selected in self._rows:
            self.cursor_row = keys.index(selected)
        self.cursor_row = max(0, min(self.cursor_row, len(keys) - 1))
        self.virtual_size = Size(self.size.width, len(keys))
        if len(old) != len(cells) or len(changed) > self.size.height:
            self.refresh()
        else:
            top = self.scroll_offset.y
            for i in changed:
                if top <= i < top + self.size.height:
                    self.refresh(Region(0, i - top, self.size.width, 1))
        self._strips.pop((self.cursor_row, True), None)
        self.refresh(Region(0, self.cursor_row - self.scroll_offset.y, self.size.width, 1))

    def selected_row(self) -> FleetRow | None:
        return self.row_at(self.cursor_row)

    def row_at(self, index: int) -> FleetRow | None:
        """The row shown at position *index*."""
        if 0 <= index < len(self._keys):
            return self._rows.get(self._keys[index])
        return None

    @property
    def shown(self) -> list[FleetRow]:
        """The rows in the order shown (tests)."""
        return [self._rows[k] for k in self._keys]

    # ------------------------------------------------------------------ drawing
    def column_widths(self, width: int) -> tuple[int, ...]:
        fixed = [self._host_width if k == "host" else w for k, _, w in COLUMNS[:-1]]
        used = 1 + sum(w + 1 for w in fixed)
        return (*fixed, max(ALERTS_MIN, width - used - 1))

    def header_text(self, width: int) -> str:
        widths = self.column_widths(width)
        return " " + " ".join(_fit(h, w) for (_, h, _), w in zip(COLUMNS, widths, strict=True))

    def on_resize(self, event: events.Resize) -> None:
        self._strips.clear()
        self.virtual_size = Size(event.size.width, len(self._keys))

    def _line(self, index: int, cursor: bool) -> Strip:
        key = (index, cursor)
        strip = self._strips.get(key)
        if strip is not None:
            return strip
        width = self.size.width
        widths = self.column_widths(width)
        base = self.rich_style + (_style(CURSOR_BG) if cursor else Style())
        segments = [Segment(" ", base)]
        for (text, spec), w in zip(self._cells[index], widths, strict=True):
            segments.append(Segment(_fit(text, w), base + _style(spec)))
            segments.append(Segment(" ", base))
        strip = Strip(segments).crop_extend(0, width, base)
        self._strips[key] = strip
        self.lines_rendered += 1
        return strip

    def render_line(self, y: int) -> Strip:
        index = y + self.scroll_offset.y
        if 0 <= index < len(self._cells):
            return self._line(index, index == self.cursor_row and self.has_focus)
        return Strip.blank(self.size.width, self.rich_style)

    def on_focus(self) -> None:
        self._cursor_moved(self.cursor_row)

    def on_blur(self) -> None:
        self._cursor_moved(self.cursor_row)

    # ------------------------------------------------------------------ keys
    def _cursor_moved(self, old: int) -> None:
        top = self.scroll_offset.y
        h = self.size.height
        new = self.cursor_row
        if new < top:
            self.scroll_to(y=new, animate=False, immediate=True, force=True)
        elif new >= top + h:
            self.scroll_to(y=new - h + 1, animate=False, immediate=True, force=True)
        top = self.scroll_offset.y
        for i in (old, new):
            if top <= i < top + h:
                self.refresh(Region(0, i - top, self.size.width, 1))

    def _move_to(self, index: int) -> None:
        if not self._keys:
            return
        old = self.cursor_row
        self.cursor_row = max(0, min(index, len(self._keys) - 1))
        if self.cursor_row != old:
            self._cursor_moved(old)

    def action_cursor(self, delta: int) -> None:
        self._move_to(self.cursor_row + delta)

    def action_page(self, direction: int) -> None:
        self._move_to(self.cursor_row + direction * max(1, self.size.height - 1))
        self.refresh()

    def action_to(self, where: int) -> None:
        self._move_to(where if where >= 0 else len(self._keys) - 1)
        self.refresh()

    def action_select(self) -> None:
        row = self.selected_row()
        if row is not None:
            self.post_message(self.Selected(row))

    def on_click(self, event: events.Click) -> None:
        self._move_to(event.y + self.scroll_offset.y)
