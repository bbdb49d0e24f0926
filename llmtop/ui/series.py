"""What the dashboard plots, kept from every snapshot and probe.

One `SeriesGroup` (llmtop.model.timeseries) on the snapshots' time axis holds every plotted
quantity once: generation/prompt tokens/s, host and server CPU, and each GPU's temperature and
SM clock. The overview's sparklines show its last 10 minutes; the thermal plot shows all 15, on
the same axis as the GPUs (gen tokens/s used to be kept twice, once per panel). Probe results are
kept beside it for the latency table and plot.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from llmtop.model.timeseries import SeriesGroup, TimeSeries
from llmtop.snapshot import Snapshot

if TYPE_CHECKING:
    from llmtop.sources.probe import ProbeResult

HISTORY_LEN = 900  # 15 min at 1 s: the thermal plot's window
SERIES_LEN = 600  # 10 min: what the overview's sparklines show
PROBES_LEN = 200

GEN_TPS = "gen_tps"
PROMPT_TPS = "prompt_tps"
HOST_CPU = "host_cpu"
PROC_CPU = "proc_cpu"

_GPU_KEYS: dict[int, tuple[str, str]] = {}


def _gpu_keys(index: int) -> tuple[str, str]:
    """The (temperature, SM clock) member names of GPU *index* (made once, not every tick)."""
    keys = _GPU_KEYS.get(index)
    if keys is None:
        keys = _GPU_KEYS[index] = (f"temp_c/{index}", f"sm_mhz/{index}")
    return keys


class DashboardHistory:
    """The plots' bounded history; the app records every snapshot (`add_snapshot`), also while
    the tabs that plot it are hidden, so the plots have no gaps."""

    def __init__(self, maxlen: int = HISTORY_LEN) -> None:
        self.metrics = SeriesGroup(maxlen)
        # Probe results (llmtop.sources.probe.ProbeResult), newest last.
        self.probes: deque[ProbeResult] = deque(maxlen=PROBES_LEN)

    def add_snapshot(self, snap: Snapshot) -> bool:
        """Record one snapshot; False when it is not newer than the last (already recorded)."""
        if self.metrics.last_time is not None and snap.time <= self.metrics.last_time:
            return False
        proc = snap.host.process
        values: dict[str, float | None] = {
            GEN_TPS: snap.server.gen_tokens_per_s,
            PROMPT_TPS: snap.server.prompt_tokens_per_s,
            HOST_CPU: snap.host.cpu_percent,
            PROC_CPU: proc.cpu_percent if proc else None,
        }
        for g in snap.gpus:
            temp_key, sm_key = _gpu_keys(g.index)
            lost = g.lost
            values[temp_key] = None if lost or g.temperature_c is None else float(g.temperature_c)
            values[sm_key] = None if lost or g.sm_clock_mhz is None else float(g.sm_clock_mhz)
        return self.metrics.record(snap.time, values)

    def add_probe(self, result: ProbeResult) -> None:
        self.probes.append(result)

    def clear(self) -> None:
        """Start the plots afresh (replay after a jump); panels holding this object see it."""
        self.metrics.clear()

    # -- the overview's last 10 minutes (lists of values, oldest first) ----------------------
    def _overview(self, name: str) -> list[float | None]:
        series = self.metrics.get(name)
        return series.tail(SERIES_LEN) if series is not None else []

    @property
    def gen_tps(self) -> list[float | None]:
        return self._overview(GEN_TPS)

    @property
    def prompt_tps(self) -> list[float | None]:
        return self._overview(PROMPT_TPS)

    @property
    def host_cpu(self) -> list[float | None]:
        return self._overview(HOST_CPU)

    @property
    def proc_cpu(self) -> list[float | None]:
        return self._overview(PROC_CPU)

    # -- the thermal plot's whole window ------------------------------------------------------
    @property
    def times(self) -> list[float]:
        """The shared time axis, oldest first."""
        return self.metrics.times()

    @property
    def span_s(self) -> float:
        return self.metrics.span_s

    def gen(self) -> TimeSeries[float | None] | None:
        return self.metrics.get(GEN_TPS)

    def temperature(self, gpu_index: int) -> TimeSeries[float | None] | None:
        return self.metrics.get(_gpu_keys(gpu_index)[0])

    def sm_clock(self, gpu_index: int) -> TimeSeries[float | None] | None:
        return self.metrics.get(_gpu_keys(gpu_index)[1])
