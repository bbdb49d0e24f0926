"""Host panel: CPU, RAM, load and the server process (CPU, RSS, threads, uptime)."""

from __future__ import annotations

from llmtop.model.units import DASH, fmt_bytes, fmt_duration, fmt_pct
from llmtop.snapshot import Snapshot
from llmtop.ui.charts import sparkline
from llmtop.ui.panels.base import SnapshotPanel
from llmtop.ui.series import DashboardHistory


class HostPanel(SnapshotPanel):
    def __init__(self, series: DashboardHistory, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.series = series
        self.border_title = "Host"

    def show(self, snapshot: Snapshot) -> None:
        self.remember(snapshot)
        h = snapshot.host
        width = max(8, (self.content_size.width or 36) - 16)
        lines = [
            f"CPU      {fmt_pct(h.cpu_percent):>5}  [cyan]{sparkline(self.series.host_cpu, width, top=100.0)}[/]"
        ]
        if h.memory_total_bytes:
            used = h.memory_used_bytes or 0
            pct = 100.0 * used / h.memory_total_bytes
            lines.append(
                f"RAM      {fmt_bytes(used)} / {fmt_bytes(h.memory_total_bytes)} ({pct:.0f} %)"
            )
        else:
            lines.append(f"RAM      {DASH}")
        if h.load_avg:
            lines.append("load     " + "  ".join(f"{x:.2f}" for x in h.load_avg))
        p = h.process
        if p is None:
            lines.append("server   [dim]process not found[/]")
        else:
            lines.append(f"server   pid {p.pid}  CPU {fmt_pct(p.cpu_percent)}")
            lines.append(f"         RSS {fmt_bytes(p.rss_bytes)}  threads {p.threads or DASH}")
            lines.append(f"         up {fmt_duration(p.uptime_s)}")
        self.set_text("\n".join(lines))
