"""GPU-side checks of planning and apply through the simulated NVML (real pynvml → simulated
libnvidia-ml.so.1) with a real llama-server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from llmtop.control.supervisor import ChildSupervisor
from llmtop.control.tuning import apply_with_rollback
from llmtop.model.launch_spec import LaunchSpec
from llmtop.sources.gpu_sim import SCENARIO_ENV
from llmtop.sources.logs import LogStore
from tests.nvml_sim.harness import SimGpus
from tests.nvml_sim.scenarios import GiB, consumer_gpu, datacenter_gpu, scenario
from tests.realserver import free_port, server_argv

pytestmark = [pytest.mark.nvml_sim]


def test_plan_reads_total_and_free_vram_of_a_gpu(
    nvml_sim_build: Callable[[Iterable[str]], Path], tiny_model: Path, tmp_path: Path
) -> None:
    lib = nvml_sim_build(())
    card = consumer_gpu()
    card["keyframes"][0]["memory_used_bytes"] = 6 * GiB
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario(datacenter_gpu(), card)))
    env = {**os.environ, "LLMTOP_NVML_LIBRARY": str(lib), SCENARIO_ENV: str(path)}
    cp = subprocess.run(
        [sys.executable, "-m", "llmtop", "plan", str(tiny_model), "--gpu", "1", "--json"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    d = json.loads(cp.stdout)
    assert d["gpu_name"] == "NVIDIA GeForce RTX 4090"
    assert d["vram_bytes"] == 24 * GiB
    assert d["free_bytes"] is not None and 17 * GiB <= d["free_bytes"] <= 18 * GiB
    assert d["fits"] is True and d["max_gpu_layers"] == 5 and d["max_ctx"] == 512
    # no such GPU: said in words
    cp = subprocess.run(
        [sys.executable, "-m", "llmtop", "plan", str(tiny_model), "--gpu", "7", "--json"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert "no GPU with index 7" in json.loads(cp.stdout)["note"]


@pytest.mark.real_server
async def test_gpu_layers_without_vram_is_rolled_back(
    nvml_sim: Callable[..., SimGpus], llama_server_bin: Path, tiny_model: Path
) -> None:
    # The GPU lists no process at all: whatever llama-server does, it is not on the GPU.
    sim = nvml_sim(scenario(datacenter_gpu(processes=[])))
    sim.at(1)
    spec = LaunchSpec.from_argv(server_argv(llama_server_bin, tiny_model, free_port(), "-ngl", "0"))
    sup = ChildSupervisor(spec, LogStore())
    try:
        await sup.start()
        rec = await apply_with_rollback(
            sup,  # type: ignore[arg-type]
            spec.with_option("gpu_layers", 3),
            health_url=spec.url + "/health",
            timeout_s=60.0,
            log_store=sup.log_store,
            gpu_monitor=sim.monitor,
        )
        assert rec.result == "rolled_back"
        assert rec.reason and "silent CPU fallback" in rec.reason
        assert sup.spec == spec and sup.status().state == "ready"
    finally:
        await sup.stop()
