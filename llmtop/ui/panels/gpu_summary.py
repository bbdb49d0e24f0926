"""Overview's GPU lines: one per GPU (VRAM, util, temperature, clock) or the GPU note."""

from __future__ import annotations

from rich.markup import escape

from llmtop.model.units import fmt_bytes
from llmtop.snapshot import Snapshot
from llmtop.ui.panels.base import SnapshotPanel


class GpuSummary(SnapshotPanel):
    def show(self, snapshot: Snapshot) -> None:
        note = f" [yellow]{escape(snapshot.gpu_note)}[/]" if snapshot.gpu_note else ""
        if not snapshot.gpus:
            self.set_text(f"GPU     {note or ' [dim]no GPU data[/]'}")
            return
        lines = []
        for g in snapshot.gpus[:4]:
            if g.lost:
                lines.append(f"GPU{g.index}    [bold red]lost (fell off the bus?)[/]")
                continue
            vram = f"{fmt_bytes(g.memory_used_bytes)}/{fmt_bytes(g.memory_total_bytes)}"
            util = "—" if g.utilization_percent is None else f"{g.utilization_percent:.0f} %"
            temp = "—" if g.temperature_c is None else f"{g.temperature_c:.0f} °C"
            hot = (
                g.temperature_c is not None
                and g.temp_slowdown_c is not None
                and g.temperature_c >= g.temp_slowdown_c - 5
            )
            temp = f"[red]{temp}[/]" if hot else temp
            clk = "" if g.sm_clock_mhz is None else f" SM {g.sm_clock_mhz} MHz"
            lines.append(f"GPU{g.index}    VRAM {vram}  util {util}  {temp}{clk}")
        if note:
            lines[0] += note
        self.set_text("\n".join(lines))
