"""Which tab shows what: the title line, cached widget look-ups, hidden tabs mounted after the first data frame,
and only the visible tab's panels shown each snapshot (hidden ones catch up when shown);
the log search and follow keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from llmtop.snapshot import Snapshot
from llmtop.ui.panels.gpu_summary import GpuSummary
from llmtop.ui.panels.host import HostPanel
from llmtop.ui.panels.latency import LatencyPanel, ProbeSummary, RecentProbes
from llmtop.ui.panels.logs import EventsStrip, LogsPanel, empty_log_hint
from llmtop.ui.panels.server import FailureBox, ServerPanel
from llmtop.ui.roles import RecordsSnapshots, ShowsSnapshots
from llmtop.ui.widget_lookup import WidgetLookup
from llmtop.ui.widgets.log_tail import LogTail
from llmtop.ui.widgets.panes import AfterFirstData, Pane
from llmtop.ui.widgets.title_bar import TitleBar

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textual.timer import Timer

    from llmtop.session import Session


class TabRouter(WidgetLookup):
    """Mixed into LlmtopApp: showing snapshots on the visible tab."""

    if TYPE_CHECKING:  # provided by LlmtopApp
        session: Session
        latest: Snapshot | None
        prefill: list[Snapshot]
        live_before_past: list[Snapshot] | None
        _active_tab: str
        _tuning_mounting: bool
        _log_timer: Timer | None
        clock: Callable[[], float]

        def action_tab(self, tab: str) -> None: ...

    @property
    def active_tab(self) -> str:
        return self._active_tab

    async def _mount_tuning(self) -> None:
        placeholder = self._q("#tuning-panel")
        if placeholder.has_class("-tuning-ready") or self._tuning_mounting:
            return
        self._tuning_mounting = True
        # Imported here, on the first visit: the tuning code imports slowly (kept off start-up).
        from llmtop.ui.panels.tuning import TuningPanel

        widget = TuningPanel(self.session, id="tuning-panel")
        widget.add_class("-tuning-ready")
        await placeholder.remove()
        await self.query_one("#tuning", Pane).mount(widget)
        if self.latest is not None:
            widget.show(self.latest)

    async def _reveal_hidden_tabs(self, pane: str | None = None) -> None:
        """Mount the hidden tabs' panels (all, or *pane*'s); those with their own history
        record the latest snapshot, which arrived before they were there."""
        stack = self.screen_stack
        if not stack:  # closing
            return
        root = stack[0] if pane is None else stack[0].query_one(f"#{pane}")
        deferred = list(root.query(AfterFirstData))
        if not deferred:
            return
        for widget in deferred:
            panel = await widget.reveal()
            if isinstance(panel, RecordsSnapshots):
                # the recorded past first (history DB), then the live snapshots shown so far
                for snap in (*self.prefill, *(self.live_before_past or ())):
                    panel.record(snap)
                if self.latest is not None:
                    panel.record(self.latest)  # history is keyed by time: no double entries

    def _show_tab(self, tab: str, snap: Snapshot | None) -> None:
        """Show *snap* on the panels of *tab* only: hidden panels are updated when shown."""
        if tab == "overview":
            if snap is not None:
                self._q(ServerPanel).show(snap)
                self._q(HostPanel).show(snap)
                self._q(FailureBox).show(snap)
                self._q(GpuSummary).show(snap)
            self._q(ProbeSummary).show(snap)
            events = self._q("#overview-events", EventsStrip)
            events.use_store(self.session.log_store)  # several servers: the focused server's
            events.refresh_events()
            if self.screen.has_class("-wide"):
                self._q(LogTail).show(snap)
                self._q(RecentProbes).show(snap)
        elif tab == "logs":
            panel = self._find(LogsPanel)
            if panel is not None:
                # several servers: the focused server's log (rewritten when the focus moved)
                panel.use_store(self.session.log_store, empty_log_hint(self.session.mode))
                panel.refresh_events()
                panel.pump()
        elif tab == "probe":
            latency = self._find(LatencyPanel)
            if snap is not None and latency is not None:
                latency.show(snap)
        elif tab == "gpu":
            if snap is not None:
                for widget in (self._find("#gpu-panel"), self._find("#thermal-panel")):
                    if isinstance(widget, ShowsSnapshots):
                        widget.show(snap)
        elif tab == "tuning" and snap is not None:
            from llmtop.ui.panels.tuning import TuningPanel

            tuning = self._q("#tuning-panel")
            if isinstance(tuning, TuningPanel):  # not the placeholder shown while it mounts
                tuning.show(snap)

    def _switch_tab(self, pane: str) -> None:
        """Show *pane*: painted first, its panels catch up right after that frame."""
        if pane == self._active_tab:
            return
        with self.batch_update():
            self._q(f"#{self._active_tab}").display = False
            self._q(f"#{pane}").display = True
        self._active_tab = pane
        if pane == "tuning":
            self.run_worker(self._mount_tuning(), group="tuning")
        if self._log_timer is not None:  # resumed after the switch is on screen (Logs only)
            self._log_timer.pause()
        if self.query_one(f"#{pane}").query(AfterFirstData):  # opened before the first data
            self.run_worker(self._reveal_then_catch_up(pane), group=f"reveal-{pane}")
            return
        if pane == "probe":
            latency = self._find(LatencyPanel)
            if latency is not None:
                self.run_worker(latency.ensure_plotext(), group="plot")
        # The switch is painted first (panels keep what they showed last); they catch up with the
        # latest snapshot and log lines right after that frame, so a key repaints at once even
        # while thousands of log lines wait to be written.
        self.call_after_refresh(self._catch_up, pane)

    async def _reveal_then_catch_up(self, pane: str) -> None:
        await self._reveal_hidden_tabs(pane)
        if pane == "probe":
            latency = self._find(LatencyPanel)
            if latency is not None:
                self.run_worker(latency.ensure_plotext(), group="plot")
        self.call_after_refresh(self._catch_up, pane)

    def _catch_up(self, pane: str) -> None:
        if pane == self.active_tab:
            self._show_tab(pane, self.latest)
            if pane == "logs" and self._log_timer is not None:
                self._log_timer.resume()

    def _pump_logs(self) -> None:
        panel = self._find(LogsPanel) if self.active_tab == "logs" else None
        if panel is not None:
            panel.pump()

    def _refresh_title(self) -> None:
        snap = self.latest
        stale = None
        if snap is not None:
            age = self.clock() - snap.time
            if age > max(5.0, 3 * self.session.refresh_s):
                stale = age
        try:
            title = self._find(TitleBar)
        except Exception:  # noqa: BLE001 - no screen while the app closes (a worker may tick)
            return
        if title is not None:
            title.show_state(self.session, snap, stale)

    def action_search(self) -> None:
        self.action_tab("logs")
        panel = self._find(LogsPanel)
        if panel is not None:
            panel.open_search()

    def action_follow(self) -> None:
        panel = self._find(LogsPanel)
        if panel is None:
            return
        following = panel.toggle_follow()
        if self.active_tab != "logs":
            # On the Logs tab its status line says it (a toast would cost a relayout twice).
            self.notify("logs: following" if following else "logs: paused")
