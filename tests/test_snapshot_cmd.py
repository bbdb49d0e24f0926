"""`llmtop snapshot` as an operator runs it: a subprocess against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmtop.sources.gpu import LIBRARY_ENV
from llmtop.sources.gpu_sim import SCENARIO_ENV
from tests.nvml_sim.scenarios import GiB, datacenter_gpu, scenario
from tests.realserver import free_port

ROOT = Path(__file__).resolve().parent.parent


def llmtop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("LLAMA_API_KEY", "LLMTOP_API_KEY")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "llmtop", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=full_env)  # fmt: skip


@pytest.mark.real_server
@pytest.mark.nvml_sim
def test_snapshot_json_against_real_server(
    server_factory, nvml_sim_build: Callable[..., Path], tmp_path: Path
) -> None:
    srv = server_factory("--metrics", api_key="snap-secret-key")
    # one simulated GPU on which the server holds 4 GiB (the GPU list is then known content)
    gpu = datacenter_gpu(processes=[{"pid": srv.pid, "used_memory_bytes": 4 * GiB}])
    scen = tmp_path / "scenario.json"
    scen.write_text(json.dumps(scenario(gpu)))
    p = llmtop("snapshot", "--url", srv.url, "--json", "--interval", "0.3",
               env={"LLAMA_API_KEY": "snap-secret-key", LIBRARY_ENV: str(nvml_sim_build(())),
                    SCENARIO_ENV: str(scen)})  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "snap-secret-key" not in p.stdout + p.stderr
    d = json.loads(p.stdout)
    assert {"time", "server", "host", "gpus", "alerts"} <= d.keys()
    s = d["server"]
    for key in ("url", "health", "model_path", "n_ctx", "total_slots", "build_info", "pid",
                "gen_tokens_per_s", "prompt_tokens_per_s", "requests_processing"):  # fmt: skip
        assert key in s, key
    assert s["health"] == "ok" and s["url"] == srv.url
    assert s["model_path"].endswith("tiny.gguf") and s["n_ctx"] == 512 and s["total_slots"] == 1
    assert s["pid"] == srv.pid
    assert s["gen_tokens_per_s"] == 0.0  # two scrapes of an idle server: a rate, and it is 0
    assert d["host"]["process"]["pid"] == srv.pid
    (g,) = d["gpus"]
    assert g["index"] == 0 and g["name"] == "NVIDIA H100 80GB HBM3"
    assert g["memory_total_bytes"] == 80 * GiB and g["memory_used_bytes"] == 20 * GiB
    assert g["used_by_server"] is True and g["server_memory_bytes"] == 4 * GiB
    assert g["processes"] == [{"pid": srv.pid, "used_memory_bytes": 4 * GiB}]
    assert d["gpu_note"] is None


def test_snapshot_unreachable_prints_json_and_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    p = llmtop(
        "snapshot", "--url", url, "--json", env={LIBRARY_ENV: "/nonexistent/libnvidia-ml.so.1"}
    )
    assert p.returncode == 1
    d = json.loads(p.stdout)
    assert d["server"]["health"] == "unreachable"
    assert d["server"]["detail"] == "connection refused"
    assert d["server"]["url"] == url
    assert d["gpus"] == []  # no driver here: no GPUs, and the note says why
    assert d["gpu_note"] == "no NVIDIA driver: libnvidia-ml.so.1 not found"


@pytest.mark.real_server
def test_snapshot_human_summary(llama_server) -> None:
    p = llmtop("snapshot", "--url", llama_server.url, "--interval", "0.2")
    assert p.returncode == 0, p.stderr
    assert f"server  {llama_server.url}  ok" in p.stdout
    assert "tiny.gguf" in p.stdout and "ctx     512" in p.stdout
    assert f"pid {llama_server.pid}" in p.stdout
