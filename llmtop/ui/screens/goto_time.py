"""The replay's `g` prompt: one input line for a time to jump to."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class GotoTimeScreen(ModalScreen[str | None]):
    """Asks for a time (what `--from` takes); dismissed with the text, or None on Esc."""

    DEFAULT_CSS = """
    GotoTimeScreen { align: center middle; }
    #goto-box { width: 64; height: auto; border: thick $accent; background: $surface;
                padding: 1 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, hint: str) -> None:
        super().__init__()
        self.hint = hint

    def compose(self) -> ComposeResult:
        with Vertical(id="goto-box"):
            yield Static("Go to a time", id="goto-title")
            yield Static(f"[dim]{self.hint}[/]", id="goto-hint")
            yield Input(placeholder="2026-12-02 03:14:07 · 10m ago · unix seconds", id="goto-input")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)
