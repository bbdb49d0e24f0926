"""The tuning panel's apply view: the Apply button's confirmation, the status line and the
change log, drawn from the apply operation's events (`operations.apply.TuningApply`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.text import Text
from textual.widgets import Static

from llmtop.operations.events import Applied, Event, Failed, Progress, Rejected, RolledBack

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.operations.actions import Operations
    from llmtop.ui.panels.tuning import TuningPanel


class ApplyView:
    """Asks first when needed, runs the apply operation as a worker, renders what it reports."""

    def __init__(self, panel: TuningPanel) -> None:
        self.panel = panel
        self.applying = False

    def request(self, ops: Operations | None) -> bool:
        """Apply what is typed: refused on error; asks first when ctx exceeds training context."""
        panel = self.panel
        check = panel.recompute()
        if ops is not None and ops.busy is not None or self.applying or panel.sweeping:
            self.status("[yellow]an apply or a sweep is already running[/]")
            return False
        if check.values is None or check.error:
            return False
        if ops is None:
            self.status("[red]no controller: attach mode cannot restart the server[/]")
            return False
        if check.warning:
            from llmtop.ui.screens.confirm import ConfirmScreen

            def answered(yes: bool | None) -> None:
                if yes:
                    self.start(ops, confirmed=True)
                else:
                    self.status("[dim]not applied[/]")

            panel.app.push_screen(ConfirmScreen(check.warning + "\n\nApply anyway?"), answered)
            return True
        self.start(ops, confirmed=False)
        return True

    def start(self, ops: Operations, *, confirmed: bool) -> None:
        raw = self.panel.plan_view.tuning_input()
        check = ops.apply.check(raw)
        if check.spec is not None and check.spec == ops.controller.spec:
            self.status("[dim]nothing to change[/]")
            return
        self.applying = True
        self.panel.recompute()

        async def run() -> None:
            await ops.apply.run(raw, confirmed=confirmed, listener=self.panel.report)

        self.panel.run_worker(run(), group="tuning-apply", exclusive=True, exit_on_error=False)

    def render(self, event: Event) -> None:
        """An event of the apply operation (called in the panel's message handler)."""
        if isinstance(event, Progress):
            if event.message.startswith("applying") and "restarting" in event.message:
                changes = event.message.removeprefix("applying ").split(" — ", 1)[0]
                self.status(
                    f"[b]applying[/] {escape(changes)} — "
                    "restarting, then checking health and the log…"
                )
            return
        self.applying = False
        if isinstance(event, Applied):
            r = event.record
            self.status(f"[green]applied[/] {escape('; '.join(r.changes))} ({'; '.join(r.checks)})")
        elif isinstance(event, RolledBack):
            self.status(
                "[bold yellow]rolled back[/] to the last good arguments: "
                f"{escape(event.record.reason or '')}"
            )
        elif isinstance(event, Failed):
            word = "rollback failed" if event.record is not None else "apply failed"
            reason = event.record.reason if event.record is not None else event.reason
            self.status(f"[bold red]{word}[/]: {escape(reason or '')}")
        elif isinstance(event, Rejected):
            self.status(f"[yellow]{escape(event.reason)}[/]")
        self.render_log()

    def render_log(self) -> None:
        ops = self.panel.operations
        records = ops.apply.change_log.records() if ops is not None else []
        lines = []
        for r in reversed(records):
            colour = {"applied": "green", "rolled_back": "yellow"}.get(r.result, "red")
            lines.append(f"[{colour}]{escape(r.summary())}[/]")
        self.panel.query_one("#tuning-log", Static).update(
            Text.from_markup("\n".join(lines) if lines else "no changes yet")
        )

    def status(self, markup: str) -> None:
        self.panel.query_one("#tuning-status", Static).update(Text.from_markup(markup))
