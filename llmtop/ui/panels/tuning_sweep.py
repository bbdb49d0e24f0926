"""The tuning panel's sweep view: the range and probe fields, the live table while the sweep
operation runs (`operations.sweep.SweepRun`), and "Use best"."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Button, Input, Static

from llmtop.control.sweep import SweepPoint, SweepResult, format_plot, format_table
from llmtop.operations.events import Event, Failed, Progress, Rejected, SweepFinished, SweepStep
from llmtop.operations.sweep import parse_sweep_input

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.operations.actions import Operations
    from llmtop.ui.panels.tuning import TuningPanel


class SweepView:
    """Validates the sweep fields, runs the sweep operation as a worker, renders its events."""

    def __init__(self, panel: TuningPanel) -> None:
        self.panel = panel
        self.sweeping = False
        self.points: list[SweepPoint] = []
        self.result: SweepResult | None = None

    def box(self) -> Static:
        return self.panel.query_one("#tuning-sweep", Static)

    def request(self, ops: Operations | None) -> bool:
        """Start the sweep (the server restarts once per setting; the original arguments are
        restored at the end)."""
        panel = self.panel
        if ops is None or ops.busy is not None or panel.applying or self.sweeping:
            return False
        info = panel.plan_view.info
        values = panel.plan_view.check.values
        request = parse_sweep_input(
            panel.query_one("#tuning-sweep-range", Input).value,
            panel.query_one("#tuning-sweep-probes", Input).value,
            block_count=info.block_count if info else None,
            ctx=values.ctx if values else None,
        )
        if isinstance(request, str):
            self.box().update(Text(request, style="bold red"))
            return False
        self.sweeping = True
        self.points = []
        self.result = None
        panel.query_one("#tuning-sweep-start", Button).disabled = True
        panel.query_one("#tuning-sweep-use", Button).disabled = True
        panel.recompute()
        self.box().update(
            f"sweeping {list(request.gpu_layers)} — the server restarts for each setting…"
        )

        async def run() -> None:
            await ops.sweep.run(request, panel.report)

        panel.run_worker(run(), group="tuning-sweep", exclusive=True, exit_on_error=False)
        return True

    def use_best(self) -> None:
        best = self.result.recommended if self.result else None
        if best is not None:
            self.panel.query_one("#tuning-ngl", Input).value = str(best.gpu_layers)
            self.panel.recompute()

    def render(self, event: Event) -> None:
        """An event of the sweep operation (called in the panel's message handler)."""
        if isinstance(event, Progress):
            return
        if isinstance(event, SweepStep):
            self.points.append(event.point)
            partial = SweepResult((), list(self.points), None, "running…")
            self.box().update(Text(format_table(partial)))
            return
        self.sweeping = False
        self.panel.query_one("#tuning-sweep-start", Button).disabled = False
        if isinstance(event, SweepFinished):
            r = self.result = event.result
            tail = {None: "", True: "original arguments restored", False: "RESTORE FAILED"}[
                r.restored
            ]
            self.box().update(
                Text("\n".join(x for x in (format_table(r), format_plot(r), tail) if x))
            )
            self.panel.query_one("#tuning-sweep-use", Button).disabled = r.recommended is None
        elif isinstance(event, Failed | Rejected):
            self.box().update(Text(f"sweep failed: {event.reason}", style="bold red"))
