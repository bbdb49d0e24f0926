"""Unit checks reach the alerts; `llmtop` with no arguments discovers units (confined systemd box).

The unit checks and discovery run against a real systemd user manager in the box; servers are
real llama-servers with the tiny model on 127.0.0.1 (a unit that would listen on 0.0.0.0 is
written but never started).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmtop.collector import Collector
from llmtop.commands.dashboard import merge_targets
from llmtop.model.launch_spec import LaunchSpec
from llmtop.sources.discovery import DiscoveredServer
from llmtop.sources.gpu_sim import SCENARIO_ENV
from llmtop.sources.llama_http import LlamaClient
from llmtop.sources.unit_status import DiscoveredUnit, UnitMonitor
from tests.realserver import free_port, server_argv, wait_healthy
from tests.systemd_box.box import SystemdBox
from tests.systemd_box.fixtures import TEST_API_KEY, BoxUnit

REPO = Path(__file__).resolve().parent.parent


def _argv(binary: Path, model: Path, *extra: str, host: str = "127.0.0.1") -> list[str]:
    return server_argv(binary, model, free_port(), *extra, host=host)


def _snapshot_in_box(box: SystemdBox, unit: str) -> tuple[int, dict]:
    r = box.run(
        ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "llmtop", "snapshot", "--unit",
         unit, "--user", "--json", "--interval", "0"],
        check=False, timeout=60,
    )  # fmt: skip
    assert r.stdout.strip(), r.stderr
    assert TEST_API_KEY not in r.stdout
    return r.returncode, json.loads(r.stdout)


def _unit_alerts(data: dict) -> list[dict]:
    return [a for a in data["alerts"] if a["kind"].startswith("unit")]


@pytest.mark.systemd
@pytest.mark.real_server
@pytest.mark.timeout(240)
async def test_unit_checks_arrive_as_alerts(
    systemd_box: SystemdBox,
    unit_factory: Callable[..., BoxUnit],
    llama_server_bin: Path,
    tiny_model: Path,
    llama_unit: BoxUnit,
) -> None:
    # a GPU unit (-ngl 99) without CUDA_VISIBLE_DEVICES / LD_LIBRARY_PATH, running and healthy
    argv = _argv(llama_server_bin, tiny_model, "-ngl", "99")
    gpu_unit = unit_factory(argv, prefix="llmtop-gpu")
    gpu_unit.port = int(argv[argv.index("--port") + 1])
    await asyncio.to_thread(wait_healthy, gpu_unit.url, 60)
    code, data = _snapshot_in_box(systemd_box, gpu_unit.name)
    assert code == 0 and data["server"]["health"] == "ok"
    alerts = _unit_alerts(data)
    assert len(alerts) == 1, data["alerts"]
    assert alerts[0]["severity"] == "warning"
    assert "CUDA_VISIBLE_DEVICES and LD_LIBRARY_PATH missing" in alerts[0]["message"]

    # listening on every interface without an API key (written, never started: loopback only)
    exposed = unit_factory(
        _argv(llama_server_bin, tiny_model, host="0.0.0.0"), prefix="llmtop-exposed", start=False
    )
    _, data = _snapshot_in_box(systemd_box, exposed.name)
    assert data["unit"]["active_state"] == "inactive"
    messages = [a["message"] for a in _unit_alerts(data)]
    assert any("--host 0.0.0.0 without an API key" in m for m in messages), messages

    # a healthy, well-formed unit (loopback, key, -ngl 0, Restart=on-failure): no unit alerts
    code, data = _snapshot_in_box(systemd_box, llama_unit.name)
    assert code == 0 and _unit_alerts(data) == []

    # the dashboard's collector keeps each warning's first-seen time across ticks
    monitor = UnitMonitor(gpu_unit.name, user=True, command_prefix=systemd_box.command_prefix)
    collector = Collector(LlamaClient(gpu_unit.url), unit_monitor=monitor)
    try:
        first = await collector.collect()
        second = await collector.collect()
    finally:
        await collector.aclose()
    assert [a.kind for a in first.alerts] == ["unit_check"]
    assert second.time > first.time
    assert second.alerts[0].since == first.alerts[0].since == first.time


_DISCOVER = """
import argparse, json, sys
from llmtop.commands import dashboard
from llmtop.sources.discovery import discover_servers
p = argparse.ArgumentParser(); dashboard.add_arguments(p)
args = p.parse_args([]); args.server_argv = []
s = dashboard.build_session(args)
out = dict(mode=s.mode, url=s.url, unit=getattr(s.controller, "name", None),
           candidates=[dict(url=t.url, pid=t.pid, unit=t.unit, user=t.user, label=t.label)
                       for t in s.candidates],
           processes=[srv.pid for srv in discover_servers()])
