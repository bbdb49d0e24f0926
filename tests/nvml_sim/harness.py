"""Pytest fixtures around the simulated NVML library: build once per session, run a scenario.

tests/conftest.py imports the fixtures, so every test module can ask for `nvml_sim` /
`nvml_sim_build`.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmtop.sources.gpu import GpuMonitor, GpuReading
from llmtop.sources.gpu_sim import SCENARIO_ENV, SimBuildError, build_sim_library

BUILD_ROOT = Path(__file__).resolve().parents[1] / "_build" / "nvml_sim"
# Unix time that scenario second 0 maps to (frozen: 2026-11-25 14:00:00 UTC).
EPOCH = 1_795_615_200.0


@dataclass
class SimGpus:
    """A GpuMonitor on the simulated library, with the scenario clock in the test's hand."""

    monitor: GpuMonitor
    library: Path
    t: float = 0.0

    def _lib(self) -> ctypes.CDLL:
        import pynvml

        lib = pynvml.nvmlLib
        fn = lib.nvmlSimSetTime
        fn.argtypes = [ctypes.c_double]
        fn.restype = None
        return lib

    def at(self, t: float) -> GpuReading:
        """Move the scenario clock to *t* seconds and sample every GPU once."""
        self.t = t
        self._lib().nvmlSimSetTime(ctypes.c_double(t))
        return self.monitor.sample_once()

    def now(self) -> float:
        return EPOCH + self.t


@pytest.fixture(scope="session")
def nvml_sim_build() -> Callable[[Iterable[str]], Path]:
    def build(omit: Iterable[str] = ()) -> Path:
        try:
            return build_sim_library(BUILD_ROOT, omit)
        except SimBuildError as e:
            from tests.conftest import missing_component  # late: conftest imports this module

            missing_component(f"simulated NVML library: {e}")
            raise

    return build


@pytest.fixture
def nvml_sim(
    nvml_sim_build: Callable[[Iterable[str]], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[..., SimGpus]]:
    """start(scenario_dict, omit=(), **GpuMonitor kwargs) → SimGpus at scenario time 0.

    Starting another scenario stops the monitors of the previous one (NVML is process-global).
    """
    started: list[GpuMonitor] = []

    def start(scenario: dict[str, Any], omit: Iterable[str] = (), **kw: Any) -> SimGpus:
        # NVML is process-global: one simulated scenario at a time (the previous one is shut).
        for old in started:
            old.stop()
        path = tmp_path / f"scenario-{len(started)}.json"
        path.write_text(json.dumps(scenario))
        monkeypatch.setenv(SCENARIO_ENV, str(path))
        lib = nvml_sim_build(omit)
        holder: dict[str, SimGpus] = {}
        mon = GpuMonitor(library_path=str(lib), clock=lambda: holder["sim"].now(), **kw)
        sim = holder["sim"] = SimGpus(mon, lib)
        started.append(mon)
        mon.open()
        sim._lib().nvmlSimSetTime(ctypes.c_double(0.0))
        return sim

    yield start
    for mon in started:
        mon.stop()
