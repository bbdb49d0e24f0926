"""`llmtop fleet`: the Prometheus API client, the ranking, and `fleet --json` against a real
Prometheus scraping real agents and real llama-servers.

The fleet (started once for the module, torn down by PID even when a test fails):
- box-a: an agent on a cool simulated H100 (64 °C), probing llama-server A every second;
- box-b: an agent on a simulated H100 in HW thermal slowdown at 86 °C (slowdown 87), 92 % VRAM,
  probing llama-server B;
- box-d: an agent target where nothing listens (down);
- Prometheus (Debian's) on loopback with the shipped jobs and rules (`for:` at 1 s), 1 s scrapes.

The parsers of Prometheus' answers are property-tested on arbitrary input: a clean error value,
never a traceback.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtop.diagnosis.fleet_rank import FleetReader, assemble, fleet_queries, quote
from llmtop.model.fleet import FleetAlert, FleetRow, FleetView, rank
from llmtop.sources.prom_api import (
    Matrix,
    PromClient,
    PromError,
    Sample,
    Targets,
    Vector,
    check_base_url,
    display_url,
    parse_matrix,
    parse_targets,
    parse_vector,
)
from tests.conftest import missing_component
from tests.exporter_procs import (
    REPO,
    Agent,
    Prometheus,
    prometheus_binaries,
    sim_env,
    start_agent,
    start_prometheus,
    wait_for,
)
from tests.nvml_sim.scenarios import GiB, scenario
from tests.realserver import RunningServer, free_port, start_llama_server
from tests.test_prometheus_real import THROTTLED, fast_rules, prometheus_config, steady


# ---------------------------------------------------------------------------------- the fleet
@dataclass
class Fleet:
    prom: Prometheus
    agents: dict[str, Agent]
    servers: dict[str, RunningServer]
    dead_agent: str
    tmp: Path
    prom_bin: str
    config: dict[str, Any]


def start_fleet(
    llama_server_bin: Path,
    tiny_model: Path,
    lib: Path,
    tmp: Path,
    stop: list[Callable[[], object]],
    *,
    probes: bool = True,
) -> Fleet:
    """Two agents (cool box-a, throttling box-b) each watching a real llama-server, a dead
    agent target (box-d), and Prometheus scraping them; every stop is appended to *stop*."""
    bins = prometheus_binaries()
    if bins is None:
        missing_component("prometheus/promtool (Debian package prometheus; scripts/setup.sh)")
    assert bins is not None
    servers: dict[str, RunningServer] = {}
    for box in ("box-a", "box-b"):
        srv = start_llama_server(llama_server_bin, tiny_model, ["--metrics"], log_dir=tmp)
        stop.append(srv.stop)
        servers[box] = srv
    cool = scenario(steady(temp_c=64, memory_used_bytes=20 * GiB, clock_event_reasons=[]))
    hot = scenario(
        steady(temp_c=86, memory_used_bytes=74 * GiB, sm_clock_mhz=1410,
               clock_event_reasons=THROTTLED)
    )  # fmt: skip
    agents: dict[str, Agent] = {}
    for box, scen in (("box-a", cool), ("box-b", hot)):
        extra = ["--probe-every", "1s"] if probes else []
        a = start_agent(
            ["--url", servers[box].url, "--interval", "1", *extra],
            log_dir=tmp,
            env=sim_env(lib, scen, tmp, box),
        )
        stop.append(a.stop)
        agents[box] = a
    dead = f"127.0.0.1:{free_port()}"
    cfg = prometheus_config(
        {**{b: a.target for b, a in agents.items()}, "box-d": dead},
        {b: f"127.0.0.1:{s.port}" for b, s in servers.items()},
        fast_rules(tmp),
    )
    prom = start_prometheus(cfg, tmp, bins[0])
    stop.append(prom.stop)
    return Fleet(prom, agents, servers, dead, tmp, bins[0], cfg)


@pytest.fixture(scope="module")
def fleet(
    llama_server_bin: Path,
    tiny_model: Path,
    nvml_sim_build: Callable[[Iterable[str]], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet")
    lib = nvml_sim_build(())
    stop: list[Callable[[], object]] = []
    try:
        yield start_fleet(llama_server_bin, tiny_model, lib, tmp, stop)
    finally:
        for fn in reversed(stop):
            fn()


def fleet_json(url: str, *extra: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """`llmtop fleet --prometheus URL --json` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "llmtop", "fleet", "--prometheus", url, "--json", *extra],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


