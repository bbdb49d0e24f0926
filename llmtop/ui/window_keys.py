"""The `w` key: the GPU plots' window, 5 min → 1 h → 24 h.

The longer windows are kept in memory from every snapshot (llmtop.ui.plot_windows); where a
history DB of this server exists (the one the dashboard opened with, `--db`/`--record`/the
agent's) the window is filled from it too, read in a thread, so a day shows at once instead of
after a day. Replay overrides `fill_window`: its plots end at the cursor, not now."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from textual.binding import Binding

from llmtop.ui.widget_lookup import WidgetLookup

# Not in the footer: the plots' axis row says "w 5m·1h·24h" where it matters.
WINDOW_BINDINGS = [Binding("w", "plot_window", "plot window", show=False)]

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.session import Session
    from llmtop.ui.panels.thermal import ThermalPanel
    from llmtop.ui.plot_windows import Window


class WindowKeys(WidgetLookup):
    """Mixed into LlmtopApp: the plot window key."""

    if TYPE_CHECKING:  # provided by LlmtopApp
        session: Session

    def action_plot_window(self) -> None:
        # the GPU tab's modules are imported when it is first shown, not at start-up
        from llmtop.ui.panels.thermal import ThermalPanel

        panel = self._find("#thermal-panel")
        if not isinstance(panel, ThermalPanel):
            self.notify("GPU plots: not shown yet (open the GPU tab: 4)")
            return
        window = panel.cycle_window()
        self.notify(f"GPU plots: the last {window.label}")
        self.run_worker(self.fill_window(panel, window), group="plot-window", exit_on_error=False)

    async def fill_window(self, panel: ThermalPanel, window: Window) -> None:
        """Fill *window* from this server's history DB, when there is one (in a thread)."""
        from llmtop.sources.history_plot import read_plot_file

        path, url = self.session.history_db, self.session.url
        if path is None or url is None or not window.bucket_s:
            return
        end = time.time()
        past = await asyncio.to_thread(
            read_plot_file, path, url, end - window.seconds, end, window.bucket_s
        )
        if past is not None and panel.window.key == window.key:
            panel.load(window, past)
