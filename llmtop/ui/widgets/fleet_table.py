"""The fleet table: one row per host/GPU, worst first, updated in place between refreshes.

A refresh every 5 s over 500 rows must not rebuild the table each time (clearing and adding 500
rows re-measures every cell): when the rows come back in the same order only the cells whose
text changed are updated; only a change of order or of the row set rebuilds it, keeping the
cursor on the same host/GPU. Stale rows (data from an earlier refresh) are dimmed, down
targets say DOWN in red.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from llmtop.model.fleet import FleetRow
from llmtop.model.units import DASH

# (key, header, width); the host column is as wide as the longest host (HOST_WIDTH at most)
HOST_WIDTH = (4, 24)
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("host", "host", HOST_WIDTH[1]),
    ("gpu", "GPU", 3),
    ("state", "state", 8),
    ("temp", "temp", 5),
    ("margin", "margin", 6),
    ("thr", "thr 5m", 6),
    ("vram", "VRAM", 4),
    ("gen", "gen t/s", 7),
    ("ttft", "TTFT p95", 8),
    ("alerts", "alerts", 40),
)
STATE_STYLE = {
    "ready": "green",
    "sleeping": "blue",
    "loading": "yellow",
    "starting": "yellow",
    "restarting": "yellow",
    "stopping": "yellow",
}


def row_key(row: FleetRow) -> str:
    return f"{row.instance}\0{row.gpu or ''}"


def _num(v: float | None, fmt: str) -> str:
    return DASH if v is None else fmt.format(v)


def row_cells(row: FleetRow) -> tuple[Text, ...]:
    """The row as the table shows it (plain text with styles; markup-free: labels are outside
    input)."""
    dim = " dim" if row.stale else ""

    def cell(text: str, style: str = "") -> Text:
        return Text(text, style=(style + dim).strip(), no_wrap=True, overflow="ellipsis")

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
    alerts = ", ".join(a.name for a in row.alerts)
    if not row.up:
        alerts = f"down: {row.down_reason or 'not scraped'}" + (f" · {alerts}" if alerts else "")
    alert_style = "bold red" if not row.up or row.critical else "yellow" if row.alerts else ""
    ttft = row.ttft_p95_s
    return (
        cell(row.host + (" ~" if row.stale else ""), "bold" if not row.up or row.critical else ""),
        cell(row.gpu if row.gpu is not None else DASH),
        state,
        cell(_num(row.temperature_c, "{:.0f}°C")),
        cell(_num(m, "{:+.0f}°C"), margin_style),
        cell(_num(None if thr is None else 100 * thr, "{:.0f}%"), thr_style),
        cell(_num(vram, "{:.0f}%"), vram_style),
        cell(_num(row.gen_tokens_per_s, "{:.1f}")),
        cell(DASH if ttft is None else f"{ttft * 1000:.0f} ms" if ttft < 1 else f"{ttft:.2f} s"),
        cell(alerts or DASH, alert_style),
    )


class FleetTable(DataTable[Text]):
    """`show_rows(rows)` with the rows already ranked; `selected_row()` for Enter."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)  # type: ignore[arg-type]
        self._keys: list[str] = []
        self._cells: dict[str, tuple[Text, ...]] = {}
        self._rows: dict[str, FleetRow] = {}
        self.rebuilds = 0  # full rebuilds (tests, benchmarks)
        self._host_width = 0

    def _columns(self, host_width: int) -> None:
        """(Re)make the columns: the host column fits the longest host ("name ~" if stale)."""
        if host_width == self._host_width:
            return
        self.clear(columns=True)
        self._keys = []
        self._host_width = host_width
        for key, header, width in COLUMNS:
            self.add_column(header, key=key, width=host_width if key == "host" else width)

    def on_mount(self) -> None:
        if not self._host_width:
            self._columns(HOST_WIDTH[0])

    def show_rows(self, rows: tuple[FleetRow, ...]) -> None:
        keys = [row_key(r) for r in rows]
        cells = {k: row_cells(r) for k, r in zip(keys, rows, strict=True)}
        self._rows = dict(zip(keys, rows, strict=True))
        longest = max((len(r.host) + 2 for r in rows), default=0)
        self._columns(max(HOST_WIDTH[0], min(HOST_WIDTH[1], longest)))
        if keys == self._keys:
            for k in keys:
                old, new = self._cells[k], cells[k]
                if old == new:
                    continue
                for (col, _, _), a, b in zip(COLUMNS, old, new, strict=True):
                    if a != b:
                        self.update_cell(k, col, b)
            self._cells = cells
            return
        current = self._keys[self.cursor_row] if 0 <= self.cursor_row < len(self._keys) else None
        self.rebuilds += 1
        self.clear()
        for k in keys:
            self.add_row(*cells[k], key=k)
        self._keys = keys
        self._cells = cells
        if current is not None and current in cells:
            self.move_cursor(row=self.get_row_index(current), animate=False)

    def selected_row(self) -> FleetRow | None:
        if 0 <= self.cursor_row < len(self._keys):
            return self._rows.get(self._keys[self.cursor_row])
        return None

    def row_for(self, key: str) -> FleetRow | None:
        return self._rows.get(key)

    @property
    def shown(self) -> list[FleetRow]:
        """The rows in the order shown (tests)."""
        return [self._rows[k] for k in self._keys]
