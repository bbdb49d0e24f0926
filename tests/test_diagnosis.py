"""Diagnosis and alerts as pure functions over hand-made snapshots with frozen times."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from llmtop.config import (
    ConfigError,
    add_threshold_arguments,
    load_thresholds,
    thresholds_from_args,
)
from llmtop.diagnosis.alerts import AlertEngine, server_gpu_memory
from llmtop.diagnosis.thermal import ThermalPoint, fmt_span, limiting_reasons, thermal_report
from llmtop.diagnosis.thresholds import Thresholds
from llmtop.snapshot import (
    GpuProcess,
    GpuSample,
    HostStats,
    ProcessStats,
    ServerStatus,
    Snapshot,
    SupervisorStatus,
)

GiB = 1 << 30
T0 = 1_795_615_200.0


def gpu(**kw: object) -> GpuSample:
    base: dict[str, object] = dict(
        index=0,
        name="GPU",
        memory_total_bytes=80 * GiB,
        memory_used_bytes=10 * GiB,
        temperature_c=60.0,
        temp_slowdown_c=87.0,
        sm_clock_mhz=1980,
        sm_clock_max_mhz=1980,
        throttle_reasons=(),
        persistence_mode=True,
    )
    base.update(kw)
    return GpuSample(**base)  # type: ignore[arg-type]


def snap(t: float, *gpus: GpuSample, **kw: object) -> Snapshot:
    server = kw.pop("server", ServerStatus(url="http://127.0.0.1:1", health="ok"))
    return Snapshot(time=T0 + t, server=server, gpus=gpus, **kw)  # type: ignore[arg-type]


def kinds(alerts: tuple) -> list[str]:
    return [a.kind for a in alerts]


def test_vram_alert_rises_above_85_and_clears_below_80() -> None:
    eng = AlertEngine()
    used = {0: 60, 1: 69, 2: 66, 3: 65, 4: 63}  # GiB of 80: 75 %, 86 %, 82.5 %, 81 %, 79 %
    out = {t: eng.evaluate(snap(t, gpu(memory_used_bytes=u * GiB))) for t, u in used.items()}
    assert kinds(out[0]) == []
    assert kinds(out[1]) == ["vram_high"]
    a = out[1][0]
    assert a.severity == "warning" and "86 % used" in a.message and "85 %" in a.message
    assert kinds(out[2]) == ["vram_high"] and kinds(out[3]) == ["vram_high"]  # hysteresis band
    assert out[3][0].since == T0 + 1
    assert kinds(out[4]) == []


def test_vram_headroom_below_10_percent_is_critical() -> None:
    eng = AlertEngine()
    (a,) = eng.evaluate(snap(0, gpu(memory_used_bytes=73 * GiB, memory_free_bytes=7 * GiB)))
    assert a.severity == "critical" and "headroom 9 %" in a.message and "7.0 GiB free" in a.message


def test_temperature_margin_with_hysteresis() -> None:
    eng = AlertEngine()
    temps = [80, 82, 81, 80, 79]  # slowdown 87: margin 7, 5 (alert), 6 (kept), 7 (kept), 8 (clear)
    out = [kinds(eng.evaluate(snap(t, gpu(temperature_c=float(c))))) for t, c in enumerate(temps)]
    assert out == [[], ["temp_near_slowdown"], ["temp_near_slowdown"], ["temp_near_slowdown"], []]


def test_no_threshold_no_temperature_alert() -> None:
    eng = AlertEngine()
    assert eng.evaluate(snap(0, gpu(temperature_c=95.0, temp_slowdown_c=None))) == ()


def test_throttle_reason_must_last_5_seconds() -> None:
    eng = AlertEngine()
    hot = gpu(throttle_reasons=("HwSlowdown", "HwPowerBrakeSlowdown"), sm_clock_mhz=990)
    out = [kinds(eng.evaluate(snap(t, hot))) for t in range(7)]
    assert out[:5] == [[]] * 5
    assert out[5] == ["throttled"] and out[6] == ["throttled"]
    a = eng.evaluate(snap(7, hot))[0]
    assert a.severity == "critical" and "HW power brake" in a.message and a.since == T0
    assert "SM 990/1980 MHz (50 %)" in a.message
    assert eng.evaluate(snap(8, gpu())) == ()  # reason gone: cleared at once


def test_power_cap_and_idle_are_not_brakes() -> None:
    eng = AlertEngine()
    for t in range(20):
        assert eng.evaluate(snap(t, gpu(throttle_reasons=("GpuIdle", "SwPowerCap")))) == ()


def test_persistence_off_hint_names_the_command() -> None:
    (a,) = AlertEngine().evaluate(snap(0, gpu(persistence_mode=False)))
    assert a.kind == "persistence_off" and a.severity == "info"
    assert "nvidia-smi -pm 1" in a.message
    assert (
        AlertEngine(Thresholds(persistence_hint=False)).evaluate(
            snap(0, gpu(persistence_mode=False))
        )
        == ()
    )


def test_lost_gpu_is_a_critical_alert_and_others_still_checked() -> None:
    alerts = AlertEngine().evaluate(
        snap(0, GpuSample(index=0, lost=True), gpu(index=1, memory_used_bytes=70 * GiB))
    )
    assert kinds(alerts) == ["gpu_lost", "vram_high"]
    assert "GPU0 is lost" in alerts[0].message


def _fallback_snap(
    t: float, argv: tuple[str, ...], procs: tuple[GpuProcess, ...] | None, health: str = "ok"
) -> Snapshot:
    return snap(
        t,
        gpu(processes=procs),
        server=ServerStatus(url="http://127.0.0.1:1", health=health, pid=4242),  # type: ignore[arg-type]
        host=HostStats(process=ProcessStats(pid=4242)),
        supervisor=SupervisorStatus(mode="child", state="ready", argv=argv),
    )


def test_cpu_fallback_after_grace_period() -> None:
    eng = AlertEngine(Thresholds(cpu_fallback_s=10))
    argv = ("llama-server", "-m", "m.gguf", "-ngl", "99")
    other = (GpuProcess(pid=1, used_memory_bytes=GiB),)
    assert eng.evaluate(_fallback_snap(0, argv, other)) == ()
    assert eng.evaluate(_fallback_snap(9, argv, other)) == ()
    (a,) = eng.evaluate(_fallback_snap(10, argv, other))
    assert a.kind == "cpu_fallback" and a.severity == "critical" and a.since == T0
    assert "--gpu-layers 99" in a.message and "CUDA_VISIBLE_DEVICES" in a.message
    # the server shows up on the GPU: cleared
    mine = (GpuProcess(pid=4242, used_memory_bytes=9 * GiB),)
    assert eng.evaluate(_fallback_snap(11, argv, mine)) == ()


@pytest.mark.parametrize(
    "argv,procs,health",
    [
        (("llama-server", "-m", "m.gguf"), (), "ok"),  # no -ngl given: auto, not a promise
        (("llama-server", "-ngl", "0"), (), "ok"),
        (("llama-server", "-ngl", "35"), None, "ok"),  # process list unreadable: unknown
        (("llama-server", "-ngl", "35"), (), "loading"),  # still loading the model
    ],
)
def test_no_cpu_fallback_alert_when_unknown_or_not_asked(
    argv: tuple[str, ...], procs: tuple[GpuProcess, ...] | None, health: str
) -> None:
    eng = AlertEngine(Thresholds(cpu_fallback_s=0))
    assert eng.evaluate(_fallback_snap(0, argv, procs, health)) == ()


def test_server_gpu_memory_from_process_list() -> None:
    s = _fallback_snap(0, (), (GpuProcess(4242, 5 * GiB), GpuProcess(7, GiB)))
    assert server_gpu_memory(s) == {0: 5 * GiB}


def test_thermal_report_verdict_and_decode_cost() -> None:
    pts = []
    for t in range(300):
        hot = 100 <= t < 193  # 93 of 300 s
        pts.append(
            ThermalPoint(
                T0 + t,
                0,
                87.0 if hot else 70.0,
                1410 if hot else 1980,
                ("HwSlowdown", "HwThermalSlowdown") if hot else (),
                38.0 if hot else 50.0,
            )
        )
    r = thermal_report(pts, now=T0 + 300, window_s=300)
    assert r.verdict == "thermal (HW slowdown) 31 % of the last 5 min; decode −24 % while throttled"
    assert r.throttled_percent == pytest.approx(31.0)


def test_thermal_report_needs_two_points_and_no_gen_means_no_cost() -> None:
    assert thermal_report([ThermalPoint(T0, 0, reasons=())], now=T0).verdict is None
    pts = [ThermalPoint(T0 + t, 0, reasons=("SwPowerCap",)) for t in range(60)]
    r = thermal_report(pts, now=T0 + 60, window_s=300)
    assert r.verdict == "power cap (SW) 100 % of the last 1 min"


def test_helpers() -> None:
    assert fmt_span(300) == "5 min" and fmt_span(150) == "2m30s" and fmt_span(42) == "42 s"
    assert limiting_reasons(("HwSlowdown", "HwThermalSlowdown", "GpuIdle")) == {"HwThermalSlowdown"}
    assert limiting_reasons(("HwSlowdown",)) == {"HwSlowdown"}


def test_config_file_and_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("[alerts]\nvram_percent = 90\ntemp_margin_c = 3\npersistence_hint = false\n")
    th = load_thresholds(cfg)
    assert (th.vram_percent, th.temp_margin_c, th.persistence_hint) == (90.0, 3.0, False)
    parser = argparse.ArgumentParser()
    add_threshold_arguments(parser)
    args = parser.parse_args(["--config", str(cfg), "--vram-alert-percent", "70"])
    th = thresholds_from_args(args)
    assert th.vram_percent == 70.0 and th.temp_margin_c == 3.0
    assert load_thresholds(tmp_path / "missing.toml") == Thresholds()
    cfg.write_text("[alerts]\nvram_procent = 90\n")
    with pytest.raises(ConfigError, match="unknown alert setting 'vram_procent'"):
        load_thresholds(cfg)


# -- the server's life: down, not responding, crash loop (the fault matrix drives the real ones) --


def _life(
    t: float,
    health: str,
    detail: str = "",
    state: str | None = None,
    pstate: str | None = None,
    **sup_fields: object,
) -> Snapshot:
    """A snapshot of the server's life: health, supervisor state (None: attach), psutil state."""
    from llmtop.snapshot import HostStats, ProcessStats, SupervisorStatus

    sup = SupervisorStatus(mode="child", state=state, **sup_fields) if state else None  # type: ignore[arg-type]
    host = HostStats(process=ProcessStats(pid=77, status=pstate)) if pstate else HostStats()
    server = ServerStatus(url="http://127.0.0.1:1", health=health, detail=detail)  # type: ignore[arg-type]
    return Snapshot(time=t, server=server, host=host, supervisor=sup)


