"""Cached, typed widget look-ups for the app's mixins.

Every snapshot shows itself on a handful of panels; walking the DOM for each of them on every
tick was a third of the idle CPU cost, so a found widget is kept (and looked up again once it is
no longer attached: a tab remounted). Typed like Textual's own `query_one`: a class gives that
class, a selector string a `Widget` (or the *expect* type, checked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, overload

from textual.app import App
from textual.widget import Widget

W = TypeVar("W", bound=Widget)

if TYPE_CHECKING:  # pragma: no cover - typing only
    _AppBase = App[None]
else:
    _AppBase = object


class WidgetLookup(_AppBase):
    """Mixed into the apps: `_find` (None while a lazily mounted tab is not there) and `_q`."""

    _widget_cache: dict[str | type[Widget], Widget]  # set in the app's __init__

    def _cached(self, selector: str | type[Widget], expect: type[Widget]) -> Widget | None:
        """The one look-up both below use: the cached widget while it is attached, else the
        first match (cached); None when there is none or it is not an *expect*."""
        widget = self._widget_cache.get(selector)
        if widget is None or not widget.is_attached:
            found = list(self.query(selector))
            if not found:
                return None
            widget = self._widget_cache[selector] = found[0]
        return widget if isinstance(widget, expect) else None

    @overload
    def _find(self, selector: type[W]) -> W | None: ...

    @overload
    def _find(self, selector: str) -> Widget | None: ...

    @overload
    def _find(self, selector: str, expect: type[W]) -> W | None: ...

    def _find(self, selector: str | type[Widget], expect: type[Widget] = Widget) -> Widget | None:
        """The widget, or None while a lazily mounted tab is not there yet (or, with *expect*,
        while what is there is not of that type: a placeholder)."""
        return self._cached(selector, expect)

    @overload
    def _q(self, selector: type[W]) -> W: ...

    @overload
    def _q(self, selector: str) -> Widget: ...

    @overload
    def _q(self, selector: str, expect: type[W]) -> W: ...

    def _q(self, selector: str | type[Widget], expect: type[Widget] = Widget) -> Widget:
        """Like query_one, cached (for widgets that are always there)."""
        widget = self._cached(selector, expect)
        if widget is None:
            return self.query(selector).first(expect)  # raises NoMatches / WrongType
        return widget
