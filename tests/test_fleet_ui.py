"""The `llmtop fleet` view driven by Textual's Pilot against a real Prometheus scraping real
agents (simulated NVML: one cool box, one throttling) and real llama-servers, plus SVG
snapshots of the view on fixed data.

What a user would notice: the throttling host is first after the box that cannot be seen, that
box says DOWN; Enter opens the GPU's history with the temperature plotted under its slowdown
line; Prometheus going away mid-run is said on screen while the last rows stay, marked stale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest
from textual.pilot import Pilot

from llmtop.diagnosis.fleet_rank import FleetReader
from llmtop.model.fleet import FleetAlert, FleetDetail, FleetRow, FleetView, PlotSeries, rank
from llmtop.sources.prom_api import PromClient
from llmtop.ui.fleet_app import FleetApp
from llmtop.ui.screens.fleet_detail import FleetDetailScreen
from llmtop.ui.widgets.time_plot import TimePlot
from tests.exporter_procs import start_prometheus
from tests.screen_text import screen_text
from tests.test_fleet import Fleet, start_fleet

BRAILLE = {chr(c) for c in range(0x2801, 0x2900)}


@pytest.fixture(scope="module")
def fleet(
    llama_server_bin: Path,
    tiny_model: Path,
    nvml_sim_build: Callable[[Iterable[str]], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("fleet-ui")
    lib = nvml_sim_build(())
    stop: list[Callable[[], object]] = []
    try:
        yield start_fleet(llama_server_bin, tiny_model, lib, tmp, stop, probes=False)
    finally:
        for fn in reversed(stop):
            fn()


async def until(
    pilot: Pilot[object], what: str, cond: Callable[[], object], timeout_s: float
) -> None:
    """Let the app run until *cond()* is true; fail in words (with the screen) at the deadline."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s\n{screen_text(pilot.app)}")
        await pilot.pause(0.1)


def table_lines(app: FleetApp) -> list[str]:
    """The table's data rows as shown (below the header line)."""
    lines = screen_text(app).splitlines()
    head = next(i for i, line in enumerate(lines) if line.lstrip().startswith("host"))
    return [line for line in lines[head + 1 :] if line.strip() and "box-" in line]


def _rules_fired(app: FleetApp) -> bool:
    view = app.view
    if view is None or len(view.rows) != 3:
        return False
    hot = next((r for r in view.rows if r.host == "box-b"), None)
    return hot is not None and any(a.name == "LlmtopGpuThrottled" for a in hot.alerts)


async def test_the_throttling_host_is_first_and_the_down_target_says_down(fleet: Fleet) -> None:
    with PromClient(fleet.prom.url) as client:
        reader = FleetReader(client)
        app = FleetApp(reader, refresh_s=1.0, prometheus=client.url_shown)
        try:
            async with app.run_test(size=(160, 48)) as pilot:
                await until(
                    pilot, "box-b's throttling rule firing on screen", lambda: _rules_fired(app), 90
                )
                await pilot.pause()
                rows = table_lines(app)
                assert len(rows) == 3, rows
                assert "box-d" in rows[0] and "DOWN" in rows[0] and "connection refused" in rows[0]
                assert "box-b" in rows[1] and "86°" in rows[1] and "+1°C" in rows[1]
                assert "100%" in rows[1] and "GpuThrottled" in rows[1]
                assert "box-a" in rows[2] and "64°" in rows[2] and "+23°C" in rows[2]
                text = screen_text(app)
                assert "3 hosts · 3 rows · 1 down · refreshed" in text
                assert fleet.prom.url in text
        finally:
            reader.close()


async def test_enter_opens_the_history_with_the_temperature_plotted(fleet: Fleet) -> None:
    with PromClient(fleet.prom.url) as client:
        reader = FleetReader(client)
        app = FleetApp(reader, refresh_s=1.0, prometheus=client.url_shown)
        try:
            async with app.run_test(size=(120, 36)) as pilot:
                await until(
                    pilot,
                    "three rows",
                    lambda: app.view is not None and len(app.view.rows) == 3,
                    60,
                )
                await pilot.press("down")  # box-d (down) is first; box-b's GPU 0 next
                assert app.table.selected_row() is not None
                assert app.table.selected_row().host == "box-b"  # type: ignore[union-attr]
                await pilot.press("enter")
                await until(
                    pilot,
                    "the detail screen",
                    lambda: isinstance(app.screen, FleetDetailScreen),
                    10,
                )
                screen = app.screen
                assert isinstance(screen, FleetDetailScreen)

                def plotted() -> bool:
                    d = screen.detail
                    return d is not None and len(d.series[0].points) >= 3

                await until(pilot, "box-b's temperature history", plotted, 60)
                await pilot.pause()
                plot = screen.query_one(TimePlot).text
                assert "slowdown 87" in plot  # the slowdown line's label
                assert "temp" in plot and "86°C" in plot  # the current value
                assert "SM clk" in plot and "71%" in plot  # 1410 of 1980 MHz
                assert "VRAM" in plot and "92%" in plot
                assert "throttled" in plot
                assert BRAILLE & set(plot)  # dots drawn
                text = screen_text(app)
                assert "box-b GPU 0 NVIDIA H100 80GB HBM3" in text
                assert "history to" in text
                await pilot.press("escape")
                await until(
                    pilot,
                    "back to the table",
                    lambda: not isinstance(app.screen, FleetDetailScreen),
                    10,
                )
        finally:
            reader.close()


