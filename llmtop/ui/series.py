"""Bounded time series the app keeps from snapshots and probes, for sparklines and plots."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from llmtop.snapshot import Snapshot

# 10 minutes at 1 s refresh; plots downsample to their width.
SERIES_LEN = 600
PROBES_LEN = 200


@dataclass
class Series:
    gen_tps: deque[float | None] = field(default_factory=lambda: deque(maxlen=SERIES_LEN))
    prompt_tps: deque[float | None] = field(default_factory=lambda: deque(maxlen=SERIES_LEN))
    host_cpu: deque[float | None] = field(default_factory=lambda: deque(maxlen=SERIES_LEN))
    proc_cpu: deque[float | None] = field(default_factory=lambda: deque(maxlen=SERIES_LEN))
    # Probe results (llmtop.sources.probe.ProbeResult), newest last.
    probes: deque[Any] = field(default_factory=lambda: deque(maxlen=PROBES_LEN))

    def add_snapshot(self, snap: Snapshot) -> None:
        self.gen_tps.append(snap.server.gen_tokens_per_s)
        self.prompt_tps.append(snap.server.prompt_tokens_per_s)
        self.host_cpu.append(snap.host.cpu_percent)
        proc = snap.host.process
        self.proc_cpu.append(proc.cpu_percent if proc else None)

    def add_probe(self, result: Any) -> None:
        self.probes.append(result)
