"""Run every benchmark and print one table: `python -m benchmarks [--quick] [--only NAME …]`.

Figures are machine-dependent; the header names the machine. Benchmarks are not tests: they
print, they do not fail.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import traceback

import psutil

# name → (module, kwargs for full run, kwargs for --quick)
BENCHMARKS: dict[str, tuple[str, dict, dict]] = {
    "overhead": (
        "benchmarks.overhead",
        {"seconds": 60.0},
        {"seconds": 10.0, "startup_runs": 2, "repeat": 1},
    ),
    "logflood": ("benchmarks.log_flood", {}, {"seconds": 3.0}),
    "probe": ("benchmarks.probe_accuracy", {}, {"n": 5}),
    "nvml": ("benchmarks.nvml_bench", {}, {}),
    "journal": ("benchmarks.journal_bench", {}, {}),
    "exporter": ("benchmarks.exporter_bench", {}, {"scrapes": 100, "baseline_s": 3.0}),
    "load": ("benchmarks.load_bench", {}, {"n": 5, "per_pair": 3}),
    "replay": ("benchmarks.replay_bench", {}, {"days": 1, "presses": 5, "startup_runs": 2}),
    "fleet": (
        "benchmarks.fleet_bench",
        {},
        {"window_s": 600.0, "refreshes": 5, "cpu_seconds": 10.0, "presses": 30},
    ),
    "agent": (
        "benchmarks.agent_bench",
        {},
        {"seconds": 10.0, "growth_hours": 1, "report_days": 1},
    ),
    "multiserver": (
        "benchmarks.multi_server",
        {"seconds": 30.0},
        {"seconds": 10.0, "repeat": 1, "ticks": 30},
    ),
}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, Python {platform.python_version()}"


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--quick", action="store_true", help="short runs (smoke test of the harness)")
    ap.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=None)
    args = ap.parse_args()
    rows: list[dict] = []
    for name, (mod, full, quick) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        try:
            module = importlib.import_module(mod)
            rows.extend(module.run(**(quick if args.quick else full)))
        except Exception as e:  # a benchmark that cannot run is reported, not fatal
            traceback.print_exc()
            rows.append(
                dict(
                    benchmark=name,
                    metric="error",
                    value=f"{type(e).__name__}: {e}",
                    target="",
                    ok=False,
                )
            )
    print(f"\nmachine: {_machine()}")
    w = [
        max(
            len(str(r.get(k, "")))
            for r in rows
            + [dict(benchmark="benchmark", metric="metric", value="value", target="target")]
        )
        for k in ("benchmark", "metric", "value", "target")
    ]
    head = ("benchmark", "metric", "value", "target", "met")
    print("  ".join(h.ljust(x) for h, x in zip(head, w + [3], strict=True)))
    for r in rows:
        ok = r.get("ok")
        met = "yes" if ok is True else "NO" if ok is False else ""
        cells = [str(r.get(k, "")) for k in ("benchmark", "metric", "value", "target")]
        print("  ".join(c.ljust(x) for c, x in zip(cells + [met], w + [3], strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
