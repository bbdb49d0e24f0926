"""The history database on its own: rows round-trip, alert spans, events with redacted lines,
per-minute aggregates, retention by age and size, file modes, migrations from version 1, and
the files it must refuse (not SQLite, corrupt, newer schema) — in words, exit 2, no traceback.

Snapshots are built here with times chosen by the test (the recorder keeps time by the samples,
so a day of history takes a second to write).
"""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from llmtop.agent.recorder import HistoryRecorder, RecorderOptions, SinkError
from llmtop.snapshot import (
    Alert,
    GpuProcess,
    GpuSample,
    HostStats,
    ProcessStats,
    ServerStatus,
    SlotStatus,
    Snapshot,
)
from llmtop.sources.history_db import HistoryDB, HistoryError
from llmtop.sources.history_schema import SCHEMA_VERSION
from llmtop.sources.logs import LogStore

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_795_615_200.0  # 2026-11-25 14:00:00 UTC, a minute boundary
SECRET = "sk-history-secret-4242"


def snap(t: float, *, reasons: tuple[str, ...] = (), alerts: tuple[Alert, ...] = (),
         health: str = "ok", pid: int = 4242, gen: float | None = 40.0,
         temp: float = 70.0) -> Snapshot:  # fmt: skip
    gpu = GpuSample(
        index=0, name="NVIDIA H100", uuid="GPU-x", pci_bus_id="00:1B.0",
        memory_used_bytes=20 << 30, memory_free_bytes=60 << 30, memory_total_bytes=80 << 30,
        utilization_percent=93.0, temperature_c=temp, temp_slowdown_c=87.0, sm_clock_mhz=1980,
        sm_clock_max_mhz=1980, power_w=500.0, throttle_reasons=reasons,
        processes=(GpuProcess(pid, 4 << 30),), used_by_server=True, server_memory_bytes=4 << 30,
        persistence_mode=True,
    )  # fmt: skip
    server = ServerStatus(
        url="http://127.0.0.1:8080", health=health,  # type: ignore[arg-type]
        detail=f"ok --api-key {SECRET}" if health == "ok" else "connection refused",
        model_path="/models/tiny.gguf", n_ctx=512, total_slots=2,
        slots=(SlotStatus(0, 512, True), SlotStatus(1, 512, False)),
        pid=pid, gen_tokens_per_s=gen, prompt_tokens_per_s=100.0, requests_deferred=1,
    )  # fmt: skip
    host = HostStats(cpu_percent=12.0, memory_used_bytes=1 << 30, memory_total_bytes=8 << 30,
                     load_avg=(0.5, 0.4, 0.3),
                     process=ProcessStats(pid, 50.0, 1 << 29, 8, 10.0, status="running"))  # fmt: skip
    return Snapshot(time=t, server=server, host=host, gpus=(gpu,), alerts=alerts)


def record(path: Path, snaps: list[Snapshot], **kw: object) -> HistoryRecorder:
    opts = RecorderOptions(**kw)  # type: ignore[arg-type]
    rec = HistoryRecorder.open(path, opts, secrets=(SECRET,), report=lambda _line: None)
    for s in snaps:
        rec.on_snapshot(s)
    return rec


def test_rows_round_trip_as_typed_columns(tmp_path: Path) -> None:
    db_path = tmp_path / "state" / "h.sqlite"
    record(db_path, [snap(T0 + i) for i in range(5)]).close()
    # plain sqlite3 reads typed columns
    c = sqlite3.connect(db_path)
    row = c.execute("SELECT temperature_c, sm_clock_mhz, throttle_reasons, server_memory_bytes,"
                    " processes FROM gpu_samples ORDER BY time LIMIT 1").fetchone()  # fmt: skip
    assert row == (70.0, 1980, "", 4 << 30, f"4242:{4 << 30}")
    assert c.execute("SELECT slots_busy, requests_deferred, sleeping FROM server_samples"
                     " LIMIT 1").fetchone() == (1, 1, 0)  # fmt: skip
    assert c.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    assert c.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    c.close()
    with HistoryDB.open(db_path) as db:
        (first, *_) = list(db.snapshots(T0, T0 + 10))
        g = first.gpus[0]
        assert g.name == "NVIDIA H100" and g.temperature_c == 70.0 and g.throttle_reasons == ()
        assert g.processes == (GpuProcess(4242, 4 << 30),) and g.persistence_mode is True
        assert first.server.health == "ok" and first.host.process is not None
        assert db.time_range() is not None and db.time_range().end == T0 + 4  # type: ignore[union-attr]
    # secrets never stored; file and directory are the owner's
    assert SECRET.encode() not in db_path.read_bytes()
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700


