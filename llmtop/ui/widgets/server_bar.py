"""The server bar: one line per watched server when the dashboard watches several.

`llmtop --url A --url B` (or `--unit X --unit Y`, or discovery of several) polls every server
each tick; the bar says how each one is (health, sleeping included), which model it serves, its
generation rate and the GPU memory it holds, and marks the focused one — the server the rest of
the screen shows and the keys act on (`<` / `>` move the focus). With one server it is hidden,
so every screen looks as it did.
"""

from __future__ import annotations

from rich.markup import escape

from llmtop.model.units import fmt_bytes, fmt_rate, model_name
from llmtop.snapshot import ServerStatus, Snapshot
from llmtop.ui.panels.base import SnapshotPanel
from llmtop.ui.panels.server import HEALTH_STYLE

# Widths of the columns, so the servers' figures line up.
HEALTH_W = 13
MODEL_W = 22
RATE_W = 12


def server_vram_bytes(snapshot: Snapshot, url: str) -> int | None:
    """The GPU memory server *url* holds over all GPUs (None: no GPU process readings)."""
    readable = [g for g in snapshot.gpus if not g.lost and g.processes is not None]
    if not readable:
        return None
    return sum(
        m.used_memory_bytes for g in readable for m in g.server_memory_by_url if m.url == url
    )


def server_line(index: int, server: ServerStatus, focused: bool, vram: int | None) -> str:
    """'▶ 1 ● ok          chat.gguf               12.3 tok/s  VRAM 4.1 GiB  http://…'."""
    mark = "[reverse]▶[/]" if focused else " "
    style = HEALTH_STYLE.get(server.health, "bold")
    health = f"[{style}]{escape(('● ' + server.health).ljust(HEALTH_W))}[/]"
    model = model_name(server.model_path, server.model_alias)
    model = escape(model[:MODEL_W].ljust(MODEL_W)) if model else "—".ljust(MODEL_W)
    rate = fmt_rate(server.gen_tokens_per_s).ljust(RATE_W)
    line = f"{mark} {index + 1} {health} {model} {rate} VRAM {fmt_bytes(vram):<9}  "
    line += escape(server.url)
    if server.health not in ("ok", "sleeping") and server.detail:
        line += f"  [dim]{escape(server.detail)}[/]"
    return line


class ServerBar(SnapshotPanel):
    """One line per server, the focused one marked; not shown with a single server."""

    def on_mount(self) -> None:
        self.display = False

    def show(self, snapshot: Snapshot) -> None:
        servers = snapshot.servers
        several = len(servers) > 1
        if self.display != several:
            self.display = several
        if not several:
            return
        focused = snapshot.server.url
        self.set_text(
            "\n".join(
                server_line(i, s, s.url == focused, server_vram_bytes(snapshot, s.url))
                for i, s in enumerate(servers)
            )
        )
