"""Base for snapshot panels: a Static that re-renders only when its text changed."""

from __future__ import annotations

from rich.text import Text
from textual.geometry import Region
from textual.visual import visualize
from textual.widgets import Static

from llmtop.snapshot import Snapshot
from llmtop.ui.format import keep_gaps


def repaint_lines(widget: Static, text: Text, old: str | None, markup: str) -> None:
    """Show *text* on *widget*, repainting only the lines whose markup changed.

    An idle server changes a few numbers a second: repainting those lines (not the whole panel,
    and with no relayout unless the line count changed) is most of the idle CPU budget."""
    width = widget.content_size.width
    if old is None or not width or not widget.is_mounted or old.count("\n") != markup.count("\n"):
        widget.update(text, layout=old is None or old.count("\n") != markup.count("\n"))
        return
    changed = [
        Region(0, y, width, 1)
        for y, (a, b) in enumerate(zip(old.split("\n"), markup.split("\n"), strict=True))
        if a != b
    ]
    # Static.update without its whole-widget refresh (same two fields it sets).
    widget._Static__content = text  # type: ignore[attr-defined]
    widget._Static__visual = visualize(widget, text, markup=False)  # type: ignore[attr-defined]
    widget.refresh(*changed)


class SnapshotPanel(Static):
    """`show(snapshot)` computes the panel's text; `update` runs only when it differs."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._last: str | None = None
        self._snapshot: Snapshot | None = None

    def set_text(self, markup: str) -> None:
        if markup == self._last:
            return
        old = self._last
        self._last = markup
        text = keep_gaps(Text.from_markup(markup, overflow="ellipsis"))
        text.no_wrap = True
        repaint_lines(self, text, old, markup)

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