def test_alert_spans_and_events_with_redacted_lines(tmp_path: Path) -> None:
    store = LogStore()
    path = tmp_path / "h.sqlite"
    rec = HistoryRecorder.open(path, RecorderOptions(), log_store=store, secrets=(SECRET,),
                               report=lambda _l: None)  # fmt: skip
    hot = Alert("throttled", "warning", "GPU 0 throttled", T0 + 2)
    for i in range(10):
        t = T0 + i
        if i == 6:
            store.append(f"loading with --api-key {SECRET}", "stderr", time=t - 0.5)
            store.append("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9000 MiB on "
                         "device 0: cudaMalloc failed: out of memory", "stderr", time=t - 0.1)  # fmt: skip
        rec.on_snapshot(snap(t, alerts=(hot,) if 2 <= i < 5 else (),
                             health="unreachable" if i == 7 else "ok",
                             pid=4242 if i < 7 else 5151))  # fmt: skip
    rec.close()
    with HistoryDB.open(path) as db:
        (a,) = db.alerts(T0, T0 + 100)
        assert (a.kind, a.since, a.last_seen, a.ended) == ("throttled", T0 + 2, T0 + 4, T0 + 5)
        events = db.events(T0, T0 + 100)
    kinds = [e.kind for e in events]
    assert "oom" in kinds and "server_down" in kinds and "server_up" in kinds
    assert "restart" in kinds
    oom = next(e for e in events if e.kind == "oom")
    assert oom.lines is not None and "out of memory" in oom.lines and "--api-key ***" in oom.lines
    assert SECRET.encode() not in path.read_bytes()


def test_thermal_points_are_what_whole_snapshots_give_the_verdict(tmp_path: Path) -> None:
    """Replay's verdict after a jump reads narrow rows (`thermal_points`) instead of whole
    snapshots: the same points, GPU by GPU, a lost GPU and unknown reasons or rates included."""
    import dataclasses

    from llmtop.diagnosis.thermal import ThermalPoint
    from llmtop.sources.history_plot import thermal_points

    snaps = []
    for i in range(12):
        s = snap(T0 + i, reasons=("HwThermalSlowdown",) if i % 3 == 0 else (),
                 gen=None if i == 5 else 40.0 - i, temp=80.0 + i)  # fmt: skip
        second = dataclasses.replace(s.gpus[0], index=1, lost=i == 7, sm_clock_mhz=None,
                                     throttle_reasons=None if i == 4 else ("SwPowerCap",))  # fmt: skip
        snaps.append(dataclasses.replace(s, gpus=(s.gpus[0], second)))
    path = tmp_path / "h.sqlite"
    record(path, snaps).close()
    with HistoryDB.open(path) as db:
        whole = [
            ThermalPoint.of(s.time, g, s.server.gen_tokens_per_s)
            for s in db.snapshots(T0 + 2, T0 + 10)
            if s.time < T0 + 10
            for g in s.gpus
            if not g.lost
        ]
        narrow = thermal_points(db, T0 + 2, T0 + 10)
    assert narrow == whole
    assert len(narrow) == 15 and all(p.gpu_index == 0 for p in narrow if p.time == T0 + 7)


def test_focus_moved_records_the_other_servers_log(tmp_path: Path) -> None:
    """`--record` with several servers: when the focus moves, the samples are the other
    server's, and so must its events be — not the first server's log any more; the other
    store's secrets are redacted too."""
    first, second = LogStore(), LogStore()
    other_key = "sk-other-server-7777"
    second.redactor.add(other_key)
    path = tmp_path / "h.sqlite"
    rec = HistoryRecorder.open(path, RecorderOptions(), log_store=first, report=lambda _l: None)
    rec.on_snapshot(snap(T0))
    rec.use_log(second)
    first.append("cudaMalloc failed: out of memory (first server)", "stderr", time=T0 + 0.5)
    second.append(f"starting with --api-key {other_key}", "journal", time=T0 + 0.6)
    second.append("cudaMalloc failed: out of memory (second server)", "journal", time=T0 + 0.7)
    rec.on_snapshot(snap(T0 + 1))
    rec.close()
    with HistoryDB.open(path) as db:
        ooms = [e for e in db.events(T0, T0 + 100) if e.kind == "oom"]
    assert len(ooms) == 1 and "second server" in ooms[0].message
    assert ooms[0].lines is not None and "first server" not in ooms[0].lines
    assert other_key.encode() not in path.read_bytes()


