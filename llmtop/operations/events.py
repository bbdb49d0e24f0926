"""What an operation reports while it runs: small frozen events, one type per kind of news.

Every operation (restart, apply with rollback, sweep, probe) takes an optional `Listener` and
calls it with these events as it goes, then returns its final event. The dashboard turns them
into what the operator sees (a toast, the tuning panel's status line, the sweep table); the
headless commands print them. Nothing here knows about Textual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only; importing events stays cheap (first frame)
    from llmtop.control.sweep import SweepPoint, SweepResult
    from llmtop.control.tuning import ApplyRecord
    from llmtop.operations.load import LoadLevel, LoadResult
    from llmtop.sources.probe import ProbeResult


@dataclass(frozen=True)
class Progress:
    """A step has begun or happened ("restarting llama-server…", "sweep: restarting with …")."""

    operation: str  # "restart" | "stop" | "start" | "revert" | "apply" | "sweep" | "probe"
    message: str


@dataclass(frozen=True)
class Rejected:
    """Nothing was done: the input is invalid, another operation runs, or nothing would change."""

    operation: str
    reason: str


@dataclass(frozen=True)
class Done:
    """A server action (restart, stop, start) finished without an error."""

    operation: str
    message: str


@dataclass(frozen=True)
class Reverted:
    """Unit mode: llmtop's drop-in was removed (kept as .bak) and the unit restarted — or there
    was none (`removed` False) and nothing changed."""

    removed: bool
    message: str
    operation: str = "revert"


@dataclass(frozen=True)
class Failed:
    """The operation failed; `reason` in words. An apply whose rollback failed carries its
    record (the server may be down)."""

    operation: str
    reason: str
    record: ApplyRecord | None = None


@dataclass(frozen=True)
class Applied:
    """The new arguments run and passed every check."""

    record: ApplyRecord
    operation: str = "apply"


@dataclass(frozen=True)
class RolledBack:
    """The new arguments failed a check; the last known-good ones run again."""

    record: ApplyRecord
    operation: str = "apply"


@dataclass(frozen=True)
class SweepStep:
    """One sweep setting was measured (or failed)."""

    point: SweepPoint
    operation: str = "sweep"


@dataclass(frozen=True)
class SweepFinished:
    """The sweep is over: points, recommendation, and whether the server was restored."""

    result: SweepResult
    operation: str = "sweep"


@dataclass(frozen=True)
class ProbeText:
    """Streamed reply text of a running probe."""

    text: str
    operation: str = "probe"


@dataclass(frozen=True)
class ProbeDone:
    """A probe finished (its result may still carry the server's error)."""

    result: ProbeResult
    operation: str = "probe"


@dataclass(frozen=True)
class LoadStep:
    """One concurrency level of a load test was measured."""

    level: LoadLevel
    operation: str = "load"


@dataclass(frozen=True)
class LoadFinished:
    """The load test is over: every level, the slot count and the recommendation."""

    result: LoadResult
    operation: str = "load"


@dataclass(frozen=True)
class Cancelled:
    """The operator cancelled the operation (Esc on a probe)."""

    operation: str


Event = (
    Progress
    | Rejected
    | Done
    | Reverted
    | Failed
    | Applied
    | RolledBack
    | SweepStep
    | SweepFinished
    | ProbeText
    | ProbeDone
    | LoadStep
    | LoadFinished
    | Cancelled
)
Listener = Callable[[Event], None]


def emitter(listener: Listener | None) -> Listener:
    """The listener, or one that drops events (operations always have someone to tell)."""
    return listener if listener is not None else _ignore


def _ignore(event: Event) -> None:
    del event
