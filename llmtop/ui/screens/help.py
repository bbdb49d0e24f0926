"""Help screen (? or F1): every key, in one place."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS: tuple[tuple[str, str], ...] = (
    ("1 … 5", "tabs: Overview, Logs, Prompt/Latency, GPU/Thermal, Tuning"),
    ("tab / shift+tab", "move focus"),
    ("<  >", "several servers: focus the previous / next one"),
    ("r", "restart the server (asks first; child or unit mode only)"),
    ("s  S", "stop (asks first) / start the server"),
    ("R", "revert llmtop's unit drop-in (asks first; unit mode only)"),
    ("m", "router mode: select the next model in the model table"),
    ("L  U", "router mode: load / unload the selected model (asks)"),
    ("l", "router mode: Logs tab shows only that model's lines"),
    ("p", "fire a probe with the prompt panel's settings"),
    ("P", "toggle the periodic probe (every 30 s)"),
    ("escape", "cancel a running probe / close search"),
    ("/  f", "search logs (Enter filters, Esc clears) / follow"),
    ("w", "GPU plots: window 5 min → 1 h → 24 h (from history)"),
    ("?  F1", "this help"),
    ("q  ctrl+c", "quit (a supervised child is stopped cleanly)"),
)
# The box shows 20 rows at 80×24 (title, blank, the keys, blank, "Esc closes"): at most 16 keys,
# each line within the box's 74 columns, so nothing scrolls or wraps on the smallest terminal.


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,question_mark,f1", "dismiss_help", "close"),
    ]

    def compose(self) -> ComposeResult:
        rows = "\n".join(f"[bold cyan]{k:<16}[/] {v}" for k, v in KEYS)
        with VerticalScroll(id="help-box"):
            yield Static("[bold]llmtop keys[/]\n\n" + rows + "\n\n[dim]Esc closes[/]")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
