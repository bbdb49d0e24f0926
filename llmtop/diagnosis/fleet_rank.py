"""What `llmtop fleet` asks Prometheus, and how the answers become rows ranked worst first.

A few PromQL queries per refresh, each over every host at once (one per column, never one per
host): 500 boxes cost the same eleven requests as two. `assemble` is pure: it joins the answers
by the agent's `instance` (GPU series also by `gpu`; llama-server's series by `host`, the label
the shipped prometheus.yml puts on both targets of a box) and ranks them (`model.fleet`).

When a query fails, that column keeps the values of the last good refresh and the rows holding
them are marked stale; when every request fails Prometheus is unreachable (or too slow) and the
whole last view is kept, marked stale, with the reason in `problems`. `FleetReader` runs the
queries concurrently on a small thread pool (blocking HTTP; call it from a worker thread).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from llmtop.model.fleet import (
    SEVERITY_ORDER,
    FleetAlert,
    FleetDetail,
    FleetRow,
    FleetView,
    PlotSeries,
    mark_stale,
    rank,
)
from llmtop.sources.prom_api import Matrix, PromError, Targets, Vector

AGENT_JOB = "llmtop"  # the shipped prometheus.yml's job for `llmtop agent --listen`
# The reasons that cost clock (as in the LlmtopGpuThrottled rule): GpuIdle, power cap at idle
# and application clocks are not throttling.
THROTTLE_REASONS = "SwThermalSlowdown|HwThermalSlowdown|HwSlowdown|HwPowerBrakeSlowdown"
DETAIL_POINTS = 240  # points per plot in the detail view


class PromQuerier(Protocol):
    """What the reader needs of a Prometheus client (`sources.prom_api.PromClient`)."""

    url_shown: str

    def query(self, expr: str, at: float | None = None) -> Vector | PromError: ...

    def query_range(
        self, expr: str, start: float, end: float, step_s: float
    ) -> Matrix | PromError: ...

    def targets(self) -> Targets | PromError: ...


def _gpu_order(gpu: str) -> tuple[bool, int, str]:
    """GPU labels in index order ("2" before "10"), anything else after them."""
    return (not gpu.isdigit(), int(gpu) if gpu.isdigit() else 0, gpu)


def quote(value: str) -> str:
    """A PromQL string literal for a label value (instances and hosts are outside input)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def fleet_queries(job: str = AGENT_JOB) -> dict[str, str]:
    """Column → PromQL over the whole fleet. Each aggregates to the labels the table joins on
    (`max by (…)`): the answers carry no uuid/name/job per sample, half the bytes to parse."""
    j = f"job={quote(job)}"
    gpu = "max by (instance, host, gpu)"
    return {
        "up": f"max by (instance, host) (up{{{j}}})",
        "state": f"max by (instance, state) (llmtop_server_state{{{j}}}) == 1",
        "temperature": f"max by (instance, host, gpu, name) (llmtop_gpu_temperature_celsius{{{j}}})",
        "slowdown": f"{gpu} (llmtop_gpu_temperature_slowdown_celsius{{{j}}})",
        # The share of the last 5 min in the most-active throttling reason, from raw samples
        # (thermal reasons come together: HwSlowdown with HwThermalSlowdown). Cheap at 500
        # hosts, and right from the first sample (a subquery grid would miss a young series).
        "throttled": (
            f"{gpu} (avg_over_time(llmtop_gpu_clock_event_active"
            f'{{{j},reason=~"{THROTTLE_REASONS}"}}[5m]))'
        ),
        "vram": (
            f"100 * {gpu} (llmtop_gpu_memory_used_bytes{{{j}}})"
            f" / {gpu} (llmtop_gpu_memory_total_bytes{{{j}}})"
        ),
        "gen": "sum by (host) (rate(llamacpp:tokens_predicted_total[1m]))",
        "ttft": (
            "histogram_quantile(0.95, sum by (instance, le) "
            f"(rate(llmtop_probe_ttft_seconds_bucket{{{j}}}[5m])))"
        ),
        "rule_alerts": ('max by (alertname, severity, host, gpu) (ALERTS{alertstate="firing"})'),
        "agent_alerts": f"sum by (instance, kind, severity) (llmtop_alert_active{{{j}}}) > 0",
    }


