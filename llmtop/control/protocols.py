"""The collaborators' contracts: what control, operations and the session rely on, and nothing more.

The child supervisor and the systemd unit controller both satisfy `Controller`; the unit one also
`DropInController` (it can take llmtop's drop-in away). The GPU sampler and the log followers are
described here too, so that the session and the operations are typed against these contracts, not
against whichever class happens to implement them (tests put simulated ones in their place).

Only control/ and operations/ (and the session) import this module: sources/ and diagnosis/ read
the world and never depend on acting on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.model.launch_spec import LaunchSpec
    from llmtop.snapshot import SupervisorStatus
    from llmtop.sources.gpu import GpuReading


class Controller(Protocol):
    """Starts, stops and restarts one llama-server (a child process or a systemd unit)."""

    @property
    def mode(self) -> str:  # "child" | "unit"
        ...

    @property
    def spec(self) -> LaunchSpec:  # the current launch arguments
        ...

    @property
    def pid(self) -> int | None: ...

    def status(self) -> SupervisorStatus: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def restart(self, spec: LaunchSpec | None = None) -> None:
        """Restart; with *spec*, on those arguments from now on."""
        ...


@runtime_checkable
class DropInController(Protocol):
    """A controller that writes its arguments into a systemd drop-in and can remove it again.

    Deliberately not a sub-protocol of `Controller`: `isinstance` on a runtime protocol reads
    every member (Python 3.11), and a unit's `spec` may have to ask systemd first."""

    @property
    def name(self) -> str: ...

    @property
    def has_drop_in(self) -> bool: ...

    async def revert(self) -> bool:
        """Remove llmtop's drop-in, reload and restart; False when there was none."""
        ...


@runtime_checkable
class SyncStoppable(Protocol):
    """A controller that can stop its server without an event loop (signal handlers, atexit)."""

    def shutdown_sync(self, timeout: float | None = None) -> None: ...


class GpuSampler(Protocol):
    """The NVML sampler (real driver or the simulator)."""

    def latest(self) -> GpuReading:
        """The last published reading (non-blocking)."""
        ...

    def sample_once(self) -> GpuReading:
        """Read every GPU now (blocking: run in a thread)."""
        ...

    def set_server(self, pids: int | Iterable[int] | None, spec: LaunchSpec | None = None) -> None:
        """Which process(es) are llama-server (cheap)."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class LogFollower(Protocol):
    """Feeds a log (a unit's journal) into the session's LogStore."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
