"""A time cursor over a history database: what `llmtop replay` feeds the dashboard.

The cursor moves over the recorded sample times (one per agent tick), which are loaded once
as a plain list (a 7-day DB at 1 s is ~600 000 floats: one indexed scan, a fraction of a
second, done in a thread by the caller). Moving the cursor is then pure arithmetic on that list,
so a key press moves the title bar at once; only `snapshot()` reads the DB (a handful of range
queries on the time keys for one instant). `refresh()` picks up what the agent wrote since, so
a replay of a DB being written can follow its live end.

The "events" for `[`/`]` are the moments an operator wants to jump to: a throttle span starts,
an alert is first seen, or the server's log shows a restart, crash or OOM.

Every DB-reading method is blocking; callers on an event loop run them in a thread. One lock
serialises them (one sqlite connection shared by the worker threads).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmtop.diagnosis.alerts import AlertEngine
from llmtop.diagnosis.history_report import GAP_INTERVALS, THROTTLE_REASONS
from llmtop.snapshot import Snapshot
from llmtop.sources.history_db import EventRow, HistoryDB, HistoryError
from llmtop.sources.history_plot import thermal_points

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.sources.history_plot import PlotHistory

# Play speeds: recorded seconds per wall second.
SPEEDS = (1, 2, 5, 10, 30, 60, 120, 300, 600)
# A refresh re-derives the events of this much before the old end (a span or alert in
# progress at the old end is then seen whole).
EVENT_OVERLAP_S = 120.0


def stamp(t: float) -> str:
    """Local time as the title bar and the messages show it."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


@dataclass(frozen=True)
class ReplayEvent:
    """A moment worth jumping to: `kind` is throttle_start | alert | a log event kind."""

    time: float
    kind: str
    label: str


