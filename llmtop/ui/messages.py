"""App-wide messages (a widget's own messages are nested in the widget that sends them)."""

from __future__ import annotations

from textual.message import Message

from llmtop.snapshot import Snapshot


class SnapshotReady(Message):
    """A new snapshot from the collector (or injected by a test)."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot
