"""The agent against a real llama-server and simulated GPUs that throttle at known times.

The runner, session, collector, recorder and report are the product's; only the GPUs are
simulated. The scenario runs on the simulator's own clock (seconds since nvmlInit), so the
throttle changes happen at known wall times; a loader keeps the server generating so decode
speed during and outside the spans is real. The report must find each span — start and end
within one sampling interval, the right reasons — and nothing else.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from llmtop.agent.recorder import HistoryRecorder, RecorderOptions
from llmtop.agent.runner import AgentRunner
from llmtop.commands.report import read_window
from llmtop.diagnosis.history_report import build_report
from llmtop.session import Session, make_alert_engine
from llmtop.sources.history_db import HistoryDB
from tests.nvml_sim.harness import SimGpus
from tests.nvml_sim.scenarios import datacenter_gpu, scenario
from tests.realserver import RunningServer

pytestmark = [pytest.mark.nvml_sim, pytest.mark.real_server]

INTERVAL_S = 0.5
# Scenario seconds: GPU 0 thermal-throttles in [3, 5.5), GPU 1 hits its power cap in [7, 8.5);
# GpuIdle on GPU 1 before that is not throttling. The run lasts RUN_S.
HOT = (3.0, 5.5)
CAPPED = (7.0, 8.5)
RUN_S = 10.5


def _kf(t: float, reasons: list[str], temp: float, sm: int) -> dict[str, object]:
    return {"t": t, "clock_event_reasons": reasons, "temp_c": temp, "sm_clock_mhz": sm}


def throttle_scenario() -> dict[str, object]:
    hot = datacenter_gpu(interpolate=False)
    hot["keyframes"] = [
        {**hot["keyframes"][0], "clock_event_reasons": []},
        _kf(HOT[0], ["HwSlowdown", "HwThermalSlowdown"], 88, 1410),
        _kf(HOT[0] + 1, ["HwSlowdown", "HwThermalSlowdown"], 89, 1320),
        _kf(HOT[1], [], 80, 1980),
    ]
    capped = datacenter_gpu(name="card one", uuid="GPU-one", interpolate=False)
    capped["keyframes"] = [
        {**capped["keyframes"][0], "clock_event_reasons": []},
        _kf(1.0, ["GpuIdle"], 60, 1980),
        _kf(2.0, [], 62, 1980),
        _kf(CAPPED[0], ["SwPowerCap"], 70, 1600),
        _kf(CAPPED[1], [], 66, 1980),
    ]
    return scenario(hot, capped)


@pytest.fixture
def loader(llama_server: RunningServer) -> Iterator[threading.Event]:
    """Keeps the server decoding (short completions in a loop) until the test ends."""
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(timeout=30, trust_env=False) as c:
            while not stop.is_set():
                c.post(f"{llama_server.url}/completion",
                       json={"prompt": "Once upon a time", "n_predict": 48, "temperature": 0})  # fmt: skip

    th = threading.Thread(target=run, daemon=True)
    th.start()
    yield stop
    stop.set()
    th.join(timeout=60)


def test_report_finds_each_throttled_span_and_nothing_else(
    nvml_sim: Callable[..., SimGpus],
    nvml_sim_build: Callable[..., Path],
    llama_server: RunningServer,
    loader: threading.Event,
    tmp_path: Path,
) -> None:
    nvml_sim_build(())  # a fresh checkout compiles the library first: not inside the timed window
    before = time.time()
    sim = nvml_sim(throttle_scenario(), refresh_s=3600.0)
    after = time.time()
    # back to the simulator's own clock: scenario second s is wall time t0 + s
    fn = sim._lib().nvmlSimSetTime
    fn(ctypes.c_double(-1.0))
    t0 = (before + after) / 2
    assert after - before < 0.2  # the wall time of scenario 0 is known to within 0.1 s

    db_path = tmp_path / "history.sqlite"
    session = Session(mode="attach", url=llama_server.url, gpu_monitor=sim.monitor,
                      alert_factory=make_alert_engine)  # fmt: skip
    recorder = HistoryRecorder.open(db_path, RecorderOptions(interval_s=INTERVAL_S),
                                    log_store=session.log_store, url=llama_server.url)  # fmt: skip
    runner = AgentRunner(session, [recorder], interval_s=INTERVAL_S)

    async def main() -> None:
        task = asyncio.ensure_future(runner.run())
        while time.time() < t0 + RUN_S and not task.done():
            await asyncio.sleep(0.1)
        runner.stop()
        await task

    asyncio.run(main())

    with HistoryDB.open(db_path) as db:
        rng = db.time_range()
        assert rng is not None and rng.start < t0 + 1.0 and rng.end > t0 + RUN_S - 1.0
        rows = db.gpu_rows(rng.start, rng.end)
        report = build_report(read_window(db, rng.start, rng.end))
    spans = report.throttle_spans
    assert [(s.gpu_index, s.reasons) for s in spans] == [
        (0, ("HwThermalSlowdown",)),  # the HwSlowdown umbrella folds into the specific bit
        (1, ("SwPowerCap",)),
    ], spans
    for span, (lo, hi) in zip(spans, (HOT, CAPPED), strict=True):
        true_start, true_end = t0 + lo, t0 + hi
        times = [r.time for r in rows if r.gpu_index == span.gpu_index]
        before_start = max(t for t in times if t < span.start)
        last_inside = max(t for t in times if t < span.end)
        # the sample before the span saw no throttle, the span's first one did: the change lies
        # between two samples one interval apart
        assert before_start < true_start + 0.1 and span.start > true_start - 0.1, span
        assert span.start - before_start <= INTERVAL_S * 1.5, span
        assert abs(span.start - true_start) <= INTERVAL_S + 0.1, span
        assert last_inside < true_end + 0.1 and span.end > true_end - 0.1, span
        assert abs(span.end - true_end) <= INTERVAL_S + 0.1, span
        assert not span.ongoing
    hot, capped = spans
    assert hot.peak_temperature_c == 89
    assert hot.min_sm_clock_percent == pytest.approx(100 * 1320 / 1980, abs=0.1)
    assert capped.min_sm_clock_percent == pytest.approx(100 * 1600 / 1980, abs=0.1)
    # the loader kept the server decoding: speed is known inside and outside the spans
    assert hot.gen_tokens_per_s_during and hot.gen_tokens_per_s_outside
    # throttling was also an alert while it lasted, and the recording holds the server's VRAM
    assert report.vram_peaks.gpus[0].peak_memory_used_bytes is not None
    assert {g.gpu_index for g in report.vram_peaks.gpus} == {0, 1}
