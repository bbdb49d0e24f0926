"""A real Prometheus (Debian's package) scrapes real agents and real llama-servers.

The fleet, started once for the module and torn down by PID even when a test fails:
- box-a: an agent on a cool simulated H100 whose process list holds llama-server A (18 GiB),
  probing server A every second;
- box-b: an agent on a simulated two-GPU box whose GPU 0 is in HW thermal slowdown at 86 °C
  (slowdown 87) with 92 % VRAM used, probing server B, with --dcgm-names;
- box-c: an agent watching a llama-server that is not there (server down);
- box-d: an agent target where nothing listens (agent down);
- two real llama-servers with --metrics, scraped directly (job llama-server).

Prometheus runs on 127.0.0.1 with a temporary TSDB, the shipped prometheus.yml's jobs (targets
replaced, relabelling kept), 1 s scrape and evaluation intervals, and the shipped rules — with
their `for:` durations set to 1 s so they fire within the test (promtool test rules checks the
real durations). Every PromQL expression of the dashboard and of the rules is executed and must
return series.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import missing_component
from tests.exporter_procs import (
    Agent,
    Prometheus,
    prometheus_binaries,
    sim_env,
    start_agent,
    start_prometheus,
    wait_for,
)
from tests.nvml_sim.scenarios import GiB, datacenter_gpu, scenario
from tests.realserver import RunningServer, free_port, start_llama_server

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
THROTTLED = ["HwSlowdown", "HwThermalSlowdown"]
# box-b's server asks for --gpu-layers 99 but holds nothing on its (simulated) GPU: the agent,
# attached by --url, reads that from the server's own argv and raises cpu_fallback.
FALLBACK_ARGS = ["--gpu-layers", "99"]


def steady(**kf: Any) -> dict[str, Any]:
    """A datacenter GPU whose one keyframe holds for the whole test."""
    g = datacenter_gpu()
    first = dict(g["keyframes"][0])
    first.update(kf)
    g["keyframes"] = [first]
    return g


@dataclass
class Fleet:
    prom: Prometheus
    agents: dict[str, Agent]
    servers: dict[str, RunningServer]
    dead_agent: str


@pytest.fixture(scope="module")
def fleet(
    llama_server_bin: Path,
    tiny_model: Path,
    nvml_sim_build: Callable[[Iterable[str]], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    bins = prometheus_binaries()
    if bins is None:
        missing_component("prometheus/promtool (Debian package prometheus; scripts/setup.sh)")
    assert bins is not None
    tmp = tmp_path_factory.mktemp("prom-fleet")
    lib = nvml_sim_build(())
    stop: list[Callable[[], object]] = []
    try:
        servers: dict[str, RunningServer] = {}
        for box in ("box-a", "box-b"):
            args = ["--metrics", *(FALLBACK_ARGS if box == "box-b" else [])]
            srv = start_llama_server(llama_server_bin, tiny_model, args, log_dir=tmp)
            stop.append(srv.stop)
            servers[box] = srv
        cool = scenario(
            steady(temp_c=64, memory_used_bytes=20 * GiB, clock_event_reasons=[],
                   processes=[{"pid": servers["box-a"].pid, "used_memory_bytes": 18 * GiB}])
        )  # fmt: skip
        hot = scenario(
            steady(temp_c=86, memory_used_bytes=74 * GiB, sm_clock_mhz=1410,
                   clock_event_reasons=THROTTLED),
            steady(temp_c=60, memory_used_bytes=10 * GiB, clock_event_reasons=[])
            | {"uuid": "GPU-5b1f2c3d-0000-4a1e-9f00-h100000001", "pci_bus_id": "00000000:1C:00.0"},
        )  # fmt: skip
        agents: dict[str, Agent] = {}
        plan = {
            "box-a": (servers["box-a"].url, cool, ["--probe-every", "1s"]),
            "box-b": (servers["box-b"].url, hot, ["--probe-every", "1s", "--dcgm-names"]),
            "box-c": (f"http://127.0.0.1:{free_port()}", None, []),
        }
        for box, (url, scen, extra) in plan.items():
            a = start_agent(
                ["--url", url, "--interval", "1", *extra],
                log_dir=tmp,
                env=sim_env(lib if scen else None, scen, tmp, box),
            )
            stop.append(a.stop)
            agents[box] = a
        dead_agent = f"127.0.0.1:{free_port()}"

        cfg = prometheus_config(
            {**{b: a.target for b, a in agents.items()}, "box-d": dead_agent},
            {b: f"127.0.0.1:{s.port}" for b, s in servers.items()},
            fast_rules(tmp),
        )
        prom = start_prometheus(cfg, tmp, bins[0])
        stop.append(prom.stop)
        yield Fleet(prom, agents, servers, dead_agent)
    finally:
        for fn in reversed(stop):
            fn()


def prometheus_config(
    agents: dict[str, str], servers: dict[str, str], rules_file: Path
) -> dict[str, Any]:
    """The shipped prometheus.yml with this fleet's targets, 1 s intervals and *rules_file*."""
    shipped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    cfg = copy.deepcopy(shipped)
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"}
    cfg["rule_files"] = [str(rules_file)]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    for name, targets in (("llmtop", agents), ("llama-server", servers)):
        jobs[name]["static_configs"] = [
            {"targets": [t], "labels": {"host": box}} for box, t in targets.items()
        ]
    return cfg


