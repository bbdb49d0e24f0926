"""What the GPU plots need from the history database, per time bucket: one query per table.

The GPU tab's 1 h and 24 h windows (and replay after a jump) are drawn from the recording, not
rebuilt from thousands of `Snapshot`s: a GROUP BY over the raw samples gives each bucket's
temperature and SM-clock range, the worst throttle in it and the mean gen tokens/s (5-s
buckets of an hour: ~15 000 rows for 4 GPUs, a few ms); a day is read from the per-minute
aggregates the agent keeps (1 440 rows per GPU). Blocking: callers run it in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from llmtop.diagnosis.thermal import LIMITING, ThermalPoint
from llmtop.snapshot import GpuSample, HostStats, ProcessStats, ServerStatus, Snapshot

if TYPE_CHECKING:  # pragma: no cover - typing only; sqlite3 stays off the dashboard's start-up
    from llmtop.sources.history_db import HistoryDB

# What a bucket's throttle column holds: the worst limit seen in it.
NOT_THROTTLED, POWER_LIMITED, THERMAL = 0, 1, 2
_THERMAL_NAMES = tuple(r for r in LIMITING if "Thermal" in r or r == "HwSlowdown")
_POWER_NAMES = tuple(r for r in LIMITING if r not in _THERMAL_NAMES)
MINUTE_S = 60.0


def throttle_level(reasons: tuple[str, ...] | None) -> int:
    """The plot's throttle level of one sample's reasons (GpuIdle and the like count 0)."""
    if not reasons:
        return NOT_THROTTLED
    if any(r in _THERMAL_NAMES for r in reasons):
        return THERMAL
    if any(r in _POWER_NAMES for r in reasons):
        return POWER_LIMITED
    return NOT_THROTTLED


@dataclass(frozen=True)
class GpuBucket:
    """One GPU over one bucket (`time` is the bucket's start)."""

    time: float
    temp_min: float | None
    temp_max: float | None
    clock_min_pct: float | None  # SM clock as % of its max clock
    clock_max_pct: float | None
    throttle: int  # NOT_THROTTLED / POWER_LIMITED / THERMAL
    slowdown_c: float | None = None
    shutdown_c: float | None = None


@dataclass(frozen=True)
class PlotHistory:
    """The buckets of [start, end]: per GPU, and gen tokens/s (mean) of the server."""

    start: float
    end: float
    bucket_s: float
    gpus: dict[int, list[GpuBucket]] = field(default_factory=dict)
    gen: list[tuple[float, float | None]] = field(default_factory=list)


def _reason_case(names: tuple[str, ...]) -> str:
    return " OR ".join(f"instr(throttle_reasons, '{n}') > 0" for n in names) or "0"


def _f(v: object) -> float | None:
    """A SQLite number as a float (None for NULL or anything that is not a number)."""
    return float(v) if isinstance(v, int | float) else None


def _i(v: object) -> int:
    """A SQLite integer column (gpu_index, bucket): an int (0 if it is not a number)."""
    return int(v) if isinstance(v, int | float) else 0


def _oi(v: object) -> int | None:
    """A nullable SQLite integer column (a pid, a clock): an int or None."""
    return int(v) if isinstance(v, int | float) else None


def _t(v: object) -> float:
    """A NOT NULL time or minute column as a float."""
    return float(v) if isinstance(v, int | float) else 0.0


def read_plot_history(db: HistoryDB, start: float, end: float, bucket_s: float) -> PlotHistory:
    """The buckets of *bucket_s* seconds (aligned to multiples of it) over [start, end]."""
    out = PlotHistory(start, end, bucket_s)
    if bucket_s >= MINUTE_S:
        _from_minutes(db, out)
        return out
    b = max(bucket_s, 1e-3)
    level = (
        f"CASE WHEN throttle_reasons IS NULL OR throttle_reasons = '' THEN 0"
        f" WHEN {_reason_case(_THERMAL_NAMES)} THEN {THERMAL}"
        f" WHEN {_reason_case(_POWER_NAMES)} THEN {POWER_LIMITED} ELSE 0 END"
    )
    rows = db._query(  # noqa: SLF001 - the DB's own error mapping
        f"SELECT gpu_index, CAST(time / ? AS INTEGER) AS bucket, min(temperature_c),"
        f" max(temperature_c), min(100.0 * sm_clock_mhz / sm_clock_max_mhz),"
        f" max(100.0 * sm_clock_mhz / sm_clock_max_mhz), max({level}), max(temp_slowdown_c),"
        " max(temp_shutdown_c) FROM gpu_samples WHERE time >= ? AND time <= ?"
        " GROUP BY gpu_index, bucket ORDER BY gpu_index, bucket",
        (b, start, end),
    )
    for g, k, t_lo, t_hi, c_lo, c_hi, thr, slow, shut in rows:
        out.gpus.setdefault(_i(g), []).append(
            GpuBucket(
                _i(k) * b,
                _f(t_lo),
                _f(t_hi),
                _f(c_lo),
                _f(c_hi),
                _i(thr),
                _f(slow),
                _f(shut),
            )  # fmt: skip
        )
    gen = db._query(  # noqa: SLF001
        "SELECT CAST(time / ? AS INTEGER) AS bucket, avg(gen_tokens_per_s) FROM server_samples"
        " WHERE time >= ? AND time <= ? GROUP BY bucket ORDER BY bucket",
        (b, start, end),
    )
    out.gen.extend((_i(k) * b, _f(v)) for k, v in gen)
    return out


def _from_minutes(db: HistoryDB, out: PlotHistory) -> None:
    """A day and more: the agent's per-minute aggregates (throttled minutes count as thermal:
    the aggregate does not say which limit it was)."""
    limits = {
        _i(g): (_f(mx), _f(sl), _f(sh))
        for g, mx, sl, sh in db._query(  # noqa: SLF001
            "SELECT gpu_index, max(sm_clock_max_mhz), max(temp_slowdown_c), max(temp_shutdown_c)"
            " FROM gpu_samples WHERE time >= ? AND time <= ? GROUP BY gpu_index",
            (out.start - 86400.0 * 7, out.end),
        )
    }
    rows = db._query(  # noqa: SLF001
        "SELECT gpu_index, minute, temperature_c_min, temperature_c_max, sm_clock_mhz_min,"
        " sm_clock_mhz_max, throttled_samples FROM gpu_minutes WHERE minute >= ? AND minute <= ?"
        " ORDER BY gpu_index, minute",
        (out.start - MINUTE_S, out.end),
    )
    for g, minute, t_lo, t_hi, c_lo, c_hi, throttled in rows:
        gi = _i(g)
        max_mhz, slow, shut = limits.get(gi, (None, None, None))

        def pct(v: object, top: float | None = max_mhz) -> float | None:
            fv = _f(v)
            return None if fv is None or not top else 100.0 * fv / top

        out.gpus.setdefault(gi, []).append(
            GpuBucket(
                _t(minute),
                _f(t_lo),
                _f(t_hi),
                pct(c_lo),
                pct(c_hi),
                THERMAL if throttled else NOT_THROTTLED,
                slow,
                shut,
            )  # fmt: skip
        )
    gen = db._query(  # noqa: SLF001
        "SELECT minute, gen_tokens_per_s_avg FROM server_minutes WHERE minute >= ? AND minute <= ?"
        " ORDER BY minute",
        (out.start - MINUTE_S, out.end),
    )
    out.gen.extend((_t(m), _f(v)) for m, v in gen)


def plot_snapshots(db: HistoryDB, start: float, end: float) -> list[Snapshot]:
    """Thin snapshots of [start, end] holding only what the dashboard's sparklines plot
    (tokens/s, CPU, GPU temperature and SM clock): three narrow range scans, ~10× cheaper than
    rebuilding whole snapshots (replay refills 10 minutes of them after every jump)."""
    gpus: dict[float, list[GpuSample]] = {}
    for t, i, temp, sm in db._query(  # noqa: SLF001
        "SELECT time, gpu_index, temperature_c, sm_clock_mhz FROM gpu_samples"
        " WHERE time >= ? AND time <= ? ORDER BY time, gpu_index",
        (start, end),
    ):
        gpus.setdefault(_t(t), []).append(
            GpuSample(index=_i(i), temperature_c=_f(temp), sm_clock_mhz=_oi(sm))
        )
    hosts = {
        _t(t): (cpu, pid, pcpu)
        for t, cpu, pid, pcpu in db._query(  # noqa: SLF001
            "SELECT time, cpu_percent, process_pid, process_cpu_percent FROM host_samples"
            " WHERE time >= ? AND time <= ?",
            (start, end),
        )
    }
    out = []
    for t, gen, prompt in db._query(  # noqa: SLF001
        "SELECT time, gen_tokens_per_s, prompt_tokens_per_s FROM server_samples"
        " WHERE time >= ? AND time <= ? ORDER BY time",
        (start, end),
    ):
        ts = _t(t)
        cpu, pid, pcpu = hosts.get(ts, (None, None, None))
        pid_i = _oi(pid)
        proc = ProcessStats(pid_i, _f(pcpu)) if pid_i is not None else None
        out.append(
            Snapshot(
                time=ts,
                server=ServerStatus(
                    url="", gen_tokens_per_s=_f(gen), prompt_tokens_per_s=_f(prompt)
                ),
                host=HostStats(cpu_percent=_f(cpu), process=proc),
                gpus=tuple(gpus.get(ts, ())),
            )
        )
    return out


def read_plot_file(
    path: str | Path, url: str | None, start: float, end: float, bucket_s: float
) -> PlotHistory | None:
    """`read_plot_history` of the DB at *path* when it records the server at *url* (None:
    any server — replay); None when there is no readable DB of it."""
    from llmtop.sources.history_db import HistoryDB, HistoryError
    from llmtop.sources.prefill import same_server

    p = Path(path)
    if not p.is_file():
        return None
    try:
        with HistoryDB.open(p, upgrade=False) as db:
            if url is not None and not same_server(db.meta().get("url"), url):
                return None
            return read_plot_history(db, start, end, bucket_s)
    except HistoryError:
        return None


def thermal_points(db: HistoryDB, start: float, end: float) -> list[ThermalPoint]:
    """What the thermal verdict reads of [start, end) — each GPU's temperature, SM clock and
    throttle reasons with the server's gen tokens/s — oldest first, lost GPUs left out: one
    range scan instead of whole snapshots (replay's verdict after a jump: ~10× cheaper)."""
    from llmtop.sources.history_schema import REASONS_SEPARATOR  # sqlite3: off start-up

    out: list[ThermalPoint] = []
    for t, i, temp, sm, reasons, gen in db._query(  # noqa: SLF001
        "SELECT g.time, g.gpu_index, g.temperature_c, g.sm_clock_mhz, g.throttle_reasons,"
        " s.gen_tokens_per_s FROM gpu_samples g LEFT JOIN server_samples s ON s.time = g.time"
        " WHERE g.time >= ? AND g.time < ? AND NOT coalesce(g.lost, 0)"
        " ORDER BY g.time, g.gpu_index",
        (start, end),
    ):
        names = (
            tuple(r for r in reasons.split(REASONS_SEPARATOR) if r)
            if isinstance(reasons, str)
            else None
        )
        out.append(ThermalPoint(_t(t), _i(i), _f(temp), _oi(sm), names, _f(gen)))
    return out
