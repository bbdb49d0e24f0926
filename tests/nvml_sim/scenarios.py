"""Scenario builders for the simulated NVML library (JSON written by the tests).

Scenario format (read by nvml_sim.c at every nvmlInit from $LLMTOP_NVML_SIM_SCENARIO):
  {"driver_version": str, "speed": float (scenario seconds per real second, default 1),
   "loop_s": float (scenario time wraps around: the demo plays forever),
   "gpus": [{
     "name", "uuid", "pci_bus_id", "memory_total_bytes", "memory_reserved_bytes",
     "max_clocks_mhz": {"graphics", "sm", "mem", "video"},
     "temp_thresholds_c": {"shutdown", "slowdown", "mem_max", "gpu_max"},  (missing → NOT_SUPPORTED)
     "power_limit_w", "persistence_mode": bool, "supported_clock_event_reasons": [names] | int,
     "not_supported": [field groups], "no_permission": [field groups],
       field groups: name uuid pci memory utilization temperature thresholds clocks max_clocks
                     power power_limit fan pstate persistence clock_event_reasons violation processes
     "lost_at_s": float (GPU_IS_LOST from then on),
     "interpolate": bool (default true: numbers linear between keyframes),
     "processes": [{"pid", "used_memory_bytes"}]  (when keyframes do not give them),
     "keyframes": [{"t", "memory_used_bytes", "gpu_util", "mem_util", "temp_c", "sm_clock_mhz",
                    "graphics_clock_mhz", "mem_clock_mhz", "power_w", "fan_percent", "pstate",
                    "clock_event_reasons": [names] | int, "processes": [...]}]  (fields carry forward)
   }]}
"""

from __future__ import annotations

from typing import Any

GiB = 1 << 30


def datacenter_gpu(**over: Any) -> dict[str, Any]:
    """An H100-like card: every field answers."""
    gpu: dict[str, Any] = {
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-5b1f2c3d-0000-4a1e-9f00-h100000000",
        "pci_bus_id": "00000000:1B:00.0",
        "memory_total_bytes": 80 * GiB,
        "memory_reserved_bytes": GiB // 2,
        "max_clocks_mhz": {"graphics": 1980, "sm": 1980, "mem": 2619, "video": 1755},
        "temp_thresholds_c": {"shutdown": 92, "slowdown": 87, "mem_max": 95, "gpu_max": 85},
        "power_limit_w": 700,
        "persistence_mode": True,
        "keyframes": [
            {
                "t": 0,
                "memory_used_bytes": 20 * GiB,
                "gpu_util": 93,
                "mem_util": 41,
                "temp_c": 64,
                "sm_clock_mhz": 1980,
                "graphics_clock_mhz": 1980,
                "mem_clock_mhz": 2619,
                "power_w": 512.5,
                "fan_percent": 47,
                "pstate": 0,
                "clock_event_reasons": [],
            }
        ],
    }
    gpu.update(over)
    return gpu


def consumer_gpu(**over: Any) -> dict[str, Any]:
    """A GeForce-like card without fan/power readings, thresholds or process accounting."""
    gpu: dict[str, Any] = {
        "name": "NVIDIA GeForce RTX 4090",
        "uuid": "GPU-0c0ffee0-4090-4090-4090-000000004090",
        "pci_bus_id": "00000000:01:00.0",
        "memory_total_bytes": 24 * GiB,
        "max_clocks_mhz": {"graphics": 3105, "sm": 3105, "mem": 10501},
        "temp_thresholds_c": {},
        "persistence_mode": False,
        "not_supported": ["fan", "power", "power_limit", "violation", "processes"],
        "keyframes": [
            {
                "t": 0,
                "memory_used_bytes": 3 * GiB,
                "gpu_util": 12,
                "mem_util": 4,
                "temp_c": 45,
                "sm_clock_mhz": 2520,
                "mem_clock_mhz": 10501,
                "pstate": 2,
                "clock_event_reasons": ["GpuIdle"],
            }
        ],
    }
    gpu.update(over)
    return gpu


def thermal_ramp_gpu(**over: Any) -> dict[str, Any]:
    """Cool for 60 s, warms to 84 °C (SwThermal at 90 s), HwThermal at 120–180 s with clocks
    falling to 1410 MHz, then the fans win and it recovers by 240 s (stepwise reasons)."""
    base = datacenter_gpu()
    kf = [
        {
            "t": 0,
            "temp_c": 62,
            "sm_clock_mhz": 1980,
            "graphics_clock_mhz": 1980,
            "power_w": 520,
            "fan_percent": 40,
            "clock_event_reasons": [],
        },
        {"t": 60, "temp_c": 70, "sm_clock_mhz": 1980, "graphics_clock_mhz": 1980},
        {"t": 89, "temp_c": 83.5, "sm_clock_mhz": 1980, "graphics_clock_mhz": 1980},
        {
            "t": 90,
            "temp_c": 84,
            "sm_clock_mhz": 1830,
            "graphics_clock_mhz": 1830,
            "fan_percent": 80,
            "clock_event_reasons": ["SwThermalSlowdown"],
        },
        {
            "t": 120,
            "temp_c": 87,
            "sm_clock_mhz": 1410,
            "graphics_clock_mhz": 1410,
            "fan_percent": 100,
            "clock_event_reasons": ["HwSlowdown", "SwThermalSlowdown", "HwThermalSlowdown"],
        },
        {
            "t": 180,
            "temp_c": 85,
            "sm_clock_mhz": 1830,
            "graphics_clock_mhz": 1830,
            "clock_event_reasons": ["SwThermalSlowdown"],
        },
        {
            "t": 240,
            "temp_c": 72,
            "sm_clock_mhz": 1980,
            "graphics_clock_mhz": 1980,
            "fan_percent": 60,
            "clock_event_reasons": [],
        },
        {"t": 600, "temp_c": 70},
    ]
    first = dict(base["keyframes"][0])
    first.update(kf[0])
    base["keyframes"] = [first, *kf[1:]]
    base.update(over)
    return base


def scenario(*gpus: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"driver_version": "550.54.15", **top, "gpus": list(gpus)}
