"""`llmtop agent` and `llmtop report` costs (issue 10's performance targets).

- agent CPU: `llmtop agent --interval 1` as an operator runs it, against a real llama-server,
  reading 8 simulated GPUs (real pynvml → simulated libnvidia-ml.so.1), writing its database;
  CPU time of the agent process over the measured seconds, after a warm-up. Target ≤ 0.5 % of
  a core.
- DB growth: a day at 1 s with 1 GPU, extrapolated from hours of samples written by the
  recorder in simulated time (the recorder keeps time by the samples; values vary every tick so
  nothing compresses unrealistically). Target ≤ 100 MB/day.
- report: `llmtop report --since 7d --json` (a subprocess, Python start included) on a 7-day,
  1 s, 1-GPU database generated the same way, with a throttle span every hour. Target ≤ 2 s.

`python -m benchmarks.agent_bench` prints a table; `run()` returns rows for `python -m benchmarks`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from llmtop.agent.recorder import HistoryRecorder, RecorderOptions  # noqa: E402
from llmtop.snapshot import (  # noqa: E402
    Alert,
    GpuProcess,
    GpuSample,
    HostStats,
    ProcessStats,
    ServerStatus,
    SlotStatus,
    Snapshot,
)

DAY_S = 86400


def synthetic(t: float, i: int) -> Snapshot:
    """A 1-GPU snapshot whose numbers move every tick; throttled 5 min in every hour."""
    hot = (i % 3600) >= 3300
    wave = math.sin(i / 300.0)
    gpu = GpuSample(
        index=0, name="NVIDIA H100 80GB HBM3", uuid="GPU-bench", pci_bus_id="00000000:1B:00.0",
        memory_used_bytes=(20 << 30) + (i % 977) * 4096, memory_free_bytes=(60 << 30) - (i % 977),
        memory_total_bytes=80 << 30, utilization_percent=float(80 + i % 20),
        memory_utilization_percent=float(30 + i % 15), temperature_c=float(70 + 15 * hot + i % 3),
        temp_slowdown_c=87.0, temp_shutdown_c=92.0, temp_gpu_max_c=85.0,
        sm_clock_mhz=1410 if hot else 1980 - (i % 7), sm_clock_max_mhz=1980,
        graphics_clock_mhz=1410 if hot else 1980, mem_clock_mhz=2619, mem_clock_max_mhz=2619,
        power_w=500.0 + 50 * wave, power_limit_w=700.0, fan_percent=float(40 + 40 * hot),
        pstate=0, persistence_mode=True,
        throttle_reasons=("HwSlowdown", "HwThermalSlowdown") if hot else (),
        throttled_thermal_percent=100.0 if hot else 0.0, throttled_power_percent=0.0,
        processes=(GpuProcess(4242, 18 << 30),), used_by_server=True,
        server_memory_bytes=18 << 30,
    )  # fmt: skip
    server = ServerStatus(
        url="http://127.0.0.1:8080", health="ok", detail="ok",
        model_path="/models/Qwen2.5-7B-Instruct-Q4_K_M.gguf", n_ctx=8192, total_slots=4,
        slots=tuple(SlotStatus(k, 2048, k < 1 + i % 4) for k in range(4)), pid=4242,
        gen_tokens_per_s=(38.0 if hot else 52.0) + wave, prompt_tokens_per_s=900.0 + 100 * wave,
        requests_processing=1 + i % 4, requests_deferred=i % 2,
        prompt_tokens_total=1000 * i, tokens_predicted_total=50 * i, process_start_time=1.7e9,
    )  # fmt: skip
    host = HostStats(
        cpu_percent=20.0 + 5 * wave, memory_used_bytes=(12 << 30) + i % 1000 * 4096,
        memory_total_bytes=64 << 30, load_avg=(1.0 + wave, 1.0, 0.9),
        process=ProcessStats(4242, 100.0 + wave, 2 << 30, 16, float(i), status="running"),
    )  # fmt: skip
    alerts = (Alert("throttled", "warning", "GPU 0 thermal slowdown", t - (i % 3600 - 3300)),)
    return Snapshot(time=t, server=server, host=host, gpus=(gpu,), alerts=alerts if hot else ())


def generate(path: Path, seconds: int, end: float) -> HistoryRecorder:
    """*seconds* of 1 s samples ending at *end*, through the recorder (batched commits: the rows
    are the recorder's own, written 10 minutes per transaction to generate quickly)."""
    rec = HistoryRecorder.open(path, RecorderOptions(keep_s=30 * DAY_S, max_size_bytes=8 << 30),
                               report=lambda _l: None)  # fmt: skip
    start = end - seconds
    batch: list[Snapshot] = []
    for i in range(seconds):
        batch.append(synthetic(start + i, i))
        if len(batch) == 600 or i == seconds - 1:
            for s in batch:  # in order: each is compared with the one before (alerts, restarts)
                rec.pending.append(rec._statements(s))
                rec._prev = s
            rec._flush()
            last = batch[-1]
            minute = int(last.time // 60) * 60
            if rec._minute is not None and minute > rec._minute:
                rec._housekeeping(rec._minute, minute, last.time)
            rec._minute = minute
            batch = []
    return rec


def db_growth(tmp: Path, hours: int) -> float:
    path = tmp / "growth.sqlite"
    rec = generate(path, hours * 3600, time.time())
    used = rec.used_bytes()
    rec.close()
    return used / hours * 24 / 1e6


def report_time(tmp: Path, days: int) -> tuple[float, int]:
    path = tmp / "week.sqlite"
    rec = generate(path, days * DAY_S, time.time())
    rec.close()
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "llmtop", "report", "--db", str(path), "--since",
                        f"{days}d", "--json"], capture_output=True, text=True, cwd=ROOT,
                       timeout=600)  # fmt: skip
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip())
    spans = len(json.loads(p.stdout)["throttle_spans"])
    return elapsed, spans


