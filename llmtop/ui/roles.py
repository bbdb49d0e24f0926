"""What the app and its widgets ask of each other, declared (not guessed with getattr).

The app looks panels up by id and some of them keep their own history; a placeholder widget
asks the app whether hidden tabs wait for the first data. These Protocols name those roles so
the checks are typed and a renamed method fails the type check instead of silently doing nothing.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from llmtop.snapshot import Snapshot


@runtime_checkable
class RecordsSnapshots(Protocol):
    """A panel with its own bounded history (the thermal plots): fed every tick, even hidden."""

    def record(self, snapshot: Snapshot) -> None: ...

    def clear(self) -> None: ...


@runtime_checkable
class ShowsSnapshots(Protocol):
    """A panel that shows the latest snapshot (the GPU tab's, whose modules load lazily)."""

    def show(self, snapshot: Snapshot) -> None: ...


@runtime_checkable
class DefersHiddenTabs(Protocol):
    """The app: True while hidden tabs are mounted only after the first data frame."""

    defer_hidden_tabs: bool
