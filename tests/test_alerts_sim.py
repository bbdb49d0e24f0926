"""A thermal ramp played by the simulated NVML library, read through the real pynvml, diagnosed.

Scenario (tests/nvml_sim/scenarios.py thermal_ramp_gpu): cool until 60 s, SwThermalSlowdown at
90 s (84 °C), HwThermalSlowdown 120–180 s (87 °C, SM 1410 MHz), SW again until 240 s, then cool.
Decode runs at 52 tok/s unthrottled, 38 tok/s while throttled.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from llmtop.diagnosis.alerts import AlertEngine
from llmtop.diagnosis.thermal import clock_str
from llmtop.snapshot import Alert, ServerStatus, Snapshot
from tests.nvml_sim.harness import SimGpus
from tests.nvml_sim.scenarios import scenario, thermal_ramp_gpu

pytestmark = pytest.mark.nvml_sim


def play(sim: SimGpus, engine: AlertEngine, until: int) -> dict[int, tuple[Alert, ...]]:
    """Tick once a second from 0 to *until*; the alerts at every second."""
    out: dict[int, tuple[Alert, ...]] = {}
    for t in range(until + 1):
        reading = sim.at(t)
        throttled = any(
            r in ("SwThermalSlowdown", "HwThermalSlowdown")
            for r in reading.samples[0].throttle_reasons or ()
        )
        server = ServerStatus(
            url="http://127.0.0.1:1", health="ok", gen_tokens_per_s=38.0 if throttled else 52.0
        )
        snap = Snapshot(time=sim.now(), server=server, gpus=reading.samples)
        out[t] = engine.evaluate(snap)
        engine_report = engine.thermal(snap)
        play.last_report = engine_report  # type: ignore[attr-defined]
    return out


def kinds(alerts: tuple[Alert, ...]) -> set[str]:
    return {a.kind for a in alerts}


def test_thermal_ramp_alerts_fire_when_they_should(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(scenario(thermal_ramp_gpu()))
    engine = AlertEngine()
    timeline = play(sim, engine, 300)

    # cool phase: nothing at all
    assert all(timeline[t] == () for t in range(0, 80))
    # within 5 °C of slowdown (87 °C) from ~86 s: 70 °C at 60 s → 84 °C at 90 s
    assert "temp_near_slowdown" in kinds(timeline[88])
    assert "temp_near_slowdown" not in kinds(timeline[84])
    # SwThermalSlowdown from 90 s: not before it has lasted 5 s
    assert "throttled" not in kinds(timeline[94])
    throttled = next(a for a in timeline[95] if a.kind == "throttled")
    assert throttled.severity == "warning"
    assert throttled.since == sim.now() - 300 + 90  # the condition's start, not the alert's
    # HW slowdown: critical, words and clocks in the message
    hw = next(a for a in timeline[120] if a.kind == "throttled")
    assert hw.severity == "critical"
    assert "HW thermal slowdown" in hw.message and "SM 1410/1980 MHz" in hw.message
    # at the threshold: the temperature alert goes critical
    temp = next(a for a in timeline[125] if a.kind == "temp_near_slowdown")
    assert temp.severity == "critical"
    # recovered at 240 s; hysteresis: the temperature alert holds until 7 °C below slowdown
    assert "throttled" not in kinds(timeline[240])
    assert "temp_near_slowdown" in kinds(timeline[200])  # ~81 °C: inside the band
    assert "temp_near_slowdown" not in kinds(timeline[210])  # < 80 °C: cleared
    assert timeline[300] == ()


def test_thermal_ramp_verdict_and_events(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(scenario(thermal_ramp_gpu()))
    engine = AlertEngine()
    play(sim, engine, 300)
    report = play.last_report  # type: ignore[attr-defined]
    assert report is not None
    # window 0..300 s (5 min): throttled 90..240 s = 150 s = 50 %; SW slowdown the longest
    assert report.throttled_percent == pytest.approx(50.0, abs=1.0)
    assert report.decode_change_percent == pytest.approx(100 * (38 / 52 - 1), abs=0.5)
    assert (
        report.verdict
        == "thermal (SW slowdown) 50 % of the last 5 min; decode −27 % while throttled"
    )

    msgs = [e.message for e in report.events]
    t0 = sim.now() - 300
    assert (
        msgs[0]
        == f"{clock_str(t0 + 90)} SW thermal slowdown started — 84 °C, SM 1980→1830 MHz; gen 52→38 tok/s"
    )
    assert (
        msgs[1]
        == f"{clock_str(t0 + 120)} HW thermal slowdown started — 87 °C, SM 1980→1410 MHz; gen 52→38 tok/s"
    )
    assert (
        msgs[2]
        == f"{clock_str(t0 + 180)} HW thermal slowdown ended after 1 min — 85 °C, SM 1830 MHz"
    )
    assert msgs[3].startswith(f"{clock_str(t0 + 240)} SW thermal slowdown ended after 2m30s")
    assert len(msgs) == 4


def test_cool_gpu_no_alerts_and_clean_verdict(nvml_sim: Callable[..., SimGpus]) -> None:
    ramp = thermal_ramp_gpu()
    ramp["keyframes"] = ramp["keyframes"][:1]  # never warms up
    sim = nvml_sim(scenario(ramp))
    engine = AlertEngine()
    timeline = play(sim, engine, 120)
    assert all(a == () for a in timeline.values())
    report = play.last_report  # type: ignore[attr-defined]
    assert report.verdict == "not throttled in the last 2 min"
    assert report.events == ()


def test_thermal_verdict_follows_a_throttle_at_once(nvml_sim: Callable[..., SimGpus]) -> None:
    """A quiet window's verdict is made again only every few seconds (it reads the whole
    window), but a throttle shows in it, and in the event list, on the tick it happens."""
    from llmtop.diagnosis.alerts import THERMAL_REPORT_S

    sim = nvml_sim(scenario(thermal_ramp_gpu()))
    engine = AlertEngine()
    reports = {}
    for t in range(0, 100):
        reading = sim.at(t)
        snap = Snapshot(
            time=sim.now(), server=ServerStatus(url="http://127.0.0.1:1"), gpus=reading.samples
        )
        engine.evaluate(snap)
        reports[t] = engine.thermal(snap)
    # quiet: at most THERMAL_REPORT_S old
    spans = {r.verdict for t, r in reports.items() if 60 <= t < 90 and r is not None}
    assert len(spans) >= 30 / THERMAL_REPORT_S  # "…in the last 1m05s", "…1m10s", …
    assert reports[89] is not None and reports[89].verdict.startswith("not throttled")
    # SW slowdown from 90 s: the event at once, the share from the next tick on, every tick
    assert any("SW thermal slowdown started" in e.message for e in reports[90].events)
    shares = [reports[t].throttled_percent for t in range(91, 100)]
    assert all(b > a > 0 for a, b in zip(shares, shares[1:], strict=False)), shares
