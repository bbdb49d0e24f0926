"""The title line: mode, URL, health, model and staleness."""

from __future__ import annotations

from rich.markup import escape
from rich.text import Text
from textual.widgets import Static

from llmtop.model.units import model_name
from llmtop.session import Session
from llmtop.snapshot import Snapshot
from llmtop.ui.format import keep_gaps
from llmtop.ui.panels.server import HEALTH_STYLE


class TitleBar(Static):
    """One line: mode, URL, health, model, snapshot time (stale when the collector lags)."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual's name
        super().__init__(id=id)
        self._last = ""

    def show_state(
        self, session: Session, snapshot: Snapshot | None, stale_s: float | None
    ) -> None:
        parts = ["[bold]llmtop[/]", f"[reverse] {session.mode} [/]"]
        if snapshot is not None:
            s = snapshot.server
            parts.append(f"[{HEALTH_STYLE.get(s.health, 'bold')}]● {s.health}[/]")
            if s.health == "sleeping" and s.detail:
                # the collector's words: "sleeping since HH:MM:SS — the next request loads …"
                parts.append(f"[blue]{escape(s.detail)}[/]")
            # No ticking clock here: a line that changes every second costs a repaint of the
            # whole top band each tick; staleness is shown instead.
            if stale_s is not None:
                parts.append(f"[bold yellow]stale {stale_s:.0f} s[/]")
            parts.append(escape(session.url or ""))
            parts.append(escape(model_name(s.model_path, s.model_alias)))
        else:
            parts.append(escape(session.url or "no server"))
            parts.append("[dim]waiting for the first snapshot…[/]")
        self.show_markup("  ".join(parts))

    def show_markup(self, markup: str) -> None:
        """Show *markup* as the one line (replay's cursor line too): repainted only when it
        changed, and never a relayout — a relayout repaints every widget on the screen, the GPU
        tab's plots included (~35 ms at 160×48 per replay key)."""
        if markup != self._last:
            self._last = markup
            text = keep_gaps(Text.from_markup(markup, overflow="ellipsis"))
            text.no_wrap = True
            self.update(text, layout=False)  # always one line
