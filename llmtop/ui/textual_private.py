"""Every use of a Textual private in llmtop, in one place, behind one version guard.

Three speed-ups reach into Textual's internals: they were measured to be most of the idle
dashboard's CPU (1 % of a core budget) and Textual offers no public hook for them. Each is
written against the pinned Textual (`PATCHED_FOR`) and only used there; on any other version
`pinned()` is False and the callers take Textual's public path (correct, slower):

1. Partial screen updates render only the changed rows (`install_partial_render`).
   When a few lines change, Textual's compositor paints just those rows, but first asks *every*
   widget whose clip overlaps the changed area for *all* of its lines (`Compositor._get_renders`):
   at 160×48 that is ~14 widgets and ~2.4 ms per frame, whatever changed. The replacement asks
   each widget only for the rows inside the changed area (and skips widgets beside it); the
   compositor then writes exactly what it wrote before. tests/test_ui_panels.py replays every
   update the app sends into a virtual terminal and checks it against a full render.
2. `SnapshotPanel` (ui/panels/base.py) repaints single lines of a Static: it sets the Static's
   content without a refresh (`set_static_content`) and tells its own one-line refreshes from
   any other (`take_dirty_regions`). Public path: `Static.update` and a full re-render.
3. `StripCachedLog` (ui/panels/logs.py): a `Log` that keeps its rendered lines (Log renders every
   visible line again on each repaint). Public path: a plain `Log`.

Tests read the composed screen through `screen_strips` (tests/screen_text.py).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

from rich.style import Style
from textual.cache import LRUCache
from textual.geometry import Region
from textual.strip import Strip
from textual.widgets import Log

if TYPE_CHECKING:
    from rich.text import Text
    from textual.screen import Screen
    from textual.widget import Widget
    from textual.widgets import Static

PATCHED_FOR = "8.2.8"

_original: Any = None
_NO_REGIONS: frozenset[Region] = frozenset()


@cache
def pinned() -> bool:
    """True when the installed Textual is the one these uses of its privates were written for."""
    return _textual_version() == PATCHED_FOR


def _textual_version() -> str | None:
    """The installed Textual's version from its dist-info folder's name (a stat, not the ~70 ms
    of importlib.metadata at start-up); None when it is not installed that way."""
    from pathlib import Path

    import textual

    site = Path(textual.__file__).resolve().parent.parent
    for info in site.glob("textual-*.dist-info"):
        return info.name.removeprefix("textual-").removesuffix(".dist-info")
    return None


# -- 1. partial screen updates --------------------------------------------------------------
def installed() -> bool:
    return _original is not None


def install_partial_render() -> bool:
    """Patch the compositor once; False (and nothing changed) for another Textual version."""
    global _original
    if _original is not None:
        return True
    if not pinned():
        return False
    from textual._compositor import Compositor

    _original = Compositor._get_renders
    Compositor._get_renders = _get_renders  # type: ignore[method-assign]
    return True


def _get_renders(self: Any, crop: Any = None) -> Iterable[tuple[Any, Any, list[Any]]]:
    """`Compositor._get_renders`, rendering only the rows of *crop* (all rows without one).

    Yields (region, clip, strips) as the original does; for a crop the region is narrowed to the
    rows rendered, so `_render_chops` (which takes the rows from `region ∩ clip`) lines the strips
    up exactly as before. Columns are never cut: chops are split at widget edges."""
    if crop is None:
        yield from _original(self, crop)
        return
    crop_x, crop_y, crop_right, crop_bottom = crop.x, crop.y, crop.right, crop.bottom
    for widget, (region, clip) in self.visible_widgets.items():
        x, y, width, height = region.intersection(clip)
        if not (width and height):
            continue
        if x >= crop_right or x + width <= crop_x:
            continue  # beside the changed area: none of its columns are written
        top = max(y, crop_y)
        bottom = min(y + height, crop_bottom)
        if top >= bottom:
            continue
        rows = bottom - top
        yield (
            Region(region.x, top, region.width, rows),
            clip,
            widget.render_lines(Region(x - region.x, top - region.y, width, rows)),
        )


# -- 2. single-line repaints of a Static ------------------------------------------------------
def set_static_content(widget: Static, content: Text) -> None:
    """What the Static measures for a layout, set without a refresh (only when `pinned()`)."""
    widget._Static__content = content  # type: ignore[attr-defined]
    widget._Static__visual = None  # type: ignore[attr-defined]


def take_dirty_regions(widget: Widget) -> frozenset[Region]:
    """The regions marked for repaint since the last render (only when `pinned()`), cleared.

    Nothing to take is the common case of a render and allocates nothing."""
    dirty: set[Region] = widget._dirty_regions
    if not dirty:
        return _NO_REGIONS
    taken = frozenset(dirty)
    dirty.clear()
    return taken


# -- 3. a Log that keeps its rendered lines ---------------------------------------------------
class StripCachedLog(Log):
    """A `Log` whose rendered line strips are kept, keyed by the line's text, the base style and
    `strip_key()` (a y index would shift when old lines are dropped). Use only when `pinned()`.

    Textual's Log renders every visible line again on each repaint (its line cache is only
    filled while text is selected), so showing the Logs tab again cost ~7 ms for 40 lines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._frame_style: Style | None = None
        self._strips: LRUCache[tuple[str, Style, tuple[Hashable, ...]], Strip] = LRUCache(1024)

    def strip_key(self) -> tuple[Hashable, ...] | None:
        """What else a rendered line depends on (e.g. the search needle); None: do not cache."""
        return None

    def render_lines(self, crop: Region) -> list[Strip]:
        # `rich_style` walks every ancestor's styles; Log asks for it once per line.
        self._frame_style = self.rich_style
        try:
            return super().render_lines(crop)
        finally:
            self._frame_style = None

    def _render_line(self, y: int, scroll_x: int, width: int) -> Strip:
        rich_style = self._frame_style or self.rich_style
        if y >= len(self._lines):
            return Strip.blank(width, rich_style)
        line = self._render_line_strip(y, rich_style)
        line = line.crop_extend(scroll_x, scroll_x + width, rich_style)
        return line.apply_offsets(scroll_x, y)

    def _render_line_strip(self, y: int, rich_style: Style) -> Strip:
        extra = self.strip_key() if self.text_selection is None else None
        if extra is None:
            return super()._render_line_strip(y, rich_style)
        key = (self._lines[y], rich_style, extra)
        strip = self._strips.get(key)
        if strip is None:
            strip = super()._render_line_strip(y, rich_style)
            self._strips[key] = strip
        return strip


# -- tests ---------------------------------------------------------------------------------------
def screen_strips(screen: Screen[object]) -> list[Strip]:
    """Every row of *screen* as the compositor composes it (tests read the screen as text)."""
    strips: list[Strip] = screen._compositor.render_strips()
    return strips
