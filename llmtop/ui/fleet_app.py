"""`llmtop fleet`: a Textual view of every box a Prometheus knows, worst first.

The app never blocks on Prometheus: each refresh runs `FleetSource.refresh()` in a thread; a
tick that finds one still running is dropped (latest value wins), and `r` asks for one more as
soon as the running one ends. The status line says when the data was read and, when Prometheus
is unreachable, slow or answered in part, says so — the table keeps the last good rows, dimmed
and marked `~` (stale). Enter opens the row's history (`screens/fleet_detail.py`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from rich.markup import escape
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from llmtop.model.fleet import FleetDetail, FleetRow, FleetView
from llmtop.ui.widgets.fleet_table import FleetTable

CSS = """
#fleet-title, #fleet-header, #fleet-status, #fleet-keys {
    height: 1;
    padding: 0 1;
    text-wrap: nowrap;
    text-overflow: ellipsis;
}
#fleet-title, #fleet-keys {
    background: $panel;
}
#fleet-header {
    padding: 0;
    text-style: bold;
}
"""


class FleetSource(Protocol):
    """What the view reads (`diagnosis.fleet_rank.FleetReader`); both calls block."""

    def refresh(self) -> FleetView: ...

    def detail(self, row: FleetRow, minutes: float = 30.0) -> FleetDetail: ...


def clock_text(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t is not None else "—"


def status_markup(view: FleetView | None) -> str:
    """The status line: when the data is from, or why it is stale."""
    if view is None:
        return "[dim]asking Prometheus …[/]"
    if view.stale:
        return f"[bold red]{escape('; '.join(view.problems))}[/]"
    down = sum(1 for r in view.rows if not r.up)
    hosts = len({r.instance for r in view.rows})
    parts = [
        f"{hosts} host{'s' if hosts != 1 else ''}",
        f"{len(view.rows)} row{'s' if len(view.rows) != 1 else ''}",
    ]
    if down:
        parts.append(f"[bold red]{down} down[/]")
    parts.append(f"refreshed {clock_text(view.refresh_time)} ({view.took_s * 1000:.0f} ms)")
    line = " · ".join(parts)
    if view.problems:
        line += f" · [bold yellow]partial: {escape('; '.join(view.problems))}[/]"
    return line


class FleetApp(App[int]):
    """The fleet table, refreshed every *refresh_s* seconds in a worker thread."""

    CSS = CSS
    TITLE = "llmtop fleet"
    BINDINGS = [
        Binding("q,ctrl+c", "quit", "quit", priority=True),
        Binding("r", "refresh_now", "refresh"),
    ]

    def __init__(
        self,
        source: FleetSource,
        *,
        refresh_s: float = 5.0,
        prometheus: str = "",
        clock: Callable[[], float] = time.time,
        periodic: bool = True,
    ) -> None:
        super().__init__()
        self.source = source
        self.refresh_s = refresh_s
        self.prometheus = prometheus
        self.clock = clock
        self.periodic = periodic
        self.view: FleetView | None = None
        self.refreshes = 0  # views shown (tests wait on it)
        self._refresh_task: asyncio.Task[None] | None = None
        self._again = False

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="fleet-title")
        yield Static("", id="fleet-header", markup=False)
        yield FleetTable(id="fleet")
        yield Static(status_markup(None), id="fleet-status")
        yield Static(
            "[bold]↑↓ PgUp PgDn[/] scroll  [bold]Enter[/] history  [bold]r[/] refresh  "
            "[bold]q[/] quit",
            id="fleet-keys",
        )

    def _title(self) -> str:
        url = self.view.prometheus if self.view is not None else self.prometheus
        every = f"every {self.refresh_s:g} s" if self.periodic else "manual refresh"
        return f"[bold]llmtop fleet[/]  [reverse] Prometheus [/] {escape(url)}  [dim]{every}[/]"

    @property
    def table(self) -> FleetTable:
        return self.query_one(FleetTable)

    def on_mount(self) -> None:
        self.table.focus()
        self.action_refresh_now()
        if self.periodic:
            self.set_interval(self.refresh_s, self._tick)

    # ------------------------------------------------------------------ refresh
    def _tick(self) -> None:
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.get_running_loop().create_task(self._refresh())

    def action_refresh_now(self) -> None:
        if self._refresh_task is not None and not self._refresh_task.done():
            self._again = True
            return
        self._tick()

    async def _refresh(self) -> None:
        while True:
            self._again = False
            try:
                view = await asyncio.to_thread(self.source.refresh)
            except Exception as exc:  # noqa: BLE001 - a reader bug: say so, keep the app
                self.query_one("#fleet-status", Static).update(
                    f"[bold red]fleet refresh failed: {escape(str(exc))}[/]"
                )
                return
            self.show_view(view)
            if not self._again:
                return

    def show_view(self, view: FleetView) -> None:
        self.view = view
        with self.batch_update():
            self.table.show_rows(view.rows)
            self._header()
            self.query_one("#fleet-status", Static).update(status_markup(view))
            self.query_one("#fleet-title", Static).update(self._title())
        self.refreshes += 1

    def _header(self) -> None:
        self.query_one("#fleet-header", Static).update(self.table.header_text(self.size.width))

    def on_resize(self, event: events.Resize) -> None:
        self._header()

    # ------------------------------------------------------------------ detail
    def on_fleet_table_selected(self, event: FleetTable.Selected) -> None:
        self.open_detail(event.row)

    def open_detail(self, row: FleetRow) -> None:
        from llmtop.ui.screens.fleet_detail import FleetDetailScreen

        self.push_screen(FleetDetailScreen(self.source, row, refresh_s=self.refresh_s))
