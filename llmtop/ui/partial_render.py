"""Partial screen updates that render only the changed rows (a fix for pinned Textual 8.2.8).

When a few lines change, Textual's compositor paints just those rows, but first asks *every*
widget whose clip overlaps the changed area for *all* of its lines (`Compositor._get_renders`):
at 160×48 that is ~14 widgets and ~2.4 ms per frame, whatever changed. The dashboard changes a
few numbers each second, so this was a quarter of its idle CPU budget (1 % of a core).

`install()` replaces that generator with one that asks each widget only for the rows inside the
changed area (and skips widgets beside it). The compositor then writes exactly what it wrote
before: rows outside the area were never written, only rendered and dropped. tests/
test_ui_panels.py replays every update the app sends into a virtual terminal and checks it
against a full render of the screen.

Installed only for the Textual version it was written against (`PATCHED_FOR`); with another
version the stock compositor runs (correct, slower) and `installed()` says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from textual.geometry import Region

PATCHED_FOR = "8.2.8"

_original: Any = None


def installed() -> bool:
    return _original is not None


def install() -> bool:
    """Patch the compositor once; False (and nothing changed) for another Textual version."""
    global _original
    if _original is not None:
        return True
    if _textual_version() != PATCHED_FOR:
        return False
    from textual._compositor import Compositor

    _original = Compositor._get_renders
    Compositor._get_renders = _get_renders  # type: ignore[method-assign]
    return True


def _textual_version() -> str | None:
    """The installed Textual's version from its dist-info folder's name (a stat, not the ~70 ms
    of importlib.metadata at start-up); None when it is not installed that way."""
    from pathlib import Path

    import textual

    site = Path(textual.__file__).resolve().parent.parent
    for info in site.glob("textual-*.dist-info"):
        return info.name.removeprefix("textual-").removesuffix(".dist-info")
    return None


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
