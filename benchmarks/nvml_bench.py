"""NVML sampling cost per tick with 1 and 8 simulated GPUs, and the sampler's CPU at 1 s.

The GPUs are the simulated libnvidia-ml.so.1 read through the real pynvml, so the figures are a
LOWER BOUND: a real driver adds its own cost per call (~0.1 ms for a handful of reads with
persistence mode on, spikes of hundreds of ms without it). What this measures is llmtop's side:
pynvml's ctypes calls, the per-field fallbacks, decoding and building the immutable samples.

`python -m benchmarks.nvml_bench` prints a table; `run()` returns rows for `python -m benchmarks`.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llmtop.sources.gpu import GpuMonitor  # noqa: E402
from llmtop.sources.gpu_sim import SCENARIO_ENV, build_sim_library  # noqa: E402
from tests.nvml_sim.scenarios import GiB, datacenter_gpu, scenario  # noqa: E402

TICKS = 300


def _scenario(n: int) -> dict:
    gpus = []
    for i in range(n):
        gpus.append(
            datacenter_gpu(
                uuid=f"GPU-bench-{i:04d}",
                pci_bus_id=f"00000000:{i + 1:02X}:00.0",
                processes=[
                    {"pid": os.getpid(), "used_memory_bytes": 10 * GiB},
                    {"pid": 1, "used_memory_bytes": GiB},
                ],
            )
        )
    return scenario(*gpus)


def _monitor(n: int, tmp: Path, lib: Path) -> GpuMonitor:
    path = tmp / f"bench-{n}.json"
    path.write_text(json.dumps(_scenario(n)))
    os.environ[SCENARIO_ENV] = str(path)
    mon = GpuMonitor(library_path=str(lib))
    mon.set_server(os.getpid())
    if not mon.open():
        raise RuntimeError(f"simulated NVML gave no GPUs: {mon.latest().note}")
    return mon


def tick_cost(n: int, tmp: Path, lib: Path, ticks: int = TICKS) -> tuple[float, float]:
    """(median, p95) ms of one `sample_once()` over all *n* GPUs."""
    mon = _monitor(n, tmp, lib)
    try:
        mon.sample_once()  # warm: symbol lookups cached
        times = []
        for _ in range(ticks):
            t0 = time.perf_counter()
            mon.sample_once()
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        mon.stop()
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def sampler_cpu(n: int, tmp: Path, lib: Path, seconds: float) -> float:
    """% of one core used by the sampler thread at a 1 s refresh with *n* GPUs."""
    mon = _monitor(n, tmp, lib)
    mon.refresh_s = 1.0
    try:
        c0 = time.process_time()
        mon.start()
        threading.Event().wait(seconds)
        used = time.process_time() - c0
    finally:
        mon.stop()
    return 100.0 * used / seconds


def run(seconds: float = 10.0) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="llmtop-nvml-bench-") as d:
        tmp = Path(d)
        lib = build_sim_library(ROOT / "tests" / "_build" / "nvml_sim")
        rows = []
        for n in (1, 8):
            med, p95 = tick_cost(n, tmp, lib)
            rows.append(
                dict(
                    benchmark="nvml",
                    metric=f"tick cost, {n} simulated GPU(s) (lower bound)",
                    value=f"median {med:.3f} ms, p95 {p95:.3f} ms",
                    target="",
                    ok=None,
                )
            )
        cpu = sampler_cpu(8, tmp, lib, seconds)
        rows.append(
            dict(
                benchmark="nvml",
                metric="sampler CPU, 8 simulated GPUs at 1 s",
                value=f"{cpu:.2f} % of a core",
                target="≤ 1 % (whole dashboard)",
                ok=cpu <= 1.0,
            )
        )
        return rows


def main() -> None:
    rows = run()
    w = max(len(r["metric"]) for r in rows)
    print(f"{'metric':<{w}}  value")
    for r in rows:
        print(f"{r['metric']:<{w}}  {r['value']}")
    print("(simulated library: a lower bound — a real driver adds its own per-call cost)")


if __name__ == "__main__":
    main()