COLUMN_WORDS = {
    "up": "target health",
    "state": "server state",
    "temperature": "temperature",
    "slowdown": "slowdown temperature",
    "throttled": "throttled share",
    "vram": "VRAM",
    "gen": "gen tokens/s",
    "ttft": "TTFT p95",
    "rule_alerts": "Prometheus alerts",
    "agent_alerts": "llmtop alerts",
}
# FleetRow fields each query fills (carried from the last refresh when it fails).
COLUMN_FIELDS: dict[str, tuple[str, ...]] = {
    "up": ("up",),
    "state": ("server_state",),
    "temperature": ("temperature_c", "gpu_name"),
    "slowdown": ("slowdown_c",),
    "throttled": ("throttled_share_5m",),
    "vram": ("vram_percent",),
    "gen": ("gen_tokens_per_s",),
    "ttft": ("ttft_p95_s",),
    "rule_alerts": ("alerts",),
    "agent_alerts": ("alerts",),
}
GPU_COLUMNS = ("temperature", "slowdown", "throttled", "vram")
# Prometheus rules that mirror one of the agent's own alerts (deploy/prometheus/llmtop-rules.yml).
# The agent's alert count has no GPU label; the rule's has. When the rule fires for a host the
# agent's copy is dropped there, so a two-GPU box shows "throttled" on the hot GPU only.
RULE_MIRRORS = {
    "LlmtopGpuVramHigh": "vram_high",
    "LlmtopGpuNearSlowdown": "temp_near_slowdown",
    "LlmtopGpuThrottled": "throttled",
    "LlmtopCpuFallback": "cpu_fallback",
    "LlmtopServerDown": "server_down",
}


def host_of(labels: Mapping[str, str]) -> str:
    """The `host` label, else the instance without its port (what the shipped relabelling
    does for targets without one)."""
    host = labels.get("host")
    if host:
        return host
    inst = labels.get("instance", "")
    if inst.startswith("["):
        return inst[1:].split("]", 1)[0]
    return inst.rsplit(":", 1)[0] if inst.count(":") == 1 else inst


def short_scrape_error(text: str) -> str:
    """Prometheus' scrape error in the words that matter: `Get "http://…/metrics": dial tcp
    10.0.0.9:9464: connect: connection refused` → `connection refused` (the table has the
    instance already); other errors lose only the request prefix."""
    if text.startswith('Get "') and '": ' in text:
        text = text.split('": ', 1)[1]
    if text.startswith("dial tcp") and ": " in text:
        text = text.rsplit(": ", 1)[1]
    return text


