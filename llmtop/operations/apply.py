"""Apply --gpu-layers / --ctx-size / cache types from what the operator typed, with rollback.

The whole chain in one place: raw text → `validate_tuning_input` → the new `LaunchSpec` →
`apply_with_rollback` (restart, verify, roll back) → an `Applied`, `RolledBack` or `Failed`
event. The tuning panel calls `check()` on every keystroke (pure, cheap) to show errors and the
warning, and `run()` to apply; a headless caller does the same without a screen.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmtop.control.protocols import Controller, GpuSampler
from llmtop.control.tuning import (
    ChangeLog,
    TuningValues,
    apply_with_rollback,
    describe_changes,
    spec_with_values,
    validate_tuning_input,
)
from llmtop.model.launch_spec import LaunchSpec
from llmtop.operations.events import (
    Applied,
    Failed,
    Listener,
    Progress,
    Rejected,
    RolledBack,
    emitter,
)
from llmtop.operations.guard import OneAtATime
from llmtop.sources.logs import LogStore

DEFAULT_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class TuningInput:
    """The tuning fields as typed (text), plus what the model allows (from its GGUF header)."""

    gpu_layers: str
    ctx: str
    cache_type_k: str | None = None
    cache_type_v: str | None = None
    block_count: int | None = None
    n_ctx_train: int | None = None


@dataclass(frozen=True)
class TuningCheck:
    """What the input means: values or an error; a warning that needs a yes; the new arguments
    and the changes in words (None / () without a current spec or on error)."""

    values: TuningValues | None
    error: str | None
    warning: str | None
    spec: LaunchSpec | None = None
    changes: tuple[str, ...] = ()


def check_tuning_input(raw: TuningInput, current: LaunchSpec | None) -> TuningCheck:
    """Validate *raw* and build the arguments it asks for from *current* (pure, cheap)."""
    values, error, warning = validate_tuning_input(
        raw.gpu_layers, raw.ctx, raw.block_count, raw.n_ctx_train
    )
    if values is None or current is None:
        return TuningCheck(values, error, warning)
    new = spec_with_values(current, values, raw.cache_type_k, raw.cache_type_v)
    return TuningCheck(values, error, warning, new, describe_changes(current, new))


class TuningApply:
    """Apply-with-rollback for one controller; keeps the change log and the known-good args."""

    def __init__(
        self,
        controller: Controller,
        log_store: LogStore,
        *,
        guard: OneAtATime | None = None,
        gpu_monitor: GpuSampler | None = None,
        change_log: ChangeLog | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.controller = controller
        self.log_store = log_store
        self.guard = guard or OneAtATime()
        self.gpu_monitor = gpu_monitor
        self.change_log = change_log or ChangeLog(known_good=controller.spec)
        self.timeout_s = timeout_s

    def check(self, raw: TuningInput) -> TuningCheck:
        return check_tuning_input(raw, self.controller.spec)

    async def run(
        self, raw: TuningInput, *, confirmed: bool = False, listener: Listener | None = None
    ) -> Applied | RolledBack | Failed | Rejected:
        """Apply *raw*. A warning (ctx above the training context) needs `confirmed=True`."""
        emit = emitter(listener)
        check = self.check(raw)
        event: Applied | RolledBack | Failed | Rejected
        if self.guard.busy is not None:
            event = Rejected("apply", "an apply or a sweep is already running")
        elif check.error or check.spec is None:
            event = Rejected("apply", check.error or "invalid input")
        elif check.warning and not confirmed:
            event = Rejected("apply", check.warning)
        elif check.spec == self.controller.spec:
            event = Rejected("apply", "nothing to change")
        else:
            with self.guard.hold("apply"):
                event = await self._apply(check.spec, check.changes, listener)
        emit(event)
        return event

    async def _apply(
        self, new: LaunchSpec, changes: tuple[str, ...], listener: Listener | None
    ) -> Applied | RolledBack | Failed:
        emit = emitter(listener)
        emit(
            Progress(
                "apply",
                f"applying {'; '.join(changes)} — restarting, then checking health and the log…",
            )
        )
        try:
            record = await apply_with_rollback(
                self.controller,
                new,
                health_url=self.controller.spec.url + "/health",
                timeout_s=self.timeout_s,
                log_store=self.log_store,
                gpu_monitor=self.gpu_monitor,
                change_log=self.change_log,
                on_progress=lambda message: emit(Progress("apply", message)),
            )
        except Exception as exc:  # noqa: BLE001 - e.g. a unit whose ExecStart cannot be read
            return Failed("apply", f"apply failed: {exc}")
        if record.result == "applied":
            return Applied(record)
        if record.result == "rolled_back":
            return RolledBack(record)
        return Failed("apply", record.reason or "rollback failed", record)