async def test_prometheus_killed_mid_run_keeps_the_last_rows_marked_stale(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A Prometheus of this test's own (the module's keeps running for the others)."""
    own = start_prometheus(fleet.config, tmp_path, fleet.prom_bin)
    try:
        with PromClient(own.url) as client:
            reader = FleetReader(client)
            app = FleetApp(reader, refresh_s=1.0, prometheus=client.url_shown)
            try:
                async with app.run_test(size=(160, 48)) as pilot:
                    await until(
                        pilot, "temperatures on screen", lambda: "86°" in screen_text(app), 60
                    )
                    before = table_lines(app)
                    own.stop()
                    await until(
                        pilot,
                        "'unreachable' on screen",
                        lambda: "Prometheus unreachable: connection refused" in screen_text(app),
                        30,
                    )
                    await pilot.pause()
                    text = screen_text(app)
                    assert "— showing data from" in text and "(stale)" in text
                    after = table_lines(app)
                    assert len(after) == len(before)
                    for old, new in zip(before, after, strict=True):
                        host = old.split()[0]
                        assert new.split()[:2] == [host, "~"]  # the same host, marked stale
                    assert any("86°" in line for line in after)  # the last values stay
                    assert app.view is not None and app.view.stale
            finally:
                reader.close()
    finally:
        own.stop()


# ---------------------------------------------------------------------------------- snapshots
T0 = 1_795_615_200.0  # 2026-11-25 14:00:00 UTC


def canned_rows() -> tuple[FleetRow, ...]:
    crit = FleetAlert("LlmtopGpuThrottled", "critical")
    warn = FleetAlert("LlmtopGpuNearSlowdown", "warning")
    rows = [
        FleetRow("10.0.0.9:9464", "gpu-box-09", None, up=False,
                 down_reason="connection refused",
                 alerts=(FleetAlert("LlmtopAgentDown", "critical"),)),
        FleetRow("10.0.0.2:9464", "gpu-box-02", "1", "NVIDIA H100 80GB HBM3", server_state="ready",
                 temperature_c=88.0, slowdown_c=87.0, margin_c=-1.0, throttled_share_5m=0.82,
                 vram_percent=93.0, gen_tokens_per_s=61.5, ttft_p95_s=0.41, alerts=(crit, warn)),
        FleetRow("10.0.0.2:9464", "gpu-box-02", "0", "NVIDIA H100 80GB HBM3", server_state="ready",
                 temperature_c=83.0, slowdown_c=87.0, margin_c=4.0, throttled_share_5m=0.0,
                 vram_percent=71.0, gen_tokens_per_s=61.5, ttft_p95_s=0.41, alerts=(warn,)),
    ]  # fmt: skip
    for i in range(3, 30):
        rows.append(
            FleetRow(f"10.0.0.{i}:9464", f"gpu-box-{i:02d}", "0", "NVIDIA L40S",
                     server_state="sleeping" if i % 7 == 0 else "ready",
                     temperature_c=50.0 + i % 13, slowdown_c=88.0, margin_c=38.0 - i % 13,
                     throttled_share_5m=0.0, vram_percent=40.0 + i, gen_tokens_per_s=float(i),
                     ttft_p95_s=0.08 + i / 1000)
        )  # fmt: skip
    return tuple(rows)


class CannedFleet:
    """Fixed data for the snapshots (the real Prometheus is in the tests above)."""

    def refresh(self) -> FleetView:
        return FleetView("http://prometheus:9090", rank(canned_rows()), data_time=T0,
                         refresh_time=T0, took_s=0.042)  # fmt: skip

    def detail(self, row: FleetRow, minutes: float = 30.0) -> FleetDetail:
        start, end = T0 - minutes * 60, T0
        ts = [start + 10 * i for i in range(int(minutes * 6) + 1)]
        temp = tuple((t, 70.0 + 18.0 * min(1.0, (t - start) / (end - start) * 1.6)) for t in ts)
        clk = tuple((t, 100.0 if v < 87 else 71.0) for t, v in temp)
        gen = tuple((t, 62.0 if c == 100.0 else 44.0) for t, c in clk)
        vram = tuple((t, 93.0) for t in ts)
        hot = [t for t, v in temp if v >= 87]
        return FleetDetail(
            row.key, start, end, 10.0,
            (PlotSeries("temp", "°C", temp, line=87.0), PlotSeries("SM clk", "%", clk, 0, 100),
             PlotSeries("gen t/s", "tok/s", gen, 0, None), PlotSeries("VRAM", "%", vram, 0, 100)),
            ((hot[0], end),) if hot else (),
        )  # fmt: skip


@pytest.fixture
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _compare(snap_compare: object, size: tuple[int, int], press: tuple[str, ...] = ()) -> bool:
    app = FleetApp(CannedFleet(), prometheus="http://prometheus:9090", periodic=False)

    async def run_before(pilot: Pilot[None]) -> None:
        await until(pilot, "the canned view", lambda: app.refreshes >= 1, 10)
        for key in press:
            await pilot.press(key)
        if press:
            await until(pilot, "the detail", lambda: getattr(app.screen, "loads", 0) >= 1, 10)
        await pilot.pause()

    return snap_compare(app, terminal_size=size, run_before=run_before)  # type: ignore[operator]


@pytest.mark.usefixtures("_utc")
def test_fleet_view_80x24(snap_compare: object) -> None:
    assert _compare(snap_compare, (80, 24))


@pytest.mark.usefixtures("_utc")
def test_fleet_view_160x48(snap_compare: object) -> None:
    assert _compare(snap_compare, (160, 48))


@pytest.mark.usefixtures("_utc")
def test_fleet_detail_120x36(snap_compare: object) -> None:
    assert _compare(snap_compare, (120, 36), press=("down", "enter"))
