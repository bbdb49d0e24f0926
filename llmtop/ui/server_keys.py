"""The r / s / S / R keys: confirm, then run the session's ServerActions (the one route to the
server); their events become toasts."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.app import App

from llmtop.operations.events import Event, Failed, Progress, Reverted

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.session import Session

    _AppBase = App[None]
else:
    _AppBase = object


class ServerKeys(_AppBase):
    """Mixed into LlmtopApp: the server's life-cycle keys."""

    if TYPE_CHECKING:  # provided by LlmtopApp
        session: Session

        def _tick(self) -> None: ...

    def _not_supervised(self) -> bool:
        if self.session.operations is None:
            self.notify(
                "not supervised: llmtop is attached to a server it did not start "
                "(start it with `llmtop -- llama-server …` or --unit to control it)",
                severity="warning",
            )
            return True
        return False

    def action_restart(self) -> None:
        if self._not_supervised():
            return
        from llmtop.ui.screens.confirm import ConfirmScreen

        pid = self.session.controller.pid if self.session.controller else None
        what = f"llama-server (pid {pid})" if pid else "llama-server"
        self.push_screen(ConfirmScreen(f"Restart {what}?"), self._confirmed("restart"))

    def action_stop_server(self) -> None:
        if self._not_supervised():
            return
        from llmtop.ui.screens.confirm import ConfirmScreen

        self.push_screen(ConfirmScreen("Stop llama-server?"), self._confirmed("stop"))

    def action_start_server(self) -> None:
        if not self._not_supervised():
            self._run_server_action("start")

    def action_revert_dropin(self) -> None:
        """Unit mode: remove llmtop's systemd drop-in (kept as .bak), reload and restart."""
        ops = self.session.operations
        if ops is None or not ops.server.can_revert:
            self.notify(
                "not a systemd unit: R reverts llmtop's drop-in of a unit (llmtop --unit NAME)",
                severity="warning",
            )
            return
        from llmtop.ui.screens.confirm import ConfirmScreen

        question = f"Remove llmtop's drop-in of {ops.server.unit_name} and restart it?"
        self.push_screen(ConfirmScreen(question), self._confirmed("revert"))

    def _confirmed(self, name: str) -> Callable[[bool | None], None]:
        def answered(yes: bool | None) -> None:
            if yes:
                self._run_server_action(name)

        return answered

    def _run_server_action(self, name: str) -> None:
        ops = self.session.operations
        if ops is None:
            return
        actions = ops.server
        run = {
            "restart": actions.restart,
            "stop": actions.stop,
            "start": actions.start,
            "revert": actions.revert,
        }[name]

        async def act() -> None:
            await run(self._server_event)
            self._tick()

        self.run_worker(act(), group="control", exit_on_error=False)

    def _server_event(self, event: Event) -> None:
        """Restart/stop/start/revert progress → a toast (errors stay up longer)."""
        if isinstance(event, Progress | Reverted):
            self.notify(event.message)
        elif isinstance(event, Failed):
            self.notify(event.reason, severity="error", timeout=10)
