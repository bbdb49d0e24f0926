"""Tab panes: one `Pane` per tab (only the active one displayed) and `AfterFirstData`, which
mounts a hidden tab's content once the first data frame is on screen."""

from __future__ import annotations

from collections.abc import Callable

from textual.containers import Vertical
from textual.lazy import Lazy
from textual.widget import Widget

from llmtop.ui.roles import DefersHiddenTabs


class AfterFirstData(Lazy):
    """A hidden tab's content, mounted once the first snapshot is on screen or when its tab is
    opened, whichever comes first (the app calls `reveal()`). Plain `Lazy` mounts right after
    the first frame, and those ~0.1 s of mounting delayed the first data frame."""

    _revealing = False
    _factory: Callable[[], Widget] | None = None
    _built: Widget | None = None

    def __init__(self, content: Widget | Callable[[], Widget]) -> None:
        """*content*: the widget, or a function that builds it when it is mounted — a tab whose
        modules are imported then, not at start-up (the GPU tab's plots: ~60 ms)."""
        if isinstance(content, Widget):
            super().__init__(content)
        else:
            self._factory = content
            Widget.__init__(self)

    @property
    def _replace_widget(self) -> Widget:
        if self._built is None:
            assert self._factory is not None
            self._built = self._factory()
        return self._built

    @_replace_widget.setter
    def _replace_widget(self, widget: Widget) -> None:
        self._built = widget

    async def mount_composed_widgets(self, widgets: list[Widget]) -> None:
        app = self.app
        if not (isinstance(app, DefersHiddenTabs) and app.defer_hidden_tabs):
            await super().mount_composed_widgets(widgets)

    async def reveal(self) -> Widget | None:
        """Mount the content in place of this placeholder; the content (None if done before)."""
        parent = self.parent
        if self._revealing or not isinstance(parent, Widget) or not self.is_attached:
            return None
        self._revealing = True
        await parent.mount(self._replace_widget, after=self)
        await self.remove()
        return self._replace_widget


class Pane(Vertical):
    """One tab's content; only the active one is displayed."""

    def hidden(self) -> Pane:
        self.display = False
        return self