def fast_rules(tmp: Path) -> Path:
    """The shipped rules with every `for:` at 1 s (the expressions unchanged)."""
    doc = yaml.safe_load((DEPLOY / "prometheus" / "llmtop-rules.yml").read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["for"] = "1s"
    path = tmp / "llmtop-rules-fast.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def one(prom: Prometheus, expr: str, timeout_s: float = 30) -> float:
    """The value of the one series *expr* returns (waited for)."""
    got = wait_for(expr, lambda: prom.query(expr), timeout_s)
    assert len(got) == 1, (expr, got)
    return float(got[0]["value"][1])


def test_prometheus_scrapes_every_agent_and_server(fleet: Fleet) -> None:
    def health() -> dict[tuple[str, str], str] | None:
        got = {(t["labels"]["job"], t["labels"]["host"]): t["health"] for t in fleet.prom.targets()}
        return got if "unknown" not in got.values() and len(got) == 6 else None

    got = wait_for("every target scraped once", health, 60)
    assert got == {
        ("llmtop", "box-a"): "up",
        ("llmtop", "box-b"): "up",
        ("llmtop", "box-c"): "up",
        ("llmtop", "box-d"): "down",
        ("llama-server", "box-a"): "up",
        ("llama-server", "box-b"): "up",
    }


def test_what_prometheus_stored(fleet: Fleet) -> None:
    p = fleet.prom
    assert one(p, 'llmtop_gpu_temperature_celsius{host="box-b",gpu="0"}') == 86.0
    assert one(p, 'llmtop_gpu_temperature_slowdown_celsius{host="box-b",gpu="0"}') == 87.0
    assert one(p, 'llmtop_gpu_sm_clock_hertz{host="box-b",gpu="0"}') == 1410e6
    assert (
        one(p, 'llmtop_gpu_clock_event_active{host="box-b",gpu="0",reason="HwThermalSlowdown"}')
        == 1
    )
    assert (
        one(p, 'llmtop_gpu_clock_event_active{host="box-b",gpu="1",reason="HwThermalSlowdown"}')
        == 0
    )
    assert one(p, 'llmtop_gpu_clock_event_active{host="box-a",reason="HwThermalSlowdown"}') == 0
    assert one(p, 'llmtop_server_gpu_memory_bytes{host="box-a"}') == 18 * GiB
    assert one(p, 'llmtop_gpu_memory_used_bytes{host="box-b",gpu="0"}') == 74 * GiB
    assert one(p, 'DCGM_FI_DEV_FB_USED{host="box-b",gpu="0"}') == 74 * 1024
    assert one(p, 'DCGM_FI_DEV_CLOCK_THROTTLE_REASONS{host="box-b",gpu="0"}') == 0x48
    assert not p.query('DCGM_FI_DEV_GPU_TEMP{host="box-a"}')  # box-a has no --dcgm-names
    assert one(p, 'llmtop_server_up{host="box-a"}') == 1
    assert one(p, 'llmtop_server_up{host="box-c"}') == 0
    assert one(p, 'llmtop_server_state{host="box-c",state="down"}') == 1
    assert one(p, 'llmtop_info{host="box-a",mode="attach",model="tiny.gguf"}') == 1
    # counters grow: throttled seconds on box-b, tokens on the real servers, probes on both
    wait_for(
        "box-b's throttled seconds counted",
        lambda: one(p, 'llmtop_gpu_clock_event_seconds_total{host="box-b",gpu="0",reason="HwThermalSlowdown"}') >= 3,
        60,
    )  # fmt: skip
    for box in ("box-a", "box-b"):
        wait_for(
            f"{box}: probes and generated tokens",
            lambda b=box: (
                one(p, f'llmtop_probe_ttft_seconds_count{{host="{b}"}}') >= 2
                and one(p, f'llamacpp:tokens_predicted_total{{host="{b}"}}') > 0
            ),
            60,
        )
    assert not p.query('{job="llmtop", __name__=~"llamacpp:.*"}')  # never re-exported


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads((DEPLOY / "grafana" / "llmtop.json").read_text())
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            out.extend((p["title"], t["expr"]) for t in p.get("targets", []))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
        assert m, var
        out.append((f"${var['name']}", m.group(1)))
    return out


@pytest.mark.parametrize(("title", "expr"), dashboard_exprs())
def test_every_dashboard_expression_returns_series(fleet: Fleet, title: str, expr: str) -> None:
    query = expr.replace("$host", ".+")
    got = wait_for(f"{title}: {query}", lambda: fleet.prom.query(query), 90, every_s=0.5)
    hosts = {r["metric"].get("host") for r in got}
    assert hosts - {None}, (title, got)


def rule_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "llmtop-rules.yml").read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


