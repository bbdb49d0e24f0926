"""Alerts strip: one line with the current alerts (worst first), or "no alerts"."""

from __future__ import annotations

from rich.markup import escape

from llmtop.snapshot import Snapshot
from llmtop.ui.panels.base import SnapshotPanel

_ORDER = {"critical": 0, "warning": 1, "info": 2}
_STYLE = {"critical": "bold white on red", "warning": "black on yellow", "info": "cyan"}


class AlertsStrip(SnapshotPanel):
    def show(self, snapshot: Snapshot) -> None:
        if not snapshot.alerts:
            self.set_text("[green]✓ no alerts[/]")
            return
        alerts = sorted(snapshot.alerts, key=lambda a: _ORDER.get(a.severity, 3))
        parts = [f"[{_STYLE.get(a.severity, 'bold')}] {escape(a.message)} [/]" for a in alerts]
        self.set_text(" ".join(parts))
