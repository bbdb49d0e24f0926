"""Fire a probe and keep the periodic probe: the `p` / `P` keys' work, without a screen.

`ProbeRun.run` streams the reply as `ProbeText` events and ends with `ProbeDone`, `Failed` or
`Cancelled` (cancelling the task is how Esc stops a probe). `PeriodicProbe` calls its `fire`
callback every interval on the running asyncio loop until switched off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from llmtop.operations.events import Cancelled, Failed, Listener, ProbeDone, ProbeText, emitter

if TYPE_CHECKING:  # pragma: no cover - typing only; the HTTP client stays off the first frame
    from llmtop.sources.probe import ProbeRequest, ProbeResult

    ProbeCall = Callable[[ProbeRequest, Callable[[str], None] | None], Awaitable[ProbeResult]]

PERIODIC_PROBE_S = 30.0


class ProbeRun:
    """One probe at a time against the session's server (`Session.probe` does the HTTP)."""

    def __init__(self, probe: ProbeCall) -> None:
        self._probe = probe

    async def run(
        self, request: ProbeRequest, listener: Listener | None = None
    ) -> ProbeDone | Failed:
        """Run *request*; on cancellation `Cancelled` is told, then CancelledError re-raised."""
        emit = emitter(listener)
        event: ProbeDone | Failed
        try:
            result = await self._probe(request, lambda text: emit(ProbeText(text)))
        except asyncio.CancelledError:
            emit(Cancelled("probe"))
            raise
        except Exception as exc:  # noqa: BLE001 - shown beside the prompt
            event = Failed("probe", f"probe failed: {exc}")
        else:
            event = ProbeDone(result)
        emit(event)
        return event


class PeriodicProbe:
    """Calls *fire* every *interval_s* seconds while on (an asyncio task on the current loop)."""

    def __init__(self, fire: Callable[[], None], interval_s: float = PERIODIC_PROBE_S) -> None:
        self.fire = fire
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    @property
    def on(self) -> bool:
        return self._task is not None and not self._task.done()

    def toggle(self) -> bool:
        """Switch on or off; True when now on. Call from a running loop."""
        if self.on:
            self.stop()
            return False
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return True

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.fire()
