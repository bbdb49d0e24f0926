"""The llmtop Textual app: layout, keys, the collector loop and intents.

Collector loop: a timer at the refresh rate starts one collect; if the previous one is still
running the tick is dropped (latest value wins, nothing queues). Each result arrives as a
`SnapshotReady` message; its handler shows it on the visible panels inside `batch_update()`.
Tests inject snapshots through the same message (`app.post_message(SnapshotReady(snap))`).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.lazy import Lazy
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Footer, Input, Static, Tab, Tabs, TextArea

from llmtop.model.units import model_name
from llmtop.operations.events import Event, Failed, Progress, Reverted
from llmtop.session import Session
from llmtop.snapshot import Snapshot
from llmtop.ui import partial_render
from llmtop.ui.format import keep_gaps
from llmtop.ui.panels.alerts import AlertsStrip
from llmtop.ui.panels.gpu import GpuPanel
from llmtop.ui.panels.gpu_summary import GpuSummary
from llmtop.ui.panels.host import HostPanel
from llmtop.ui.panels.latency import LatencyPanel, ProbeSummary, RecentProbes
from llmtop.ui.panels.logs import LEVEL_STYLE, EventsStrip, LogsPanel, format_line
from llmtop.ui.panels.prompt import PromptPanel
from llmtop.ui.panels.server import HEALTH_STYLE, FailureBox, ServerPanel
from llmtop.ui.panels.thermal import ThermalPanel
from llmtop.ui.series import Series

TABS = ("overview", "logs", "probe", "gpu", "tuning")
TAB_LABELS = ("1 Overview", "2 Logs", "3 Prompt", "4 GPU", "5 Tuning")
PERIODIC_PROBE_S = 30.0
LOG_PUMP_S = 0.1
HIDDEN_TABS_LATEST_S = 3.0


class SnapshotReady(Message):
    """A new snapshot from the collector (or injected by a test)."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class AfterFirstData(Lazy):
    """A hidden tab's content, mounted once the first snapshot is on screen or when its tab is
    opened, whichever comes first (the app calls `reveal()`). Plain `Lazy` mounts right after
    the first frame, and those ~0.1 s of mounting delayed the first data frame."""

    _revealing = False

    async def mount_composed_widgets(self, widgets: list[Widget]) -> None:
        if not getattr(self.app, "defer_hidden_tabs", False):
            await super().mount_composed_widgets(widgets)

    async def reveal(self) -> Widget | None:
        """Mount the content in place of this placeholder; the content (None if done before)."""
        parent = self.parent
        if self._revealing or parent is None or not self.is_attached:
            return None
        self._revealing = True
        await parent.mount(self._replace_widget, after=self)
        await self.remove()
        return self._replace_widget


class KeysFooter(Footer):
    """Textual's Footer, rebuilt only when the keys it shows change: the stock one rebuilds all
    its keys on every bindings signal (eight times during start-up, a tenth of a second)."""

    _shown: tuple[Any, ...] | None = None

    def _keys(self) -> tuple[Any, ...] | None:
        if not self._bindings_ready or not self.is_attached:
            return None
        return tuple(
            (binding.key, binding.description, binding.action, enabled, tooltip)
            for (_, binding, enabled, tooltip) in self.screen.active_bindings.values()
            if binding.show
        )

    async def recompose(self) -> None:
        keys = self._keys()
        if keys is not None and keys == self._shown and self.children:
            return
        self._shown = keys
        await super().recompose()


class Pane(Vertical):
    """One tab's content; only the active one is displayed."""

    def hidden(self) -> Pane:
        self.display = False
        return self


