"""Pick list: several local llama-servers were discovered; choose one to attach to."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from llmtop.session import DiscoveredTarget


class PickServerScreen(Screen[DiscoveredTarget | None]):
    BINDINGS = [Binding("q,escape", "quit_pick", "quit")]

    def __init__(self, targets: list[DiscoveredTarget]) -> None:
        super().__init__()
        self.targets = targets

    def compose(self) -> ComposeResult:
        with Vertical(id="pick-box"):
            yield Static(
                f"[bold]{len(self.targets)} llama-servers found.[/] Pick one to attach to "
                "(↑/↓, Enter):",
                id="pick-title",
            )
            yield OptionList(
                *(
                    Option(t.label or f"pid {t.pid or '—'}  {t.url}", id=str(i))
                    for i, t in enumerate(self.targets)
                ),
                id="pick-list",
            )
        yield Footer()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.targets[int(event.option.id or 0)])

    def action_quit_pick(self) -> None:
        self.app.exit()
