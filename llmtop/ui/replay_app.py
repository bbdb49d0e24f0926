"""`llmtop replay`: the same dashboard, driven by recorded snapshots under a time cursor.

`ReplayApp` is `LlmtopApp` with no collector: a `ReplaySource` (llmtop/sources/replay.py) holds
the cursor, and each move posts the recorded `Snapshot` at the cursor through the app's own
`SnapshotReady` path, so every panel shows the past exactly as it showed the present. The
cursor moves at once on a key (pure arithmetic on the sample times; the title bar shows it);
the snapshot is read from the DB in a thread, latest cursor wins (moves made while a read runs
coalesce into one more read).

Keys: ←/→ one sample, PgUp/PgDn ±1 min, [ / ] previous/next event, g go to a time, space
play/pause, + / - play speed, w the GPU plots' window. Actions that change the world say why
they do nothing.

After a jump (or on opening) the plots are refilled with the window that ends at the cursor —
the overview's last 10 minutes and the GPU plots' window, read in the same thread as the
snapshot — so a jump into a throttle span shows what led to it, not an empty plot. The events
strips show the recorded events (OOM, restart, load failure, exit …) up to the cursor.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.markup import escape
from textual import events
from textual.binding import Binding
from textual.widgets import Input, Tabs, TextArea

from llmtop.model.timespec import parse_time
from llmtop.session import Session
from llmtop.snapshot import Snapshot
from llmtop.sources.history_db import EventRow
from llmtop.sources.history_plot import PlotHistory
from llmtop.sources.logs import LogEvent, LogStore
from llmtop.sources.replay import SPEEDS, ReplaySource, stamp
from llmtop.ui.app import LlmtopApp
from llmtop.ui.messages import SnapshotReady
from llmtop.ui.panels.thermal import ThermalPanel
from llmtop.ui.plot_windows import WINDOWS, Window
from llmtop.ui.series import SERIES_LEN
from llmtop.ui.widgets.title_bar import TitleBar

if TYPE_CHECKING:  # pragma: no cover - typing only
    from textual.timer import Timer

    from llmtop.sources.probe import ProbeRequest

PLAY_TICK_S = 0.25
# A cursor move farther than this many samples starts the plots afresh (no line drawn across
# the jump); so does any move backwards.
JUMP_SAMPLES = 10
# The longest answer the `g` prompt takes ("2026-12-02 03:14:07" is 19).
GOTO_MAX_CHARS = 40
# A read that takes longer than this shows the cursor's time in the title before its snapshot.
TITLE_ALONE_S = 0.05
REPLAY_ACTIONS = frozenset({"step", "shift", "event", "goto", "play", "speed"})


class RecordedLog(LogStore):
    """The replay's log store: its events are the recording's, up to the cursor (what the
    events strips show), instead of the live server's."""

    def __init__(self, events: list[EventRow]) -> None:
        super().__init__()
        self.recorded: list[LogEvent] = []
        self.cursor = float("-inf")
        self.add_recorded(events)

    def add_recorded(self, events: list[EventRow]) -> None:
        known = {(e.time, e.kind, e.message) for e in self.recorded}
        for e in events:
            ev = LogEvent(e.time, e.kind, self.redactor(e.message), e.severity)
            if (ev.time, ev.kind, ev.message) not in known:
                self.recorded.append(ev)
        self.recorded.sort(key=lambda e: e.time)

    def events(self) -> list[LogEvent]:
        times = [e.time for e in self.recorded]
        return self.recorded[: bisect.bisect_right(times, self.cursor)]


def _nothing(what: str) -> str:
    return f"replay: nothing to {what} — this is a recording; the server is not here"


