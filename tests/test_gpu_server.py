"""Per-process VRAM and the silent-CPU-fallback alert against a real llama-server process.

The GPUs are simulated (real pynvml → simulated libnvidia-ml.so.1); the llama-server is real: its
PID goes into the scenario's process list, its environment is read from /proc.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmtop.collector import Collector
from llmtop.diagnosis.alerts import AlertEngine
from llmtop.diagnosis.thresholds import Thresholds
from llmtop.model.launch_spec import LaunchSpec
from llmtop.sources.gpu_sim import SCENARIO_ENV
from llmtop.sources.llama_http import LlamaClient
from tests.nvml_sim.harness import SimGpus
from tests.nvml_sim.scenarios import GiB, datacenter_gpu, scenario
from tests.realserver import RunningServer

pytestmark = [pytest.mark.nvml_sim, pytest.mark.real_server]

SERVER_BYTES = int(18.2 * GiB)


def test_server_vram_matched_by_pid_and_visible_devices(
    nvml_sim: Callable[..., SimGpus], server_factory: Callable[..., RunningServer]
) -> None:
    srv = server_factory(env={"CUDA_VISIBLE_DEVICES": "1"})
    procs = [
        {"pid": 999_999, "used_memory_bytes": 2 * GiB},
        {"pid": srv.pid, "used_memory_bytes": SERVER_BYTES},
    ]
    sim = nvml_sim(
        scenario(datacenter_gpu(name="card zero"), datacenter_gpu(name="card one", processes=procs))
    )
    sim.monitor.set_server(srv.pid)
    gpu0, gpu1 = sim.at(1).samples
    # CUDA_VISIBLE_DEVICES=1 read from the real process's environment
    assert (gpu0.used_by_server, gpu1.used_by_server) == (False, True)
    assert gpu1.server_memory_bytes == SERVER_BYTES  # the other process is not counted
    assert gpu0.server_memory_bytes == 0
    assert {p.pid for p in gpu1.processes or ()} == {999_999, srv.pid}


def test_memory_of_the_servers_child_processes_counts_as_the_servers(
    nvml_sim: Callable[..., SimGpus],
) -> None:
    """A server started through a wrapper (the wrapper's child holds the VRAM) still shows its
    VRAM; an unrelated process does not. Real processes: a shell whose grandchild sleeps."""
    wrapper = subprocess.Popen(
        ["/bin/sh", "-c", "/bin/sh -c 'sleep 60 & echo $!; wait'; :"],
        stdout=subprocess.PIPE,
        text=True,
    )
    stranger = subprocess.Popen(["sleep", "60"])
    grandchild: int | None = None
    try:
        assert wrapper.stdout is not None
        grandchild = int(wrapper.stdout.readline())  # waits until the grandchild is running
        procs = [
            {"pid": grandchild, "used_memory_bytes": 6 * GiB},
            {"pid": stranger.pid, "used_memory_bytes": 1 * GiB},
        ]
        sim = nvml_sim(scenario(datacenter_gpu(processes=procs)))
        sim.monitor.set_server(wrapper.pid)
        (gpu,) = sim.at(1).samples
        assert gpu.server_memory_bytes == 6 * GiB
    finally:
        if grandchild is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(grandchild, signal.SIGKILL)
        for proc in (stranger, wrapper):
            proc.kill()
            proc.wait(10)
        if wrapper.stdout is not None:
            wrapper.stdout.close()


def _fallback_collector(srv: RunningServer, sim: SimGpus) -> Collector:
    """A collector on the real server and the simulated GPUs, alerting on CPU fallback at once."""
    engine = AlertEngine(
        Thresholds(cpu_fallback_s=0.0, persistence_hint=False), spec=LaunchSpec.from_argv(srv.argv)
    )
    return Collector(
        LlamaClient(srv.url), gpu_monitor=sim.monitor, alert_engine=engine, pid_hint=srv.pid
    )


async def test_cpu_fallback_alert_through_the_collector(
    nvml_sim: Callable[..., SimGpus], server_factory: Callable[..., RunningServer]
) -> None:
    srv = server_factory("--gpu-layers", "35", "--metrics")
    sim = nvml_sim(scenario(datacenter_gpu(processes=[])))  # the server holds nothing on the GPU
    sim.at(1)
    collector = _fallback_collector(srv, sim)
    try:
        snap = await collector.collect()
        assert snap.server.health == "ok"
        assert len(snap.gpus) == 1
        kinds = [a.kind for a in snap.alerts]
        assert kinds == ["cpu_fallback"], snap.alerts
        assert "--gpu-layers 35" in snap.alerts[0].message
        assert "running on the CPU" in snap.alerts[0].message

        # the same server holding memory on the GPU: no alert
        sim2 = nvml_sim(
            scenario(datacenter_gpu(processes=[{"pid": srv.pid, "used_memory_bytes": 4 * GiB}]))
        )
        sim2.at(1)
        collector.gpu_monitor = sim2.monitor
        snap = await collector.collect()
        assert [a.kind for a in snap.alerts] == []
    finally:
        await collector.aclose()


async def test_cpu_fallback_alert_when_attached_reads_the_servers_own_argv(
    nvml_sim: Callable[..., SimGpus], server_factory: Callable[..., RunningServer]
) -> None:
    """Attached by URL, llmtop is given no launch arguments: it reads the server process's
    argv, so the CPU-fallback alert still fires (and the agent's exporter can raise it)."""
    srv = server_factory("--gpu-layers", "35", "--metrics")
    sim = nvml_sim(scenario(datacenter_gpu(processes=[])))
    sim.at(1)
    engine = AlertEngine(Thresholds(cpu_fallback_s=0.0, persistence_hint=False))
    collector = Collector(
        LlamaClient(srv.url), gpu_monitor=sim.monitor, alert_engine=engine, pid_hint=srv.pid
    )
    try:
        snap = await collector.collect()
        assert snap.server.health == "ok"
        spec = collector.server_spec()
        assert spec is not None and spec.gpu_layers == 35
        fallback = [a for a in snap.alerts if a.kind == "cpu_fallback"]
        assert fallback and "--gpu-layers 35" in fallback[0].message, snap.alerts
    finally:
        await collector.aclose()


async def test_no_gpu_layers_requested_no_fallback_alert(
    nvml_sim: Callable[..., SimGpus], server_factory: Callable[..., RunningServer]
) -> None:
    srv = server_factory("--gpu-layers", "0")
    sim = nvml_sim(scenario(datacenter_gpu(processes=[])))
    sim.at(1)
    collector = _fallback_collector(srv, sim)
    try:
        snap = await collector.collect()
        assert snap.server.health == "ok"
        assert snap.alerts == ()
    finally:
        await collector.aclose()


def test_snapshot_json_fills_gpus_and_alerts(
    nvml_sim_build: Callable[..., Path],
    server_factory: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    srv = server_factory("--metrics")
    hot = datacenter_gpu(
        processes=[{"pid": srv.pid, "used_memory_bytes": int(18.2 * GiB)}],
        keyframes=[
            {
                "t": 0,
                "memory_used_bytes": 70 * GiB,
                "temp_c": 84,
                "sm_clock_mhz": 1980,
                "gpu_util": 90,
                "mem_util": 30,
                "mem_clock_mhz": 2619,
                "power_w": 500,
                "fan_percent": 60,
                "pstate": 0,
                "clock_event_reasons": [],
            }
        ],
    )
    scen = tmp_path / "scenario.json"
    scen.write_text(json.dumps(scenario(hot)))
    env = {**os.environ, "LLMTOP_NVML_LIBRARY": str(nvml_sim_build(())), SCENARIO_ENV: str(scen)}
    proc = subprocess.run(
        [sys.executable, "-m", "llmtop", "snapshot", "--url", srv.url, "--json", "--interval", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    (g,) = data["gpus"]
    assert g["name"] == "NVIDIA H100 80GB HBM3" and g["lost"] is False
    assert g["temperature_c"] == 84.0 and g["temp_slowdown_c"] == 87.0
    assert g["processes"] == [{"pid": srv.pid, "used_memory_bytes": int(18.2 * GiB)}]
    assert data["gpu_note"] is None
    kinds = {a["kind"]: a for a in data["alerts"]}
    assert set(kinds) == {"vram_high", "temp_near_slowdown"}
    assert all(set(a) == {"kind", "severity", "message", "since"} for a in data["alerts"])