def _num(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _stamp(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t is not None else "never"


@dataclass
class _Row:
    """A row being assembled (mutable), then frozen into a FleetRow."""

    instance: str
    host: str
    gpu: str | None
    values: dict[str, object]
    stale: bool = False


def assemble(
    prometheus: str,
    answers: Mapping[str, Vector | PromError],
    targets: Targets | PromError | None,
    previous: FleetView | None,
    now: float,
    *,
    job: str = AGENT_JOB,
    took_s: float = 0.0,
) -> FleetView:
    """One refresh's view from the answers of `fleet_queries` (see the module docstring)."""
    failed = {k: a for k, a in answers.items() if isinstance(a, PromError)}
    ok: dict[str, Vector] = {k: a for k, a in answers.items() if isinstance(a, Vector)}
    if not ok:
        return unreachable_view(prometheus, list(failed.values()), previous, now, took_s)
    problems: list[str] = []
    for name, err in failed.items():
        problems.append(f"{COLUMN_WORDS.get(name, name)} query failed: {err} (last values kept)")
    for w in dict.fromkeys(w for a in ok.values() for w in a.warnings):
        problems.append(f"Prometheus warning (partial data): {w}")

    prev_rows = previous.rows if previous is not None else ()
    prev_by_key = {r.key: r for r in prev_rows}

    # ---- which agents and GPUs exist
    instances: dict[str, str] = {}  # instance → host
    up: dict[str, bool] = {}
    if "up" in ok:
        for s in ok["up"].samples:
            inst = s.labels.get("instance")
            if inst:
                instances[inst] = host_of(s.labels)
                up[inst] = s.value == 1.0
    else:
        for r in prev_rows:
            instances[r.instance] = r.host
    gpus: dict[str, dict[str, str | None]] = {}  # instance → gpu → name
    for col in GPU_COLUMNS:
        vec = ok.get(col)
        if vec is None:  # a GPU column failed: keep the GPUs the last refresh knew
            for r in prev_rows:
                if r.gpu is not None:
                    gpus.setdefault(r.instance, {}).setdefault(r.gpu, r.gpu_name)
            continue
        for s in vec.samples:
            inst, gpu = s.labels.get("instance"), s.labels.get("gpu")
            if inst and gpu is not None:
                instances.setdefault(inst, host_of(s.labels))
                gpus.setdefault(inst, {})[gpu] = s.labels.get("name") or gpus.get(inst, {}).get(gpu)

    # ---- values per column
    gpu_vals: dict[str, dict[tuple[str, str], float | None]] = {}
    for col in GPU_COLUMNS:
        if col in ok:
            gpu_vals[col] = {
                (s.labels.get("instance", ""), s.labels.get("gpu", "")): _num(s.value)
                for s in ok[col].samples
            }
    state: dict[str, str] = {}
    if "state" in ok:
        for s in ok["state"].samples:
            if s.labels.get("instance") and s.labels.get("state"):
                state[s.labels["instance"]] = s.labels["state"]
    ttft = {
        s.labels.get("instance", ""): _num(s.value) for s in ok["ttft"].samples
    } if "ttft" in ok else {}  # fmt: skip
    gen = (
        {s.labels.get("host", ""): _num(s.value) for s in ok["gen"].samples} if "gen" in ok else {}
    )
    agent_alerts: dict[str, list[FleetAlert]] = {}
    if "agent_alerts" in ok:
        for s in ok["agent_alerts"].samples:
            inst, kind = s.labels.get("instance"), s.labels.get("kind")
            if inst and kind:
                agent_alerts.setdefault(inst, []).append(
                    FleetAlert(kind, s.labels.get("severity", ""))
                )
    rule_alerts: dict[str, list[tuple[str | None, FleetAlert]]] = {}  # host → (gpu, alert)
    if "rule_alerts" in ok:
        for s in ok["rule_alerts"].samples:
            alertname = s.labels.get("alertname")
            if alertname:
                alert = FleetAlert(alertname, s.labels.get("severity", ""))
                rule_alerts.setdefault(host_of(s.labels), []).append((s.labels.get("gpu"), alert))
    mirrored = {
        host: {RULE_MIRRORS.get(a.name) for _, a in alerts} for host, alerts in rule_alerts.items()
    }
    down_reason: dict[str, str] = {}
    if isinstance(targets, Targets):
        for t in targets.targets:
            if t.labels.get("job") == job and t.health != "up" and t.last_error:
                down_reason[t.labels.get("instance", "")] = short_scrape_error(t.last_error)

    # ---- rows
    rows: list[FleetRow] = []
    for inst, host in instances.items():
        is_up = up.get(inst, True)
        if "up" not in ok:
            is_up = next((r.up for r in prev_rows if r.instance == inst), True)
        gpu_names = gpus.get(inst, {}) if is_up else {}
        gpu_keys: list[str | None] = [*sorted(gpu_names, key=_gpu_order)] or [None]
        for gpu in gpu_keys:
            row = _Row(
                inst, host, gpu, {"up": is_up, "gpu_name": gpu_names.get(gpu) if gpu else None}
            )
            prev = prev_by_key.get((inst, gpu or ""))
            k = (inst, gpu or "")
            for col, field_name in (
                ("temperature", "temperature_c"),
                ("slowdown", "slowdown_c"),
                ("throttled", "throttled_share_5m"),
                ("vram", "vram_percent"),
            ):
                if gpu is not None and col in gpu_vals:
                    row.values[field_name] = gpu_vals[col].get(k)
            row.values["server_state"] = state.get(inst)
            row.values["ttft_p95_s"] = ttft.get(inst)
            row.values["gen_tokens_per_s"] = gen.get(host)
            skip = mirrored.get(host, set())
            alerts = [a for a in agent_alerts.get(inst, ()) if a.name not in skip]
            alerts += [a for g, a in rule_alerts.get(host, ()) if g is None or g == gpu]
            row.values["alerts"] = _order_alerts(alerts)
            if not is_up:
                row.values["down_reason"] = down_reason.get(inst) or "the target is down"
                row.values["server_state"] = None
            # columns whose query failed: the last good values, marked stale
            for col in failed:
                for f in COLUMN_FIELDS.get(col, ()):
                    if f == "up":
                        continue
                    if f == "alerts":
                        fresh = (
                            row.values["alerts"] if isinstance(row.values["alerts"], tuple) else ()
                        )
                        old = prev.alerts if prev is not None else ()
                        row.values["alerts"] = _order_alerts([*fresh, *old])
                        row.stale = row.stale or bool(old)
                        continue
                    old_v = getattr(prev, f) if prev is not None else None
                    row.values[f] = old_v
                    row.stale = row.stale or old_v is not None
            rows.append(_freeze(row))
    return FleetView(
        prometheus,
        rank(rows),
        stale=False,
        problems=tuple(problems),
        data_time=now,
        refresh_time=now,
        took_s=took_s,
    )


def _order_alerts(alerts: list[FleetAlert]) -> tuple[FleetAlert, ...]:
    seen = dict.fromkeys(alerts)
    return tuple(sorted(seen, key=lambda a: (SEVERITY_ORDER.get(a.severity, 3), a.name)))


def _freeze(row: _Row) -> FleetRow:
    v = row.values

    def num(name: str) -> float | None:
        x = v.get(name)
        return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None

    temp, slow = num("temperature_c"), num("slowdown_c")
    alerts = v.get("alerts")
    name = v.get("gpu_name")
    state = v.get("server_state")
    reason = v.get("down_reason")
    return FleetRow(
        instance=row.instance,
        host=row.host,
        gpu=row.gpu,
        gpu_name=name if isinstance(name, str) else None,
        up=bool(v.get("up", True)),
        down_reason=reason if isinstance(reason, str) else None,
        server_state=state if isinstance(state, str) else None,
        temperature_c=temp,
        slowdown_c=slow,
        margin_c=slow - temp if temp is not None and slow is not None else None,
        throttled_share_5m=num("throttled_share_5m"),
        vram_percent=num("vram_percent"),
        gen_tokens_per_s=num("gen_tokens_per_s"),
        ttft_p95_s=num("ttft_p95_s"),
        alerts=alerts if isinstance(alerts, tuple) else (),
        stale=row.stale,
    )


def unreachable_view(
    prometheus: str,
    errors: list[PromError],
    previous: FleetView | None,
    now: float,
    took_s: float = 0.0,
) -> FleetView:
    """Nothing came back: the last good rows, stale, and why in one line."""
    if errors and all(e.kind == "timeout" for e in errors):
        why = f"Prometheus slow: {errors[0]}"
    elif errors:
        kinds = {e.kind for e in errors}
        first = next((e for e in errors if e.kind != "timeout"), errors[0])
        word = "unreachable" if kinds & {"unreachable", "timeout"} else "not answering queries"
        why = f"Prometheus {word}: {first}"
    else:
        why = "Prometheus unreachable: no answer"
    rows = mark_stale(previous.rows) if previous is not None else ()
    data_time = previous.data_time if previous is not None else None
    if previous is not None and previous.rows:
        why += f" — showing data from {_stamp(data_time)} (stale)"
    return FleetView(
        prometheus,
        rows,
        stale=True,
        problems=(why,),
        data_time=data_time,
        refresh_time=now,
        took_s=took_s,
    )


class FleetReader:
    """Reads the fleet from one Prometheus; keeps the last view for stale carrying.

    `refresh()` and `detail()` block (HTTP) — call them from a worker thread. The latest view
    is `self.view`; refreshes do not overlap (the UI starts one only when none runs).
    """

    def __init__(
        self,
        client: PromQuerier,
        *,
        job: str = AGENT_JOB,
        clock: Callable[[], float] = time.time,
        workers: int = 4,
    ) -> None:
        self.client = client
        self.job = job
        self.clock = clock
        self.queries = fleet_queries(job)
        self.view: FleetView | None = None
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleet-query")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def refresh(self) -> FleetView:
        t0 = time.perf_counter()
        now = self.clock()
        futures: dict[str, Future[Vector | PromError]] = {
            name: self._pool.submit(self.client.query, expr, now)
            for name, expr in self.queries.items()
        }
        tfut = self._pool.submit(self.client.targets)
        answers = {name: f.result() for name, f in futures.items()}
        targets = tfut.result()
        view = assemble(
            self.client.url_shown,
            answers,
            targets,
            self.view,
            now,
            job=self.job,
            took_s=time.perf_counter() - t0,
        )
        self.view = view
        return view

    def detail(self, row: FleetRow, minutes: float = 30.0) -> FleetDetail:
        """The row's history over the last *minutes* (temperature with its slowdown level,
        SM clock %, gen tokens/s, VRAM %, throttled spans), one `query_range` each, run
        concurrently."""
        end = self.clock()
        start = end - minutes * 60.0
        step = max(1.0, round((end - start) / DETAIL_POINTS))
        sel = f"job={quote(self.job)},instance={quote(row.instance)}"
        if row.gpu is not None:
            sel += f",gpu={quote(row.gpu)}"
        used, total = "llmtop_gpu_memory_used_bytes", "llmtop_gpu_memory_total_bytes"
        clock, clock_max = "llmtop_gpu_sm_clock_hertz", "llmtop_gpu_sm_clock_max_hertz"
        # (name, unit, expr, low, high)
        specs: list[tuple[str, str, str, float | None, float | None]] = [
            ("temp", "°C", f"llmtop_gpu_temperature_celsius{{{sel}}}", None, None),
            ("SM clk", "%", f"100 * {clock}{{{sel}}} / {clock_max}{{{sel}}}", 0.0, 100.0),
            (
                "gen t/s",
                "tok/s",
                f"sum(rate(llamacpp:tokens_predicted_total{{host={quote(row.host)}}}[1m]))",
                0.0,
                None,
            ),
            ("VRAM", "%", f"100 * {used}{{{sel}}} / {total}{{{sel}}}", 0.0, 100.0),
        ]
        throttled_expr = f'max(llmtop_gpu_clock_event_active{{{sel},reason=~"{THROTTLE_REASONS}"}})'
        slow_expr = f"max(llmtop_gpu_temperature_slowdown_celsius{{{sel}}})"
        futures = [
            self._pool.submit(self.client.query_range, expr, start, end, step)
            for _, _, expr, _, _ in specs
        ]
        thr_f = self._pool.submit(self.client.query_range, throttled_expr, start, end, step)
        slow_f = self._pool.submit(self.client.query, slow_expr, end)
        problems: list[str] = []
        slow = slow_f.result()
        slowdown: float | None = None
        if isinstance(slow, Vector) and slow.samples:
            slowdown = _num(slow.samples[0].value)
        series: list[PlotSeries] = []
        for (name, unit, _, low, high), fut in zip(specs, futures, strict=True):
            got = fut.result()
            points: tuple[tuple[float, float], ...] = ()
            if isinstance(got, PromError):
                problems.append(f"{name}: {got}")
            elif got.series:
                points = tuple((t, v) for t, v in got.series[0].points if math.isfinite(v))
            line = slowdown if name == "temp" else None
            series.append(PlotSeries(name, unit, points, low, high, line))
        thr = thr_f.result()
        spans: list[tuple[float, float]] = []
        if isinstance(thr, PromError):
            problems.append(f"throttled: {thr}")
        elif thr.series:
            spans = throttled_spans(thr.series[0].points, step)
        return FleetDetail(row.key, start, end, step, tuple(series), tuple(spans), tuple(problems))


def throttled_spans(
    points: tuple[tuple[float, float], ...], step_s: float
) -> list[tuple[float, float]]:
    """(start, end) runs of points at 1; a missing point (gap > 1.5 steps) ends a run."""
    spans: list[tuple[float, float]] = []
    run_start: float | None = None
    last_t: float | None = None
    for t, v in points:
        if run_start is not None and last_t is not None and t - last_t > 1.5 * step_s:
            spans.append((run_start, last_t))
            run_start = None
        if v >= 1.0:
            if run_start is None:
                run_start = t
        elif run_start is not None:
            spans.append((run_start, t))
            run_start = None
        last_t = t
    if run_start is not None and last_t is not None:
        spans.append((run_start, last_t + step_s))
    return spans
