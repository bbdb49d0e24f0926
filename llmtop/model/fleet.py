"""The fleet as `llmtop fleet` shows it: one row per host and GPU, ranked worst first.

Pure data (no I/O): `diagnosis/fleet_rank.py` builds rows from Prometheus' answers, the UI and
`fleet --json` show them. The ranking is what an operator with 500 boxes needs first: boxes that
cannot be seen at all (the agent's target is down), then boxes with a critical alert, then the
ones losing clock to throttling, then the ones closest to their slowdown temperature, then VRAM
pressure. Ties keep a stable host/GPU order so rows do not jump between refreshes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class FleetAlert:
    """An active alert on a row: a Prometheus rule firing (`LlmtopGpuThrottled`) or one of the
    agent's own (`llmtop_alert_active{kind=…}`, e.g. `throttle`)."""

    name: str
    severity: str  # critical | warning | info | "" (a rule without a severity label)


@dataclass(frozen=True)
class FleetRow:
    """One host's GPU (or the host alone: an agent with no GPU, or one that is down).

    Host-wide values (server state, gen tokens/s, TTFT p95, host alerts) repeat on each of the
    host's GPU rows. None means "no data" (shown as —), never zero.
    """

    instance: str  # the agent's scrape target, host:port
    host: str  # the `host` label (the shipped relabelling sets it per box)
    gpu: str | None = None  # NVML index as a label ("0"); None: no GPU series for this host
    gpu_name: str | None = None
    up: bool = True  # Prometheus could scrape the agent
    down_reason: str | None = None  # the target's last scrape error, when down
    server_state: str | None = None  # llmtop_server_state (ready, down, loading, …)
    temperature_c: float | None = None
    slowdown_c: float | None = None
    margin_c: float | None = None  # slowdown − temperature: ≤ 0 means slowing down now
    throttled_share_5m: float | None = None  # 0–1: time in a thermal/power reason, last 5 min
    vram_percent: float | None = None
    gen_tokens_per_s: float | None = None
    ttft_p95_s: float | None = None
    alerts: tuple[FleetAlert, ...] = ()
    stale: bool = False  # some value is from an earlier refresh (a query failed this time)

    @property
    def key(self) -> tuple[str, str]:
        """Stable identity across refreshes (the UI's row key)."""
        return (self.instance, self.gpu or "")

    @property
    def critical(self) -> int:
        return sum(1 for a in self.alerts if a.severity == "critical")

    @property
    def warnings(self) -> int:
        return sum(1 for a in self.alerts if a.severity == "warning")

    def to_json_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["alerts"] = [asdict(a) for a in self.alerts]
        for k, v in d.items():  # JSON has no NaN
            if isinstance(v, float) and not math.isfinite(v):
                d[k] = None
        return d


def _desc(v: float | None, grain: float) -> float:
    """Sort part for "bigger is worse" in steps of *grain*, None last."""
    return -round(v / grain) if v is not None and math.isfinite(v) else math.inf


def _asc(v: float | None, grain: float) -> float:
    """Sort part for "smaller is worse" in steps of *grain*, None last."""
    return round(v / grain) if v is not None and math.isfinite(v) else math.inf


# Rows closer than these keep their host order: a fleet refreshed every 5 s should not
# reshuffle because one box went from 61.2 to 61.4 °C.
THROTTLE_GRAIN = 0.05  # 5 % of the window
MARGIN_GRAIN_C = 1.0
VRAM_GRAIN = 5.0  # percent


def rank_key(row: FleetRow) -> tuple[object, ...]:
    """Worst first: down > critical alerts > throttled share > smallest margin > warnings >
    VRAM %; then host and GPU (numerically) so equal rows keep their places."""
    gpu = row.gpu or ""
    gpu_num = int(gpu) if gpu.isdigit() else -1
    share = row.throttled_share_5m
    return (
        0 if not row.up else 1,
        -row.critical,
        _desc(share if share else None, THROTTLE_GRAIN),
        _asc(row.margin_c, MARGIN_GRAIN_C),
        -row.warnings,
        _desc(row.vram_percent, VRAM_GRAIN),
        row.host,
        row.instance,
        gpu_num,
        gpu,
    )


def rank(rows: list[FleetRow] | tuple[FleetRow, ...]) -> tuple[FleetRow, ...]:
    return tuple(sorted(rows, key=rank_key))


@dataclass(frozen=True)
class FleetView:
    """One refresh of the fleet: the rows worst first, what went wrong, and how old it is.

    *stale*: nothing of this refresh came from Prometheus (it was unreachable): the rows are
    the last good ones. *problems*: one line each (unreachable, a query that failed, warnings
    of a partial answer). *data_time*: when the rows' data was read (the last good refresh).
    """

    prometheus: str
    rows: tuple[FleetRow, ...] = ()
    stale: bool = False
    problems: tuple[str, ...] = ()
    data_time: float | None = None
    refresh_time: float = 0.0
    took_s: float = 0.0

    def to_json_dict(self) -> dict[str, object]:
        """The `llmtop fleet --json` document."""
        return {
            "hosts": [r.to_json_dict() for r in self.rows],
            "prometheus": self.prometheus,
            "stale": self.stale,
            "problems": list(self.problems),
            "data_time": self.data_time,
        }


def mark_stale(rows: tuple[FleetRow, ...]) -> tuple[FleetRow, ...]:
    return tuple(r if r.stale else replace(r, stale=True) for r in rows)


@dataclass(frozen=True)
class PlotSeries:
    """One time series of the detail view: (unix s, value) points in time order."""

    name: str
    unit: str
    points: tuple[tuple[float, float], ...]
    low: float | None = None  # a fixed scale (0–100 for percentages), None: from the data
    high: float | None = None
    line: float | None = None  # a reference level to mark (the slowdown temperature)


@dataclass(frozen=True)
class FleetDetail:
    """`query_range` history of one row over [start, end] at *step_s*: temperature (with the
    slowdown level), SM clock %, gen tok/s, VRAM %, and the throttled spans."""

    key: tuple[str, str]
    start: float
    end: float
    step_s: float
    series: tuple[PlotSeries, ...] = ()
    throttled: tuple[tuple[float, float], ...] = ()  # (start, end) while a reason was active
    problems: tuple[str, ...] = ()
