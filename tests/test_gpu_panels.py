"""GpuPanel and ThermalPanel render what the operator needs, from snapshots made through the real
pynvml and the simulated library, in a tiny Textual app."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from textual.app import App, ComposeResult

from llmtop.diagnosis.alerts import AlertEngine
from llmtop.session import Session
from llmtop.snapshot import GpuSample, ServerStatus, Snapshot
from llmtop.sources.gpu import NO_DRIVER_NOTE
from llmtop.ui.app import create_app
from llmtop.ui.messages import SnapshotReady
from llmtop.ui.panels.gpu import GpuPanel
from llmtop.ui.panels.thermal import ThermalPanel
from llmtop.ui.widgets.time_plot import LEFT_W, SPAN_MARK
from tests.nvml_sim.harness import SimGpus
from tests.nvml_sim.scenarios import GiB, consumer_gpu, scenario, thermal_ramp_gpu
from tests.screen_text import screen_text

SERVER_PID = 4242


async def wait_until(pilot: object, cond: Callable[[], object], timeout: float = 20.0) -> None:
    """Let the app run until cond() holds (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        await pilot.pause(0.02)  # type: ignore[attr-defined]


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
async def test_thermal_summary_says_the_verdict_and_the_events(
    nvml_sim: Callable[..., SimGpus],
) -> None:
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
        assert "HW thermal slowdown started — 87 °C, SM 1980→1410 MHz; gen 52→38 tok/s" in text
        # the plot's header: how hot against slowdown, the clock, what limits it
        assert "87 °C, 0 °C to slowdown  SM 1410 MHz = 71 %" in text
        assert "HW slowdown, SW thermal slowdown, HW thermal slowdown" in text


def plot_lines(text: str) -> dict[str, str]:
    """The plot's rows by their title (the left gutter), as shown."""
    out = {}
    for line in text.splitlines():
        title = line[:LEFT_W].strip()
        if ("│" in line or "╰" in line) and title and title not in out:
            out[title] = line
    return out


_DOT_ROW = {0x01: 0, 0x08: 0, 0x02: 1, 0x10: 1, 0x04: 2, 0x20: 2, 0x40: 3, 0x80: 3}


def top_dot(lines: list[str], c0: int, c1: int) -> int:
    """The highest braille dot row (0 = top of the first line) drawn in columns [c0, c1)."""
    best = 10**6
    for y, line in enumerate(lines):
        for ch in line[c0:c1]:
            bits = ord(ch) - 0x2800 if "\u2800" < ch <= "\u28ff" else 0
            rows = [r for b, r in _DOT_ROW.items() if bits & b]
            if rows:
                best = min(best, 4 * y + min(rows))
    return best


@pytest.mark.nvml_sim
@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_gpu_tab_plots_the_throttle_and_w_switches_the_window(
    nvml_sim: Callable[..., SimGpus], size: tuple[int, int]
) -> None:
    """The thermal ramp through the real pynvml: the GPU tab's plot shows temperature with
    the slowdown line, the clock cut, tokens/s falling and the throttled span, at 80×24 and
    160×48; `w` cycles the window 5 min → 1 h → 24 h → 5 min and the axis says which."""
    sim = nvml_sim(scenario(thermal_ramp_gpu()))
    snaps = snapshots(sim, range(0, 241), lambda t: 38.0 if 90 <= t < 240 else 52.0)
    session = Session(mode="attach", url="http://127.0.0.1:9")
    app = create_app(session, clock=lambda: snaps[-1].time, auto_collect=False)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        for s in snaps:
            app.post_message(SnapshotReady(s))
        await pilot.press("4")
        await wait_until(pilot, lambda: "gen t/s" in screen_text(app))
        text = screen_text(app)
        rows = plot_lines(text)
        for title in ("temp °C", "SM clk %", "gen t/s", "throttled", "5 min"):
            assert title in rows, (title, text)
        assert "slowdown 87" in text and "shutdown 92" in text
        assert rows["temp °C"].count("⠀") == 0  # braille dots drawn, not blank cells
        # the span row marks the throttled stretch (90-240 s of the 4 minutes) on the right
        marks = rows["throttled"][LEFT_W : rows["throttled"].rindex("│")]
        first = marks.index(SPAN_MARK)
        assert marks.count(SPAN_MARK) > 0.4 * len(marks) and first > 0.3 * len(marks)
        assert "%" in rows["throttled"][rows["throttled"].rindex("│") :]
        # the clock line is lower in the HW slowdown (120-180 s: 71 %) than before (100 %)
        w = len(marks)

        def col(t: float) -> int:  # the window is the 300 s before the last sample (240 s)
            return round((t + 60) / 300 * w)

        lines = text.splitlines()
        row = lines.index(rows["SM clk %"])
        clock = [ln[LEFT_W : LEFT_W + w] for ln in lines[row : lines.index(rows["gen t/s"])]]
        assert top_dot(clock, col(10), col(80)) < top_dot(clock, col(130), col(170))
        # tokens/s: the value under the title is the latest (52 again at the end)
        assert "52" in text.splitlines()[text.splitlines().index(rows["gen t/s"]) + 1][:LEFT_W]
        for label in ("1 h", "24 h", "5 min"):
            await pilot.press("w")
            await wait_until(pilot, lambda label=label: label in plot_lines(screen_text(app)))
            rows = plot_lines(screen_text(app))
            assert "throttled" in rows and SPAN_MARK in rows["throttled"], label
        assert any("the last 5 min" in n.message for n in app._notifications)  # noqa: SLF001


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