class TitleBar(Static):
    """One line: mode, URL, health, model, snapshot time (stale when the collector lags)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._last = ""

    def show_state(
        self, session: Session, snapshot: Snapshot | None, stale_s: float | None
    ) -> None:
        parts = ["[bold]llmtop[/]", f"[reverse] {session.mode} [/]"]
        if snapshot is not None:
            s = snapshot.server
            parts.append(f"[{HEALTH_STYLE.get(s.health, 'bold')}]● {s.health}[/]")
            # No ticking clock here: a line that changes every second costs a repaint of the
            # whole top band each tick; staleness is shown instead.
            if stale_s is not None:
                parts.append(f"[bold yellow]stale {stale_s:.0f} s[/]")
            parts.append(escape(session.url or ""))
            parts.append(escape(model_name(s.model_path, s.model_alias)))
        else:
            parts.append(escape(session.url or "no server"))
            parts.append("[dim]waiting for the first snapshot…[/]")
        markup = "  ".join(parts)
        if markup != self._last:
            self._last = markup
            text = keep_gaps(Text.from_markup(markup, overflow="ellipsis"))
            text.no_wrap = True
            self.update(text, layout=False)  # always one line


class LogTail(Static):
    """Wide overview only: the last lines of the log, refreshed with each snapshot."""

    def __init__(self, session: Session, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.session = session
        self._seq = -1
        self.border_title = "Log (2 for the full log)"

    def show(self, snapshot: Snapshot | None = None) -> None:
        store = self.session.log_store
        if store.last_seq == self._seq:
            return
        self._seq = store.last_seq
        rows = max(1, self.size.height or 10)
        width = max(8, self.content_size.width or 200)
        lines = store.since(max(0, store.last_seq - rows))
        text = Text(no_wrap=True, overflow="ellipsis")
        for i, ln in enumerate(lines):
            if i:
                text.append("\n")
            line = format_line(ln)
            if len(line) > width:  # cut here: cheaper than a long line's ellipsis on render
                line = line[: width - 1] + "…"
            text.append(line, style=LEVEL_STYLE.get(ln.level))
        self.update(text, layout=False)  # fixed height (1fr)


class LlmtopApp(App[None]):
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
        # Partial repaints render only the changed rows (see partial_render: idle CPU budget).
        partial_render.install()
        # No animations (tab underline slides, smooth scrolling): over SSH every animation frame
        # is a repaint, and a key press must repaint at once.
        self.animation_level = "none"
        self.session = session
        # False: nothing is started or polled; snapshots only arrive by SnapshotReady (tests,
        # screenshots).
        self.auto_collect = auto_collect
        self.clock = clock or time.time
        self.log_lines = log_lines
        self.series = Series()
        self.latest: Snapshot | None = None
        self.snapshots_seen = 0
        self.dropped_ticks = 0
        self.periodic_probe_s: float | None = None
        self._collecting = False
        self._collect_task: asyncio.Task[None] | None = None
        self._periodic_timer: Any | None = None
        self._log_timer: Any | None = None
        self._tuning_mounting = False
        self._widget_cache: dict[object, Any] = {}
        self._probe_worker: Any | None = None
        self._shutting_down = False
        self._active_tab = "overview"
        # Hidden tabs are mounted after the first data frame (AfterFirstData); tests that inject
        # snapshots get them right after the first frame, as before.
        self.defer_hidden_tabs = auto_collect

    # ------------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield TitleBar(id="title")
        yield AlertsStrip(id="alerts")
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
            hint = ""
            if self.session.mode == "attach":
                hint = (
                    "attach mode: no server output here — llmtop shows the logs of servers "
                    "it starts (llmtop -- llama-server …) or of a unit's journal (--unit)"
                )
            # Hidden tabs are mounted after the first data frame: faster start-up.
            yield AfterFirstData(
                LogsPanel(
                    self.session.log_store,
                    max_lines=self.log_lines,
                    empty_hint=hint,
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
            yield AfterFirstData(GpuPanel(id="gpu-panel"))
            yield AfterFirstData(ThermalPanel(id="thermal-panel"))
        with Pane(id="tuning").hidden():
            # Mounted on first visit: the tuning code imports slowly (kept off start-up).
            yield Static("loading…", id="tuning-panel")
        yield KeysFooter()

    async def _mount_tuning(self) -> None:
        placeholder = self._q("#tuning-panel")
        if placeholder.has_class("-tuning-ready") or self._tuning_mounting:
            return
        self._tuning_mounting = True
        widget = self._tuning_widget()
        widget.add_class("-tuning-ready")
        await placeholder.remove()
        await self.query_one("#tuning", Pane).mount(widget)
        if self.latest is not None and hasattr(widget, "show"):
            widget.show(self.latest)

    def _tuning_widget(self) -> Widget:
        try:
            from llmtop.ui.panels.tuning import TuningPanel
        except ImportError:
            return Static("tuning: not available in this build", id="tuning-panel")
        try:
            return TuningPanel(self.session, id="tuning-panel")  # type: ignore[call-arg]
        except TypeError:
            return TuningPanel(id="tuning-panel")  # type: ignore[call-arg]

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

    def _choose_server(self) -> None:
        if self.session.candidates:
            from llmtop.ui.screens.pick_server import PickServerScreen

            self.push_screen(PickServerScreen(self.session.candidates), self._picked)
        else:
            from llmtop.ui.screens.no_server import NoServerScreen

            self.push_screen(NoServerScreen())

    def _picked(self, target: Any) -> None:
        if target is None:
            self.exit()
            return
        self.run_worker(self._pick_and_start(target), group="session", exit_on_error=False)

    async def _pick_and_start(self, target: Any) -> None:
        # A unit is read with systemctl: keep that off the event loop.
        try:
            await asyncio.to_thread(self.session.pick, target)
        except Exception as exc:  # noqa: BLE001 - shown to the operator
            self.notify(f"could not open {target.label or target.url}: {exc}", severity="error")
            return
        await self._start_session()

    async def _start_session(self) -> None:
        try:
            await self.session.start()
        except Exception as exc:  # noqa: BLE001 - shown to the operator
            self.notify(f"could not start: {exc}", severity="error", timeout=10)
        self._tick()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        self.run_worker(self.shutdown(), group="shutdown", exclusive=True)

    # ------------------------------------------------------------------ collector loop
    def _tick(self) -> None:
        if self.session.collector is None or self._shutting_down:
            self._refresh_title()
            return
        if self._collecting:
            self.dropped_ticks += 1
            return
        self._collecting = True
        # A plain task, not a Worker: no state-change messages every tick (CPU budget).
        self._collect_task = asyncio.get_running_loop().create_task(self._collect_once())

    async def _collect_once(self) -> None:
        try:
            snap = await self.session.collect()
        except Exception as exc:  # noqa: BLE001 - the collector should not raise; say so
            self.notify(f"collector error: {exc}", severity="error")
            snap = None
        finally:
            self._collecting = False
        if snap is not None:
            self.post_message(SnapshotReady(snap))

    @on(SnapshotReady)
    def _on_snapshot(self, message: SnapshotReady) -> None:
        snap = message.snapshot
        self.latest = snap
        self.snapshots_seen += 1
        self.series.add_snapshot(snap)
        # Panels with their own history (thermal plots) record every tick, even when hidden.
        for panel_id in ("#gpu-panel", "#thermal-panel", "#tuning-panel"):
            record = getattr(self._find(panel_id), "record", None)
            if record is not None:
                record(snap)
        with self.batch_update():
            self._refresh_title()
            self._q(AlertsStrip).show(snap)
            self._show_tab(self.active_tab, snap)
        if self.snapshots_seen == 1 and self.defer_hidden_tabs:
            self.call_after_refresh(self._reveal_hidden_tabs)

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
            record = getattr(panel, "record", None)
            if record is not None and self.latest is not None:
                record(self.latest)  # history is keyed by snapshot time: no double entries

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

    def _find(self, selector: str | type[Widget]) -> Any | None:
        """The widget, or None while a lazily mounted tab is not there yet.

        Cached: walking the DOM on every snapshot was a third of the idle CPU cost."""
        widget = self._widget_cache.get(selector)
        if widget is not None and widget.is_attached:
            return widget
        found = list(self.query(selector))  # type: ignore[arg-type]
        widget = found[0] if found else None
        if widget is not None:
            self._widget_cache[selector] = widget
        return widget

    def _q(self, selector: str | type[Widget]) -> Any:
        """Like query_one, cached (for widgets that are always there)."""
        widget = self._find(selector)
        if widget is None:
            return self.query_one(selector)  # type: ignore[arg-type]  # raises NoMatches
        return widget

    @property
    def active_tab(self) -> str:
        return self._active_tab

    def _show_tab(self, tab: str, snap: Snapshot | None) -> None:
        """Show *snap* on the panels of *tab* only: hidden panels are updated when shown."""
        if tab == "overview":
            if snap is not None:
                self._q(ServerPanel).show(snap)
                self._q(HostPanel).show(snap)
                self._q(FailureBox).show(snap)
                self._q(GpuSummary).show(snap)
            self._q(ProbeSummary).show(snap)
            self._q("#overview-events").refresh_events()
            if self.screen.has_class("-wide"):
                self._q(LogTail).show(snap)
                self._q(RecentProbes).show(snap)
        elif tab == "logs":
            panel = self._find(LogsPanel)
            if panel is not None:
                panel.refresh_events()
                panel.pump()
        elif tab == "probe":
            latency = self._find(LatencyPanel)
            if snap is not None and latency is not None:
                latency.show(snap)
        elif tab == "gpu":
            if snap is not None:
                for widget in (self._find("#gpu-panel"), self._find("#thermal-panel")):
                    if widget is not None:
                        widget.show(snap)
        elif tab == "tuning" and snap is not None:
            tuning = self._q("#tuning-panel")
            if hasattr(tuning, "show"):
                tuning.show(snap)

    @on(Tabs.TabActivated, "#tabs")
    def _on_tab(self, event: Tabs.TabActivated) -> None:
        pane = (event.tab.id or "tab-overview").removeprefix("tab-")
        if pane == self._active_tab:
            return
        with self.batch_update():
            self._q(f"#{self._active_tab}").display = False
            self._q(f"#{pane}").display = True
        self._active_tab = pane
        if pane == "tuning":
            self.run_worker(self._mount_tuning(), group="tuning")
        self._log_timer.pause()  # resumed after the switch is on screen (Logs tab only)
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
            if pane == "logs":
                self._log_timer.resume()

    def _pump_logs(self) -> None:
        panel = self._find(LogsPanel) if self.active_tab == "logs" else None
        if panel is not None:
            panel.pump()

    # ------------------------------------------------------------------ probes
    @on(PromptPanel.Fire)
    def _on_fire(self, event: PromptPanel.Fire) -> None:
        self.start_probe(event.request)

    @on(PromptPanel.Cancel)
    def _on_cancel(self) -> None:
        self.cancel_probe()

    def start_probe(self, request: Any) -> None:
        panel = self._find(PromptPanel)
        if panel is None:
            return
        if self.session.url is None:
            panel.set_error("no server to probe")
            return
        panel.started()
        self._probe_worker = self.run_worker(
            self._run_probe(request), group="probe", exclusive=True, exit_on_error=False
        )

    async def _run_probe(self, request: Any) -> None:
        panel = self._q(PromptPanel)
        try:
            result = await self.session.probe(request, on_chunk=panel.stream)
        except asyncio.CancelledError:
            panel.finished(None, "cancelled")
            raise
        except Exception as exc:  # noqa: BLE001 - shown inline
            panel.finished(None, f"probe failed: {exc}")
            return
        self.series.add_probe(result)
        self._q(LatencyPanel).add_probe(result)
        self._q(ProbeSummary).show()
        self._q(RecentProbes).show()
        panel.finished(result)

    def cancel_probe(self) -> bool:
        worker = self._probe_worker
        if worker is not None and worker.is_running:
            worker.cancel()
            return True
        return False

    def _periodic_tick(self) -> None:
        panel = self._find(PromptPanel)
        if panel is not None and not panel.running:
            panel.fire()

    # ------------------------------------------------------------------ actions
    def action_tab(self, tab: str) -> None:
        self._q(Tabs).active = f"tab-{tab}"

    def action_help(self) -> None:
        from llmtop.ui.screens.help import HelpScreen

        self.push_screen(HelpScreen())

    def action_probe(self) -> None:
        panel = self._find(PromptPanel)
        if panel is not None:
            panel.fire()

    def action_toggle_periodic(self) -> None:
        if self._periodic_timer is None:
            self.periodic_probe_s = PERIODIC_PROBE_S
            self._periodic_timer = self.set_interval(PERIODIC_PROBE_S, self._periodic_tick)
            self.notify(f"periodic probe every {PERIODIC_PROBE_S:.0f} s")
        else:
            self._periodic_timer.stop()
            self._periodic_timer = None
            self.periodic_probe_s = None
            self.notify("periodic probe off")
        self._q(ProbeSummary).show()

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

    def action_escape(self) -> None:
        if self.cancel_probe():
            return
        focused = self.focused
        if isinstance(focused, TextArea | Input):
            self._q(Tabs).focus()

    def _not_supervised(self) -> bool:
        if self.session.operations is None:
            self.notify(
                "not supervised: llmtop is attached to a server it did not start "
                "(start it with `llmtop -- llama-server …` or --unit to control it)",
                severity="warning",
            )
            return True
        return False

    def action_restart(self) -> None:
        if self._not_supervised():
            return
        from llmtop.ui.screens.confirm import ConfirmScreen

        pid = self.session.controller.pid if self.session.controller else None
        what = f"llama-server (pid {pid})" if pid else "llama-server"
        self.push_screen(ConfirmScreen(f"Restart {what}?"), self._confirmed_restart)

    def _confirmed_restart(self, yes: bool | None) -> None:
        if yes:
            self._run_server_action("restart")

    def action_stop_server(self) -> None:
        if self._not_supervised():
            return
        from llmtop.ui.screens.confirm import ConfirmScreen

        self.push_screen(ConfirmScreen("Stop llama-server?"), self._confirmed_stop)

    def _confirmed_stop(self, yes: bool | None) -> None:
        if yes:
            self._run_server_action("stop")

    def action_start_server(self) -> None:
        if not self._not_supervised():
            self._run_server_action("start")

    def action_revert_dropin(self) -> None:
        """Unit mode: remove llmtop's systemd drop-in (kept as .bak), reload and restart."""
        ops = self.session.operations
        if ops is None or not ops.server.can_revert:
            self.notify(
                "not a systemd unit: R reverts llmtop's drop-in of a unit (llmtop --unit NAME)",
                severity="warning",
            )
            return
        from llmtop.ui.screens.confirm import ConfirmScreen

        self.push_screen(
            ConfirmScreen(f"Remove llmtop's drop-in of {ops.server.unit_name} and restart it?"),
            self._confirmed_revert,
        )

    def _confirmed_revert(self, yes: bool | None) -> None:
        if yes:
            self._run_server_action("revert")

    def _run_server_action(self, name: str) -> None:
        """The one route from a key to the server: the session's ServerActions."""
        ops = self.session.operations
        if ops is None:
            return
        actions = ops.server
        run = {
            "restart": actions.restart,
            "stop": actions.stop,
            "start": actions.start,
            "revert": actions.revert,
        }[name]

        async def act() -> None:
            await run(self._server_event)
            self._tick()

        self.run_worker(act(), group="control", exit_on_error=False)

    def _server_event(self, event: Event) -> None:
        """Restart/stop/start/revert progress → a toast (errors stay up longer)."""
        if isinstance(event, Progress):
            self.notify(event.message)
        elif isinstance(event, Failed):
            self.notify(event.reason, severity="error", timeout=10)
        elif isinstance(event, Reverted):
            self.notify(event.message)

    async def action_quit_app(self) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop a supervised child cleanly, then leave (the terminal is restored by Textual)."""
        if self._shutting_down:
            return
        self._shutting_down = True
        self.cancel_probe()
        if self._collect_task is not None and not self._collect_task.done():
            self._collect_task.cancel()
        try:
            await asyncio.wait_for(self.session.close(), timeout=15.0)
        except Exception:  # noqa: BLE001 - make sure nothing is left behind
            self.session.shutdown_sync()
        self.exit()


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