def fleet_ready(view_hosts: list[dict[str, Any]]) -> bool:
    """Every box seen, box-b's throttling and both probes' TTFT and tokens/s in Prometheus."""
    by = {h["host"]: h for h in view_hosts}
    return (
        set(by) == {"box-a", "box-b", "box-d"}
        and by["box-b"]["throttled_share_5m"] == 1.0
        and all(by[b]["ttft_p95_s"] is not None for b in ("box-a", "box-b"))
        and all((by[b]["gen_tokens_per_s"] or 0) > 0 for b in ("box-a", "box-b"))
        and any(a["name"] == "LlmtopGpuThrottled" for a in by["box-b"]["alerts"])
    )


# ---------------------------------------------------------------------------------- real tests
def test_fleet_json_shows_the_throttling_host_first_and_the_down_target_as_down(
    fleet: Fleet,
) -> None:
    def ready() -> dict[str, Any] | None:
        r = fleet_json(fleet.prom.url)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        return doc if fleet_ready(doc["hosts"]) else None

    doc = wait_for("fleet --json with every column filled", ready, 120, every_s=1.0)
    assert doc["prometheus"] == fleet.prom.url
    assert doc["stale"] is False
    assert doc["problems"] == []
    hosts = doc["hosts"]
    # worst first: the box nobody can see, then the throttling box, then the cool one
    assert [(h["host"], h["gpu"]) for h in hosts] == [("box-d", None), ("box-b", "0"), ("box-a", "0")]  # fmt: skip
    down, hot, cool = hosts
    assert down["up"] is False
    assert down["instance"] == fleet.dead_agent
    assert "connection refused" in down["down_reason"]
    assert {"name": "LlmtopAgentDown", "severity": "critical"} in down["alerts"]
    assert hot["up"] is True and hot["server_state"] == "ready"
    assert hot["temperature_c"] == 86.0 and hot["slowdown_c"] == 87.0 and hot["margin_c"] == 1.0
    assert hot["vram_percent"] == pytest.approx(92.5)
    assert hot["gpu_name"] == "NVIDIA H100 80GB HBM3"
    names = {a["name"] for a in hot["alerts"]}
    assert {"LlmtopGpuThrottled", "LlmtopGpuNearSlowdown", "LlmtopGpuVramHigh"} <= names
    # the agent's own throttled/near-slowdown/vram alerts are mirrored by the rules: shown once
    assert not names & {"throttled", "temp_near_slowdown", "vram_high"}
    assert cool["temperature_c"] == 64.0 and cool["margin_c"] == 23.0
    assert cool["throttled_share_5m"] == 0.0
    assert cool["vram_percent"] == pytest.approx(25.0)
    assert cool["alerts"] == []
    assert cool["server_state"] == "ready"
    for h in (hot, cool):
        assert 0 < h["ttft_p95_s"] < 30  # the probes' TTFT (tiny model on the CPU)
        assert h["gen_tokens_per_s"] > 0  # from llama-server's own counters
        assert h["stale"] is False


