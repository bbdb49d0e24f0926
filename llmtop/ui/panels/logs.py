"""Logs panel: the server's output in a `Log` fed in batches, follow/pause, search, events strip.

The app calls `pump()` every ~100 ms while the panel is visible; each call writes every new
`LogStore` line in one `Log.write_lines` batch (one call per line costs ~100× more). When the
panel is hidden nothing is written; on return it catches up from the store (which is bounded).
"""

from __future__ import annotations

from collections.abc import Hashable

from rich.highlighter import Highlighter
from rich.markup import escape
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Log, Static

from llmtop.model.units import fmt_clock
from llmtop.sources.logs import LogLine, LogStore, classify_level
from llmtop.ui.format import keep_gaps
from llmtop.ui.textual_private import StripCachedLog, pinned

LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "debug": "dim"}
_EVENT_STYLE = {"critical": "bold red", "warning": "yellow", "info": "green"}
_EVENT_MARK = {"critical": "✗", "warning": "!", "info": "✓"}


class LevelHighlighter(Highlighter):
    """Colours a rendered log line by its level and marks the search needle."""

    def __init__(self) -> None:
        self.needle: str | None = None

    def highlight(self, text: Text) -> None:
        style = LEVEL_STYLE.get(classify_level(text.plain))
        if style:
            text.stylize(style)
        if self.needle:
            text.highlight_words([self.needle], "reverse bold", case_sensitive=False)


def format_line(line: LogLine) -> str:
    if line.stream == "llmtop":
        return f"llmtop: {line.text}"
    return line.text


# The strip cache reaches into Log's internals: only on the Textual it was written for.
_LogBase: type[Log] = StripCachedLog if pinned() else Log


class LogView(_LogBase):  # type: ignore[valid-type,misc]
    """A `Log` that keeps its rendered lines (see textual_private.StripCachedLog): cached by line
    text, base style and search needle; the level highlighter depends on nothing else."""

    def strip_key(self) -> tuple[Hashable, ...] | None:
        if not isinstance(self.highlighter, LevelHighlighter):
            return None
        return (self.highlighter.needle,)


def empty_log_hint(mode: str) -> str:
    """What an empty logs tab says: in attach mode llmtop reads no server output at all."""
    if mode != "attach":
        return ""
    return (
        "attach mode: no server output here — llmtop shows the logs of servers "
        "it starts (llmtop -- llama-server …) or of a unit's journal (--unit)"
    )


class EventsStrip(Static):
    """The last few milestones and failures (model loaded, listening, out of memory, exit …)."""

    def __init__(self, store: LogStore, rows: int = 3, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.store = store
        self.rows = rows
        self._last = ""

    def use_store(self, store: LogStore) -> None:
        """Show *store*'s events from now on (several servers: the focused server's log)."""
        if store is not self.store:
            self.store = store
            self.refresh_events()

    def refresh_events(self) -> None:
        events = self.store.events()[-self.rows :]
        if not events:
            markup = "[dim]no events yet[/]"
        else:
            markup = "\n".join(
                f"[dim]{fmt_clock(e.time)}[/] [{_EVENT_STYLE.get(e.severity, 'bold')}]"
                f"{_EVENT_MARK.get(e.severity, '·')} {escape(e.message)}[/]"
                for e in reversed(events)
            )
        if markup != self._last:
            relayout = markup.count("\n") != self._last.count("\n")
            self._last = markup
            self.update(keep_gaps(Text.from_markup(markup)), layout=relayout)

    @property
    def text(self) -> str:
        return Text.from_markup(self._last).plain


class LogsPanel(Vertical):
    """Events strip, a search box (on `/`), a status line and the log itself."""

    def __init__(
        self, store: LogStore, max_lines: int = 10_000, empty_hint: str = "", **kwargs: object
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.store = store
        self.empty_hint = empty_hint
        self.max_lines = max_lines
        self.seq = 0  # last LogStore seq written into the Log
        self.follow = True
        self.needle: str | None = None
        self.highlighter = LevelHighlighter()
        self._status = ""

    def compose(self) -> ComposeResult:
        yield EventsStrip(self.store, rows=3, id="log-events")
        yield Input(placeholder="search logs (Enter filters, Esc clears)", id="log-search")
        yield Static(id="log-status")
        log = LogView(max_lines=self.max_lines, highlight=True, id="log-view", auto_scroll=True)
        log.highlighter = self.highlighter
        yield log

    @property
    def log_view(self) -> Log:
        return self.query_one("#log-view", Log)

    def on_mount(self) -> None:
        self.query_one("#log-search", Input).display = False
        self._update_status()

    # ---------------------------------------------------------------- feeding
    def pump(self) -> int:
        """Write every line newer than the last one written; returns how many were written."""
        new = self.store.since(self.seq)
        if not new:
            return 0
        self.seq = new[-1].seq
        needle = (self.needle or "").lower()
        lines = [format_line(ln) for ln in new if not needle or needle in ln.text.lower()]
        if lines:
            self.log_view.write_lines(lines[-self.max_lines :])
        self._update_status()
        return len(lines)

    def refresh_events(self) -> None:
        self.query_one("#log-events", EventsStrip).refresh_events()

    def use_store(self, store: LogStore, empty_hint: str = "") -> None:
        """Show *store* from now on (several servers: the focus moved to another server, whose
        log this is): rewritten from that store, the filter and the follow mode kept."""
        if store is self.store:
            return
        self.store, self.empty_hint = store, empty_hint
        if self.is_mounted:
            self.query_one("#log-events", EventsStrip).use_store(store)
            self.set_filter(self.needle)

    # ---------------------------------------------------------------- follow / search
    def toggle_follow(self) -> bool:
        self.follow = not self.follow
        view = self.log_view
        view.auto_scroll = self.follow
        if self.follow:
            view.scroll_end(animate=False)
        self._update_status()
        return self.follow

    def open_search(self) -> None:
        box = self.query_one("#log-search", Input)
        box.display = True
        box.value = self.needle or ""
        box.focus()

    def set_filter(self, needle: str | None) -> None:
        """Show only lines containing *needle* (case-insensitive), highlighted; None shows all."""
        self.needle = needle or None
        self.highlighter.needle = self.needle
        view = self.log_view
        view.clear()
        lines = self.store.search(self.needle) if self.needle else self.store.lines()
        lines = lines[-self.max_lines :]
        self.seq = self.store.last_seq
        view.write_lines([format_line(ln) for ln in lines], scroll_end=True)
        self._update_status()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "log-search":
            return
        event.stop()
        self.set_filter(event.value.strip() or None)
        event.input.display = False
        self.log_view.focus()

    def on_key(self, event: events.Key) -> None:
        key = event.key
        box = self.query_one("#log-search", Input)
        if key == "escape" and box.display:
            box.display = False
            self.set_filter(None)
            self.log_view.focus()
            event.stop()

    def _update_status(self) -> None:
        mode = "[green]following[/]" if self.follow else "[yellow]paused[/] (f to follow)"
        shown = self.log_view.line_count if self.is_mounted else 0
        filt = f"  filter: [reverse]{escape(self.needle)}[/]" if self.needle else ""
        if self.store.total_written == 0 and self.empty_hint:
            filt += f"  [yellow]{escape(self.empty_hint)}[/]"
        markup = (
            f"{mode}  {shown} shown / {self.store.total_written} written{filt}"
            "  [dim]/ search · f follow[/]"
        )
        if markup != self._status:
            self._status = markup
            self.query_one("#log-status", Static).update(
                keep_gaps(Text.from_markup(markup)), layout=False
            )
