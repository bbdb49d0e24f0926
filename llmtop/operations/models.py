"""Load and unload one model of a router-mode llama-server: the one route for the dashboard's
L / U keys and for headless callers alike.

Each action asks the router (control/router.py), then follows `/models` until the model is
loaded (or sleeping), unloaded or failed — or gives up after `wait_s` — and reports typed events
(`Progress`, then `Done`, `Failed` or `Rejected`). Errors come back as events, never raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from llmtop.control.router import RouterControl, RouterError
from llmtop.operations.events import Done, Failed, Listener, Progress, Rejected, emitter
from llmtop.snapshot import ModelStatus

LOADED = ("loaded", "sleeping")
GONE = ("unloaded", "failed")


class ModelActions:
    """Load / unload on one router; one action per model at a time."""

    def __init__(self, control: RouterControl, *, wait_s: float = 60.0, poll_s: float = 0.25):
        self.control = control
        self.wait_s = wait_s
        self.poll_s = poll_s
        self._busy: set[str] = set()

    def busy(self, model_id: str) -> bool:
        return model_id in self._busy

    async def load(
        self, model_id: str, listener: Listener | None = None
    ) -> Done | Failed | Rejected:
        """Start the model's child llama-server and wait until it is loaded (or failed)."""
        return await self._act("load", model_id, self.control.load, LOADED, listener)

    async def unload(
        self, model_id: str, listener: Listener | None = None
    ) -> Done | Failed | Rejected:
        """Stop the model's child and wait until the router lists it unloaded."""
        return await self._act("unload", model_id, self.control.unload, GONE, listener)

    async def _act(
        self,
        operation: str,
        model_id: str,
        ask: Callable[[str], Awaitable[None]],
        goal: tuple[str, ...],
        listener: Listener | None,
    ) -> Done | Failed | Rejected:
        emit = emitter(listener)
        event: Done | Failed | Rejected
        if model_id in self._busy:
            event = Rejected(operation, f"{model_id}: a load or unload is already running")
            emit(event)
            return event
        self._busy.add(model_id)
        try:
            event = await self._run(operation, model_id, ask, goal, emit)
        finally:
            self._busy.discard(model_id)
        emit(event)
        return event

    async def _run(
        self,
        operation: str,
        model_id: str,
        ask: Callable[[str], Awaitable[None]],
        goal: tuple[str, ...],
        emit: Listener,
    ) -> Done | Failed | Rejected:
        try:
            before = await self.control.model_status(model_id)
        except RouterError as exc:
            return Failed(operation, f"{operation} {model_id}: {exc}")
        if before is None:
            return Rejected(operation, f"the router lists no model {model_id!r}")
        if before.status in goal:
            state = "loaded" if operation == "load" else "not loaded"
            return Rejected(operation, f"{model_id} is already {state}")
        emit(
            Progress(operation, f"{'loading' if operation == 'load' else 'unloading'} {model_id}…")
        )
        try:
            await ask(model_id)
        except RouterError as exc:
            return Failed(operation, f"{operation} {model_id}: {exc}")
        return await self._follow(operation, model_id, goal)

    async def _follow(self, operation: str, model_id: str, goal: tuple[str, ...]) -> Done | Failed:
        """Read /models until the model reaches *goal* (a failure is an end too)."""
        deadline = time.monotonic() + self.wait_s
        last: ModelStatus | None = None
        while time.monotonic() < deadline:
            try:
                last = await self.control.model_status(model_id)
            except RouterError as exc:
                return Failed(operation, f"{operation} {model_id}: {exc}")
            if last is None:
                return Failed(operation, f"{model_id} is no longer listed by the router")
            if last.status == "failed" and operation == "load":
                code = f" (exit code {last.exit_code})" if last.exit_code is not None else ""
                return Failed(operation, f"{model_id} failed to load{code}")
            if last.status in goal:
                return Done(operation, f"{model_id} {last.status}")
            await asyncio.sleep(self.poll_s)
        state = last.status if last is not None else "unknown"
        return Failed(operation, f"{model_id} still {state} after {self.wait_s:.0f} s")


def model_actions(url: str, api_key: str | None = None) -> ModelActions:
    """The model actions for the router at *url* (the dashboard builds them on first use)."""
    return ModelActions(RouterControl(url, api_key))
