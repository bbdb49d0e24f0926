"""The overview's last log lines (wide terminals only)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from llmtop.session import Session
from llmtop.snapshot import Snapshot
from llmtop.sources.logs import LogStore
from llmtop.ui.panels.logs import LEVEL_STYLE, format_line


class LogTail(Static):
    """Wide overview only: the last lines of the log, refreshed with each snapshot."""

    def __init__(self, session: Session, *, id: str | None = None) -> None:  # noqa: A002
        super().__init__(id=id)
        self.session = session
        self._seq = -1
        self._store: LogStore | None = (
            None  # the store _seq counts in (several servers: it changes)
        )
        self.border_title = "Log (2 for the full log)"

    def show(self, snapshot: Snapshot | None = None) -> None:
        store = self.session.log_store
        if store.last_seq == self._seq and store is self._store:
            return
        self._seq, self._store = store.last_seq, store
        rows = max(1, self.size.height or 10)
        width = max(8, self.content_size.width or 200)
        lines = store.since(max(0, store.last_seq - rows))
        text = Text(no_wrap=True, overflow="ellipsis")
        for i, ln in enumerate(lines):
            if i:
                text.append("\n")
            line = format_line(ln)
            if len(line) > width:  # cut here: cheaper than a long line's ellipsis on render
                line = line[: width - 1] + "…"
            text.append(line, style=LEVEL_STYLE.get(ln.level))
        self.update(text, layout=False)  # fixed height (1fr)
