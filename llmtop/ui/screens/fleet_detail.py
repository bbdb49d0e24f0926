"""One host/GPU of the fleet over time: Prometheus' `query_range` in the GPU tab's plot.

Temperature with its slowdown line, SM clock % of max, generation tokens/s and VRAM % share one
time axis (`widgets/time_plot.py`), with the throttled spans marked across all of them. The
history is read in a thread on open and again every refresh; Esc goes back to the table.
"""

from __future__ import annotations

import asyncio
import time

from rich.markup import escape
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Static

from llmtop.model.fleet import FleetDetail, FleetRow
from llmtop.ui.fleet_app import FleetSource
from llmtop.ui.widgets.fleet_table import row_cells
from llmtop.ui.widgets.time_plot import PlotData, PlotRow, RefLine, Series, Span, TimePlot

DETAIL_MINUTES = 30.0
STYLES = {"temp": "yellow", "SM clk": "cyan", "gen t/s": "green", "VRAM": "magenta"}
FORMATS = {"temp": "{:.0f}°C", "SM clk": "{:.0f}%", "gen t/s": "{:.1f}", "VRAM": "{:.0f}%"}


def plot_data(detail: FleetDetail, row: FleetRow) -> PlotData:
    """The detail's series as the time plot's rows (pure: tests call it)."""
    rows = []
    for s in detail.series:
        lines = (RefLine(s.line, f"slowdown {s.line:.0f}"),) if s.line is not None else ()
        rows.append(
            PlotRow(
                s.name,
                (Series(s.points, STYLES.get(s.name, "cyan")),),
                lines=lines,
                low=s.low,
                high=s.high,
                weight=2 if s.name == "temp" else 1,
                fmt=FORMATS.get(s.name, "{:.0f}"),
            )
        )
    minutes = (detail.end - detail.start) / 60.0
    return PlotData(
        rows=tuple(rows),
        start=detail.start,
        end=detail.end,
        spans=tuple(Span(a, b) for a, b in detail.throttled),
        window_label=f"{minutes:.0f} min",
        hint="Esc back",
        gap_s=3 * detail.step_s,
        empty=f"Prometheus has no history for {row.host} GPU {row.gpu or '—'} in the last "
        f"{minutes:.0f} min",
    )


class FleetDetailScreen(Screen[None]):
    """The history of one row (see the module docstring)."""

    BINDINGS = [
        Binding("escape,backspace,q", "app.pop_screen", "back"),
        Binding("r", "reload", "refresh"),
    ]
    DEFAULT_CSS = """
    FleetDetailScreen #detail-title, FleetDetailScreen #detail-status {
        height: 1;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    FleetDetailScreen #detail-title {
        background: $panel;
    }
    FleetDetailScreen TimePlot {
        height: 1fr;
        padding: 0 1;
    }
    """

    def __init__(self, source: FleetSource, row: FleetRow, *, refresh_s: float = 5.0) -> None:
        super().__init__()
        self.source = source
        self.row = row
        self.refresh_s = refresh_s
        self.detail: FleetDetail | None = None
        self.loads = 0  # histories shown (tests wait on it)
        self._refresh_task: asyncio.Task[None] | None = None

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="detail-title")
        yield TimePlot(id="detail-plot")
        yield Static("[dim]reading history from Prometheus …[/]", id="detail-status")

    def _title(self) -> str:
        r = self.row
        cells = row_cells(r)
        gpu = f" GPU {r.gpu}" if r.gpu is not None else ""
        name = f" {escape(r.gpu_name)}" if r.gpu_name else ""
        return (
            f"[bold]{escape(r.host)}[/]{gpu}{name}  [dim]{escape(r.instance)}[/]  "
            f"state {escape(cells[2][0])}  alerts {escape(cells[9][0])}"
        )

    def on_mount(self) -> None:
        self.action_reload()
        self.set_interval(self.refresh_s, self.action_reload)

    def action_reload(self) -> None:
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        try:
            detail = await asyncio.to_thread(self.source.detail, self.row, DETAIL_MINUTES)
        except Exception as exc:  # noqa: BLE001 - a reader bug: say so, keep the screen
            self.query_one("#detail-status", Static).update(f"[bold red]{escape(str(exc))}[/]")
            return
        self.detail = detail
        self.query_one(TimePlot).set_data(plot_data(detail, self.row))
        stamp = time.strftime("%H:%M:%S", time.localtime(detail.end))
        status = f"history to {stamp}, one point per {detail.step_s:g} s"
        if detail.problems:
            status = f"[bold yellow]{escape('; '.join(detail.problems))}[/] · " + status
        self.query_one("#detail-status", Static).update(status)
        self.loads += 1
