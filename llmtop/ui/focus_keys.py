"""Several servers: `>` / `<` move the focus to the next / previous server of the server bar.

The focused server is the one the rest of the dashboard shows (the snapshot's `server`, its
process, the GPU card's "server" figures, the alerts) and the one the keys act on: restart, stop
and start only where that server is controllable (a unit; an attached server is not), probes go
to it, the logs tab shows its log. Every server keeps being polled; the bar shows them all.
With one server the keys do nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import App
from textual.binding import Binding

from llmtop.ui.widgets.gpu_servers import GpuServers
from llmtop.ui.widgets.server_bar import ServerBar

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.session import Session
    from llmtop.snapshot import Snapshot
    from llmtop.ui.series import DashboardHistory

    _AppBase = App[None]
else:
    _AppBase = object

FOCUS_BINDINGS = [
    Binding("greater_than_sign", "focus_server(1)", "next server", show=False),
    Binding("less_than_sign", "focus_server(-1)", "previous server", show=False),
]


class FocusKeys(_AppBase):
    """Mixed into LlmtopApp: the server bar and the keys that move the focus."""

    if TYPE_CHECKING:  # provided by LlmtopApp
        session: Session
        series: DashboardHistory

        def _tick(self) -> None: ...

        def _refresh_title(self) -> None: ...

    _server_widgets: tuple[ServerBar, GpuServers] | None = None

    def show_servers(self, snap: Snapshot) -> None:
        """The server bar and the GPU tab's memory-by-server line (both hidden with one server:
        then nothing is done at all)."""
        if not snap.servers and self._server_widgets is None:
            return
        if self._server_widgets is None:
            self._server_widgets = (self.query_one(ServerBar), self.query_one(GpuServers))
        bar, gpu = self._server_widgets
        bar.show(snap)
        gpu.show(snap)

    def action_focus_server(self, step: int) -> None:
        session = self.session
        if len(session.servers) < 2:
            return
        entry = session.focus_server(session.focus_index + step)
        if entry is None:
            return
        # the overview's sparklines (tok/s, the server's CPU) were the other server's: afresh
        self.series.clear()
        self.notify(f"server {session.focus_index + 1}: {entry.url} ({entry.mode})", timeout=2)
        self._refresh_title()
        self._tick()  # the focused server on screen now (or on the next tick if one runs)
