"""Base for snapshot panels: a Static that re-renders only the lines whose text changed."""

from __future__ import annotations

from rich.text import Text
from textual.geometry import Region
from textual.strip import Strip
from textual.visual import Visual
from textual.widgets import Static

from llmtop.snapshot import Snapshot
from llmtop.ui import textual_private
from llmtop.ui.format import keep_gaps


def line_text(markup: str) -> Text:
    """One line (or several) of panel markup as it is shown: no wrap, "…" where cut."""
    text = keep_gaps(Text.from_markup(markup, overflow="ellipsis"))
    text.no_wrap = True
    return text


class SnapshotPanel(Static):
    """`show(snapshot)` computes the panel's markup; `set_text` repaints only what changed.

    An idle server changes a few numbers a second. Static renders the whole panel again for any
    change (Visual.to_strips of every line); here each line's strip is cached and only the lines
    whose markup changed are rendered and repainted, with no relayout unless the line count
    changed. That was most of the idle dashboard's CPU budget.

    The line cache needs two Textual privates (see ui/textual_private.py); on another Textual
    than the pinned one every panel renders as a plain Static (correct, slower)."""

    LINE_CACHE = True
    """False for a panel that wraps its text (it renders as a plain Static)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._last: str | None = None
        self._snapshot: Snapshot | None = None
        self._lines: list[str] = []
        self._strips: dict[int, Strip] = {}
        self._strips_width = -1
        self._own_dirty: set[Region] = set()
        self._content_stale = False
        self._line_cache = self.LINE_CACHE and textual_private.pinned()

    @property
    def visual(self) -> Visual:
        if self._content_stale:
            self._content_stale = False
            textual_private.set_static_content(self, line_text(self._last or ""))
        return super().visual

    def set_text(self, markup: str) -> None:
        if markup == self._last:
            return
        old_lines = self._lines
        self._last = markup
        self._lines = markup.split("\n")
        width = self.content_size.width
        if (
            not self._line_cache
            or len(old_lines) != len(self._lines)
            or not width
            or not self.is_mounted
        ):
            self._strips.clear()
            self._content_stale = False
            self.update(line_text(markup), layout=len(old_lines) != len(self._lines))
            return
        pairs = enumerate(zip(old_lines, self._lines, strict=True))
        changed = [Region(0, y, width, 1) for y, (a, b) in pairs if a != b]
        for region in changed:
            self._strips.pop(region.y, None)
        # Static's own content (used only to measure the panel for a layout) is made again
        # from the markup when asked for (`visual`), not on every tick.
        self._content_stale = True
        offset = self.content_offset
        self._own_dirty.update(region.translate(offset) for region in changed)
        self.refresh(*changed)

    def render_line(self, y: int) -> Strip:
        if not self._line_cache:
            return super().render_line(y)
        width = self.size.width
        dirty = textual_private.take_dirty_regions(self)
        if dirty:
            # Our own partial refreshes mark single lines; anything else (a style, theme or
            # size change, an update) marks the whole widget: render every line again then.
            if not dirty <= self._own_dirty:
                self._strips.clear()
            self._own_dirty.clear()
        if width != self._strips_width:
            self._strips.clear()
            self._strips_width = width
        strip = self._strips.get(y)
        if strip is None:
            if y >= len(self._lines):
                return Strip.blank(width, self.visual_style.rich_style)
            # Rich's own rendering of one line (a fifth of the cost of Textual's Content path),
            # on the widget's colours, cut with "…" like the Static it replaces.
            text = line_text(self._lines[y])
            text.truncate(width, overflow="ellipsis")
            base = self.visual_style.rich_style
            strip = Strip(text.render(self.app.console)).apply_style(base)
            strip = strip.extend_cell_length(width, base)
            self._strips[y] = strip
        return strip

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