@pytest.mark.parametrize(("alert", "expr"), rule_exprs())
def test_every_rule_expression_runs_and_returns_series(fleet: Fleet, alert: str, expr: str) -> None:
    got = wait_for(f"{alert}: {expr}", lambda: fleet.prom.query(expr), 60, every_s=0.5)
    assert all("host" in r["metric"] for r in got)


EXPECTED_FIRING = {
    ("LlmtopGpuVramHigh", "box-b", "0"),
    ("LlmtopGpuNearSlowdown", "box-b", "0"),
    ("LlmtopGpuThrottled", "box-b", "0"),
    ("LlmtopCpuFallback", "box-b", None),
    ("LlmtopServerDown", "box-c", None),
    ("LlmtopAgentDown", "box-d", None),
}


def test_the_rules_fire_for_the_right_hosts_only(fleet: Fleet) -> None:
    def firing() -> set[tuple[str, str, str | None]] | None:
        got = {
            (a["labels"]["alertname"], a["labels"]["host"], a["labels"].get("gpu"))
            for a in fleet.prom.alerts()
            if a["state"] == "firing"
        }
        return got if got >= EXPECTED_FIRING else None

    got = wait_for("the fleet's alerts firing", firing, 90, every_s=0.5)
    assert got == EXPECTED_FIRING  # nothing for the cool box-a, box-b's GPU 1, or box-c's GPUs
    # and as Prometheus' ALERTS series, with the rules' severities
    series = fleet.prom.query('ALERTS{alertstate="firing"}')
    sev = {(s["metric"]["alertname"], s["metric"]["host"]): s["metric"]["severity"] for s in series}
    assert sev[("LlmtopGpuThrottled", "box-b")] == "critical"
    assert sev[("LlmtopGpuVramHigh", "box-b")] == "warning"
    assert sev[("LlmtopAgentDown", "box-d")] == "critical"
