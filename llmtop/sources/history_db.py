"""Reading the history database that `llmtop agent` writes (report, replay, dashboard prefill).

`HistoryDB.open(path)` opens the file read-only (WAL: a reader never blocks the writer, and the
agent keeps writing while a report runs). Every query takes a time window and is one range
scan on the time keys; rows come back as typed, frozen dataclasses whose fields are the
columns (see history_schema.py), and `snapshots(t0, t1)` rebuilds `Snapshot`s for replay.

Problems are `HistoryError`s in words that name the file: missing, not SQLite, corrupt, or
written by a newer llmtop. An older schema is upgraded first when *upgrade* is true and the
file is writable (the upgrade is a short transaction; the agent does the same on start).
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from llmtop.snapshot import (
    Alert,
    GpuProcess,
    GpuSample,
    HostStats,
    ProcessStats,
    ServerStatus,
    Snapshot,
)
from llmtop.sources.history_schema import (
    REASONS_SEPARATOR,
    SCHEMA_VERSION,
    SchemaError,
    migrate,
    read_version,
    sqlite_header_problem,
)

DB_NAME = "history.sqlite"


def default_db_path() -> Path:
    """Where the agent records by default: $STATE_DIRECTORY (systemd's StateDirectory=), else
    /var/lib/llmtop for root, else $XDG_STATE_HOME/llmtop (~/.local/state/llmtop)."""
    state_dir = os.environ.get("STATE_DIRECTORY")
    if state_dir:
        return Path(state_dir.split(":")[0]) / DB_NAME
    if os.geteuid() == 0:
        return Path("/var/lib/llmtop") / DB_NAME
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "llmtop" / DB_NAME


class HistoryError(Exception):
    """The history database cannot be read; the message names the file and says why."""


@dataclass(frozen=True)
class TimeRange:
    start: float
    end: float


@dataclass(frozen=True)
class GpuRow:
    time: float
    gpu_index: int
    lost: bool | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    memory_total_bytes: int | None
    utilization_percent: float | None
    memory_utilization_percent: float | None
    temperature_c: float | None
    temp_slowdown_c: float | None
    temp_shutdown_c: float | None
    temp_gpu_max_c: float | None
    sm_clock_mhz: int | None
    sm_clock_max_mhz: int | None
    graphics_clock_mhz: int | None
    mem_clock_mhz: int | None
    mem_clock_max_mhz: int | None
    power_w: float | None
    power_limit_w: float | None
    fan_percent: float | None
    pstate: int | None
    persistence_mode: bool | None
    throttle_reasons: str | None  # names joined by ","; "" none; None unknown
    throttled_thermal_percent: float | None
    throttled_power_percent: float | None
    processes: str | None  # "pid:bytes,…" ("pid:" when the bytes are unknown)
    used_by_server: bool | None
    server_memory_bytes: int | None

    @property
    def reasons(self) -> tuple[str, ...] | None:
        if self.throttle_reasons is None:
            return None
        return tuple(r for r in self.throttle_reasons.split(REASONS_SEPARATOR) if r)


@dataclass(frozen=True)
class ServerRow:
    time: float
    health: str
    detail: str | None
    state: str | None
    pid: int | None
    model: str | None
    n_ctx: int | None
    slots_total: int | None
    slots_busy: int | None
    gen_tokens_per_s: float | None
    prompt_tokens_per_s: float | None
    requests_processing: int | None
    requests_deferred: int | None
    prompt_tokens_total: int | None
    tokens_predicted_total: int | None
    process_start_time: float | None
    restarts: int | None
    sleeping: bool | None


@dataclass(frozen=True)
class HostRow:
    time: float
    cpu_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    load_1m: float | None
    load_5m: float | None
    load_15m: float | None
    process_pid: int | None
    process_cpu_percent: float | None
    process_rss_bytes: int | None
    process_threads: int | None
    process_status: str | None
    process_uptime_s: float | None


@dataclass(frozen=True)
class AlertRow:
    kind: str
    severity: str
    message: str
    since: float
    first_seen: float
    last_seen: float
    ended: float | None  # None: still active at the last sample (or the agent stopped)


@dataclass(frozen=True)
class EventRow:
    time: float
    kind: str
    severity: str
    message: str
    source: str  # "log" (the server's output / journal) | "llmtop" (seen in the samples)
    lines: str | None  # the log lines up to the event, newline-joined


@dataclass(frozen=True)
class ProbeRow:
    time: float
    ok: bool
    error: str | None
    tokens: int | None
    ttft_ms: float | None
    itl_ms_p50: float | None
    itl_ms_p95: float | None
    gen_tokens_per_s: float | None
    prompt_tokens_per_s: float | None
    total_ms: float | None


@dataclass(frozen=True)
class ThrottleRun:
    """Consecutive samples of one GPU with a throttle reason: the first and last of them, the
    first sample after them when it followed without a gap (None: the recording stopped), and
    what they held (the distinct reason lists, hottest temperature, lowest SM clock)."""

    gpu_index: int
    first: float
    last: float
    next_time: float | None
    samples: int
    reason_lists: tuple[str, ...]  # distinct throttle_reasons values ("A,B") within the run
    peak_temperature_c: float | None
    min_sm_clock_percent: float | None


@dataclass(frozen=True)
class GpuPeak:
    gpu_index: int
    peak_memory_used_bytes: int | None
    peak_memory_used_at: float | None
    memory_total_bytes: int | None
    peak_server_memory_bytes: int | None
    peak_server_memory_at: float | None


_Row = TypeVar("_Row")
_BOOL_FIELDS = {"lost", "persistence_mode", "used_by_server", "sleeping", "ok"}


# Per row type: its column names and where its 0/1 flags are (looked up once, not per row).
_SHAPES: dict[type[object], tuple[tuple[str, ...], tuple[int, ...]]] = {}


def _shape(cls: type[object]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    shape = _SHAPES.get(cls)
    if shape is None:
        names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        flags = tuple(i for i, n in enumerate(names) if n in _BOOL_FIELDS)
        shape = _SHAPES[cls] = (names, flags)
    return shape


def _columns(cls: type[object]) -> tuple[str, ...]:
    return _shape(cls)[0]


def _make(cls: type[_Row], row: Sequence[object]) -> _Row:
    """One typed row from a SELECT of exactly `_columns(cls)`. Per row only the flags are
    touched (0/1 → bool): an hour's prefill is 3,600 rows of each kind, read while the
    dashboard starts, and looking the fields up per row was a third of that read."""
    bools = _shape(cls)[1]
    if not bools:
        return cls(*row)
    values = list(row)
    for i in bools:
        v = values[i]
        values[i] = None if v is None else bool(v)
    return cls(*values)


def connect_error(path: Path, exc: BaseException) -> HistoryError:
    """A sqlite3 error on opening *path* in words (not SQLite, corrupt, locked …)."""
    text = str(exc)
    if "not a database" in text or "malformed" in text or "file is encrypted" in text:
        return HistoryError(f"{path}: not a readable llmtop history database ({text})")
    return HistoryError(f"{path}: cannot read the history database ({text})")


class HistoryDB:
    """A read-only view of one history database."""

    def __init__(self, path: Path, conn: sqlite3.Connection, version: int) -> None:
        self.path = path
        self.conn = conn
        self.version = version

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, upgrade: bool = True) -> HistoryDB:
        p = Path(path)
        if not p.exists():
            raise HistoryError(f"{p}: no history database here (record one with `llmtop agent`)")
        if not p.is_file():
            raise HistoryError(f"{p}: not a file")
        problem = sqlite_header_problem(p)
        if problem is not None:
            raise HistoryError(f"{p}: {problem}")
        try:
            version = cls._check_version(p, upgrade)
            conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, check_same_thread=False)
            conn.execute("PRAGMA query_only = 1")
        except sqlite3.Error as exc:
            raise connect_error(p, exc) from None
        return cls(p, conn, version)

    @staticmethod
    def _check_version(p: Path, upgrade: bool) -> int:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout = 2000")
            version = read_version(conn)
        except SchemaError as exc:
            raise HistoryError(f"{p}: {exc}") from None
        finally:
            conn.close()
        if version is None:
            raise HistoryError(f"{p}: an empty database (no samples recorded yet)")
        if version > SCHEMA_VERSION:
            raise HistoryError(
                f"{p}: written by a newer llmtop (schema {version}; this llmtop reads up to "
                f"{SCHEMA_VERSION}): upgrade llmtop"
            )
        if version < SCHEMA_VERSION:
            if not upgrade or not os.access(p, os.W_OK):
                raise HistoryError(
                    f"{p}: schema {version} from an older llmtop; run `llmtop agent --db {p}` "
                    "once (or report with write access) to upgrade it"
                )
            rw = sqlite3.connect(p, isolation_level=None)
            try:
                rw.execute("PRAGMA busy_timeout = 5000")
                migrate(rw)
            except SchemaError as exc:
                raise HistoryError(f"{p}: {exc}") from None
            finally:
                rw.close()
            version = SCHEMA_VERSION
        return version

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> HistoryDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ queries
    def _query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise connect_error(self.path, exc) from None

    def _window(self, cls: type[_Row], table: str, t0: float, t1: float) -> list[_Row]:
        cols = ", ".join(_columns(cls))
        rows = self._query(
            f"SELECT {cols} FROM {table} WHERE time >= ? AND time <= ? ORDER BY time", (t0, t1)
        )
        return [_make(cls, r) for r in rows]

    def time_range(self) -> TimeRange | None:
        """First and last recorded sample (server samples: one per tick)."""
        row = self._query("SELECT min(time), max(time) FROM server_samples")[0]
        if row[0] is None:
            return None
        return TimeRange(float(row[0]), float(row[1]))  # type: ignore[arg-type]

    def integrity_ok(self) -> bool:
        return self._query("PRAGMA integrity_check")[0][0] == "ok"

    def gpu_rows(self, t0: float, t1: float) -> list[GpuRow]:
        return self._window(GpuRow, "gpu_samples", t0, t1)

    def server_rows(self, t0: float, t1: float) -> list[ServerRow]:
        return self._window(ServerRow, "server_samples", t0, t1)

    def host_rows(self, t0: float, t1: float) -> list[HostRow]:
        return self._window(HostRow, "host_samples", t0, t1)

    def probes(self, t0: float, t1: float) -> list[ProbeRow]:
        return self._window(ProbeRow, "probes", t0, t1)

    def events(self, t0: float, t1: float) -> list[EventRow]:
        return self._window(EventRow, "events", t0, t1)

    def alerts(self, t0: float, t1: float) -> list[AlertRow]:
        """Alerts active at any moment of [t0, t1]."""
        cols = ", ".join(_columns(AlertRow))
        rows = self._query(
            f"SELECT {cols} FROM alerts WHERE last_seen >= ? AND first_seen <= ? ORDER BY since",
            (t0, t1),
        )
        return [_make(AlertRow, r) for r in rows]

    def throttle_runs(
        self, t0: float, t1: float, reasons: Iterable[str], gap_s: float
    ) -> list[ThrottleRun]:
        """Runs of samples whose throttle_reasons name any of *reasons*, per GPU.

        Only the throttled samples' keys are read (one filtered range scan), then each run is
        checked and summarised by an aggregate over its own range: a 7-day window is never
        loaded whole. A step longer than *gap_s* between samples ends a run."""
        names = [f",{r}," for r in reasons]
        pred = " OR ".join(["instr(',' || throttle_reasons || ',', ?) > 0"] * len(names)) or "0"
        where = f"throttle_reasons IS NOT NULL AND throttle_reasons != '' AND ({pred})"
        hits = self._query(
            f"SELECT gpu_index, time FROM gpu_samples WHERE time >= ? AND time <= ? AND {where}"
            " ORDER BY gpu_index, time",
            (t0, t1, *names),
        )
        candidates: list[tuple[int, list[float]]] = []
        for gpu, t in hits:
            g, ts = int(gpu), float(t)  # type: ignore[call-overload, arg-type]
            if candidates and candidates[-1][0] == g and ts - candidates[-1][1][-1] <= gap_s:
                candidates[-1][1].append(ts)
            else:
                candidates.append((g, [ts]))
        runs: list[ThrottleRun] = []
        for gpu, times in candidates:
            for first, last, n in self._split_run(gpu, times, where, names):
                runs.append(self._summarise_run(gpu, first, last, n, gap_s))
        return runs

    def _split_run(
        self, gpu: int, times: list[float], where: str, names: list[str]
    ) -> list[tuple[float, float, int]]:
        """A candidate run is a run when no unthrottled sample lies inside it (one count);
        otherwise it is split at those samples (rare: reasons flickering faster than gap_s)."""
        n_all = self._query(
            "SELECT count(*) FROM gpu_samples WHERE time >= ? AND time <= ? AND gpu_index = ?",
            (times[0], times[-1], gpu),
        )[0][0]
        if n_all == len(times):
            return [(times[0], times[-1], len(times))]
        rows = self._query(
            f"SELECT time, ({where}) FROM gpu_samples WHERE time >= ? AND time <= ?"
            " AND gpu_index = ? ORDER BY time",
            (*names, times[0], times[-1], gpu),
        )
        out: list[tuple[float, float, int]] = []
        run: list[float] = []
        for t, th in rows:
            if th:
                run.append(float(t))  # type: ignore[arg-type]
            elif run:
                out.append((run[0], run[-1], len(run)))
                run = []
        if run:
            out.append((run[0], run[-1], len(run)))
        return out

    def _summarise_run(
        self, gpu: int, first: float, last: float, n: int, gap_s: float
    ) -> ThrottleRun:
        peak, low = self._query(
            "SELECT max(temperature_c), min(100.0 * sm_clock_mhz / sm_clock_max_mhz)"
            " FROM gpu_samples WHERE time >= ? AND time <= ? AND gpu_index = ?",
            (first, last, gpu),
        )[0]
        lists = tuple(
            str(r)
            for (r,) in self._query(
                "SELECT DISTINCT throttle_reasons FROM gpu_samples WHERE time >= ? AND time <= ?"
                " AND gpu_index = ?",
                (first, last, gpu),
            )
        )
        (nxt,) = self._query(
            "SELECT min(time) FROM gpu_samples WHERE time > ? AND time <= ? AND gpu_index = ?",
            (last, last + gap_s, gpu),
        )[0]
        return ThrottleRun(
            gpu, first, last, None if nxt is None else float(nxt), n, lists,  # type: ignore[arg-type]
            None if peak is None else float(peak),  # type: ignore[arg-type]
            None if low is None else round(float(low), 1),  # type: ignore[arg-type]
        )  # fmt: skip

    def gpu_rows_of(self, gpu_index: int, t0: float, t1: float) -> list[GpuRow]:
        cols = ", ".join(_columns(GpuRow))
        rows = self._query(
            f"SELECT {cols} FROM gpu_samples WHERE time >= ? AND time <= ? AND gpu_index = ?"
            " ORDER BY time",
            (t0, t1, gpu_index),
        )
        return [_make(GpuRow, r) for r in rows]

    def gen_rates(self, t0: float, t1: float) -> list[tuple[float, float]]:
        """(time, gen tokens/s) of the samples in [t0, t1] where the server was generating."""
        rows = self._query(
            "SELECT time, gen_tokens_per_s FROM server_samples WHERE time >= ? AND time <= ?"
            " AND gen_tokens_per_s > 0 ORDER BY time",
            (t0, t1),
        )
        return [(float(t), float(g)) for t, g in rows]  # type: ignore[arg-type]

    def gen_total(self, t0: float, t1: float) -> tuple[float, int]:
        """(sum, count) of gen tokens/s over the generating samples of [t0, t1]."""
        row = self._query(
            "SELECT total(gen_tokens_per_s), count(*) FROM server_samples"
            " WHERE time >= ? AND time <= ? AND gen_tokens_per_s > 0",
            (t0, t1),
        )[0]
        return float(row[0]), int(row[1])  # type: ignore[arg-type, call-overload]

    def gpu_peaks(self, t0: float, t1: float) -> list[GpuPeak]:
        """Per GPU: highest VRAM use and highest server VRAM in [t0, t1], with their times
        (SQLite gives the row of a max() aggregate with it)."""
        used = self._query(
            "SELECT gpu_index, max(memory_used_bytes), time, max(memory_total_bytes)"
            " FROM gpu_samples WHERE time >= ? AND time <= ? GROUP BY gpu_index",
            (t0, t1),
        )
        srv = {
            int(g): (b, t)  # type: ignore[call-overload]
            for g, b, t in self._query(
                "SELECT gpu_index, max(server_memory_bytes), time FROM gpu_samples"
                " WHERE time >= ? AND time <= ? AND server_memory_bytes IS NOT NULL"
                " GROUP BY gpu_index",
                (t0, t1),
            )
        }
        out = []
        for g, b, t, total in used:
            sb, st = srv.get(int(g), (None, None))  # type: ignore[call-overload]
            out.append(GpuPeak(int(g), b, t if b is not None else None, total, sb, st))  # type: ignore[arg-type, call-overload]
        return out

    def server_vram_peak(self, t0: float, t1: float) -> tuple[int, float] | None:
        """The server's VRAM summed over its GPUs at its highest sample: (bytes, time)."""
        rows = self._query(
            "SELECT sum(server_memory_bytes) AS s, time FROM gpu_samples"
            " WHERE time >= ? AND time <= ? AND server_memory_bytes IS NOT NULL"
            " GROUP BY time ORDER BY s DESC, time LIMIT 1",
            (t0, t1),
        )
        if not rows or rows[0][0] is None:
            return None
        return int(rows[0][0]), float(rows[0][1])  # type: ignore[call-overload, arg-type]

    def interval_s(self) -> float:
        """The interval the agent recorded at (meta), 1 s when unknown."""
        try:
            return float(self.meta().get("interval_s", "1") or 1)
        except ValueError:
            return 1.0

    def gpu_names(self) -> dict[int, str]:
        rows = self._query("SELECT gpu_index, name FROM gpu_devices ORDER BY last_seen")
        return {int(i): str(n) for i, n in rows if n is not None}  # type: ignore[call-overload]

    def snapshots(self, t0: float, t1: float) -> Iterator[Snapshot]:
        """The recorded samples of [t0, t1] as `Snapshot`s (what replay feeds the dashboard).

        Four range scans, merged by time; alerts are those active at each sample."""
        gpus: dict[float, list[GpuRow]] = {}
        for g in self.gpu_rows(t0, t1):
            gpus.setdefault(g.time, []).append(g)
        hosts = {h.time: h for h in self.host_rows(t0, t1)}
        alerts = self.alerts(t0, t1)
        names = self.gpu_names()
        url = self.meta().get("url", "")
        for s in self.server_rows(t0, t1):
            active = tuple(
                Alert(a.kind, a.severity, a.message, a.since)  # type: ignore[arg-type]
                for a in alerts
                if a.first_seen <= s.time <= a.last_seen
            )
            yield Snapshot(
                time=s.time,
                server=_server(s, url),
                host=_host(hosts.get(s.time)),
                gpus=tuple(_gpu(g, names) for g in gpus.get(s.time, ())),
                alerts=active,
            )

    def meta(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._query("SELECT key, value FROM meta")}


def _server(s: ServerRow, url: str) -> ServerStatus:
    return ServerStatus(
        url=url,
        health=s.health,  # type: ignore[arg-type]
        detail=s.detail or "",
        model_path=s.model,
        n_ctx=s.n_ctx,
        total_slots=s.slots_total,
        pid=s.pid,
        gen_tokens_per_s=s.gen_tokens_per_s,
        prompt_tokens_per_s=s.prompt_tokens_per_s,
        requests_processing=s.requests_processing,
        requests_deferred=s.requests_deferred,
        prompt_tokens_total=s.prompt_tokens_total,
        tokens_predicted_total=s.tokens_predicted_total,
        process_start_time=s.process_start_time,
    )


def _host(h: HostRow | None) -> HostStats:
    if h is None:
        return HostStats()
    loads = (h.load_1m, h.load_5m, h.load_15m)
    process = None
    if h.process_pid is not None:
        process = ProcessStats(
            pid=h.process_pid,
            cpu_percent=h.process_cpu_percent,
            rss_bytes=h.process_rss_bytes,
            threads=h.process_threads,
            uptime_s=h.process_uptime_s,
            status=h.process_status,
        )
    return HostStats(
        cpu_percent=h.cpu_percent,
        memory_used_bytes=h.memory_used_bytes,
        memory_total_bytes=h.memory_total_bytes,
        load_avg=None if None in loads else (loads[0], loads[1], loads[2]),  # type: ignore[arg-type]
        process=process,
    )


def parse_processes(text: str | None) -> tuple[GpuProcess, ...] | None:
    if text is None:
        return None
    out = []
    for item in text.split(","):
        pid, _, mem = item.partition(":")
        if pid.isdigit():
            out.append(GpuProcess(int(pid), int(mem) if mem.isdigit() else None))
    return tuple(out)


def _gpu(g: GpuRow, names: dict[int, str]) -> GpuSample:
    return GpuSample(
        index=g.gpu_index,
        name=names.get(g.gpu_index),
        lost=bool(g.lost),
        memory_used_bytes=g.memory_used_bytes,
        memory_free_bytes=g.memory_free_bytes,
        memory_total_bytes=g.memory_total_bytes,
        utilization_percent=g.utilization_percent,
        memory_utilization_percent=g.memory_utilization_percent,
        temperature_c=g.temperature_c,
        temp_slowdown_c=g.temp_slowdown_c,
        temp_shutdown_c=g.temp_shutdown_c,
        temp_gpu_max_c=g.temp_gpu_max_c,
        sm_clock_mhz=g.sm_clock_mhz,
        sm_clock_max_mhz=g.sm_clock_max_mhz,
        graphics_clock_mhz=g.graphics_clock_mhz,
        mem_clock_mhz=g.mem_clock_mhz,
        mem_clock_max_mhz=g.mem_clock_max_mhz,
        power_w=g.power_w,
        power_limit_w=g.power_limit_w,
        fan_percent=g.fan_percent,
        pstate=g.pstate,
        persistence_mode=g.persistence_mode,
        throttle_reasons=g.reasons,
        throttled_thermal_percent=g.throttled_thermal_percent,
        throttled_power_percent=g.throttled_power_percent,
        processes=parse_processes(g.processes),
        used_by_server=g.used_by_server,
        server_memory_bytes=g.server_memory_bytes,
    )