def test_fleet_matches_what_prometheus_stored(fleet: Fleet) -> None:
    """The table's numbers are Prometheus' (not recomputed elsewhere)."""
    p = fleet.prom
    wait_for("box-b throttled", lambda: p.query('llmtop_gpu_clock_event_active{host="box-b",reason="HwSlowdown"} == 1'), 60)  # fmt: skip
    with PromClient(p.url) as client:
        reader = FleetReader(client)
        try:
            view = reader.refresh()
        finally:
            reader.close()
    by = {r.host: r for r in view.rows}
    temp = p.query('llmtop_gpu_temperature_celsius{host="box-a"}')
    assert by["box-a"].temperature_c == float(temp[0]["value"][1])
    used = p.query('llmtop_gpu_memory_used_bytes{host="box-b"}')
    total = p.query('llmtop_gpu_memory_total_bytes{host="box-b"}')
    assert by["box-b"].vram_percent == pytest.approx(
        100 * float(used[0]["value"][1]) / float(total[0]["value"][1])
    )
    assert view.took_s < 1.0


def test_a_failing_query_keeps_its_last_values_marked_stale(fleet: Fleet) -> None:
    """Partial data: one column's query is refused by the real Prometheus."""
    with PromClient(fleet.prom.url) as client:
        reader = FleetReader(client)
        try:

            def with_temperatures() -> FleetView | None:
                v = reader.refresh()
                return v if sum(1 for r in v.rows if r.temperature_c is not None) == 2 else None

            good = wait_for("both temperatures", with_temperatures, 60)
            reader.queries["temperature"] = "llmtop_gpu_temperature_celsius{"  # bad PromQL
            view = reader.refresh()
        finally:
            reader.close()
    assert not view.stale  # Prometheus answered the rest
    assert any("temperature query failed: bad_data" in p for p in view.problems), view.problems
    before = {r.key: r.temperature_c for r in good.rows}
    for r in view.rows:
        if r.up:
            assert r.temperature_c == before[r.key]  # the last good value …
            assert r.stale  # … marked stale
    assert all(not r.stale for r in good.rows)


