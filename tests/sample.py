"""Deterministic sample data for SVG snapshot tests and scripts/make_screenshots.py.

Fixed timestamps and values (no clock, no randomness) so a rendered screen is byte-identical
between runs. The GPU here is sample data and says so (gpu_note).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmtop.snapshot import (
    Alert,
    GpuProcess,
    GpuSample,
    HostStats,
    ProcessStats,
    ServerStatus,
    SlotStatus,
    Snapshot,
    SupervisorStatus,
    ThermalEvent,
    ThermalReport,
)
from llmtop.sources.logs import LogStore
from llmtop.sources.probe import ProbeResult

if TYPE_CHECKING:  # pragma: no cover
    from textual.pilot import Pilot

    from llmtop.ui.app import LlmtopApp

T0 = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
MODEL = "/srv/models/llama-3.1-8b-instruct-q5_k_m.gguf"
ARGV = (
    "/opt/llama.cpp/build/bin/llama-server",
    "-m",
    MODEL,
    "-ngl",
    "99",
    "-c",
    "8192",
    "--port",
    "8080",
    "--metrics",
    "--api-key",
    "***",
)

_LOG = [
    "00.00.012.331 I build: 11434 (a1b2c3d) with cc (Debian 12.2.0-14) 12.2.0 for x86_64-linux-gnu",
    "00.00.012.402 I system info: n_threads = 8, n_threads_batch = 8, total_threads = 16",
    "00.00.013.100 I srv    load_model: loading model '" + MODEL + "'",
    "00.00.214.877 I load_tensors: offloaded 33/33 layers to GPU",
    "00.00.214.901 I load_tensors:        CUDA0 model buffer size =  5459.93 MiB",
    "00.00.214.915 I load_tensors:   CPU_Mapped model buffer size =   410.98 MiB",
    "00.00.512.004 I llama_context: n_ctx = 8192",
    "00.00.530.210 I llama_kv_cache:      CUDA0 KV buffer size =  1024.00 MiB",
    "00.00.541.118 I sched_reserve:      CUDA0 compute buffer size =   560.00 MiB",
    "00.00.612.550 I srv    load_model: initializing, n_slots = 1, n_ctx_slot = 8192, kv_unified = 'true'",
    "00.00.612.901 I srv  llama_server: model loaded",
    "00.00.612.950 I srv  llama_server: listening on http://127.0.0.1:8080",
    "00.05.101.010 I slot launch_slot_: id  0 | task 0 | processing task",
    "00.05.230.881 I slot print_timing: id  0 | task 0 | prompt eval time =      21.40 ms /    12 tokens (    1.78 ms per token,   560.75 tokens per second)",
    "00.05.230.900 I slot print_timing: id  0 | task 0 |        eval time =    2381.02 ms /   128 tokens (   18.60 ms per token,    53.76 tokens per second)",
    "00.05.230.930 W srv  update_slots: context shift is disabled, prompt truncated",
    "00.09.010.100 E decode: failed to find a memory slot for batch of size 512",
    "00.09.011.000 I slot      release: id  0 | task 1 | stop processing: n_tokens = 140, truncated = 0",
]

_GEN = [52.0, 53.5, 54.0, 53.8, 51.0, 49.5, 47.0, 44.0, 41.0, 39.5, 38.0, 38.5, 39.0, 38.2, 38.0]


def sample_log_store() -> LogStore:
    store = LogStore()
    for i, text in enumerate(_LOG):
        store.append(text, "stderr", T0 - 600 + i * 20)
    return store


def sample_gpu(i: int = 0, *, temperature_c: float = 84.0, sm_clock_mhz: int = 2_235) -> GpuSample:
    throttled = sm_clock_mhz < 2_790
    return GpuSample(
        index=i,
        name="NVIDIA GeForce RTX 4090",
        uuid=f"GPU-0000000{i}-sample",
        pci_bus_id=f"00000000:0{i + 1}:00.0",
        memory_used_bytes=7_421 << 20,
        memory_free_bytes=(24_564 - 7_421) << 20,
        memory_total_bytes=24_564 << 20,
        utilization_percent=97.0,
        memory_utilization_percent=61.0,
        temperature_c=temperature_c,
        temp_slowdown_c=87.0,
        temp_shutdown_c=92.0,
        sm_clock_mhz=sm_clock_mhz,
        sm_clock_max_mhz=2_790,
        mem_clock_mhz=10_501,
        mem_clock_max_mhz=10_501,
        power_w=401.0,
        power_limit_w=450.0,
        fan_percent=78.0,
        pstate=2,
        persistence_mode=True,
        throttle_reasons=("SwThermalSlowdown",) if throttled else (),
        throttled_thermal_percent=12.0,
        throttled_power_percent=0.0,
        processes=(GpuProcess(4242, 7_102 << 20),),
        used_by_server=True,
        server_memory_bytes=7_102 << 20,
    )


def sample_snapshot(
    t: float = T0, *, gen_tps: float = 38.0, temperature_c: float = 84.0, sm_clock_mhz: int = 2_235
) -> Snapshot:
    return Snapshot(
        time=t,
        server=ServerStatus(
            url="http://127.0.0.1:8080",
            health="ok",
            model_path=MODEL,
            n_ctx=8192,
            n_ctx_train=131072,
            total_slots=1,
            build_info="b11434-a1b2c3d",
            endpoint_slots=True,
            endpoint_metrics=True,
            slots=(SlotStatus(0, 8192, True, 412, 96, 32),),
            pid=4242,
            gen_tokens_per_s=gen_tps,
            prompt_tokens_per_s=560.7,
            requests_processing=1,
            requests_deferred=0,
            prompt_tokens_total=18_211,
            tokens_predicted_total=40_960,
        ),
        host=HostStats(
            cpu_percent=14.0,
            memory_used_bytes=11_811 << 20,
            memory_total_bytes=64_215 << 20,
            load_avg=(1.21, 1.05, 0.98),
            process=ProcessStats(
                pid=4242,
                cpu_percent=101.0,
                rss_bytes=1_391 << 20,
                threads=24,
                uptime_s=3_725.0,
                create_time=t - 3_725.0,
            ),
        ),
        supervisor=SupervisorStatus(
            mode="child", state="ready", restarts=1, last_exit="exit code 1", argv=ARGV
        ),
        gpus=(sample_gpu(0, temperature_c=temperature_c, sm_clock_mhz=sm_clock_mhz),),
        gpu_note="sample data (not a live GPU)",
        alerts=(
            Alert(
                "temp_near_slowdown",
                "warning",
                "GPU0 84 °C — 3 °C below thermal slowdown",
                t - 40,
            ),
        ),
        thermal=ThermalReport(
            window_s=300.0,
            verdict="thermal (SW slowdown) 12 % of the last 5 min; decode −27 % while throttled",
            throttled_percent=12.0,
            decode_change_percent=-27.0,
            events=(
                ThermalEvent(
                    t - 120,
                    0,
                    "throttle_start",
                    "SW thermal slowdown started — 86 °C, SM 2790→2235 MHz; gen 52→38 tok/s",
                ),
            ),
        ),
    )


def sample_history(count: int = 120) -> list[Snapshot]:
    """Two minutes of snapshots, one per second up to T0: the GPU warms up to 86 °C, software
    thermal slowdown cuts the SM clock 2790 → 2235 MHz and generation falls from ~53 to 38 tok/s,
    ending in the state `sample_snapshot()` shows (84 °C, still throttled)."""
    snaps = []
    for i in range(count):
        f = i / max(count - 1, 1)  # 0 … 1
        temp = 70.0 + 16.0 * min(1.0, f / 0.75) - (2.0 if f > 0.9 else 0.0)
        throttled = f >= 0.7
        wobble = _GEN[i % len(_GEN)] - sum(_GEN) / len(_GEN)
        gen = (38.0 if throttled else 53.0) + 0.2 * wobble if i < count - 1 else 38.0
        snaps.append(
            sample_snapshot(
                T0 - (count - 1 - i),
                gen_tps=gen,
                temperature_c=round(temp) if i < count - 1 else 84.0,
                sm_clock_mhz=2_235 if throttled else 2_790,
            )
        )
    return snaps


def sample_probe(i: int) -> ProbeResult:
    """A real ProbeResult with plausible figures for screenshots (the i-th of a series)."""
    ttft = 21.0 + 2.5 * i
    itl = 18.6 + 0.9 * i
    return ProbeResult(
        started_at=T0 - 300 + 30 * i,
        prompt="Write one sentence about GPUs.",
        n_predict=128,
        tokens=128,
        ttft_ms=ttft,
        itl_ms_p50=itl,
        itl_ms_p95=21.2 + 1.1 * i,
        gen_tokens_per_s=1000.0 / itl,
        prompt_tokens_per_s=560.0 - 12 * i,
        server_timings={"prompt_ms": ttft - 0.8, "predicted_per_second": 1000.0 / itl * 1.01},
        text="",
    )


def sample_probes(n: int = 8) -> list[ProbeResult]:
    return [sample_probe(i) for i in range(n)]


SAMPLE_API_KEY = "sk-sample-SECRET-0123456789"


def sample_app(mode: str = "child", *, api_key: str | None = SAMPLE_API_KEY) -> LlmtopApp:
    """An app on sample data: nothing is started or polled; call `await load_sample(app, pilot)`."""
    from llmtop.session import Session
    from llmtop.ui.app import create_app

    session = Session(
        mode=mode, url="http://127.0.0.1:8080", api_key=api_key, log_store=sample_log_store()
    )
    return create_app(session, clock=lambda: T0, auto_collect=False)


async def load_sample(app: LlmtopApp, pilot: Pilot[None], probes: int = 8) -> None:
    """Inject the sample history and probes through the app's own message path."""
    from llmtop.ui.app import SnapshotReady
    from llmtop.ui.panels.latency import LatencyPanel, ProbeSummary, RecentProbes

    await pilot.pause()  # hidden tabs mount after the first frame: let them, so they record all
    for snap in sample_history():
        app.post_message(SnapshotReady(snap))
    await pilot.pause()
    for p in sample_probes(probes):
        app.series.add_probe(p)
    app.query_one(LatencyPanel).load(app.series.probes)
    app.query_one(ProbeSummary).show()
    app.query_one(RecentProbes).show()
    # Let resize-driven redraws (sparkline widths, width-dependent lines) settle.
    for _ in range(3):
        await pilot.pause(0.1)
