"""The agent's Prometheus exporter: scrape latency and CPU with 8 simulated GPUs.

A real `llmtop agent --listen` process on the simulated libnvidia-ml.so.1 (8 H100-like GPUs,
half of them throttling) is scraped over HTTP like Prometheus does, one new connection per
scrape. Targets (issue 11): scrape p95 ≤ 5 ms; the exporter adds ≤ 0.2 % of a core to the agent
at a 15 s scrape interval.

The CPU figure is measured on the agent process (psutil): its CPU during a burst of scrapes
minus its own baseline rate over the same wall time gives the CPU of one scrape; at one scrape
per 15 s that is per_scrape / 15 s, plus what the sink does on every tick (`on_snapshot`, timed
in-process on an 8-GPU snapshot, once per 1 s tick).

`python -m benchmarks.exporter_bench` prints a table; `run()` returns rows for
`python -m benchmarks`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llmtop.agent.exporter import MetricsExporter  # noqa: E402
from llmtop.snapshot import ServerStatus, Snapshot  # noqa: E402
from llmtop.sources.gpu import GpuMonitor  # noqa: E402
from llmtop.sources.gpu_sim import SCENARIO_ENV, build_sim_library  # noqa: E402
from tests.exporter_procs import start_agent, stop_pid  # noqa: E402
from tests.nvml_sim.scenarios import GiB, datacenter_gpu, scenario  # noqa: E402
from tests.realserver import free_port  # noqa: E402

SCRAPE_INTERVAL_S = 15.0
TICK_S = 1.0


def _scenario(n: int = 8) -> dict:
    gpus = []
    for i in range(n):
        g = datacenter_gpu(uuid=f"GPU-bench-{i:04d}", pci_bus_id=f"00000000:{i + 1:02X}:00.0",
                           processes=[{"pid": 1, "used_memory_bytes": 10 * GiB}])  # fmt: skip
        if i % 2:
            g["keyframes"][0]["clock_event_reasons"] = ["HwSlowdown", "HwThermalSlowdown"]
        gpus.append(g)
    return scenario(*gpus)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return float(t.user + t.system)


def on_snapshot_cost(lib: Path, scen: Path, n: int = 2000) -> float:
    """Seconds of CPU per `on_snapshot` with an 8-GPU snapshot (in this process)."""
    os.environ[SCENARIO_ENV] = str(scen)
    mon = GpuMonitor(library_path=str(lib))
    try:
        if not mon.open():
            raise RuntimeError(f"simulated NVML gave no GPUs: {mon.latest().note}")
        gpus = mon.sample_once().samples
    finally:
        mon.stop()
    exp = MetricsExporter(mode="attach", probes=True)
    server = ServerStatus(url="http://127.0.0.1:1", health="ok", model_path="/m/x.gguf")
    t0 = time.process_time()
    for i in range(n):
        exp.on_snapshot(Snapshot(time=1000.0 + i, server=server, gpus=gpus))
    return (time.process_time() - t0) / n


def run(scrapes: int = 300, baseline_s: float = 10.0) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="llmtop-exporter-bench-") as d:
        tmp = Path(d)
        lib = build_sim_library(ROOT / "tests" / "_build" / "nvml_sim")
        scen = tmp / "eight.json"
        scen.write_text(json.dumps(_scenario()))
        env = {"LLMTOP_NVML_LIBRARY": str(lib), SCENARIO_ENV: str(scen)}
        agent = start_agent(["--url", f"http://127.0.0.1:{free_port()}", "--interval", str(TICK_S),
                             "--probe-every", "1h"], log_dir=tmp, env=env)  # fmt: skip
        try:
            proc = psutil.Process(agent.proc.pid)
            with httpx.Client(timeout=5.0) as client:
                deadline = time.monotonic() + 30
                while "llmtop_gpu_temperature_celsius{" not in client.get(agent.url).text:
                    if time.monotonic() > deadline:
                        raise RuntimeError("agent served no GPU metrics:\n" + agent.log()[-2000:])
                    time.sleep(0.1)
                body = client.get(agent.url).content
                for _ in range(20):  # warm up
                    client.get(agent.url)
                # the agent's own rate, no scrapes
                c0, w0 = _cpu_s(proc), time.monotonic()
                time.sleep(baseline_s)
                base_rate = (_cpu_s(proc) - c0) / (time.monotonic() - w0)
                lat: list[float] = []
                c0, w0 = _cpu_s(proc), time.monotonic()
                for _ in range(scrapes):
                    t = time.perf_counter()
                    r = client.get(agent.url, headers={"Connection": "close"})
                    lat.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200
                wall = time.monotonic() - w0
                burst = _cpu_s(proc) - c0
        finally:
            stop_pid(agent.proc)
        per_scrape = max(0.0, burst - base_rate * wall) / scrapes
        tick = on_snapshot_cost(lib, scen)
        share = 100 * (per_scrape / SCRAPE_INTERVAL_S + tick / TICK_S)
        p50, p95 = statistics.median(lat), _pct(lat, 95)
        samples = sum(1 for line in body.decode().splitlines() if line and line[0] != "#")
        return [
            dict(
                benchmark="exporter",
                metric=f"scrape, 8 simulated GPUs ({samples} samples, {len(body) // 1024} KiB)",
                value=f"median {p50:.2f} ms, p95 {p95:.2f} ms",
                target="p95 ≤ 5 ms",
                ok=p95 <= 5.0,
            ),
            dict(
                benchmark="exporter",
                metric="CPU per scrape (agent process) / per tick (on_snapshot)",
                value=f"{per_scrape * 1000:.2f} ms / {tick * 1e6:.0f} µs",
                target="",
                ok=None,
            ),
            dict(
                benchmark="exporter",
                metric="exporter CPU at a 15 s scrape interval, 1 s ticks",
                value=f"{share:.3f} % of a core",
                target="≤ 0.2 % of a core",
                ok=share <= 0.2,
            ),
        ]


def main() -> None:
    for row in run():
        print(f"{row['metric']}: {row['value']}  (target {row['target'] or '—'})")


if __name__ == "__main__":
    main()


__all__ = ["run"]
