"""The recorded past the dashboard opens with: the last hour of *this* server from a history
database, so the plots and the thermal verdict start filled instead of empty.

Kept apart from `replay` (which imports the report and the alert engine): this is read while
the dashboard starts, and every import here is paid on that path.
"""

from __future__ import annotations

from pathlib import Path

from llmtop.snapshot import Snapshot
from llmtop.sources.history_db import HistoryDB, HistoryError


def same_server(a: str | None, b: str | None) -> bool:
    """Whether two URLs name the same server (scheme, host, port; localhost is 127.0.0.1)."""
    if not a or not b:
        return False

    def norm(u: str) -> str:
        u = u.strip().rstrip("/").lower()
        return u.replace("://localhost", "://127.0.0.1").replace("://[::1]", "://127.0.0.1")

    return norm(a) == norm(b)


def read_prefill(path: str | Path, url: str | None, now: float, window_s: float) -> list[Snapshot]:
    """The recorded snapshots of the last *window_s* for the server at *url*, oldest first, so
    the dashboard's plots open filled instead of empty. Blocking (a few range scans): run it in
    a thread. Nothing (an empty list) when there is no DB, it records another server, it holds
    nothing of the window, or it cannot be read: the dashboard then simply starts empty."""
    p = Path(path)
    if not p.is_file():
        return []
    try:
        with HistoryDB.open(p, upgrade=False) as db:
            if not same_server(db.meta().get("url"), url):
                return []
            rng = db.time_range()
            if rng is None or rng.end < now - window_s:
                return []
            return list(db.snapshots(max(rng.start, now - window_s), now))
    except HistoryError:
        return []
