"""The shipped deployment files: promtool checks the Prometheus config and rules and runs the
rules' unit tests; the Grafana dashboard has the panels the issue asks for. (Every PromQL
expression of both is executed against a real Prometheus in tests/test_prometheus_real.py.)"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import missing_component
from tests.exporter_procs import prometheus_binaries

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROM = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "llmtop.json"
ALERTS = {
    "LlmtopGpuVramHigh",
    "LlmtopGpuNearSlowdown",
    "LlmtopGpuThrottled",
    "LlmtopCpuFallback",
    "LlmtopServerDown",
    "LlmtopAgentDown",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = prometheus_binaries()
    if found is None:
        missing_component("prometheus/promtool (Debian package prometheus; scripts/setup.sh)")
    assert found is not None
    return found[1]


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_checks_the_config_and_its_rule_file(promtool: str) -> None:
    r = run([promtool, "check", "config", "prometheus.yml"], PROM)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout + r.stderr


def test_promtool_checks_the_rules(promtool: str) -> None:
    r = run([promtool, "check", "rules", "llmtop-rules.yml"], PROM)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(ALERTS)} rules found" in r.stdout + r.stderr


def test_promtool_unit_tests_of_the_rules_pass(promtool: str) -> None:
    r = run([promtool, "test", "rules", "llmtop-rules.test.yml"], PROM)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_the_unit_tests_cover_every_alert_firing_and_not() -> None:
    tests = yaml.safe_load((PROM / "llmtop-rules.test.yml").read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for t in tests["tests"]:
        for case in t["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert firing == ALERTS
    assert quiet >= ALERTS - {"LlmtopCpuFallback"}


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM / "llmtop-rules.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def test_rules_mirror_llmtops_alerts_with_severity_and_words() -> None:
    by_name = {r["alert"]: r for r in rules()}
    assert set(by_name) == ALERTS
    for r in by_name.values():
        assert r["labels"]["severity"] in ("warning", "critical")
        assert r["annotations"]["summary"] and r["annotations"]["description"]
    assert "0.85" in by_name["LlmtopGpuVramHigh"]["expr"]
    assert by_name["LlmtopGpuThrottled"]["for"] == "5m"
    assert "- 5" in by_name["LlmtopGpuNearSlowdown"]["expr"]
    assert 'job="llmtop"' in by_name["LlmtopAgentDown"]["expr"]


def test_prometheus_yml_scrapes_the_agent_and_llama_server() -> None:
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert set(jobs) == {"llmtop", "llama-server"}
    assert jobs["llmtop"]["static_configs"][0]["targets"] == ["127.0.0.1:9464"]
    assert jobs["llama-server"]["static_configs"][0]["targets"] == ["127.0.0.1:8080"]
    assert cfg["rule_files"] == ["llmtop-rules.yml"]
    for job in jobs.values():  # both jobs give every target a host label
        assert job["relabel_configs"][0]["target_label"] == "host"


def dashboard_exprs(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) for every query target of every panel (rows included)."""
    out: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            for t in p.get("targets", []):
                out.append((p["title"], t["expr"]))
            walk(p.get("panels", []))

    walk(dash["panels"])
    return out


def test_dashboard_has_the_panels_of_the_issue() -> None:
    dash = json.loads(DASHBOARD.read_text())
    titles = {p["title"] for p in dash["panels"]}
    for title in (
        "Temperature vs slowdown",
        "SM clock % of max",
        "Throttle reasons",
        "VRAM",
        "Generation tokens/s",
        "TTFT p95",
    ):
        assert title in titles, title
    exprs = dict(dashboard_exprs(dash))
    assert "rate(llamacpp:tokens_predicted_total{" in exprs["Generation tokens/s"]
    assert "[1m])" in exprs["Generation tokens/s"]
    assert exprs["TTFT p95"].startswith("histogram_quantile(0.95,")
    assert "llmtop_probe_ttft_seconds_bucket" in exprs["TTFT p95"]
    timeline = next(p for p in dash["panels"] if p["title"] == "Throttle reasons")
    assert timeline["type"] == "state-timeline"


def test_dashboard_is_importable_and_per_host() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["__inputs"][0]["name"] == "DS_PROMETHEUS"
    host = dash["templating"]["list"][0]
    assert host["name"] == "host" and host["query"]["query"] == "label_values(llmtop_info, host)"
    assert any(p.get("repeat") == "host" for p in dash["panels"] if p["type"] == "row")
    for title, expr in dashboard_exprs(dash):
        assert 'host=~"$host"' in expr, (title, expr)
    for p in dash["panels"]:
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${DS_PROMETHEUS}"
        # no variable other than $host: the real-Prometheus test substitutes exactly that one
        for t in p.get("targets", []):
            assert set(re.findall(r"\$\w+", t["expr"])) <= {"$host"}