def test_fleet_json_unreachable_prometheus_exits_2_in_words() -> None:
    r = fleet_json(f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 2
    assert r.stdout == ""
    assert "Prometheus unreachable: connection refused" in r.stderr
    assert "Traceback" not in r.stderr


def test_fleet_json_slow_prometheus_exits_2_in_words() -> None:
    """A listener that accepts and never answers: 'slow', within the timeout, no hang."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(64)
        port = srv.getsockname()[1]
        t0 = time.monotonic()
        r = fleet_json(f"http://127.0.0.1:{port}", "--timeout", "0.5")
        took = time.monotonic() - t0
    assert r.returncode == 2
    assert "Prometheus slow: no answer within 0.5 s" in r.stderr
    assert took < 15


def test_fleet_bad_url_exits_2() -> None:
    r = fleet_json("ftp://example")
    assert r.returncode == 2
    assert "not an http(s) URL" in r.stderr


# ---------------------------------------------------------------------------------- the client
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
json_leaf = st.none() | st.booleans() | st.integers() | finite | st.text(max_size=8)
json_value = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(["status", "data", "resultType", "result", "metric", "value", "values",
                        "activeTargets", "labels", "health", "warnings", "error", "errorType"])  # fmt: skip
prom_like = st.recursive(
    json_leaf,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(keys | st.text(max_size=4), kids, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_return_an_error_value_on_arbitrary_bytes(body: bytes) -> None:
    for parse in (parse_vector, parse_matrix, parse_targets):
        got = parse(body)
        assert isinstance(got, Vector | Matrix | Targets | PromError)
        if isinstance(got, PromError):
            assert got.message


@settings(max_examples=400, deadline=None)
@given(prom_like)
def test_parsers_never_raise_on_json_shaped_like_prometheus(doc: object) -> None:
    for status in ("success", "error", None):
        if isinstance(doc, dict) and status is not None:
            doc = {**doc, "status": status}
        body = json.dumps(doc).encode()
        for parse in (parse_vector, parse_matrix, parse_targets):
            got = parse(body)
            assert isinstance(got, Vector | Matrix | Targets | PromError)


label_text = st.text(min_size=1, max_size=12)
labels = st.dictionaries(label_text, st.text(max_size=12), max_size=4)
values = st.one_of(finite, st.sampled_from([math.nan, math.inf, -math.inf]))


def _go(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(labels, finite, values), max_size=6),
    st.lists(st.text(max_size=20), max_size=2),
)
def test_a_well_formed_vector_parses_to_its_samples(
    series: list[tuple[dict[str, str], float, float]], warnings: list[str]
) -> None:
    doc = {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [t, _go(v)]} for m, t, v in series],
        },
        **({"warnings": warnings} if warnings else {}),
    }
    got = parse_vector(json.dumps(doc).encode())
    assert isinstance(got, Vector)
    assert len(got.samples) == len(series)
    for s, (m, t, v) in zip(got.samples, series, strict=True):
        assert dict(s.labels) == m and s.time == t
        assert (math.isnan(s.value) and math.isnan(v)) or s.value == v
    assert len(got.warnings) == len(warnings)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(finite, finite), max_size=10))
def test_a_matrix_comes_back_in_time_order(points: list[tuple[float, float]]) -> None:
    doc = {
        "status": "success",
        "data": {
            "resultType": "matrix",
            "result": [{"metric": {"a": "b"}, "values": [[t, repr(v)] for t, v in points]}],
        },
    }
    got = parse_matrix(json.dumps(doc).encode())
    assert isinstance(got, Matrix)
    ts = [t for t, _ in got.series[0].points]
    assert ts == sorted(ts) and len(ts) == len(points)


def test_parser_errors_say_what_is_wrong() -> None:
    html = parse_vector(b"<html><body>login</body></html>")
    assert isinstance(html, PromError) and "not JSON" in html.message
    err = parse_vector(b'{"status":"error","errorType":"bad_data","error":"parse error at char 5"}')
    assert err == PromError("query", "bad_data: parse error at char 5")
    scalar = parse_vector(b'{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}')
    assert isinstance(scalar, PromError) and "expected a vector" in scalar.message
    bool_time = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[true,"1"]}]}}'
    assert isinstance(parse_vector(bool_time), PromError)


def test_urls_never_show_a_password() -> None:
    assert (
        display_url("http://prom:s3cretpass@10.0.0.1:9090/prom")
        == "http://prom:***@10.0.0.1:9090/prom"
    )
    assert "s3cretpass" not in str(parse_targets(json.dumps({"status": "success", "data": {"activeTargets": [
        {"labels": {"job": "x"}, "health": "down", "lastError": "x", "scrapeUrl": "http://u:s3cretpass@h/metrics"}
    ]}}).encode()))  # fmt: skip
    assert check_base_url("http://127.0.0.1:9090/") == "http://127.0.0.1:9090"
    with pytest.raises(ValueError, match="bad port"):
        check_base_url("http://127.0.0.1:99999")


def test_promql_label_values_are_quoted() -> None:
    assert quote('a"b\\c') == '"a\\"b\\\\c"'
    assert 'job="llmtop"' in fleet_queries()["up"]


# ---------------------------------------------------------------------------------- ranking
def row(host: str, **kw: Any) -> FleetRow:
    return FleetRow(instance=f"{host}:9464", host=host, gpu=kw.pop("gpu", "0"), **kw)


def test_rank_worst_first() -> None:
    rows = [
        row("ok", margin_c=30.0, vram_percent=40.0),
        row("vram", margin_c=30.0, vram_percent=90.0),
        row("warm", margin_c=4.0),
        row("warned", margin_c=30.0, alerts=(FleetAlert("LlmtopGpuVramHigh", "warning"),)),
        row("throttled-a-bit", throttled_share_5m=0.1, margin_c=10.0),
        row("throttled", throttled_share_5m=0.9, margin_c=1.0),
        row("critical", alerts=(FleetAlert("server_down", "critical"),)),
        row("down", gpu=None, up=False),
        row("nodata"),
    ]
    order = [r.host for r in rank(rows)]
    assert order == [
        "down", "critical", "throttled", "throttled-a-bit", "warm", "warned", "vram", "ok", "nodata",
    ]  # fmt: skip


def _vec(*samples: tuple[dict[str, str], float]) -> Vector:
    return Vector(tuple(Sample(m, v, 0.0) for m, v in samples))


def _answers(temp_b: float = 86.0) -> dict[str, Vector | PromError]:
    a = {"job": "llmtop", "instance": "a:9464", "host": "box-a"}
    b = {"job": "llmtop", "instance": "b:9464", "host": "box-b"}
    out: dict[str, Vector | PromError] = {name: _vec() for name in fleet_queries()}
    out["up"] = _vec((a, 1.0), (b, 1.0))
    out["temperature"] = _vec(({**a, "gpu": "0"}, 60.0), ({**b, "gpu": "0"}, temp_b), ({**b, "gpu": "1"}, 50.0))  # fmt: skip
    out["slowdown"] = _vec(({**a, "gpu": "0"}, 87.0), ({**b, "gpu": "0"}, 87.0), ({**b, "gpu": "1"}, 87.0))  # fmt: skip
    out["throttled"] = _vec(({**b, "gpu": "0"}, 0.5), ({**b, "gpu": "1"}, 0.0), ({**a, "gpu": "0"}, 0.0))  # fmt: skip
    out["ttft"] = _vec(
        ({"instance": "a:9464"}, math.nan),
    )
    out["agent_alerts"] = _vec(({**b, "kind": "throttled", "severity": "critical"}, 1.0))
    return out


def test_assemble_one_row_per_gpu_host_values_repeat_and_nan_is_no_data() -> None:
    view = assemble("http://p", _answers(), None, None, 100.0)
    assert [(r.host, r.gpu) for r in view.rows] == [("box-b", "0"), ("box-b", "1"), ("box-a", "0")]
    assert view.rows[0].margin_c == 1.0
    # the agent's alert has no GPU label: both of box-b's GPUs carry it until a rule says which
    assert view.rows[1].alerts == (FleetAlert("throttled", "critical"),)
    assert view.rows[2].ttft_p95_s is None


def test_assemble_a_firing_rule_replaces_the_agents_copy_on_its_gpu_only() -> None:
    ans = _answers()
    ans["rule_alerts"] = _vec(({"alertname": "LlmtopGpuThrottled", "severity": "critical",
                                "host": "box-b", "gpu": "0", "instance": "b:9464"}, 1.0))  # fmt: skip
    view = assemble("http://p", ans, None, None, 100.0)
    by = {(r.host, r.gpu): r for r in view.rows}
    assert by[("box-b", "0")].alerts == (FleetAlert("LlmtopGpuThrottled", "critical"),)
    assert by[("box-b", "1")].alerts == ()


def test_assemble_unreachable_keeps_the_last_rows_stale() -> None:
    good = assemble("http://p", _answers(), None, None, 100.0)
    err = PromError("unreachable", "connection refused")
    bad = assemble("http://p", {name: err for name in fleet_queries()}, err, good, 105.0)
    assert bad.stale and [r.key for r in bad.rows] == [r.key for r in good.rows]
    assert all(r.stale for r in bad.rows)
    assert bad.rows[0].temperature_c == 86.0
    assert bad.problems[0].startswith(
        "Prometheus unreachable: connection refused — showing data from"
    )
    assert bad.data_time == 100.0
    # and the next good answer is fresh again
    again = assemble("http://p", _answers(temp_b=80.0), None, bad, 110.0)
    assert not again.stale and not any(r.stale for r in again.rows)
    assert again.rows[0].temperature_c == 80.0


def test_view_json_has_the_issue_keys_and_no_nan() -> None:
    view = FleetView("http://p", (row("a", ttft_p95_s=math.nan),), stale=False, problems=("x",))
    doc = view.to_json_dict()
    assert set(doc) >= {"hosts", "prometheus", "stale", "problems"}
    json.dumps(doc, allow_nan=False)
