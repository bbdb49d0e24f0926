"""Sweep --gpu-layers from what the operator typed (or `llmtop tune`'s flags).

Parses the range and the probe count, refuses settings the model cannot take, runs
`control.sweep.run_sweep` (restart per setting, verify, probe, restore) and reports each
measured setting as a `SweepStep` and the end as `SweepFinished`.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmtop.control.protocols import Controller, GpuSampler
from llmtop.control.sweep import DEFAULT_PROMPT, parse_range, run_sweep
from llmtop.operations.events import (
    Failed,
    Listener,
    Progress,
    Rejected,
    SweepFinished,
    SweepStep,
    emitter,
)
from llmtop.operations.guard import OneAtATime
from llmtop.sources.logs import LogStore


@dataclass(frozen=True)
class SweepRequest:
    """One sweep, as validated numbers."""

    gpu_layers: tuple[int, ...]
    probes: int = 3
    ctx: int | None = None
    n_predict: int = 64
    prompt: str = DEFAULT_PROMPT
    timeout_s: float = 180.0
    headroom_percent: float = 10.0
    restore: bool = True  # bring the original arguments back at the end
    apply_best: bool = False  # …or keep the recommended setting


def parse_sweep_input(
    range_text: str, probes_text: str, *, block_count: int | None = None, ctx: int | None = None
) -> SweepRequest | str:
    """The panel's sweep fields → a request, or the error in words."""
    try:
        settings = parse_range(range_text)
        probes = int(probes_text)
        if probes < 1:
            raise ValueError("probes must be at least 1")
    except ValueError as e:
        return f"sweep: {e}"
    limit = block_count + 1 if block_count is not None else None
    if limit is not None and max(settings) > limit:
        return f"sweep: gpu-layers above {limit}"
    return SweepRequest(tuple(settings), probes, ctx)


class SweepRun:
    """Runs sweeps on one controller (one at a time, never beside an apply)."""

    def __init__(
        self,
        controller: Controller,
        log_store: LogStore,
        *,
        guard: OneAtATime | None = None,
        gpu_monitor: GpuSampler | None = None,
        api_key: str | None = None,
    ) -> None:
        self.controller = controller
        self.log_store = log_store
        self.guard = guard or OneAtATime()
        self.gpu_monitor = gpu_monitor
        self.api_key = api_key

    async def run(
        self, request: SweepRequest, listener: Listener | None = None
    ) -> SweepFinished | Failed | Rejected:
        emit = emitter(listener)
        event: SweepFinished | Failed | Rejected
        if self.guard.busy is not None:
            event = Rejected("sweep", "an apply or a sweep is already running")
        elif not request.gpu_layers:
            event = Rejected("sweep", "sweep: no settings to try")
        else:
            with self.guard.hold("sweep"):
                emit(
                    Progress(
                        "sweep",
                        f"sweeping {list(request.gpu_layers)} — "
                        "the server restarts for each setting…",
                    )
                )
                try:
                    result = await run_sweep(
                        self.controller,
                        list(request.gpu_layers),
                        log_store=self.log_store,
                        ctx=request.ctx,
                        probes=request.probes,
                        prompt=request.prompt,
                        n_predict=request.n_predict,
                        api_key=self.api_key,
                        timeout_s=request.timeout_s,
                        gpu_monitor=self.gpu_monitor,
                        headroom_percent=request.headroom_percent,
                        restore=request.restore,
                        apply_best=request.apply_best,
                        on_point=lambda p: emit(SweepStep(p)),
                        on_progress=lambda m: emit(Progress("sweep", m)),
                    )
                except Exception as exc:  # noqa: BLE001 - reported, never swallowed
                    event = Failed("sweep", str(exc))
                else:
                    event = SweepFinished(result)
        emit(event)
        return event