class ReplaySource:
    """Recorded snapshots under a cursor. Build with `ReplaySource.open(path, ...)`."""

    def __init__(self, db: HistoryDB, times: list[float], *, follow: bool) -> None:
        self.db = db
        self.times = times
        self.index = 0
        # True when no --to was given: refresh() appends what the agent writes after the end.
        self.follow = follow
        self.events: list[ReplayEvent] = []
        self._lock = threading.Lock()
        self.interval_s = db.interval_s()
        self._engine: AlertEngine | None = None  # the thermal verdict's, fed up to _fed
        self._fed: float | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls, path: str | Path, start: float | None = None, end: float | None = None
    ) -> ReplaySource:
        """Open *path* on [start, end] (None: the recorded start / the live end).

        HistoryError for a missing, corrupt or newer DB; ValueError naming the recorded range
        when nothing of the window was recorded. Blocking (one scan of the sample times)."""
        db = HistoryDB.open(path)
        try:
            rng = db.time_range()
            if rng is None:
                raise HistoryError(f"{db.path}: no samples recorded yet")
            lo = rng.start if start is None else start
            hi = rng.end if end is None else end
            if hi < lo:
                raise ValueError("the window ends before it starts (--to is before --from)")
            if hi < rng.start or lo > rng.end:
                raise ValueError(
                    f"no samples between {stamp(lo)} and {stamp(hi)}: {db.path} holds "
                    f"{stamp(rng.start)} … {stamp(rng.end)}"
                )
            times = _times(db, lo, hi)
            if not times:
                raise ValueError(
                    f"no samples between {stamp(lo)} and {stamp(hi)}: {db.path} holds "
                    f"{stamp(rng.start)} … {stamp(rng.end)}"
                )
            src = cls(db, times, follow=end is None)
            src.events = src._read_events(times[0], times[-1])
        except BaseException:
            db.close()
            raise
        return src

    def close(self) -> None:
        with self._lock:
            self.db.close()

    # ------------------------------------------------------------------ the cursor (pure)
    @property
    def time(self) -> float:
        return self.times[self.index]

    @property
    def start(self) -> float:
        return self.times[0]

    @property
    def end(self) -> float:
        return self.times[-1]

    @property
    def at_end(self) -> bool:
        return self.index == len(self.times) - 1

    def step(self, n: int) -> bool:
        """Move *n* samples (clamped); True when the cursor moved."""
        new = max(0, min(len(self.times) - 1, self.index + n))
        moved, self.index = new != self.index, new
        return moved

    def shift(self, seconds: float) -> bool:
        """Move by *seconds* of recorded time, at least one sample in that direction."""
        if seconds == 0:
            return False
        target = self.time + seconds
        if seconds > 0:
            i = bisect.bisect_right(self.times, target) - 1
            i = max(i, self.index + 1)
        else:
            i = bisect.bisect_left(self.times, target)
            i = min(i, self.index - 1)
        new = max(0, min(len(self.times) - 1, i))
        moved, self.index = new != self.index, new
        return moved

    def goto(self, t: float) -> None:
        """The sample at or just before *t*; ValueError naming the range when *t* is outside."""
        if t < self.start - self.interval_s or t > self.end + self.interval_s:
            raise ValueError(
                f"{stamp(t)} is outside the recording: it holds {stamp(self.start)} … "
                f"{stamp(self.end)}"
            )
        self.index = max(0, min(len(self.times) - 1, bisect.bisect_right(self.times, t) - 1))

    def next_event(self) -> ReplayEvent | None:
        """Jump to the first event after the cursor (None: there is none; the cursor stays)."""
        times = [e.time for e in self.events]
        i = bisect.bisect_right(times, self.time)
        if i >= len(self.events):
            return None
        event = self.events[i]
        self.index = min(len(self.times) - 1, bisect.bisect_left(self.times, event.time))
        return event

    def prev_event(self) -> ReplayEvent | None:
        """Jump to the last event before the cursor (None: there is none; the cursor stays)."""
        times = [e.time for e in self.events]
        i = bisect.bisect_left(times, self.time) - 1
        if i < 0:
            return None
        event = self.events[i]
        self.index = max(0, bisect.bisect_right(self.times, event.time) - 1)
        return event

    # ------------------------------------------------------------------ reading (blocking)
    def snapshot(self, index: int | None = None) -> Snapshot | None:
        """The recorded Snapshot at *index* (default: the cursor), with the thermal verdict
        over the window before it, as the live dashboard would have shown. Blocking.

        The verdict's engine is kept between calls: a step forward feeds it only the samples
        since the last one; a step back or a jump past the window starts it afresh from the
        window before the cursor (one range read of a few hundred samples)."""
        t = self.times[self.index if index is None else index]
        with self._lock:
            snap = next(iter(self.db.snapshots(t, t)), None)
            if snap is None or not snap.gpus:
                return snap
            engine, fed = self._engine, self._fed
            window = engine.thresholds.thermal_window_s if engine is not None else 300.0
            if engine is None or fed is None or t < fed or t - fed > window:
                engine = self._engine = AlertEngine()
                window = engine.thresholds.thermal_window_s
                since = t - window
            else:
                since = math.nextafter(fed, math.inf)
            engine.feed_points(thermal_points(self.db, since, t))  # the samples before t
            self._fed = t
            return dataclasses.replace(snap, thermal=engine.thermal(snap))

    def snapshots_before(self, t: float, seconds: float) -> list[Snapshot]:
        """Thin snapshots of [t - seconds, t], oldest first, with what the sparklines plot (the
        plots' refill after a jump; llmtop.sources.history_plot.plot_snapshots). Blocking."""
        from llmtop.sources.history_plot import plot_snapshots

        with self._lock:
            return plot_snapshots(self.db, t - seconds, t)

    def plot_history(self, t: float, seconds: float, bucket_s: float) -> PlotHistory:
        """The GPU plots' buckets of [t - seconds, t] (*bucket_s* 0: one per sample). Blocking."""
        from llmtop.sources.history_plot import read_plot_history

        with self._lock:
            return read_plot_history(self.db, t - seconds, t, bucket_s or self.interval_s)

    def log_events(self, t0: float, t1: float) -> list[EventRow]:
        """The recorded events (OOM, restarts, load failures, exits …) of [t0, t1]. Blocking."""
        with self._lock:
            return self.db.events(t0, t1)

    def refresh(self) -> int:
        """Append samples the agent wrote after the end (follow mode); the count. Blocking."""
        if not self.follow:
            return 0
        old_end = self.end
        with self._lock:
            new = [t for t in _times(self.db, old_end, float("inf")) if t > old_end]
            if not new:
                return 0
            since = old_end - EVENT_OVERLAP_S
            fresh = self._read_events(since, new[-1])
        self.times.extend(new)
        # A throttle run already going at the old end was known then (its start is before it);
        # scanned from `since` it would show a false start at the window's edge.
        fresh = [e for e in fresh if e.time > old_end or e.kind != "throttle_start"]
        self.events = _dedupe(self.events + fresh)
        return len(new)

    def _read_events(self, t0: float, t1: float) -> list[ReplayEvent]:
        db = self.db
        out: list[ReplayEvent] = []
        gap = GAP_INTERVALS * self.interval_s
        for run in db.throttle_runs(t0, t1, THROTTLE_REASONS, gap):
            reasons = sorted({r for lst in run.reason_lists for r in lst.split(",") if r})
            out.append(
                ReplayEvent(
                    run.first,
                    "throttle_start",
                    f"GPU{run.gpu_index} throttling starts ({', '.join(reasons)})",
                )
            )
        for a in db.alerts(t0, t1):
            if t0 <= a.first_seen <= t1:
                out.append(ReplayEvent(a.first_seen, "alert", f"alert: {a.message}"))
        for e in db.events(t0, t1):
            out.append(ReplayEvent(e.time, e.kind, f"{e.kind}: {e.message}"))
        return _dedupe(out)


def _dedupe(events: list[ReplayEvent]) -> list[ReplayEvent]:
    seen: set[tuple[float, str, str]] = set()
    out = []
    for e in sorted(events, key=lambda e: (e.time, e.kind, e.label)):
        key = (e.time, e.kind, e.label)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _times(db: HistoryDB, t0: float, t1: float) -> list[float]:
    """The server sample times of [t0, t1] (one per agent tick): one indexed range scan."""
    rows = db._query(  # noqa: SLF001 - the DB's own error mapping
        "SELECT time FROM server_samples WHERE time >= ? AND time <= ? ORDER BY time", (t0, t1)
    )
    return [float(t) for (t,) in rows]  # type: ignore[arg-type]
