"""One object per supervised server with every action on it (what `Session.operations` is)."""

from __future__ import annotations

from llmtop.control.protocols import Controller, GpuSampler
from llmtop.control.tuning import ChangeLog
from llmtop.operations.apply import TuningApply, TuningCheck, TuningInput, check_tuning_input
from llmtop.operations.guard import OneAtATime
from llmtop.operations.server import ServerActions
from llmtop.operations.sweep import SweepRequest, SweepRun, parse_sweep_input
from llmtop.sources.logs import LogStore

__all__ = [
    "Operations",
    "ServerActions",
    "SweepRequest",
    "SweepRun",
    "TuningApply",
    "TuningCheck",
    "TuningInput",
    "check_tuning_input",
    "parse_sweep_input",
]


class Operations:
    """The actions on one supervised server; apply and sweep never run at the same time."""

    def __init__(
        self,
        controller: Controller,
        log_store: LogStore,
        *,
        gpu_monitor: GpuSampler | None = None,
        api_key: str | None = None,
        change_log: ChangeLog | None = None,
    ) -> None:
        self.controller = controller
        self.guard = OneAtATime()
        self.server = ServerActions(controller)
        self.apply = TuningApply(
            controller, log_store, guard=self.guard, gpu_monitor=gpu_monitor, change_log=change_log
        )
        self.sweep = SweepRun(
            controller, log_store, guard=self.guard, gpu_monitor=gpu_monitor, api_key=api_key
        )

    @property
    def busy(self) -> str | None:
        """ "apply" or "sweep" while one runs."""
        return self.guard.busy

    def use_gpu_monitor(self, gpu_monitor: GpuSampler | None) -> None:
        """The GPU sampler arrives after start-up (NVML opens on a thread)."""
        self.apply.gpu_monitor = gpu_monitor
        self.sweep.gpu_monitor = gpu_monitor
