"""The llmtop Textual app: layout, keys and message routing.

Collector loop (ui/session_life.py): a timer at the refresh rate starts one collect; if the
previous one is still running the tick is dropped (latest value wins, nothing queues). Each result
arrives as a `SnapshotReady` message; its handler shows it on the visible panels inside
`batch_update()`. Tests inject snapshots through the same message
(`app.post_message(SnapshotReady(snap))`). What the keys do lives beside: `server_keys`
(restart/stop/start/revert through the session's operations), `probe_keys` (probes, the periodic
probe), `model_keys` (router mode), `focus_keys` (several servers), `window_keys` (the GPU plots'
window), `tab_router` (which panels show what).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Input, Static, Tab, Tabs, TextArea

from llmtop.session import Session
from llmtop.snapshot import Snapshot
from llmtop.ui import textual_private
from llmtop.ui.focus_keys import FOCUS_BINDINGS, FocusKeys
from llmtop.ui.messages import SnapshotReady
from llmtop.ui.model_keys import MODEL_BINDINGS, ModelKeys
from llmtop.ui.panels.alerts import AlertsStrip
from llmtop.ui.panels.gpu_summary import GpuSummary
from llmtop.ui.panels.host import HostPanel
from llmtop.ui.panels.latency import LatencyPanel, ProbeSummary, RecentProbes
from llmtop.ui.panels.logs import EventsStrip, LogsPanel, empty_log_hint
from llmtop.ui.panels.prompt import PromptPanel
from llmtop.ui.panels.server import FailureBox, ServerPanel
from llmtop.ui.probe_keys import ProbeKeys
from llmtop.ui.roles import RecordsSnapshots
from llmtop.ui.run import HEAP_SETTLE_S, settle_heap
from llmtop.ui.series import DashboardHistory
from llmtop.ui.server_keys import ServerKeys
from llmtop.ui.session_life import SessionLife
from llmtop.ui.tab_router import TabRouter
from llmtop.ui.widgets.gpu_servers import GpuServers
from llmtop.ui.widgets.keys_footer import KeysFooter
from llmtop.ui.widgets.log_tail import LogTail
from llmtop.ui.widgets.panes import AfterFirstData, Pane
from llmtop.ui.widgets.server_bar import ServerBar
from llmtop.ui.widgets.title_bar import TitleBar
from llmtop.ui.window_keys import WINDOW_BINDINGS, WindowKeys

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textual.timer import Timer
    from textual.worker import Worker

    from llmtop.operations.events import Failed, ProbeDone
    from llmtop.operations.probe import PeriodicProbe

__all__ = ["LlmtopApp", "SnapshotReady", "create_app"]

TABS = ("overview", "logs", "probe", "gpu", "tuning")
TAB_LABELS = ("1 Overview", "2 Logs", "3 Prompt", "4 GPU", "5 Tuning")
LOG_PUMP_S = 0.1
HIDDEN_TABS_LATEST_S = 3.0


class LlmtopApp(
    SessionLife, ServerKeys, ModelKeys, FocusKeys, ProbeKeys, TabRouter, WindowKeys, App[None]
):
    CSS_PATH = "app.tcss"
    TITLE = "llmtop"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    ENABLE_COMMAND_PALETTE = False

    BINDINGS = [
        Binding("q", "quit_app", "quit"),
        Binding("ctrl+c", "quit_app", "quit", show=False, priority=True),
        Binding("question_mark,f1", "help", "help"),
        Binding("1", "tab('overview')", "overview", show=False),
        Binding("2", "tab('logs')", "logs", show=False),
        Binding("3", "tab('probe')", "prompt", show=False),
        Binding("4", "tab('gpu')", "GPU", show=False),
        Binding("5", "tab('tuning')", "tuning", show=False),
        Binding("r", "restart", "restart"),
        Binding("s", "stop_server", "stop", show=False),
        Binding("S", "start_server", "start", show=False),
        Binding("R", "revert_dropin", "revert drop-in", show=False),
        Binding("p", "probe", "probe"),
        Binding("P", "toggle_periodic", "periodic", show=False),
        Binding("slash", "search", "search"),
        Binding("f", "follow", "follow"),
        Binding("escape", "escape", "cancel", show=False),
        *MODEL_BINDINGS,  # router mode: m / L / U / l (ui/model_keys.py)
        *FOCUS_BINDINGS,  # several servers: > / < (ui/focus_keys.py)
        *WINDOW_BINDINGS,  # GPU plots' window: w (ui/window_keys.py)
    ]

    def __init__(
        self,
        session: Session,
        *,
        clock: Callable[[], float] | None = None,
        log_lines: int = 10_000,
        auto_collect: bool = True,
    ) -> None:
        super().__init__()
        # Partial repaints render only the changed rows (see textual_private: idle CPU budget).
        textual_private.install_partial_render()
        # No animations (tab underline slides, smooth scrolling): over SSH every animation frame
        # is a repaint, and a key press must repaint at once.
        self.animation_level = "none"
        self.session = session
        # False: nothing is started or polled; snapshots only arrive by SnapshotReady (tests,
        # screenshots).
        self.auto_collect = auto_collect
        self.clock = clock or time.time
        self.log_lines = log_lines
        self.series = DashboardHistory()
        self.latest: Snapshot | None = None
        self.snapshots_seen = 0
        self.dropped_ticks = 0
        self.periodic_probe_s: float | None = None
        self._collecting = False
        self._collect_task: asyncio.Task[None] | None = None
        self._periodic_timer: PeriodicProbe | None = None
        self._log_timer: Timer | None = None  # set in on_mount
        self._tuning_mounting = False
        self._widget_cache: dict[str | type[Widget], Widget] = {}
        self._probe_worker: Worker[ProbeDone | Failed] | None = None
        self._shutting_down = False
        self._active_tab = "overview"
        # Hidden tabs are mounted after the first data frame (AfterFirstData); tests that inject
        # snapshots get them right after the first frame, as before.
        self.defer_hidden_tabs = auto_collect
        # The recorded past the plots open with (Session.read_history); collection waits for it.
        self.prefill: list[Snapshot] = []
        # The live snapshots shown before the recorded past was read (None: not waiting for it).
        self.live_before_past: list[Snapshot] | None = None
        self._prefill_pending = False
        # Set once the first data frame is painted: the recorded past is read after it.
        self.first_frame_shown = asyncio.Event()

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield TitleBar(id="title")
        yield AlertsStrip(id="alerts")
        yield ServerBar(id="server-bar")  # several servers only
        # A Tabs row over plain panes (not TabbedContent): two fewer full-screen container
        # layers to paint on every tab switch. Hidden panes are display: none.
        yield Tabs(
            *(Tab(label, id=f"tab-{name}") for name, label in zip(TABS, TAB_LABELS, strict=True)),
            id="tabs",
        )
        with Pane(id="overview"):
            with Horizontal(id="overview-top"):
                yield ServerPanel(self.series, id="server")
                yield HostPanel(self.series, id="host")
                yield RecentProbes(self.series, id="recent-probes")
            yield FailureBox(id="failure")
            yield GpuSummary(id="gpu-summary")
            yield ProbeSummary(self.series, id="probe-summary")
            yield EventsStrip(self.session.log_store, rows=3, id="overview-events")
            yield LogTail(self.session, id="log-tail")
        with Pane(id="logs").hidden():
            # Hidden tabs are mounted after the first data frame: faster start-up.
            yield AfterFirstData(
                LogsPanel(
                    self.session.log_store,
                    max_lines=self.log_lines,
                    empty_hint=empty_log_hint(self.session.mode),
                    id="logs-panel",
                )
            )
        with Pane(id="probe").hidden():
            yield AfterFirstData(
                Vertical(
                    PromptPanel(self.session.validate_probe, id="prompt"),
                    LatencyPanel(self.series, id="latency"),
                    id="probe-column",
                )
            )
        with Pane(id="gpu").hidden():
            yield GpuServers(id="gpu-servers")  # several servers only
            with Horizontal(id="gpu-columns"):  # plots first: stacked at 80×24, side by side wide
                yield AfterFirstData(_thermal_panel)  # imported when mounted
                yield AfterFirstData(_gpu_panel)
        with Pane(id="tuning").hidden():
            # Mounted on first visit: the tuning code imports slowly (kept off start-up).
            yield Static("loading…", id="tuning-panel")
        yield KeysFooter()

    # ------------------------------------------------------------------ start-up
    def on_mount(self) -> None:
        self._q(TitleBar).show_state(self.session, None, None)
        self._q(AlertsStrip).set_text("[dim]no alerts yet[/]")
        self._q(ProbeSummary).show()
        self.query_one("#overview-events", EventsStrip).refresh_events()
        # The log pump runs only while the Logs tab is shown (paused otherwise: no idle wakeups).
        self._log_timer = self.set_interval(LOG_PUMP_S, self._pump_logs, pause=True)
        if not self.auto_collect:
            return
        # Hidden tabs: mounted after the first data frame, or after this if no data comes.
        self.set_timer(HIDDEN_TABS_LATEST_S, self._reveal_hidden_tabs)
        self.set_interval(max(0.1, self.session.refresh_s), self._tick)
        self._install_signal_handlers()
        if self.session.mode == "none":
            self.call_after_refresh(self._choose_server)
        else:
            self.run_worker(self._start_session(), group="session", exit_on_error=False)

    @on(SnapshotReady)
    def _on_snapshot(self, message: SnapshotReady) -> None:
        snap = message.snapshot
        self.session.record(snap)  # --record: the agent's recorder, on its own thread
        self.latest = snap
        self.snapshots_seen += 1
        if self.live_before_past is not None:  # the recorded past is still being read
            self.live_before_past.append(snap)
        self.series.add_snapshot(snap)
        # Panels with their own history (thermal plots) record every tick, even when hidden.
        for panel_id in ("#gpu-panel", "#thermal-panel", "#tuning-panel"):
            if isinstance(panel := self._find(panel_id), RecordsSnapshots):
                panel.record(snap)
        with self.batch_update():
            self._refresh_title()
            self._q(AlertsStrip).show(snap)
            self.show_servers(snap)
            self._show_tab(self.active_tab, snap)
        if self.snapshots_seen == 1:
            self.call_after_refresh(self.first_frame_shown.set)
            # (while the recorded past is read, the session mounts them once it is shown)
            if self.defer_hidden_tabs and self.live_before_past is None:
                self.call_after_refresh(self._reveal_hidden_tabs)
            # start-up is over: the long-lived heap out of the cyclic collector's way
            self.set_timer(HEAP_SETTLE_S, settle_heap)

    def apply_prefill(self, snapshots: list[Snapshot], live: list[Snapshot]) -> None:
        """The plots start again with the recorded past (oldest first) and then the *live*
        snapshots already shown: the past arrives after the first frame."""
        first_live = live[0].time if live else float("inf")
        self.prefill = [s for s in snapshots if s.time < first_live]
        self.series.clear()
        for snap in (*self.prefill, *live):
            self.series.add_snapshot(snap)
        for panel_id in ("#gpu-panel", "#thermal-panel"):
            if isinstance(panel := self._find(panel_id), RecordsSnapshots):
                panel.clear()
                for snap in (*self.prefill, *live):
                    panel.record(snap)

    @on(Tabs.TabActivated, "#tabs")
    def _on_tab(self, event: Tabs.TabActivated) -> None:
        self._switch_tab((event.tab.id or "tab-overview").removeprefix("tab-"))

    # ------------------------------------------------------------------ actions
    def action_tab(self, tab: str) -> None:
        self._q(Tabs).active = f"tab-{tab}"

    def action_help(self) -> None:
        from llmtop.ui.screens.help import HelpScreen

        self.push_screen(HelpScreen())

    def action_escape(self) -> None:
        if self.cancel_probe():
            return
        focused = self.focused
        if isinstance(focused, TextArea | Input):
            self._q(Tabs).focus()


def create_app(
    session: Session,
    *,
    clock: Callable[[], float] | None = None,
    log_lines: int = 10_000,
    auto_collect: bool = True,
) -> LlmtopApp:
    """The app factory used by the dashboard command, tests and the screenshot script.

    `auto_collect=False` starts nothing (no child, no polling): snapshots are injected with
    `app.post_message(SnapshotReady(snapshot))`, as the snapshot tests and screenshots do."""
    return LlmtopApp(session, clock=clock, log_lines=log_lines, auto_collect=auto_collect)


def _thermal_panel() -> Widget:
    from llmtop.ui.panels.thermal import ThermalPanel

    return ThermalPanel(id="thermal-panel")


def _gpu_panel() -> Widget:
    from llmtop.ui.panels.gpu import GpuPanel

    return GpuPanel(id="gpu-panel")
