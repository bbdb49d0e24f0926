"""Writing the history database: one small transaction per snapshot, retention by age and size.

`HistoryRecorder` is the agent's `SnapshotSink` (and `ProbeSink`). Each snapshot becomes the
rows of one tick — server, host, each GPU, alert spans, new log events — committed at once, so
a `kill -9` loses at most the tick in flight (WAL with synchronous=NORMAL: a killed process
loses nothing committed). A reader opened with `HistoryDB.open` never blocks it.

When a write fails (disk full, I/O error) the recorder says so in one line, keeps the ticks in
memory (bounded: `MEMORY_S` of samples) and writes them, oldest first, as soon as a write
succeeds again — and says that too. Every text column goes through the one redaction module.

Once a minute (sample time, so generated histories behave like real ones) it folds the minute
that ended into the per-minute aggregates, deletes what is older than --keep (raw) or
--keep-aggregates (aggregates, alerts, events, probes), and enforces --max-size by removing the
oldest samples first.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmtop.model.redaction import Redactor
from llmtop.sources.history_schema import (
    REASONS_SEPARATOR,
    SCHEMA_VERSION,
    SchemaError,
    migrate,
    sqlite_header_problem,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.snapshot import Alert, GpuSample, Snapshot
    from llmtop.sources.logs import LogEvent, LogStore
    from llmtop.sources.probe import ProbeResult

# Ticks kept in memory while the database cannot be written (disk full), in seconds of samples.
MEMORY_S = 6 * 3600.0
# Log lines stored with an event: those up to and including it, at most this many.
EVENT_LINES = 20
EVENT_LINE_WINDOW_S = 30.0
# Housekeeping runs when a sample starts a new minute; each run deletes at most this much age.
RETENTION_CHUNK_S = 6 * 3600.0
# Size enforcement deletes down to this fraction of --max-size (so it does not run every tick).
SIZE_LOW_WATER = 0.9

Statement = tuple[str, tuple[object, ...]]
_META_URL_SQL = "INSERT OR REPLACE INTO meta VALUES ('url', ?)"


class SinkError(Exception):
    """A sink cannot be opened; the message says which file and why."""


@dataclass(frozen=True)
class RecorderOptions:
    interval_s: float = 1.0
    keep_s: float = 7 * 86400.0
    keep_aggregates_s: float = 90 * 86400.0
    max_size_bytes: int = 1 << 30


def _b(v: bool | None) -> int | None:
    return None if v is None else int(v)


def _reasons(reasons: tuple[str, ...] | None) -> str | None:
    return None if reasons is None else REASONS_SEPARATOR.join(reasons)


def _processes(g: GpuSample) -> str | None:
    if g.processes is None:
        return None
    return ",".join(
        f"{p.pid}:{'' if p.used_memory_bytes is None else p.used_memory_bytes}" for p in g.processes
    )


_GPU_SQL = "INSERT OR REPLACE INTO gpu_samples VALUES (" + ", ".join(["?"] * 28) + ")"
_SERVER_SQL = (
    "INSERT OR REPLACE INTO server_samples (time, health, detail, state, pid, model, n_ctx,"
    " slots_total, slots_busy, gen_tokens_per_s, prompt_tokens_per_s, requests_processing,"
    " requests_deferred, prompt_tokens_total, tokens_predicted_total, process_start_time,"
    " restarts, sleeping) VALUES (" + ", ".join(["?"] * 18) + ")"
)
_HOST_SQL = "INSERT OR REPLACE INTO host_samples VALUES (" + ", ".join(["?"] * 13) + ")"
_DEVICE_SQL = (
    "INSERT INTO gpu_devices VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (gpu_index, uuid)"
    " DO UPDATE SET last_seen = excluded.last_seen, name = excluded.name,"
    " pci_bus_id = excluded.pci_bus_id"
)
_ALERT_SQL = (
    "INSERT INTO alerts (kind, severity, message, since, first_seen, last_seen) VALUES"
    " (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, since) DO UPDATE SET last_seen = excluded.last_seen,"
    " message = excluded.message, severity = excluded.severity, ended = NULL"
)
_ALERT_END_SQL = "UPDATE alerts SET ended = ? WHERE kind = ? AND since = ? AND ended IS NULL"
_EVENT_SQL = (
    "INSERT INTO events (time, kind, severity, message, source, lines) VALUES (?, ?, ?, ?, ?, ?)"
)
_PROBE_SQL = "INSERT OR REPLACE INTO probes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"

_AGGREGATE_SQL: tuple[str, ...] = (
    "INSERT OR REPLACE INTO gpu_minutes SELECT CAST(time / 60 AS INTEGER) * 60, gpu_index,"
    " count(*), min(temperature_c), avg(temperature_c), max(temperature_c),"
    " min(sm_clock_mhz), avg(sm_clock_mhz), max(sm_clock_mhz),"
    " min(utilization_percent), avg(utilization_percent), max(utilization_percent),"
    " min(power_w), avg(power_w), max(power_w),"
    " min(memory_used_bytes), avg(memory_used_bytes), max(memory_used_bytes),"
    " max(server_memory_bytes), sum(throttle_reasons IS NOT NULL AND throttle_reasons != ''"
    " AND throttle_reasons != 'GpuIdle')"
    " FROM gpu_samples WHERE time >= ? AND time < ? GROUP BY 1, 2",
    "INSERT OR REPLACE INTO server_minutes SELECT CAST(time / 60 AS INTEGER) * 60, count(*),"
    " sum(health = 'ok'), min(gen_tokens_per_s), avg(gen_tokens_per_s), max(gen_tokens_per_s),"
    " min(prompt_tokens_per_s), avg(prompt_tokens_per_s), max(prompt_tokens_per_s),"
    " avg(slots_busy), max(slots_busy), max(requests_deferred)"
    " FROM server_samples WHERE time >= ? AND time < ? GROUP BY 1",
    "INSERT OR REPLACE INTO host_minutes SELECT CAST(time / 60 AS INTEGER) * 60, count(*),"
    " min(cpu_percent), avg(cpu_percent), max(cpu_percent), max(memory_used_bytes),"
    " max(process_rss_bytes) FROM host_samples WHERE time >= ? AND time < ? GROUP BY 1",
)
_RAW_TABLES = ("gpu_samples", "server_samples", "host_samples")
_AGGREGATE_TABLES = ("gpu_minutes", "server_minutes", "host_minutes")


def create_db_file(path: Path) -> None:
    """The directory (0700 when llmtop makes it) and an empty 0600 file, before SQLite opens it:
    the samples say what runs on this box, so they are the owner's to read."""
    parent = path.parent
    if not parent.exists():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)  # whatever the umask said