if s.candidates:  # what the pick list does with the operator's choice
    t = s.candidates[int(sys.argv[1])]
    s.pick(t)
    out["picked"] = dict(mode=s.mode, url=s.url, unit=getattr(s.controller, "name", None),
                         followers=len(s.log_followers), collector=s.collector is not None)
print(json.dumps(out))
"""


def _discover_in_box(box: SystemdBox, pick: int = 0) -> dict:
    r = box.run(
        ["env", f"PYTHONPATH={REPO}", "XDG_CONFIG_HOME=/nonexistent-llmtop-config",
         sys.executable, "-c", _DISCOVER, str(pick)],
        check=False, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert TEST_API_KEY not in r.stdout
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.systemd
@pytest.mark.real_server
@pytest.mark.timeout(240)
async def test_no_arguments_discovers_units(
    systemd_box: SystemdBox,
    unit_factory: Callable[..., BoxUnit],
    llama_server_bin: Path,
    tiny_model: Path,
    llama_unit: BoxUnit,
) -> None:
    """Inside the box (its own PID namespace, so MainPID is what psutil sees): one llama-server
    unit → unit mode directly; two → a pick list of the units, each listed once although its
    process is found as well; picking one opens unit mode."""
    out = await asyncio.to_thread(_discover_in_box, systemd_box)
    assert out["mode"] == "unit", out
    assert out["unit"] == llama_unit.name and out["url"] == llama_unit.url
    assert out["candidates"] == []

    argv = _argv(llama_server_bin, tiny_model)
    second = unit_factory(argv, prefix="llmtop-llama")
    second.port = int(argv[argv.index("--port") + 1])
    await asyncio.to_thread(wait_healthy, second.url, 60)
    out = await asyncio.to_thread(_discover_in_box, systemd_box, 1)
    assert out["mode"] == "none"
    cands = sorted(out["candidates"], key=lambda c: c["unit"] or "")
    assert [c["unit"] for c in cands] == sorted([llama_unit.name, second.name])
    assert all(c["user"] for c in cands)
    by_unit = {c["unit"]: c for c in cands}
    assert by_unit[llama_unit.name]["pid"] == llama_unit.main_pid()
    assert by_unit[second.name]["pid"] == second.main_pid()
    # both processes are found by process discovery too, yet each is listed once, as its unit
    assert {llama_unit.main_pid(), second.main_pid()} <= set(out["processes"])
    assert by_unit[second.name]["url"] == second.url
    assert "user, active" in by_unit[second.name]["label"]
    picked_name = out["candidates"][1]["unit"]
    picked = out["picked"]
    assert picked["mode"] == "unit" and picked["unit"] == picked_name
    assert picked["followers"] == 1 and picked["collector"]


def _server(pid: int, port: int, key: str | None = None) -> DiscoveredServer:
    argv = ["/opt/llama/bin/llama-server", "-m", "/m/model.gguf", "--port", str(port)]
    if key:
        argv += ["--api-key", key]
    spec = LaunchSpec.from_argv(argv)
    return DiscoveredServer(
        pid=pid, spec=spec, url=spec.url, model="/m/model.gguf", gpu_layers=None, ctx_size=None,
        started_at=None, cmdline_redacted=tuple(spec.redacted()),
    )  # fmt: skip


def test_merge_lists_a_unit_process_once_as_the_unit() -> None:
    units = [
        DiscoveredUnit("llm.service", False, "active", "running", ("llama-server",),
                       main_pid=100, url="http://127.0.0.1:8080"),
        DiscoveredUnit("spare.service", True, "inactive", "dead", ("llama-server",),
                       url="http://127.0.0.1:9000"),
    ]  # fmt: skip
    servers = [_server(100, 8080), _server(200, 8081, key="sk-secret")]
    targets = merge_targets(servers, units)
    assert [(t.unit, t.pid) for t in targets] == [
        ("llm.service", 100),
        ("spare.service", None),
        (None, 200),
    ]
    assert targets[0].url == "http://127.0.0.1:8080" and not targets[0].user
    assert targets[1].user and targets[1].url == "http://127.0.0.1:9000"
    assert "llm.service (system, active)" in targets[0].label
    # a plain process keeps its key for attaching, but never in what the pick list shows
    assert targets[2].api_key == "sk-secret"
    assert all("sk-secret" not in t.label and "sk-secret" not in repr(t) for t in targets)


@pytest.mark.systemd
@pytest.mark.nvml_sim
@pytest.mark.real_server
@pytest.mark.timeout(240)
async def test_gpu_card_follows_the_units_main_pid(
    systemd_box: SystemdBox,
    unit_factory: Callable[..., BoxUnit],
    llama_server_bin: Path,
    tiny_model: Path,
    nvml_sim: Callable[..., object],
) -> None:
    """Unit mode: the GPU monitor is told the unit's MainPID (and its ExecStart spec); after a
    restart through systemd the card's server VRAM is the new process's."""
    from llmtop.control.systemd_unit import UnitController
    from tests.nvml_sim.scenarios import GiB, datacenter_gpu, scenario

    argv = _argv(llama_server_bin, tiny_model, "-ngl", "99")
    unit = unit_factory(argv, prefix="llmtop-gpu", extra="Environment=CUDA_VISIBLE_DEVICES=0\n")
    unit.port = int(argv[argv.index("--port") + 1])
    await asyncio.to_thread(wait_healthy, unit.url, 60)
    first = unit.main_pid()
    monitor = UnitMonitor(unit.name, user=True, command_prefix=systemd_box.command_prefix)
    ctl = UnitController(
        unit.name, user=True, command_prefix=systemd_box.command_prefix, monitor=monitor
    )
    sim = nvml_sim(
        scenario(datacenter_gpu(processes=[{"pid": first, "used_memory_bytes": 3 * GiB}]))
    )
    collector = Collector(
        LlamaClient(unit.url),
        supervisor=ctl,
        unit_monitor=monitor,
        gpu_monitor=sim.monitor,  # type: ignore[attr-defined]
    )
    try:
        await collector.collect()
        sim.at(1)  # type: ignore[attr-defined]
        snap = await collector.collect()
        assert snap.unit is not None and snap.unit.main_pid == first
        assert snap.gpus[0].server_memory_bytes == 3 * GiB
        # the monitor knows the unit's spec: its Environment= gives CUDA_VISIBLE_DEVICES
        assert dict(sim.monitor._server_env or {}).get("CUDA_VISIBLE_DEVICES") == "0"  # type: ignore[attr-defined]

        await ctl.restart()
        second = unit.main_pid()
        assert second not in (0, first)
        # same monitor, new scenario (read at nvmlInit) listing the old and the new process:
        # only the collector telling the monitor the new MainPID makes it count 6 GiB
        new = scenario(
            datacenter_gpu(
                processes=[
                    {"pid": first, "used_memory_bytes": 3 * GiB},
                    {"pid": second, "used_memory_bytes": 6 * GiB},
                ]
            )
        )
        sim.monitor.stop()  # type: ignore[attr-defined]
        Path(os.environ[SCENARIO_ENV]).write_text(json.dumps(new))
        sim.monitor.open()  # type: ignore[attr-defined]
        await collector.collect()
        sim.at(2)  # type: ignore[attr-defined]
        snap = await collector.collect()
        assert snap.unit is not None and snap.unit.main_pid == second
        assert snap.gpus[0].server_memory_bytes == 6 * GiB
    finally:
        await collector.aclose()
