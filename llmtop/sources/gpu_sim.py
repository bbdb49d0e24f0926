"""Build the simulated libnvidia-ml.so.1 (tests and `llmtop demo` on machines without a driver).

The C source lives in tests/nvml_sim/nvml_sim.c; it is compiled with gcc against `nvml.h` from
the PyPI package nvidia-nvml-dev. Build variants leave chosen versioned symbols out of the .so so
that the real pynvml's symbol lookup fails and llmtop's fallbacks run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterable
from pathlib import Path

SCENARIO_ENV = "LLMTOP_NVML_SIM_SCENARIO"

# Symbols a variant may leave out → the -D flag that removes them from the .so.
OMITTABLE = {
    "nvmlDeviceGetTemperatureV": "SIM_OMIT_TEMPERATURE_V",
    "nvmlDeviceGetCurrentClocksEventReasons": "SIM_OMIT_CLOCKS_EVENT_REASONS",
    "nvmlDeviceGetMemoryInfo_v2": "SIM_OMIT_MEMORY_V2",
    "nvmlDeviceGetComputeRunningProcesses_v3": "SIM_OMIT_PROCESSES_V3",
    "nvmlDeviceGetComputeRunningProcesses_v2": "SIM_OMIT_PROCESSES_V2",
    "nvmlDeviceGetViolationStatus": "SIM_OMIT_VIOLATION",
}


class SimBuildError(RuntimeError):
    """gcc, nvml.h or the simulator's source is missing, or the build failed."""


def sim_source() -> Path | None:
    """The simulator's C source: $LLMTOP_NVML_SIM_SRC or tests/nvml_sim/ of a source checkout."""
    env = os.environ.get("LLMTOP_NVML_SIM_SRC")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "tests" / "nvml_sim" / "nvml_sim.c")
    for c in candidates:
        if c.is_file():
            return c
    return None


def find_nvml_header() -> Path | None:
    """`nvml.h` from the nvidia-nvml-dev wheel (site-packages/nvidia/*/include/nvml.h)."""
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    roots.update(p for p in sys.path if p.endswith("site-packages"))
    for root in sorted(roots):
        base = Path(root) / "nvidia"
        if base.is_dir():
            for h in sorted(base.glob("*/include/nvml.h")) + sorted(base.glob("include/nvml.h")):
                return h
    return None


def build_sim_library(out_root: Path, omit: Iterable[str] = ()) -> Path:
    """Compile the simulator (once per source/variant) and return the path of libnvidia-ml.so.1."""
    omit = sorted(set(omit))
    unknown = [s for s in omit if s not in OMITTABLE]
    if unknown:
        raise ValueError(f"cannot omit {unknown}: known {sorted(OMITTABLE)}")
    src = sim_source()
    if src is None:
        raise SimBuildError("simulated NVML source (tests/nvml_sim/nvml_sim.c) not found")
    header = find_nvml_header()
    if header is None:
        raise SimBuildError("nvml.h not found: pip install nvidia-nvml-dev")
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SimBuildError("no C compiler (gcc) on PATH")
    digest = hashlib.sha256(src.read_bytes() + "|".join(omit).encode()).hexdigest()[:12]
    variant = "-".join(OMITTABLE[s].removeprefix("SIM_OMIT_").lower() for s in omit) or "full"
    out_dir = Path(out_root) / f"{variant}-{digest}"
    lib = out_dir / "libnvidia-ml.so.1"
    if lib.is_file():
        return lib
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".libnvidia-ml.so.1.{os.getpid()}"
    argv = [
        gcc,
        "-shared",
        "-fPIC",
        "-O2",
        "-fvisibility=hidden",
        "-Wall",
        "-Wno-deprecated-declarations",
        f"-I{header.parent}",
        *(f"-D{OMITTABLE[s]}" for s in omit),
        "-o",
        str(tmp),
        str(src),
        "-lm",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SimBuildError(f"gcc failed: {proc.stderr.strip()[-2000:]}")
    os.replace(tmp, lib)
    return lib
