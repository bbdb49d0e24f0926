"""GPU telemetry through the real pynvml against the simulated libnvidia-ml.so.1."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from llmtop.snapshot import ServerStatus, Snapshot, to_json_dict
from llmtop.sources.gpu import NO_DRIVER_NOTE, GpuMonitor, decode_reasons
from llmtop.sources.gpu_sim import OMITTABLE
from tests.nvml_sim.harness import SimGpus
from tests.nvml_sim.scenarios import GiB, consumer_gpu, datacenter_gpu, scenario, thermal_ramp_gpu

pytestmark = pytest.mark.nvml_sim

REQUIRED_KEYS = {
    "index",
    "name",
    "uuid",
    "lost",
    "memory_used_bytes",
    "memory_total_bytes",
    "utilization_percent",
    "temperature_c",
    "temp_slowdown_c",
    "temp_shutdown_c",
    "sm_clock_mhz",
    "sm_clock_max_mhz",
    "mem_clock_mhz",
    "power_w",
    "power_limit_w",
    "fan_percent",
    "pstate",
    "throttle_reasons",
    "throttled_thermal_percent",
    "processes",
}


def test_datacenter_gpu_every_field(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(
        scenario(datacenter_gpu(processes=[{"pid": 4242, "used_memory_bytes": 18 * GiB}]))
    )
    sim.at(0)
    reading = sim.at(10)  # second sample: violation counters give a percentage
    assert reading.note is None
    (g,) = reading.samples
    assert g.name == "NVIDIA H100 80GB HBM3"
    assert g.pci_bus_id == "00000000:1B:00.0"
    assert g.memory_total_bytes == 80 * GiB
    # v2 memory: "used" excludes the reserved half GiB
    assert g.memory_used_bytes == 20 * GiB
    assert g.memory_free_bytes == 80 * GiB - 20 * GiB - GiB // 2
    assert (g.temperature_c, g.temp_slowdown_c, g.temp_shutdown_c) == (64.0, 87.0, 92.0)
    assert (g.sm_clock_mhz, g.sm_clock_max_mhz, g.mem_clock_mhz) == (1980, 1980, 2619)
    assert (g.power_w, g.power_limit_w, g.fan_percent, g.pstate) == (512.5, 700.0, 47.0, 0)
    assert g.persistence_mode is True
    assert g.throttle_reasons == ()
    assert g.throttled_thermal_percent == 0.0
    assert [(p.pid, p.used_memory_bytes) for p in g.processes or ()] == [(4242, 18 * GiB)]

    gpu_json = to_json_dict(Snapshot(time=sim.now(), server=ServerStatus(url="x"), gpus=(g,)))[
        "gpus"
    ][0]
    assert set(gpu_json) >= REQUIRED_KEYS
    assert all(gpu_json[k] is not None for k in REQUIRED_KEYS)
    assert gpu_json["processes"] == [{"pid": 4242, "used_memory_bytes": 18 * GiB}]


def test_consumer_gpu_unsupported_fields_are_null(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(scenario(consumer_gpu()))
    sim.at(0)
    (g,) = sim.at(5).samples
    assert g.name == "NVIDIA GeForce RTX 4090"
    assert g.temperature_c == 45.0 and g.sm_clock_mhz == 2520 and g.pstate == 2
    assert g.memory_used_bytes == 3 * GiB and g.utilization_percent == 12.0
    assert g.throttle_reasons == ("GpuIdle",)
    for field in (
        "fan_percent",
        "power_w",
        "power_limit_w",
        "temp_slowdown_c",
        "temp_shutdown_c",
        "throttled_thermal_percent",
        "processes",
    ):
        assert getattr(g, field) is None, field
    assert g.persistence_mode is False
    gpu_json = to_json_dict(Snapshot(time=0, server=ServerStatus(url="x"), gpus=(g,)))["gpus"][0]
    assert gpu_json["fan_percent"] is None and gpu_json["processes"] is None


def test_no_permission_field_is_na_and_others_survive(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(scenario(datacenter_gpu(no_permission=["processes", "temperature"])))
    (g,) = sim.at(1).samples
    assert g.processes is None and g.temperature_c is None
    assert g.sm_clock_mhz == 1980 and g.memory_used_bytes == 20 * GiB


def test_lost_gpu_is_marked_and_others_carry_on(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(scenario(datacenter_gpu(), consumer_gpu(lost_at_s=30)))
    before = sim.at(10).samples
    assert [g.lost for g in before] == [False, False]
    after = sim.at(31).samples
    assert after[1].lost is True
    assert after[1].name == "NVIDIA GeForce RTX 4090"  # static facts stay for the card
    assert after[1].temperature_c is None
    assert after[0].lost is False and after[0].temperature_c == 64.0
    # stays lost even if the scenario clock were to go back: the GPU fell off the bus
    assert sim.at(5).samples[1].lost is True


def test_no_library_gives_one_clear_note() -> None:
    mon = GpuMonitor(library_path="/nonexistent/libnvidia-ml.so.1")
    try:
        mon.start()  # the thread opens NVML, publishes the note and ends
        deadline = time.monotonic() + 20
        while mon.latest().note is None and time.monotonic() < deadline:
            threading.Event().wait(0.02)
        reading = mon.latest()
        assert reading.samples == ()
        assert reading.note == NO_DRIVER_NOTE == "no NVIDIA driver: libnvidia-ml.so.1 not found"
        assert mon.sample_once().note == NO_DRIVER_NOTE
    finally:
        mon.stop()


def test_missing_versioned_symbols_take_the_fallbacks(nvml_sim: Callable[..., SimGpus]) -> None:
    ramp = thermal_ramp_gpu(processes=[{"pid": 77, "used_memory_bytes": 5 * GiB}])
    sim = nvml_sim(scenario(ramp), omit=OMITTABLE)
    import pynvml

    for name in OMITTABLE:
        assert not hasattr(pynvml.nvmlLib, name), f"{name} should be absent from the .so"
    (g,) = sim.at(130).samples
    assert g.temperature_c is not None and g.temperature_c > 86  # legacy nvmlDeviceGetTemperature
    assert g.throttle_reasons == ("HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown")
    assert g.memory_used_bytes == 20 * GiB + GiB // 2  # v1: reserved counts as used
    assert [(p.pid, p.used_memory_bytes) for p in g.processes or ()] == [(77, 5 * GiB)]  # v1
    assert g.throttled_thermal_percent is None  # no violation counters: N/A, not an error


def test_only_v3_processes_missing_uses_v2(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(
        scenario(datacenter_gpu(processes=[{"pid": 9, "used_memory_bytes": GiB}])),
        omit=["nvmlDeviceGetComputeRunningProcesses_v3"],
    )
    (g,) = sim.at(1).samples
    assert [(p.pid, p.used_memory_bytes) for p in g.processes or ()] == [(9, GiB)]


def test_violation_counters_become_percent_of_interval(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(scenario(thermal_ramp_gpu()))
    sim.at(60)
    (g,) = sim.at(150).samples  # thermal reasons from 90 s on: 60 of the 90 s
    assert g.throttled_thermal_percent == pytest.approx(66.7, abs=0.1)
    assert g.throttled_power_percent == 0.0
    (g,) = sim.at(160).samples
    assert g.throttled_thermal_percent == pytest.approx(100.0)


def test_decode_reasons_bit_by_bit() -> None:
    assert decode_reasons(0) == ()
    assert decode_reasons(0x1 | 0x40 | 0x8) == ("GpuIdle", "HwSlowdown", "HwThermalSlowdown")
    assert decode_reasons(0x180) == ("HwPowerBrakeSlowdown", "DisplayClockSetting")
    assert decode_reasons(0x1000) == ("0x1000",)


def test_background_thread_publishes_without_blocking(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(scenario(datacenter_gpu(), datacenter_gpu(name="second")), refresh_s=0.05)
    mon = sim.monitor
    mon.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(mon.recent()) < 3:
        threading.Event().wait(0.02)
    assert len(mon.recent()) >= 3
    names = [g.name for g in mon.latest().samples]
    assert names == ["NVIDIA H100 80GB HBM3", "second"]
    mon.stop()
    assert mon._thread is None


def test_history_is_bounded(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(scenario(datacenter_gpu()), refresh_s=1.0, history_s=5)
    for t in range(20):
        sim.at(t)
    assert len(sim.monitor.recent()) == 5


def test_demo_monitor_is_simulated_and_labelled(
    nvml_sim_build: Callable[..., object], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctypes

    from llmtop.sources import gpu
    from llmtop.sources.gpu_sim import SCENARIO_ENV
    from tests.nvml_sim.harness import BUILD_ROOT

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        pytest.skip("a real NVIDIA driver is present: the demo uses it")
    except OSError:
        pass
    nvml_sim_build(())  # skips (or fails under CI) when gcc/nvml.h are missing
    monkeypatch.delenv(SCENARIO_ENV, raising=False)
    monkeypatch.delenv(gpu.LIBRARY_ENV, raising=False)
    mon = gpu.demo_gpu_monitor(build_dir=BUILD_ROOT)
    assert mon is not None and mon.simulated
    try:
        reading = mon.sample_once()
        assert reading.note == "SIMULATED"
        (g,) = reading.samples
        assert g.name == "NVIDIA RTX 6000 Ada Generation"
        assert g.temp_slowdown_c == 87.0 and g.temperature_c is not None
    finally:
        mon.stop()


def test_gpu_lost_before_start_is_shown_lost(nvml_sim: Callable[..., SimGpus]) -> None:
    sim = nvml_sim(scenario(consumer_gpu(lost_at_s=0), datacenter_gpu()))
    lost, ok = sim.at(1).samples
    assert lost.lost is True and lost.index == 0
    assert ok.lost is False and ok.name == "NVIDIA H100 80GB HBM3"
