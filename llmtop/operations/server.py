"""Restart, stop, start and revert the supervised llama-server: the one route for each.

The dashboard's keys (r, s, S, R), `llmtop unit revert` and anything else that acts on the
server call these; the tuning operations restart through the same controller call inside their
verify-and-roll-back step. Errors come back as a `Failed` event, never as an exception.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from llmtop.control.protocols import Controller, DropInController
from llmtop.operations.events import Done, Failed, Listener, Progress, Rejected, Reverted, emitter


class ServerActions:
    """The plain life-cycle actions on one controller (child supervisor or systemd unit)."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    @property
    def can_revert(self) -> bool:
        """Unit mode: there is a drop-in mechanism to revert (whether or not one is written)."""
        return isinstance(self.controller, DropInController)

    @property
    def unit_name(self) -> str | None:
        ctl = self.controller
        return ctl.name if isinstance(ctl, DropInController) else None

    async def restart(self, listener: Listener | None = None) -> Done | Failed:
        return await self._act(
            "restart", "restarting llama-server…", self.controller.restart, listener
        )

    async def stop(self, listener: Listener | None = None) -> Done | Failed:
        return await self._act("stop", "stopping llama-server…", self.controller.stop, listener)

    async def start(self, listener: Listener | None = None) -> Done | Failed:
        return await self._act("start", "starting llama-server…", self.controller.start, listener)

    async def revert(self, listener: Listener | None = None) -> Reverted | Rejected | Failed:
        """Remove llmtop's systemd drop-in (kept as .bak), reload and restart the unit."""
        emit = emitter(listener)
        ctl = self.controller
        if not isinstance(ctl, DropInController):
            event: Reverted | Rejected | Failed = Rejected(
                "revert",
                "not a systemd unit: R reverts llmtop's drop-in of a unit (llmtop --unit NAME)",
            )
            emit(event)
            return event
        emit(Progress("revert", "reverting llmtop's drop-in…"))
        try:
            removed = await ctl.revert()
        except Exception as exc:  # noqa: BLE001 - UnitError / UnitPermissionError say why
            event = Failed("revert", f"revert failed: {exc}")
        else:
            event = Reverted(
                removed,
                "drop-in removed (kept as .bak); unit reloaded and restarted"
                if removed
                else "no llmtop drop-in to revert: the unit runs its own arguments",
            )
        emit(event)
        return event

    async def _act(
        self,
        operation: str,
        starting: str,
        action: Callable[[], Awaitable[None]],
        listener: Listener | None = None,
    ) -> Done | Failed:
        emit = emitter(listener)
        emit(Progress(operation, starting))
        event: Done | Failed
        try:
            await action()
        except Exception as exc:  # noqa: BLE001 - told to the operator as an event
            event = Failed(operation, f"failed: {exc}")
        else:
            event = Done(operation, f"llama-server: {operation} done")
        emit(event)
        return event
