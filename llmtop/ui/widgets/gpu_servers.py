"""The GPU tab's attribution line: how much of each GPU's memory each watched server holds.

Only with several servers (`llmtop --url A --url B`): "GPU0  1 chat 4.1 GiB · 2 embed 612 MiB
· others 210 MiB", the numbers being the servers' places in the server bar and "others" the
processes on the GPU that are none of them. NVML's process list gives the figures (by each
server's PID); a GPU without process readings says so.
"""

from __future__ import annotations

from rich.markup import escape

from llmtop.model.units import fmt_bytes, model_name
from llmtop.snapshot import GpuSample, ServerStatus, Snapshot
from llmtop.ui.panels.base import SnapshotPanel


def gpu_servers_line(g: GpuSample, servers: tuple[ServerStatus, ...]) -> str:
    """One GPU's memory by server: 'GPU0  1 chat 4.1 GiB · 2 embed 612 MiB · others 210 MiB'."""
    head = f"GPU{g.index}  "
    if g.lost:
        return head + "[bold red]lost[/]"
    if g.processes is None:
        return head + "[dim]no per-process readings (the driver does not report them)[/]"
    parts: list[str] = []
    for i, s in enumerate(servers):
        used = next((m.used_memory_bytes for m in g.server_memory_by_url if m.url == s.url), 0)
        if used:
            name = escape(model_name(s.model_path, s.model_alias) or s.url)
            parts.append(f"[bold]{i + 1}[/] {name} {fmt_bytes(used)}")
    procs = sum(p.used_memory_bytes or 0 for p in g.processes)
    others = procs - sum(m.used_memory_bytes for m in g.server_memory_by_url)
    if others > 0:
        parts.append(f"others {fmt_bytes(others)}")
    return head + (" · ".join(parts) if parts else "[dim]none of the servers holds memory here[/]")


class GpuServers(SnapshotPanel):
    """One line per GPU: its memory by server; not shown with a single server."""

    def on_mount(self) -> None:
        self.display = False

    def show(self, snapshot: Snapshot) -> None:
        several = len(snapshot.servers) > 1 and bool(snapshot.gpus)
        if self.display != several:
            self.display = several
        if several:
            lines = [gpu_servers_line(g, snapshot.servers) for g in snapshot.gpus]
            self.set_text("[b]VRAM by server[/]\n" + "\n".join(lines))