class ReplayApp(LlmtopApp):
    """The dashboard over a recording (see the module docstring)."""

    BINDINGS = [
        Binding("left", "step(-1)", "−1 sample", show=False, priority=True),
        Binding("right", "step(1)", "+1 sample", show=False, priority=True),
        Binding("pageup", "shift(-60)", "−1 min", show=False, priority=True),
        Binding("pagedown", "shift(60)", "+1 min", show=False, priority=True),
        Binding("left_square_bracket", "event(-1)", "prev event", priority=True),
        Binding("right_square_bracket", "event(1)", "next event", priority=True),
        Binding("g", "goto", "go to", priority=True),
        Binding("space", "play", "play/pause", priority=True),
        Binding("plus,equals_sign", "speed(1)", "faster", show=False, priority=True),
        Binding("minus", "speed(-1)", "slower", show=False, priority=True),
    ]

    def __init__(
        self,
        session: Session,
        source: ReplaySource,
        *,
        clock: Callable[[], float] | None = None,
        log_lines: int = 10_000,
    ) -> None:
        # The events strips show the recording's events (read once; follow mode adds to them).
        session.log_store = RecordedLog(source.log_events(source.start, source.end))
        # auto_collect=False: nothing is started or polled; snapshots come from the source.
        super().__init__(session, clock=clock, log_lines=log_lines, auto_collect=False)
        self.source = source
        self.playing = False
        self.speed_index = 0
        self._shown_index: int | None = None
        self._shown_time: float | None = None
        self._load_task: asyncio.Task[None] | None = None
        self._refresh_task: asyncio.Task[None] | None = None
        self._play_timer: Timer | None = None
        # the cursor's time and the events `[`/`]` landed on there (named in the title)
        self._at_event: tuple[float, str] | None = None
        self._goto_text: str | None = None  # the `g` prompt's text while it is open

    @property
    def speed(self) -> int:
        return SPEEDS[self.speed_index]

    # ------------------------------------------------------------------ start-up
    def on_mount(self) -> None:
        # LlmtopApp.on_mount runs after this one (Textual calls each class's handler).
        self._install_signal_handlers()
        self._play_timer = self.set_interval(PLAY_TICK_S, self._play_tick, pause=True)
        if self.source.follow:
            self.set_interval(max(1.0, self.source.interval_s), self._follow_tick)
        self.call_after_refresh(self._cursor_moved)

    # ------------------------------------------------------------------ the cursor
    def _cursor_moved(self) -> None:
        """The cursor moved: the snapshot (and the title with it) when the DB read is back, the
        title alone first only when the read is slow (TITLE_ALONE_S).

        One frame per key, not two: Textual paints at most every 1/60 s and, after an idle
        spell, paints a second frame 17–33 ms after the first, so a title-only frame on the key
        would hold back the frame with the snapshot by as much."""
        if self._load_task is None or self._load_task.done():
            self._load_task = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        try:
            while self._shown_index != self.source.index:
                index = self.source.index
                t, last = self.source.times[index], self._shown_time
                jump = last is None or t < last or t - last > JUMP_SAMPLES * self.source.interval_s
                window = self._plot_window()
                # After a jump the present first: the snapshot with what the tab on screen
                # plots (the overview's 10 minutes, or the GPU plots' window) is one read and
                # one frame; the other tab's history follows in a second read.
                overview = self.active_tab == "overview"
                first = ("series" if overview else "plots") if jump else None
                read = asyncio.ensure_future(asyncio.to_thread(self._read, index, first, window))
                done, _ = await asyncio.wait({read}, timeout=TITLE_ALONE_S)
                if not done:  # a slow read (a cold page cache): the cursor's time meanwhile
                    self._refresh_title()
                snap, past, plots = await read
                self._shown_index = index
                if snap is None:
                    self._refresh_title()
                    continue
                if jump:
                    self._refill(past, window, plots)
                self._shown_time = snap.time
                log = self.session.log_store
                if isinstance(log, RecordedLog):
                    log.cursor = snap.time
                self.post_message(SnapshotReady(snap))
                if jump:  # the other tab's history, once the frame above is painted
                    painted = asyncio.Event()
                    self.call_after_refresh(painted.set)
                    await painted.wait()
                    second = "plots" if overview else "series"
                    _, past, plots = await asyncio.to_thread(self._read, index, second, window)
                    self._refill(past, window, plots)
        except Exception as exc:  # noqa: BLE001 - a DB read failed: say so, keep the app
            self.notify(f"replay: {exc}", severity="error", timeout=10)

    def _read(
        self, index: int, what: str | None, window: Window
    ) -> tuple[Snapshot | None, list[Snapshot] | None, PlotHistory | None]:
        """In a thread: the snapshot at *index* and, after a jump, one of the plots' windows
        ending there: *what* "series" (the overview's 10 minutes, ending with the snapshot)
        or "plots" (the GPU plots' *window*)."""
        snap = self.source.snapshot(index)
        if snap is None or what is None:
            return snap, None, None
        if what == "series":
            past = self.source.snapshots_before(snap.time, SERIES_LEN * self.source.interval_s)
            return snap, past, None
        return snap, None, self.source.plot_history(snap.time, window.seconds, window.bucket_s)

    def _plot_window(self) -> Window:
        panel = self._find("#thermal-panel")
        return panel.window if isinstance(panel, ThermalPanel) else WINDOWS[0]

    def _refill(
        self, past: list[Snapshot] | None, window: Window, plots: PlotHistory | None
    ) -> None:
        """Start a plot afresh with the window before the cursor (no line drawn across the
        jump): the history objects are emptied in place (every panel holds them) and refilled.
        *past* ends with the cursor's snapshot: whether the app has recorded it yet or not,
        the overview's series end with it."""
        if past is not None:
            self.series.clear()
            for snap in past:
                self.series.add_snapshot(snap)
            self.prefill = past[:-1]  # a GPU tab mounted later records them too
        if plots is not None:
            panel = self._find("#thermal-panel")
            if isinstance(panel, ThermalPanel) and panel.window.key == window.key:
                panel.clear()
                panel.load(window, plots)

    async def fill_window(self, panel: ThermalPanel, window: Window) -> None:
        """`w` in replay: the new window ends at the cursor, read from the recording."""
        t = self.source.time
        plots = await asyncio.to_thread(
            self.source.plot_history, t, window.seconds, window.bucket_s
        )
        if panel.window.key == window.key:  # stepped samples since the jump stay; the rest
            panel.load(window, plots)  # of the window comes before them

    def _refresh_title(self) -> None:
        src = self.source
        if self._goto_text is not None:
            self._show_title(
                f"[bold reverse] GO TO [/] {escape(self._goto_text)}▏  [dim]Enter go · Esc cancel"
                f" · recorded {stamp(src.start)} … {stamp(src.end)} · e.g. 2026-12-02 03:14:07,"
                " 10m ago, unix seconds[/]"
            )
            return
        parts = [f"[bold reverse] REPLAY {stamp(src.time)} [/]"]
        parts.append(f"[bold green]▶ {self.speed}×[/]" if self.playing else f"⏸ {self.speed}×")
        snap = self.latest
        if snap is not None:
            from llmtop.model.units import model_name
            from llmtop.ui.panels.server import HEALTH_STYLE

            s = snap.server
            parts.append(f"[{HEALTH_STYLE.get(s.health, 'bold')}]● {s.health}[/]")
            parts.append(escape(model_name(s.model_path, s.model_alias)))
        at_event = self._at_event
        if at_event is not None and at_event[0] == src.time:
            parts.append(f"[bold magenta]◆ {escape(at_event[1])}[/]")
        where = f"{src.index + 1}/{len(src.times)}"
        if src.follow and src.at_end:
            where += " · live end"
        parts.append(f"[dim]{where}[/]")
        self._show_title("  ".join(parts))

    def _show_title(self, markup: str) -> None:
        try:
            title = self._find(TitleBar)
        except Exception:  # noqa: BLE001 - no screen while the app closes
            return
        if title is not None:
            title.show_markup(markup)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The cursor keys give way to a dialog or a text field (typing a space, ← in Input)."""
        if action in REPLAY_ACTIONS and (
            len(self.screen_stack) > 1 or isinstance(self.focused, Input | TextArea)
        ):
            return False
        return super().check_action(action, parameters)

    def action_step(self, n: int) -> None:
        if self.source.step(n):
            self._cursor_moved()

    def action_shift(self, seconds: float) -> None:
        if self.source.shift(seconds):
            self._cursor_moved()

    def action_event(self, direction: int) -> None:
        event = self.source.next_event() if direction > 0 else self.source.prev_event()
        if event is None:
            where = "after" if direction > 0 else "before"
            self.notify(f"replay: no event {where} {stamp(self.source.time)}")
            return
        # named in the title bar while the cursor stays on it (a toast would cost a relayout
        # of the whole screen, plots included, on every ])
        together = [e for e in self.source.events if e.time == event.time]
        together.sort(key=lambda e: e.kind == "alert")  # an alert's long words last
        self._at_event = (self.source.time, " · ".join(e.label for e in together))
        self._cursor_moved()

    def action_goto(self) -> None:
        """`g`: the title bar becomes a one-line prompt for a time (what `--from` takes).

        Typed into the title line itself, not a dialog: opening and closing a dialog repaints
        the whole screen (plots included) and rebuilt the footer twice, ~90 ms before the new
        moment showed; on the title line Enter costs what any other jump costs."""
        self._goto_text = ""
        self._refresh_title()

    async def on_event(self, event: events.Event) -> None:
        if self._goto_text is not None and isinstance(event, events.Key) and not event.is_forwarded:
            self._goto_key(event)  # while the prompt is open every key is its own
            return
        await super().on_event(event)

    def _goto_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        text = self._goto_text or ""
        if event.key == "escape":
            self._goto_text = None
        elif event.key == "enter":
            self._goto_text = None
            if text.strip() and self._go_to(text.strip()):
                return  # the title follows with the snapshot there: one frame, not two
        elif event.key == "backspace":
            self._goto_text = text[:-1]
        elif event.character is not None and event.is_printable and len(text) < GOTO_MAX_CHARS:
            self._goto_text = text + event.character
        self._refresh_title()

    def _go_to(self, text: str) -> bool:
        """Move the cursor to the time *text* names; False (and why, in a toast) if it can't."""
        try:
            self.source.goto(parse_time(text, now=time.time()))
        except ValueError as exc:
            self.notify(f"replay: {exc}", severity="warning", timeout=8)
            return False
        self._cursor_moved()
        return True

    def action_play(self) -> None:
        self.playing = not self.playing
        if self._play_timer is not None:
            (self._play_timer.resume if self.playing else self._play_timer.pause)()
        self._refresh_title()

    def action_speed(self, direction: int) -> None:
        self.speed_index = max(0, min(len(SPEEDS) - 1, self.speed_index + direction))
        self._refresh_title()

    def _play_tick(self) -> None:
        if self.source.at_end:
            if not self.source.follow:  # the recording is over: stop there
                self.action_play()
            return  # following: the live end moves the cursor when new samples come
        if self.source.shift(self.speed * PLAY_TICK_S):
            self._cursor_moved()

    def _follow_tick(self) -> None:
        """The agent may still be writing: pick up new samples; at the end, follow them."""
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        at_end = self.source.at_end
        old_end = self.source.end
        try:
            added = await asyncio.to_thread(self.source.refresh)
            if added:
                events = await asyncio.to_thread(self.source.log_events, old_end, self.source.end)
                log = self.session.log_store
                if isinstance(log, RecordedLog):
                    log.add_recorded(events)
        except Exception as exc:  # noqa: BLE001 - e.g. the file went away; say so once
            self.notify(f"replay: {exc}", severity="warning", timeout=8)
            return
        if not added:
            return
        if at_end:
            self.source.index = len(self.source.times) - 1
            self._cursor_moved()
        else:
            self._refresh_title()

    # ------------------------------------------------------------------ no world to change
    def action_restart(self) -> None:
        self.notify(_nothing("restart"), severity="warning")

    def action_stop_server(self) -> None:
        self.notify(_nothing("stop"), severity="warning")

    def action_start_server(self) -> None:
        self.notify(_nothing("start"), severity="warning")

    def action_revert_dropin(self) -> None:
        self.notify(_nothing("revert"), severity="warning")

    def action_probe(self) -> None:
        self.notify(_nothing("probe"), severity="warning")

    def action_toggle_periodic(self) -> None:
        self.notify(_nothing("probe"), severity="warning")

    def start_probe(self, request: ProbeRequest, *, confirmed: bool = False) -> None:
        self.notify(_nothing("probe"), severity="warning")

    def _switch_tab(self, pane: str) -> None:
        if pane == "tuning":  # tuning applies settings to a live server
            self.notify(_nothing("apply (tuning changes a live server)"), severity="warning")
            self._q(Tabs).active = f"tab-{self._active_tab}"
            return
        super()._switch_tab(pane)


def create_replay_app(
    session: Session, source: ReplaySource, *, clock: Callable[[], float] | None = None
) -> ReplayApp:
    """The replay app factory (the command and the tests)."""
    return ReplayApp(session, source, clock=clock)
