"""GpuPanel and ThermalPanel render what the operator needs, from snapshots made through the real
pynvml and the simulated library, in a tiny Textual app."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.app import App, ComposeResult

from llmtop.diagnosis.alerts import AlertEngine
from llmtop.snapshot import GpuSample, ServerStatus, Snapshot
from llmtop.sources.gpu import NO_DRIVER_NOTE
from llmtop.ui.panels.gpu import GpuPanel
from llmtop.ui.panels.thermal import ThermalPanel
from tests.nvml_sim.harness import SimGpus
from tests.nvml_sim.scenarios import GiB, consumer_gpu, scenario, thermal_ramp_gpu

SERVER_PID = 4242


class PanelsApp(App[None]):
    def compose(self) -> ComposeResult:
        yield GpuPanel(id="gpu-panel")
        yield ThermalPanel(id="thermal-panel")


def snapshots(sim: SimGpus, seconds: range, gen: Callable[[int], float | None]) -> list[Snapshot]:
    engine = AlertEngine()
    out = []
    for t in seconds:
        reading = sim.at(t)
        snap = Snapshot(
            time=sim.now(),
            server=ServerStatus(url="u", health="ok", pid=SERVER_PID, gen_tokens_per_s=gen(t)),
            gpus=reading.samples,
            gpu_note=reading.note,
        )
        snap = Snapshot(
            **{**snap.__dict__, "alerts": engine.evaluate(snap), "thermal": engine.thermal(snap)}
        )
        out.append(snap)
    return out


@pytest.mark.nvml_sim
async def test_gpu_cards_show_server_vram_and_reasons(nvml_sim: Callable[..., SimGpus]) -> None:
    procs = [{"pid": SERVER_PID, "used_memory_bytes": int(18.2 * GiB)}]
    sim = nvml_sim(scenario(thermal_ramp_gpu(processes=procs), consumer_gpu(lost_at_s=100)))
    snaps = snapshots(sim, range(0, 121, 10), lambda t: 50.0)
    async with PanelsApp().run_test(size=(140, 50)) as pilot:
        panel = pilot.app.query_one(GpuPanel)
        panel.show(snaps[-1])
        await pilot.pause()
        text = panel.text
        assert "GPU0 NVIDIA H100 80GB HBM3" in text
        assert "llama-server: 18.2 GiB on GPU0" in text
        assert "HwThermalSlowdown" in text
        assert "slowdown 87 °C (margin 0 °C)" in text
        assert "SM 1410/1980 MHz (71 %)" in text
        assert "power 520/700 W (74 %)" in text
        assert "GPU1 NVIDIA GeForce RTX 4090" in text and "LOST" in text


@pytest.mark.nvml_sim
async def test_consumer_card_shows_na_not_zero(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(scenario(consumer_gpu()))
    snaps = snapshots(sim, range(0, 2), lambda t: None)
    async with PanelsApp().run_test(size=(140, 40)) as pilot:
        panel = pilot.app.query_one(GpuPanel)
        panel.show(snaps[-1])
        await pilot.pause()
        assert "fan —" in panel.text
        assert "power —" in panel.text
        assert "slowdown threshold n/a" in panel.text
        assert "persistence mode off → sudo nvidia-smi -pm 1" in panel.text


@pytest.mark.nvml_sim
async def test_thermal_panel_verdict_margin_and_events(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(scenario(thermal_ramp_gpu()))
    snaps = snapshots(sim, range(0, 121), lambda t: 38.0 if t >= 90 else 52.0)
    async with PanelsApp().run_test(size=(140, 40)) as pilot:
        panel = pilot.app.query_one(ThermalPanel)
        for s in snaps[:-1]:
            panel.record(s)
        panel.show(snaps[-1])
        await pilot.pause()
        text = panel.text
        assert (
            "verdict  thermal (SW slowdown) 25 % of the last 2 min; decode −27 % while throttled"
            in text
        )
        assert "87 °C — 0 °C margin to slowdown (87 °C, shutdown 92 °C)" in text
        assert "SM clock 1410 MHz = 71 % of max (1980 MHz)" in text
        assert "limits   HW slowdown, SW thermal slowdown, HW thermal slowdown" in text
        assert "HW thermal slowdown started — 87 °C, SM 1980→1410 MHz; gen 52→38 tok/s" in text
        assert "temp °C" in text and "gen t/s" in text and "−2 min" in text


async def test_without_gpus_both_panels_show_the_note() -> None:
    snap = Snapshot(time=1.0, server=ServerStatus(url="u"), gpu_note=NO_DRIVER_NOTE)
    async with PanelsApp().run_test(size=(100, 20)) as pilot:
        for panel in (pilot.app.query_one(GpuPanel), pilot.app.query_one(ThermalPanel)):
            panel.show(snap)
        await pilot.pause()
        assert pilot.app.query_one(GpuPanel).text == NO_DRIVER_NOTE
        assert pilot.app.query_one(ThermalPanel).text == NO_DRIVER_NOTE


async def test_simulated_label_is_on_screen() -> None:
    g = GpuSample(
        index=0, name="NVIDIA H100 80GB HBM3", memory_used_bytes=GiB, memory_total_bytes=80 * GiB
    )
    snap = Snapshot(time=1.0, server=ServerStatus(url="u"), gpus=(g,), gpu_note="SIMULATED")
    async with PanelsApp().run_test(size=(100, 20)) as pilot:
        panel = pilot.app.query_one(GpuPanel)
        panel.show(snap)
        await pilot.pause()
        assert panel.text.splitlines()[0].strip() == "SIMULATED"
