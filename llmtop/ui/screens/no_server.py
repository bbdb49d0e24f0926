"""Shown when no llama-server was found: the exact commands to start or attach to one."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static

NO_SERVER_TEXT = """[bold]No llama-server found on this machine.[/]

llmtop looked for running llama-server processes and found none. Either:

[bold]Start one under llmtop[/] (it supervises and restarts it):
  [cyan]llmtop -- /path/to/llama-server -m /path/to/model.gguf -ngl 99 -c 4096 --port 8080 --metrics[/]

[bold]Attach to a server running elsewhere[/] (another user, a container, a remote port):
  [cyan]llmtop --url http://127.0.0.1:8080[/]   (add [cyan]--api-key KEY[/] or set LLAMA_API_KEY)

[bold]Watch a systemd unit[/]:
  [cyan]llmtop --unit llama-server.service[/]   ([cyan]--user[/] for a user unit)

[bold]Try the demo[/] (builds llama-server if needed and runs a tiny model):
  [cyan]llmtop demo[/]

Press [bold]q[/] to quit."""


class NoServerScreen(Screen[None]):
    BINDINGS = [Binding("q,escape", "app.quit", "quit")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="no-server-box"):
            yield Static(NO_SERVER_TEXT, id="no-server-text")
        yield Footer()