def test_a_stopped_server_is_no_alert_and_a_starting_one_only_if_it_was_down() -> None:
    """The operator's own stop is no alert; a refused connection while the child starts is
    none either — unless it was already down (crash → restart → load is one alert)."""
    eng = AlertEngine()
    assert eng.evaluate(_life(0, "unreachable", "connection refused", "stopped")) == ()
    assert eng.evaluate(_life(1, "unreachable", "connection refused", "starting")) == ()
    assert eng.evaluate(_life(2, "ok", "ok", "ready")) == ()
    down = eng.evaluate(
        _life(3, "unreachable", "connection refused", "exited", last_exit="exit code 1")
    )
    assert [(a.kind, a.severity) for a in down] == [("server_down", "critical")]
    assert "exit code 1" in down[0].message
    for t, health, state in ((4, "unreachable", "starting"), (5, "loading", "loading")):
        kept = eng.evaluate(_life(t, health, "", state))
        assert [a.kind for a in kept] == ["server_down"] and kept[0].since == 3
    assert eng.evaluate(_life(6, "ok", "ok", "ready")) == ()


def test_attach_mode_down_and_hung_in_words() -> None:
    eng = AlertEngine()
    (down,) = eng.evaluate(_life(0, "unreachable", "connection refused"))
    assert down.kind == "server_down" and "connection refused" in down.message
    (hung,) = eng.evaluate(_life(1, "unreachable", "timed out after 2.0 s", pstate="sleeping"))
    assert hung.kind == "server_not_responding" and "process 77 is sleeping" in hung.message
    (stopped,) = eng.evaluate(_life(2, "unreachable", "not responding", pstate="stopped"))
    assert "stopped (SIGSTOP)" in stopped.message and "kill -CONT 77" in stopped.message


def test_crash_loop_beats_down_and_stays_while_up_again() -> None:
    eng = AlertEngine()
    (a,) = eng.evaluate(
        _life(0, "unreachable", "", "restarting", recent_failures=2, last_exit="killed by SIGKILL")
    )
    assert a.kind == "crash_loop" and a.severity == "critical" and "SIGKILL" in a.message
    (b,) = eng.evaluate(_life(1, "ok", "ok", "ready", recent_failures=2))
    assert b.kind == "crash_loop" and b.since == 0 and "runs again for now" in b.message
