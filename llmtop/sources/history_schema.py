"""The history database's schema: typed tables a user can query with plain `sqlite3`.

The schema is the sum of its migrations: a new database runs every step from 1, an old one the
steps past its `schema_version`, so the upgrade path is the path every database takes. A step
is appended, never edited (tests build a real version-1 file and upgrade it).

Times are unix seconds (REAL, `datetime(time, 'unixepoch', 'localtime')` in sqlite3), minutes
are the unix second a minute starts (INTEGER). Every raw table is keyed by time, so a window
(replay, report) is one range scan. Text columns hold what the operator reads, redacted.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

SCHEMA_VERSION = 2

_V1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE gpu_devices (
  gpu_index INTEGER NOT NULL, uuid TEXT NOT NULL DEFAULT '', name TEXT, pci_bus_id TEXT,
  first_seen REAL NOT NULL, last_seen REAL NOT NULL,
  PRIMARY KEY (gpu_index, uuid)) WITHOUT ROWID;
CREATE TABLE gpu_samples (
  time REAL NOT NULL, gpu_index INTEGER NOT NULL, lost INTEGER,
  memory_used_bytes INTEGER, memory_free_bytes INTEGER, memory_total_bytes INTEGER,
  utilization_percent REAL, memory_utilization_percent REAL,
  temperature_c REAL, temp_slowdown_c REAL, temp_shutdown_c REAL, temp_gpu_max_c REAL,
  sm_clock_mhz INTEGER, sm_clock_max_mhz INTEGER, graphics_clock_mhz INTEGER,
  mem_clock_mhz INTEGER, mem_clock_max_mhz INTEGER,
  power_w REAL, power_limit_w REAL, fan_percent REAL, pstate INTEGER, persistence_mode INTEGER,
  throttle_reasons TEXT, throttled_thermal_percent REAL, throttled_power_percent REAL,
  processes TEXT, used_by_server INTEGER, server_memory_bytes INTEGER,
  PRIMARY KEY (time, gpu_index)) WITHOUT ROWID;
CREATE TABLE server_samples (
  time REAL PRIMARY KEY, health TEXT NOT NULL, detail TEXT, state TEXT, pid INTEGER,
  model TEXT, n_ctx INTEGER, slots_total INTEGER, slots_busy INTEGER,
  gen_tokens_per_s REAL, prompt_tokens_per_s REAL,
  requests_processing INTEGER, requests_deferred INTEGER,
  prompt_tokens_total INTEGER, tokens_predicted_total INTEGER,
  process_start_time REAL, restarts INTEGER) WITHOUT ROWID;
CREATE TABLE host_samples (
  time REAL PRIMARY KEY, cpu_percent REAL, memory_used_bytes INTEGER, memory_total_bytes INTEGER,
  load_1m REAL, load_5m REAL, load_15m REAL,
  process_pid INTEGER, process_cpu_percent REAL, process_rss_bytes INTEGER,
  process_threads INTEGER, process_status TEXT, process_uptime_s REAL) WITHOUT ROWID;
CREATE TABLE alerts (
  id INTEGER PRIMARY KEY, kind TEXT NOT NULL, severity TEXT NOT NULL, message TEXT NOT NULL,
  since REAL NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL, ended REAL,
  UNIQUE (kind, since));
CREATE INDEX alerts_last_seen ON alerts (last_seen);
CREATE TABLE events (
  id INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL,
  message TEXT NOT NULL, source TEXT NOT NULL, lines TEXT);
CREATE INDEX events_time ON events (time);
"""

_V2 = """
ALTER TABLE server_samples ADD COLUMN sleeping INTEGER;
CREATE TABLE probes (
  time REAL PRIMARY KEY, ok INTEGER NOT NULL, error TEXT, tokens INTEGER,
  ttft_ms REAL, itl_ms_p50 REAL, itl_ms_p95 REAL, gen_tokens_per_s REAL,
  prompt_tokens_per_s REAL, total_ms REAL) WITHOUT ROWID;
CREATE TABLE gpu_minutes (
  minute INTEGER NOT NULL, gpu_index INTEGER NOT NULL, samples INTEGER NOT NULL,
  temperature_c_min REAL, temperature_c_avg REAL, temperature_c_max REAL,
  sm_clock_mhz_min REAL, sm_clock_mhz_avg REAL, sm_clock_mhz_max REAL,
  utilization_percent_min REAL, utilization_percent_avg REAL, utilization_percent_max REAL,
  power_w_min REAL, power_w_avg REAL, power_w_max REAL,
  memory_used_bytes_min INTEGER, memory_used_bytes_avg REAL, memory_used_bytes_max INTEGER,
  server_memory_bytes_max INTEGER, throttled_samples INTEGER NOT NULL,
  PRIMARY KEY (minute, gpu_index)) WITHOUT ROWID;
CREATE TABLE server_minutes (
  minute INTEGER PRIMARY KEY, samples INTEGER NOT NULL, ok_samples INTEGER NOT NULL,
  gen_tokens_per_s_min REAL, gen_tokens_per_s_avg REAL, gen_tokens_per_s_max REAL,
  prompt_tokens_per_s_min REAL, prompt_tokens_per_s_avg REAL, prompt_tokens_per_s_max REAL,
  slots_busy_avg REAL, slots_busy_max INTEGER, requests_deferred_max INTEGER) WITHOUT ROWID;
CREATE TABLE host_minutes (
  minute INTEGER PRIMARY KEY, samples INTEGER NOT NULL,
  cpu_percent_min REAL, cpu_percent_avg REAL, cpu_percent_max REAL,
  memory_used_bytes_max INTEGER, process_rss_bytes_max INTEGER) WITHOUT ROWID;
"""

# Step n takes a database from version n-1 to n.
MIGRATIONS: tuple[str, ...] = (_V1, _V2)

# Where a throttle counts: the reasons column holds names joined by this.
REASONS_SEPARATOR = ","


class SchemaError(Exception):
    """The file's schema is not one this llmtop can use (newer, or not a history database)."""


SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_header_problem(path: Path) -> str | None:
    """Why `path` cannot be an llmtop history DB from its first bytes (None: it may be one; an
    empty file is a DB SQLite has not written yet). Checked before sqlite3 opens it, so a stray
    file gets words instead of SQLite's "file is not a database" later."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as exc:
        return f"cannot read it ({exc.strerror or exc})"
    if head and head != SQLITE_MAGIC:
        return "not an SQLite file, so not an llmtop history database"
    return None


def read_version(conn: sqlite3.Connection) -> int | None:
    """The file's schema version; None for an empty database (no tables at all)."""
    has = conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
    ).fetchone()
    if has is None:
        other = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if other:
            raise SchemaError("has tables but no schema_version: not an llmtop history database")
        return None
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to SCHEMA_VERSION (one transaction per step); the version it had.

    Raises SchemaError for a database from a newer llmtop. *conn* is in autocommit mode."""
    version = read_version(conn)
    before = version or 0
    if version is None:
        # auto_vacuum only takes effect before the first table: lets --max-size give space back
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied REAL)")
        conn.execute("COMMIT")
        version = 0
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"was written by a newer llmtop (schema {version}; this llmtop knows up to "
            f"{SCHEMA_VERSION}): upgrade llmtop to read or record it"
        )
    for step in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[step - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (step, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return before
