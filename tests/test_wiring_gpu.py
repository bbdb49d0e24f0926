"""The GPU monitor follows the supervised server; alert thresholds from flags; LLAMA_ARG_* env.

GPUs are simulated (real pynvml → simulated libnvidia-ml.so.1); llama-server is real.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llmtop.collector import Collector
from llmtop.commands import dashboard
from llmtop.control.supervisor import ChildSupervisor, RestartPolicy
from llmtop.diagnosis.alerts import AlertEngine
from llmtop.diagnosis.thresholds import Thresholds
from llmtop.model.launch_spec import LaunchSpec
from llmtop.sources.gpu_sim import SCENARIO_ENV
from llmtop.sources.llama_http import LlamaClient
from llmtop.sources.logs import LogStore
from tests.nvml_sim.harness import SimGpus
from tests.nvml_sim.scenarios import GiB, datacenter_gpu, scenario
from tests.realserver import RunningServer, free_port, server_argv, wait_healthy

REPO = Path(__file__).resolve().parent.parent
STALE_PID = 999_998  # a process on the GPU that is not the server


def _argv(binary: Path, model: Path, *extra: str) -> list[str]:
    return server_argv(binary, model, free_port(), *extra)


def _two_gpus(procs: list[dict[str, int]]) -> dict:
    return scenario(
        datacenter_gpu(name="card zero"), datacenter_gpu(name="card one", processes=procs)
    )


def _reopen(sim: SimGpus, scen: dict) -> None:
    """Same monitor, new scenario (the simulator reads it at nvmlInit): what the monitor was
    told about the server survives, so only the collector can make it follow a new pid."""
    sim.monitor.stop()
    Path(os.environ[SCENARIO_ENV]).write_text(json.dumps(scen))
    sim.monitor.open()


@pytest.mark.nvml_sim
@pytest.mark.real_server
@pytest.mark.timeout(180)
async def test_gpu_card_follows_the_supervised_child_across_a_restart(
    nvml_sim: Callable[..., SimGpus], llama_server_bin: Path, tiny_model: Path
) -> None:
    # the child sees only GPU 1 (CUDA_VISIBLE_DEVICES in its launch spec) and asks for layers
    spec = LaunchSpec.from_argv(
        _argv(llama_server_bin, tiny_model, "-ngl", "99"), {"CUDA_VISIBLE_DEVICES": "1"}
    )
    sup = ChildSupervisor(spec, LogStore(), RestartPolicy(on_failure=False))
    await sup.start()
    collector: Collector | None = None
    try:
        await _ready(sup)
        first = sup.pid
        assert first is not None
        sim = nvml_sim(_two_gpus([{"pid": first, "used_memory_bytes": 3 * GiB}]))
        collector = Collector(
            LlamaClient(spec.url),
            supervisor=sup,
            gpu_monitor=sim.monitor,
            alert_engine=AlertEngine(Thresholds(cpu_fallback_s=0.0, persistence_hint=False)),
        )
        await collector.collect()  # tells the monitor: this pid, this spec
        sim.at(1)
        snap = await collector.collect()
        gpu0, gpu1 = snap.gpus
        assert (gpu0.used_by_server, gpu1.used_by_server) == (False, True)
        assert gpu1.server_memory_bytes == 3 * GiB
        assert "cpu_fallback" not in [a.kind for a in snap.alerts]

        await sup.restart()
        await _ready(sup)
        second = sup.pid
        assert second not in (None, first)
        # the GPU still lists the old pid (stale entry) and now the new server's 5 GiB
        _reopen(
            sim,
            _two_gpus(
                [
                    {"pid": first, "used_memory_bytes": 3 * GiB},
                    {"pid": second, "used_memory_bytes": 5 * GiB},
                    {"pid": STALE_PID, "used_memory_bytes": 1 * GiB},
                ]
            ),
        )
        await collector.collect()
        sim.at(2)
        snap = await collector.collect()
        assert snap.server.pid == second
        gpu0, gpu1 = snap.gpus
        assert gpu1.server_memory_bytes == 5 * GiB  # the new child only
        assert (gpu0.used_by_server, gpu1.used_by_server) == (False, True)

        # the restarted server holds nothing on its GPU: the CPU-fallback alert, from the
        # supervisor's spec (-ngl 99), without anyone setting it on the engine
        _reopen(sim, _two_gpus([{"pid": STALE_PID, "used_memory_bytes": 1 * GiB}]))
        await collector.collect()
        sim.at(3)
        snap = await collector.collect()
        assert snap.gpus[1].server_memory_bytes == 0
        fallback = [a for a in snap.alerts if a.kind == "cpu_fallback"]
        assert fallback and "--gpu-layers 99" in fallback[0].message
    finally:
        if collector is not None:
            await collector.aclose()
        await sup.stop()


async def _ready(sup: ChildSupervisor) -> None:
    import asyncio

    for _ in range(1200):
        if sup.state == "ready":
            return
        assert sup.state not in ("failed", "exited", "stopped"), sup.status()
        await asyncio.sleep(0.05)
    raise AssertionError(f"child not ready: {sup.status()}")


@pytest.mark.nvml_sim
@pytest.mark.real_server
@pytest.mark.timeout(180)
def test_snapshot_vram_alert_percent_flag(
    nvml_sim_build: Callable[..., Path],
    server_factory: Callable[..., RunningServer],
    tmp_path: Path,
) -> None:
    """40 of 80 GiB used: no alert by default (85 % line); `--vram-alert-percent 5` raises it."""
    srv = server_factory()
    gpu = datacenter_gpu(
        processes=[{"pid": srv.pid, "used_memory_bytes": 4 * GiB}],
        keyframes=[{"t": 0, "memory_used_bytes": 40 * GiB, "temp_c": 50}],
    )
    scen = tmp_path / "scenario.json"
    scen.write_text(json.dumps(scenario(gpu)))
    env = {**os.environ, "LLMTOP_NVML_LIBRARY": str(nvml_sim_build(())), SCENARIO_ENV: str(scen)}
    env.pop("LLMTOP_CONFIG", None)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "no-config")

    def kinds(*flags: str) -> tuple[list[str], dict]:
        proc = subprocess.run(
            [sys.executable, "-m", "llmtop", "snapshot", "--url", srv.url, "--json",
             "--interval", "0", *flags],
            capture_output=True, text=True, timeout=60, env=env, check=False, cwd=REPO,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        data = json.loads(proc.stdout)
        return [a["kind"] for a in data["alerts"]], data

    default, _ = kinds()
    assert "vram_high" not in default
    low, data = kinds("--vram-alert-percent", "5")
    assert "vram_high" in low
    msg = next(a["message"] for a in data["alerts"] if a["kind"] == "vram_high")
    assert "above the 5 % line" in msg

    # the same limit from the config file; the flag still wins over the file
    cfg = tmp_path / "config.toml"
    cfg.write_text("[alerts]\nvram_percent = 5\n")
    from_file, _ = kinds("--config", str(cfg))
    assert "vram_high" in from_file
    overridden, _ = kinds("--config", str(cfg), "--vram-alert-percent", "95")
    assert "vram_high" not in overridden

    # a broken config file is told in words, exit 2, no traceback
    cfg.write_text("[alerts]\nvram_percnt = 5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "llmtop", "snapshot", "--url", srv.url, "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, env=env, check=False, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "vram_percnt" in proc.stderr and "Traceback" not in proc.stderr


def _dashboard_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    dashboard.add_arguments(parser)
    own, server = (list(argv), [])
    if "--" in own:
        i = own.index("--")
        own, server = own[:i], own[i + 1 :]
    args = parser.parse_args(own)
    args.server_argv = server
    return args


def test_dashboard_thresholds_flags_reach_the_alert_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("LLMTOP_CONFIG", raising=False)
    args = _dashboard_args("--url", "http://127.0.0.1:9", "--vram-alert-percent", "42",
                           "--temp-margin-c", "9")  # fmt: skip
    session = dashboard.build_session(args)
    assert not isinstance(session, str)
    assert session.alert_factory is not None
    engine = session.alert_factory()
    assert engine.thresholds.vram_percent == 42.0 and engine.thresholds.temp_margin_c == 9.0
    # the config file is read when no flag is given; a bad one is an error in words
    (tmp_path / "llmtop").mkdir()
    (tmp_path / "llmtop" / "config.toml").write_text("[alerts]\nthrottle_s = 30\n")
    session = dashboard.build_session(_dashboard_args("--url", "http://127.0.0.1:9"))
    assert not isinstance(session, str) and session.alert_factory is not None
    assert session.alert_factory().thresholds.throttle_s == 30.0
    (tmp_path / "llmtop" / "config.toml").write_text("[alerts]\nthrottle_s = 'soon'\n")
    err = dashboard.build_session(_dashboard_args("--url", "http://127.0.0.1:9"))
    assert isinstance(err, str) and "throttle_s" in err


@pytest.mark.real_server
@pytest.mark.timeout(120)
async def test_llama_arg_port_from_the_environment_reaches_the_child(
    llama_server_bin: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`LLAMA_ARG_PORT=P llmtop -- llama-server -m model …`: the dashboard watches port P,
    where the child really listens."""
    port = free_port()
    monkeypatch.setenv("LLAMA_ARG_PORT", str(port))
    monkeypatch.setenv("XDG_CONFIG_HOME", "/nonexistent")
    args = _dashboard_args(
        "--", str(llama_server_bin), "-m", str(tiny_model), "--host", "127.0.0.1",
        "-c", "512", "-np", "1", "-t", "1",
    )  # fmt: skip
    session = dashboard.build_session(args)
    assert not isinstance(session, str)
    assert session.mode == "child"
    assert session.url == f"http://127.0.0.1:{port}"
    session.gpu_factory = None  # no GPU part needed here
    try:
        await session.start()
        import asyncio

        await asyncio.to_thread(wait_healthy, f"http://127.0.0.1:{port}", 60)
        snap = None
        for _ in range(100):
            snap = await session.collect()
            if snap is not None and snap.server.health == "ok":
                break
            await asyncio.sleep(0.2)
        assert snap is not None and snap.server.health == "ok"
        assert snap.server.pid == session.controller.pid
    finally:
        await session.close()
