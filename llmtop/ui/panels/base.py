"""Base for snapshot panels: a Static that re-renders only when its text changed."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from llmtop.snapshot import Snapshot


class SnapshotPanel(Static):
    """`show(snapshot)` computes the panel's text; `update` runs only when it differs."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._last: str | None = None
        self._snapshot: Snapshot | None = None

    def set_text(self, markup: str) -> None:
        if markup != self._last:
            # A relayout only when the height may change (the line count): repaint otherwise.
            relayout = self._last is None or markup.count("\n") != self._last.count("\n")
            self._last = markup
            text = Text.from_markup(markup, overflow="ellipsis")
            text.no_wrap = True
            self.update(text, layout=relayout)

    def remember(self, snapshot: Snapshot) -> None:
        """Keep the snapshot so a resize can redraw width-dependent parts (sparklines)."""
        self._snapshot = snapshot

    def on_resize(self) -> None:
        # After the layout pass: a redraw that changes the line count must relayout again.
        self.call_after_refresh(self._reshow)

    def _reshow(self) -> None:
        if self._snapshot is not None:
            self.show(self._snapshot)

    def show(self, snapshot: Snapshot) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def text(self) -> str:
        """The panel's plain text (tests and screenshots read it)."""
        return Text.from_markup(self._last or "").plain
