"""What the agent hands its snapshots to.

A sink receives every `Snapshot` the runner collects, in order, on the runner's event loop, and
must return quickly (the next tick waits for it): the history recorder commits one small
transaction, an exporter swaps the values it serves. A sink that also wants the results of the
agent's latency probes implements `ProbeSink` as well; one that reads the server's log for its
events (the recorder) implements `LogSink`, so that the dashboard can point it at the focused
server's log when the focus moves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.snapshot import Snapshot
    from llmtop.sources.logs import LogStore
    from llmtop.sources.probe import ProbeResult


@runtime_checkable
class SnapshotSink(Protocol):
    """Receives every snapshot; `close()` once when the agent stops (flush, release files)."""

    def on_snapshot(self, snap: Snapshot) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ProbeSink(Protocol):
    """A sink that also records the agent's latency probes (`--probe-every`)."""

    def on_probe(self, result: ProbeResult) -> None: ...


@runtime_checkable
class LogSink(Protocol):
    """A sink that takes its events and their log lines from a server's log store."""

    def use_log(self, store: LogStore) -> None: ...