def test_minute_aggregates_and_retention_by_age(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    # 30 minutes at 5 s; raw kept 10 min, aggregates 20 min
    snaps = [snap(T0 + i * 5, temp=60 + (i % 12)) for i in range(30 * 12)]
    record(path, snaps, interval_s=5, keep_s=600, keep_aggregates_s=1200).close()
    c = sqlite3.connect(path)
    lo, hi, n = c.execute("SELECT min(time), max(time), count(*) FROM gpu_samples").fetchone()
    end = T0 + (30 * 12 - 1) * 5
    assert lo >= end - 600 - 60 and hi == end  # raw: the last --keep (give or take a minute)
    rows = c.execute("SELECT minute, samples, temperature_c_min, temperature_c_max,"
                     " temperature_c_avg FROM gpu_minutes ORDER BY minute").fetchall()  # fmt: skip
    assert rows and all(r[1] == 12 and r[2] == 60 and r[3] == 71 for r in rows)
    assert rows[0][0] >= end - 1200 - 120  # aggregates: the last --keep-aggregates
    assert rows[-1][0] == int(end // 60) * 60 - 60  # every finished minute is aggregated
    assert c.execute("SELECT count(*) FROM server_minutes").fetchone()[0] == len(rows)


def test_max_size_removes_the_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    cap = 256 * 1024
    rec = record(path, [snap(T0 + i) for i in range(4 * 3600)], max_size_bytes=cap)
    assert rec.used_bytes() <= cap
    rec.close()
    assert path.stat().st_size <= cap * 1.5  # incremental vacuum gave the space back
    with HistoryDB.open(path) as db:
        rng = db.time_range()
        assert rng is not None and rng.end == T0 + 4 * 3600 - 1  # the newest are kept
        assert rng.start > T0 + 3600  # the oldest went


# A version-1 database exactly as the first schema wrote it (frozen here on purpose).
V1_SQL = """
CREATE TABLE schema_version (version INTEGER NOT NULL, applied REAL);
INSERT INTO schema_version VALUES (1, 0);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID;
CREATE TABLE gpu_devices (gpu_index INTEGER NOT NULL, uuid TEXT NOT NULL DEFAULT '', name TEXT,
  pci_bus_id TEXT, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
  PRIMARY KEY (gpu_index, uuid)) WITHOUT ROWID;
CREATE TABLE gpu_samples (time REAL NOT NULL, gpu_index INTEGER NOT NULL, lost INTEGER,
  memory_used_bytes INTEGER, memory_free_bytes INTEGER, memory_total_bytes INTEGER,
  utilization_percent REAL, memory_utilization_percent REAL, temperature_c REAL,
  temp_slowdown_c REAL, temp_shutdown_c REAL, temp_gpu_max_c REAL, sm_clock_mhz INTEGER,
  sm_clock_max_mhz INTEGER, graphics_clock_mhz INTEGER, mem_clock_mhz INTEGER,
  mem_clock_max_mhz INTEGER, power_w REAL, power_limit_w REAL, fan_percent REAL, pstate INTEGER,
  persistence_mode INTEGER, throttle_reasons TEXT, throttled_thermal_percent REAL,
  throttled_power_percent REAL, processes TEXT, used_by_server INTEGER,
  server_memory_bytes INTEGER, PRIMARY KEY (time, gpu_index)) WITHOUT ROWID;
CREATE TABLE server_samples (time REAL PRIMARY KEY, health TEXT NOT NULL, detail TEXT,
  state TEXT, pid INTEGER, model TEXT, n_ctx INTEGER, slots_total INTEGER, slots_busy INTEGER,
  gen_tokens_per_s REAL, prompt_tokens_per_s REAL, requests_processing INTEGER,
  requests_deferred INTEGER, prompt_tokens_total INTEGER, tokens_predicted_total INTEGER,
  process_start_time REAL, restarts INTEGER) WITHOUT ROWID;
CREATE TABLE host_samples (time REAL PRIMARY KEY, cpu_percent REAL, memory_used_bytes INTEGER,
  memory_total_bytes INTEGER, load_1m REAL, load_5m REAL, load_15m REAL, process_pid INTEGER,
  process_cpu_percent REAL, process_rss_bytes INTEGER, process_threads INTEGER,
  process_status TEXT, process_uptime_s REAL) WITHOUT ROWID;
CREATE TABLE alerts (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, severity TEXT NOT NULL,
  message TEXT NOT NULL, since REAL NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
  ended REAL, UNIQUE (kind, since));
CREATE INDEX alerts_last_seen ON alerts (last_seen);
CREATE TABLE events (id INTEGER PRIMARY KEY, time REAL NOT NULL, kind TEXT NOT NULL,
  severity TEXT NOT NULL, message TEXT NOT NULL, source TEXT NOT NULL, lines TEXT);
CREATE INDEX events_time ON events (time);
"""


def make_v1(path: Path) -> None:
    c = sqlite3.connect(path)
    c.executescript(V1_SQL)
    for i in range(20):
        hot = "HwThermalSlowdown" if 5 <= i < 10 else ""
        c.execute("INSERT INTO gpu_samples (time, gpu_index, temperature_c, sm_clock_mhz,"
                  " sm_clock_max_mhz, throttle_reasons) VALUES (?, 0, ?, ?, 1980, ?)",
                  (T0 + i, 88 if hot else 70, 1410 if hot else 1980, hot))  # fmt: skip
        c.execute("INSERT INTO server_samples (time, health, gen_tokens_per_s) VALUES (?, 'ok', ?)",
                  (T0 + i, 30.0 if hot else 50.0))  # fmt: skip
    c.commit()
    c.close()


def test_v1_database_is_upgraded_by_the_agent_and_its_samples_kept(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    make_v1(path)
    rec = HistoryRecorder.open(path, RecorderOptions(), report=lambda _l: None)
    rec.on_snapshot(snap(T0 + 100))
    rec.close()
    c = sqlite3.connect(path)
    assert c.execute("SELECT max(version) FROM schema_version").fetchone() == (SCHEMA_VERSION,)
    assert c.execute("SELECT count(*) FROM server_samples").fetchone() == (21,)
    assert c.execute("SELECT sleeping FROM server_samples WHERE time = ?", (T0,)).fetchone() == (
        None,
    )
    assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    c.close()


def test_v1_database_is_upgraded_by_report_too(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    make_v1(path)
    p = llmtop("report", "--db", str(path), "--from", str(T0), "--to", str(T0 + 60), "--json")
    assert p.returncode == 0, p.stderr
    import json

    (span,) = json.loads(p.stdout)["throttle_spans"]
    assert (span["start"], span["end"], span["reasons"]) == (T0 + 5, T0 + 10, ["HwThermalSlowdown"])
    assert (span["gen_tokens_per_s_during"], span["gen_tokens_per_s_outside"]) == (30.0, 50.0)


def llmtop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmtop", *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT)  # fmt: skip


def _newer(path: Path) -> None:
    record(path, [snap(T0)]).close()
    c = sqlite3.connect(path)
    c.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    c.commit()
    c.close()


def _not_sqlite(path: Path) -> None:
    path.write_text("GGUF this is a model, not a database\n" * 100)


def _corrupt(path: Path) -> None:
    record(path, [snap(T0 + i) for i in range(200)]).close()
    data = bytearray(path.read_bytes())
    data[100:] = b"\xa5" * (len(data) - 100)  # SQLite header kept, every page garbage
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_not_sqlite, "not an SQLite file"),
        (_corrupt, "not a readable llmtop history database"),
        (_newer, "newer llmtop"),
    ],
    ids=["not-sqlite", "corrupt", "newer-schema"],
)
def test_unusable_files_are_refused_in_words(make, words: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.sqlite"
    make(path)
    before = path.read_bytes()
    rep = llmtop("report", "--db", str(path), "--since", "1000d")
    assert rep.returncode == 2, rep.stdout + rep.stderr
    assert str(path) in rep.stderr and "Traceback" not in rep.stderr
    if make is not _corrupt:
        assert words in rep.stderr, rep.stderr
    # the agent refuses before it samples (no server needed: the database is opened first)
    agent = llmtop("agent", "--url", "http://127.0.0.1:9", "--db", str(path))
    assert agent.returncode == 2 and str(path) in agent.stderr, agent.stderr
    assert "Traceback" not in agent.stderr
    if make is _newer:
        assert "newer llmtop" in agent.stderr
    else:
        assert path.read_bytes() == before  # refused, not "repaired"
    with pytest.raises((HistoryError, SinkError)):
        HistoryDB.open(path).time_range()


def test_a_window_outside_the_recording_says_which_range_exists(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    record(path, [snap(T0 + i) for i in range(10)]).close()
    p = llmtop("report", "--db", str(path), "--since", "1h")
    assert p.returncode == 2
    assert "holds 2026-11-25" in p.stderr and "Traceback" not in p.stderr
    bad = llmtop("report", "--db", str(path), "--from", "yesterday-ish")
    assert bad.returncode == 2 and "not a time" in bad.stderr
    missing = llmtop("report", "--db", str(tmp_path / "none.sqlite"))
    assert missing.returncode == 2 and "none.sqlite" in missing.stderr


def test_report_text_has_the_tables(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    snaps = [snap(T0 + i, reasons=("SwPowerCap",) if 3 <= i < 6 else (), gen=20.0 if 3 <= i < 6
                  else 40.0) for i in range(10)]  # fmt: skip
    record(path, snaps).close()
    p = llmtop("report", "--db", str(path), "--from", str(T0), "--to", str(T0 + 20))
    assert p.returncode == 0, p.stderr
    for title in ("Throttled spans", "Alerts", "Events", "VRAM peaks", "Latency per hour"):
        assert title in p.stdout
    assert "SwPowerCap" in p.stdout and "20.0 tok/s" in p.stdout and "40.0 tok/s" in p.stdout
    assert SECRET not in p.stdout