def agent_cpu(tmp: Path, seconds: float, warmup: float = 5.0) -> float:
    from llmtop.demo.tiny_model import write_tiny_model
    from llmtop.sources.gpu import LIBRARY_ENV
    from llmtop.sources.gpu_sim import SCENARIO_ENV, build_sim_library
    from tests.realserver import find_llama_server, start_llama_server

    binary = find_llama_server()
    if binary is None:
        raise RuntimeError("no llama-server (scripts/get-llama-server.sh)")
    lib = build_sim_library(ROOT / "tests" / "_build" / "nvml_sim")
    scen = ROOT / "tests" / "nvml_sim" / "scenarios" / "eight_gpus.json"
    srv = start_llama_server(binary, write_tiny_model(tmp / "tiny.gguf"), ["--metrics"],
                             log_dir=tmp)  # fmt: skip
    env = {**os.environ, LIBRARY_ENV: str(lib), SCENARIO_ENV: str(scen)}
    agent = subprocess.Popen([sys.executable, "-m", "llmtop", "agent", "--url", srv.url, "--db",
                              str(tmp / "agent.sqlite"), "--interval", "1"], cwd=ROOT, env=env,
                             stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        proc = psutil.Process(agent.pid)
        time.sleep(warmup)
        c0, t0 = proc.cpu_times(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = proc.cpu_times(), time.monotonic()
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited ({agent.returncode})")
        used = (c1.user + c1.system) - (c0.user + c0.system)
        return 100.0 * used / (t1 - t0)
    finally:
        if agent.poll() is None:
            os.kill(agent.pid, signal.SIGTERM)
            try:
                agent.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(agent.pid, signal.SIGKILL)
                agent.wait(5)
        srv.stop()


def run(seconds: float = 60.0, growth_hours: int = 6, report_days: int = 7) -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cpu = agent_cpu(tmp, seconds)
        rows.append(dict(benchmark="agent", metric="agent CPU at 1 s, 8 simulated GPUs",
                         value=f"{cpu:.2f} % of a core", target="≤ 0.5 %", ok=cpu <= 0.5))  # fmt: skip
        mb = db_growth(tmp, growth_hours)
        rows.append(dict(benchmark="agent", metric="DB growth at 1 s, 1 GPU",
                         value=f"{mb:.1f} MB/day", target="≤ 100 MB/day", ok=mb <= 100))  # fmt: skip
        elapsed, spans = report_time(tmp, report_days)
        rows.append(dict(benchmark="agent", metric=f"report --since {report_days}d ({spans} spans)",
                         value=f"{elapsed:.2f} s", target="≤ 2 s", ok=elapsed <= 2.0))  # fmt: skip
    return rows


def main() -> None:
    for r in run():
        print(f"{r['metric']:<45} {r['value']:<20} {r['target']:<14} {'yes' if r['ok'] else 'NO'}")


if __name__ == "__main__":
    main()