class HistoryRecorder:
    """Writes every snapshot to the history database (see the module docstring)."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        options: RecorderOptions,
        *,
        log_store: LogStore | None = None,
        secrets: Iterable[str] = (),
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.path = path
        self.conn = conn
        self.options = options
        self.log_store = log_store
        self.redact = Redactor(secrets)
        if log_store is not None:
            self.redact.add(*log_store.redactor.secrets)
        self.report = report or _to_stderr
        maxlen = max(10, int(MEMORY_S / max(options.interval_s, 0.1)))
        self.pending: deque[list[Statement]] = deque(maxlen=maxlen)
        self.failing: str | None = None  # the write error while in memory-only mode
        self.dropped = 0  # ticks lost because memory was full too
        self.ticks_written = 0
        self._open_alerts: set[tuple[str, float]] = set()
        # meta's url: the server the samples are of. The dashboard opens its recorder before an
        # operator picks one of several discovered servers, so it is written from the samples.
        self.url: str | None = None
        self._seen_events: deque[tuple[float, str, str]] = deque(maxlen=1000)
        self._prev: Snapshot | None = None
        self._known_server: tuple[int | None, float | None] = (None, None)
        self._minute: int | None = None
        self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        self._auto_vacuum = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])

    def use_log(self, store: LogStore) -> None:
        """Take events and their lines from *store* from now on (the dashboard's focus moved
        to another server: the samples are that server's now, so its log must be too)."""
        self.redact.add(*store.redactor.secrets)
        self.log_store = store

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        options: RecorderOptions | None = None,
        *,
        log_store: LogStore | None = None,
        secrets: Iterable[str] = (),
        url: str | None = None,
        report: Callable[[str], None] | None = None,
    ) -> HistoryRecorder:
        """Open (or create) the database at *path* and bring its schema up to date.

        Raises SinkError in words for a file that is not SQLite, corrupt, or from a newer llmtop."""
        p = Path(path)
        options = options or RecorderOptions()
        try:
            create_db_file(p)
        except OSError as exc:
            raise SinkError(f"cannot create {p}: {exc.strerror or exc}") from None
        problem = sqlite_header_problem(p)
        if problem is not None:
            raise SinkError(f"{p}: {problem}")
        try:
            conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SinkError(f"{p}: SQLite refused WAL mode ({mode}); is it on a network share?")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA journal_size_limit = 8388608")
            migrate(conn)
            conn.execute("BEGIN IMMEDIATE")
            # alerts left open by an agent that stopped: they end where it stopped watching
            conn.execute("UPDATE alerts SET ended = last_seen WHERE ended IS NULL")
            meta = {"url": url or "", "interval_s": str(options.interval_s)}
            meta["schema_version"] = str(SCHEMA_VERSION)
            conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())
            conn.execute("COMMIT")
        except SchemaError as exc:
            raise SinkError(f"{p}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            raise SinkError(f"{p}: not a usable llmtop history database ({exc})") from None
        rec = cls(p, conn, options, log_store=log_store, secrets=secrets, report=report)
        rec.url = url or None
        return rec

    # ------------------------------------------------------------------ the sink
    def on_snapshot(self, snap: Snapshot) -> None:
        statements = self._statements(snap)
        if snap.server.url and snap.server.url != self.url:
            self.url = snap.server.url
            statements.append((_META_URL_SQL, (self.redact(snap.server.url),)))
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1  # memory is full too: the oldest unwritten tick goes
        self.pending.append(statements)
        self._flush()
        self._prev = snap
        minute = int(snap.time // 60) * 60
        if self._minute is None:
            self._minute = minute
        elif minute > self._minute and self.failing is None:
            self._housekeeping(self._minute, minute, snap.time)
            self._minute = minute

    def on_probe(self, result: ProbeResult) -> None:
        r = self.redact
        self.pending.append(
            [
                (
                    _PROBE_SQL,
                    (
                        result.started_at,
                        int(result.ok),
                        r(result.error) if result.error else None,
                        result.tokens,
                        result.ttft_ms,
                        result.itl_ms_p50,
                        result.itl_ms_p95,
                        result.gen_tokens_per_s,
                        result.prompt_tokens_per_s,
                        result.total_ms,
                    ),
                )
            ]
        )
        self._flush()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._flush()
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()

    # ------------------------------------------------------------------ writing
    def _flush(self) -> None:
        """Write every pending tick, oldest first, one transaction each batch."""
        while self.pending:
            batch = list(self.pending)
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                for statements in batch:
                    for sql, params in statements:
                        self.conn.execute(sql, params)
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                self._failed(exc)
                return
            for _ in batch:
                self.pending.popleft()
            self.ticks_written += len(batch)
            if self.failing is not None:
                self.report(
                    f"llmtop agent: writing {self.path} again ({len(batch)} samples kept in"
                    " memory are written)"
                )
                self.failing = None

    def _failed(self, exc: sqlite3.Error) -> None:
        if self.failing is None:
            self.failing = str(exc)
            self.report(
                f"llmtop agent: cannot write {self.path}: {exc} — sampling goes on in memory "
                f"(up to {MEMORY_S / 3600:.0f} h) and writing resumes when it can"
            )

    # ------------------------------------------------------------------ rows of one tick
    def _statements(self, snap: Snapshot) -> list[Statement]:
        r = self.redact
        t = snap.time
        s = snap.server
        out: list[Statement] = []
        state = snap.supervisor.state if snap.supervisor is not None else None
        restarts = snap.supervisor.restarts if snap.supervisor is not None else None
        if state is None and snap.unit is not None:
            state = snap.unit.sub_state or snap.unit.active_state
            restarts = snap.unit.n_restarts
        busy = sum(1 for sl in s.slots if sl.is_processing) if s.slots else None
        out.append(
            (
                _SERVER_SQL,
                (
                    t,
                    s.health,
                    r(s.detail) if s.detail else None,
                    state,
                    s.pid,
                    r(s.model_path or s.model_alias or "") or None,
                    s.n_ctx,
                    s.total_slots,
                    busy,
                    s.gen_tokens_per_s,
                    s.prompt_tokens_per_s,
                    s.requests_processing,
                    s.requests_deferred,
                    s.prompt_tokens_total,
                    s.tokens_predicted_total,
                    s.process_start_time,
                    restarts,
                    _sleeping(snap),
                ),
            )
        )
        h = snap.host
        p = h.process
        load = h.load_avg or (None, None, None)
        out.append(
            (
                _HOST_SQL,
                (
                    t,
                    h.cpu_percent,
                    h.memory_used_bytes,
                    h.memory_total_bytes,
                    load[0],
                    load[1],
                    load[2],
                    p.pid if p else None,
                    p.cpu_percent if p else None,
                    p.rss_bytes if p else None,
                    p.threads if p else None,
                    p.status if p else None,
                    p.uptime_s if p else None,
                ),
            )
        )
        prev_gpus = {g.index: g for g in self._prev.gpus} if self._prev is not None else {}
        for g in snap.gpus:
            old = prev_gpus.get(g.index)
            if old is None or (old.uuid, old.name) != (g.uuid, g.name) or int(t) % 60 == 0:
                out.append((_DEVICE_SQL, (g.index, g.uuid or "", g.name, g.pci_bus_id, t, t)))
            out.append((_GPU_SQL, _gpu_row(t, g)))
        out.extend(self._alert_statements(t, snap.alerts))
        out.extend(self._event_statements(snap))
        return out

    def _alert_statements(self, t: float, alerts: tuple[Alert, ...]) -> list[Statement]:
        out: list[Statement] = []
        now: set[tuple[str, float]] = set()
        for a in alerts:
            key = (a.kind, a.since)
            now.add(key)
            out.append((_ALERT_SQL, (a.kind, a.severity, self.redact(a.message), a.since, t, t)))
        for kind, since in self._open_alerts - now:
            out.append((_ALERT_END_SQL, (t, kind, since)))
        self._open_alerts = now
        return out

    def _event_statements(self, snap: Snapshot) -> list[Statement]:
        out: list[Statement] = []
        if self.log_store is not None:
            for ev in self.log_store.events():
                key = (ev.time, ev.kind, ev.message)
                if key in self._seen_events:
                    continue
                self._seen_events.append(key)
                out.append(self._event(ev.time, ev.kind, ev.severity, ev.message, "log", ev))
        for kind, severity, message in self._sample_events(snap):
            out.append(self._event(snap.time, kind, severity, message, "llmtop", None))
        return out

    def _event(
        self, t: float, kind: str, severity: str, message: str, source: str, ev: LogEvent | None
    ) -> Statement:
        lines: str | None = None
        if self.log_store is not None:
            near = [
                ln.text
                for ln in self.log_store.lines()
                if t - EVENT_LINE_WINDOW_S <= ln.time <= t + (0.001 if ev is not None else 0.0)
            ][-EVENT_LINES:]
            lines = self.redact("\n".join(near)) if near else None
        return (_EVENT_SQL, (t, kind, severity, self.redact(message), source, lines))

    def _sample_events(self, snap: Snapshot) -> list[tuple[str, str, str]]:
        """Events the samples themselves show (attach mode has no log to read them from): the
        server going down or coming back, and a restart (another pid or process start time
        than the last one seen, also across a down spell)."""
        b = snap.server
        out: list[tuple[str, str, str]] = []
        prev = self._prev
        if prev is not None:
            a = prev.server
            if a.health not in _DOWN and b.health in _DOWN:
                out.append(
                    ("server_down", "critical", f"server {b.health}: {b.detail}".rstrip(": "))
                )
            elif a.health in _DOWN and b.health not in _DOWN:
                out.append(("server_up", "info", f"server answers again ({b.health})"))
        pid, started = self._known_server
        new_pid = b.pid if b.pid is not None else pid
        new_start = b.process_start_time if b.process_start_time is not None else started
        if (pid is not None and new_pid != pid) or (
            started is not None and abs(new_start - started) > 0.5  # type: ignore[operator]
        ):
            out.append(("restart", "warning", f"server restarted (pid {pid} → {new_pid})"))
        self._known_server = (new_pid, new_start)
        return out

    # ------------------------------------------------------------------ housekeeping
    def _housekeeping(self, from_minute: int, to_minute: int, now: float) -> None:
        """Aggregate [from_minute, to_minute), apply retention and the size cap. Errors are
        reported like write errors (the next tick retries)."""
        o = self.options
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for sql in _AGGREGATE_SQL:
                self.conn.execute(sql, (from_minute, to_minute))
            self._delete_before(_RAW_TABLES, "time", now - o.keep_s)
            self._delete_before(_AGGREGATE_TABLES, "minute", now - o.keep_aggregates_s)
            self._delete_before(("probes", "events"), "time", now - o.keep_aggregates_s)
            self._delete_before(("alerts",), "last_seen", now - o.keep_aggregates_s)
            self.conn.execute("COMMIT")
            self._enforce_size()
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            self._failed(exc)

    def _delete_before(self, tables: Iterable[str], column: str, cutoff: float) -> None:
        for table in tables:
            oldest = self.conn.execute(f"SELECT min({column}) FROM {table}").fetchone()[0]
            if oldest is None or oldest >= cutoff:
                continue
            bound = min(cutoff, float(oldest) + RETENTION_CHUNK_S)
            self.conn.execute(f"DELETE FROM {table} WHERE {column} < ?", (bound,))

    def used_bytes(self) -> int:
        pages = int(self.conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * self._page_size

    def _enforce_size(self) -> None:
        """Over --max-size: delete the oldest raw samples (then the oldest aggregates and
        events) until the data is under SIZE_LOW_WATER of the cap, then give the space back."""
        cap = self.options.max_size_bytes
        if self.used_bytes() <= cap:
            return
        for _ in range(200):
            if self.used_bytes() <= cap * SIZE_LOW_WATER:
                break
            if not self._delete_oldest_slice():
                break
        if self._auto_vacuum == 2:  # INCREMENTAL
            self.conn.execute("PRAGMA incremental_vacuum")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _delete_oldest_slice(self) -> bool:
        """Remove the oldest 5 % of the recorded time span (raw first). False: nothing left."""
        for tables, column in (
            (_RAW_TABLES, "time"),
            (_AGGREGATE_TABLES, "minute"),
            (("events", "probes"), "time"),
        ):
            lo, hi = None, None
            for table in tables:
                a, b = self.conn.execute(
                    f"SELECT min({column}), max({column}) FROM {table}"
                ).fetchone()
                if a is not None:
                    lo = a if lo is None else min(lo, a)
                    hi = b if hi is None else max(hi, b)
            if lo is None or hi is None or hi <= lo:
                continue
            cut = lo + max((hi - lo) * 0.05, 1.0)
            self.conn.execute("BEGIN IMMEDIATE")
            for table in tables:
                self.conn.execute(f"DELETE FROM {table} WHERE {column} < ?", (cut,))
            self.conn.execute("COMMIT")
            return True
        return False


def _gpu_row(t: float, g: GpuSample) -> tuple[object, ...]:
    return (
        t,
        g.index,
        _b(g.lost),
        g.memory_used_bytes,
        g.memory_free_bytes,
        g.memory_total_bytes,
        g.utilization_percent,
        g.memory_utilization_percent,
        g.temperature_c,
        g.temp_slowdown_c,
        g.temp_shutdown_c,
        g.temp_gpu_max_c,
        g.sm_clock_mhz,
        g.sm_clock_max_mhz,
        g.graphics_clock_mhz,
        g.mem_clock_mhz,
        g.mem_clock_max_mhz,
        g.power_w,
        g.power_limit_w,
        g.fan_percent,
        g.pstate,
        _b(g.persistence_mode),
        _reasons(g.throttle_reasons),
        g.throttled_thermal_percent,
        g.throttled_power_percent,
        _processes(g),
        _b(g.used_by_server),
        g.server_memory_bytes,
    )


def _sleeping(snap: Snapshot) -> int | None:
    """llama-server's idle sleep (--sleep-idle-seconds) as the health detail says it."""
    s = snap.server
    if s.health == "sleeping":  # the poll's own word for it (/props is_sleeping)
        return 1
    if s.health == "ok":
        return int("sleep" in s.detail.lower())
    return None


_DOWN = ("unreachable", "error")


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
