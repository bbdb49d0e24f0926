"""The footer of keys, rebuilt only when the keys change."""

from __future__ import annotations

from textual.widgets import Footer

KeyRow = tuple[str, str, str, bool, str | None]


class KeysFooter(Footer):
    """Textual's Footer, rebuilt only when the keys it shows change: the stock one rebuilds all
    its keys on every bindings signal (eight times during start-up, a tenth of a second).

    Not while a dialog covers its screen either: the keys a dialog disables (replay's cursor
    keys while `g` asks for a time) come back when it closes, and rebuilding the footer twice
    for that cost ~30 ms and a relayout of the whole screen, plots included."""

    _shown: tuple[KeyRow, ...] | None = None

    def _keys(self) -> tuple[KeyRow, ...] | None:
        if not self._bindings_ready or not self.is_attached:
            return None
        return tuple(
            (binding.key, binding.description, binding.action, enabled, tooltip)
            for (_, binding, enabled, tooltip) in self.screen.active_bindings.values()
            if binding.show
        )

    async def recompose(self) -> None:
        if self.is_attached and self._shown is not None and self.app.screen is not self.screen:
            return  # under a dialog: rebuilt, if still needed, when the screen is back
        keys = self._keys()
        if keys is not None and keys == self._shown and self.children:
            return
        self._shown = keys
        await super().recompose()
