"""Change --gpu-layers / --ctx-size (and cache types) safely: validate, apply, verify, roll back.

`apply_with_rollback` restarts the server through a Controller (ChildSupervisor or
UnitController) with the new arguments, then verifies within a timeout:

1. /health answers 200 again (and the supervisor says "ready" in child mode);
2. no out-of-memory / failed-to-load / bind-failed line was logged since the restart;
3. when llama-server prints "offloaded N/M layers to GPU" (-lv 4, GPU builds), N matches the
   request; with a GPU monitor, the server's VRAM is there when layers were offloaded.

On any failure it restarts with the last known-good arguments and records why. Every attempt is
a `ApplyRecord` in a bounded `ChangeLog`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx

from llmtop.control.protocols import Controller, GpuSampler
from llmtop.model.launch_spec import (
    LaunchSpec,
    format_gpu_layers,
    parse_gpu_layers,
    redact_argv,
)
from llmtop.sources.buffer_lines import parse_buffer_lines
from llmtop.sources.logs import LogStore, detect_event, strip_prefix

log = logging.getLogger(__name__)

FAIL_KINDS = frozenset({"oom", "load_failed", "bind_failed", "start_failed", "crash_loop"})
FAILED_STATES = frozenset({"failed", "exited", "stopped"})
# Options whose change is described in the change log (property name, label).
TUNED_OPTIONS: tuple[tuple[str, str], ...] = (
    ("gpu_layers", "--gpu-layers"),
    ("ctx_size", "--ctx-size"),
    ("cache_type_k", "-ctk"),
    ("cache_type_v", "-ctv"),
    ("parallel", "--parallel"),
    ("flash_attn", "--flash-attn"),
)
FIT_EXPLANATION = (
    "llama-server's --fit (on by default) only adjusts values left at their defaults "
    "(--gpu-layers auto, --ctx-size 0). A --gpu-layers or --ctx-size set here is explicit, so "
    "llama-server takes it as given: if it does not fit, the load fails and llmtop rolls back."
)

__all__ = ["Controller"]  # re-exported: the protocol lives in llmtop.control.protocols


# ---------------------------------------------------------------------------------------------
# Input validation (the TUI panel and `llmtop tune` share it)


@dataclass(frozen=True)
class TuningValues:
    gpu_layers: int  # -1 auto, -2 all, else 0 … block_count + 1
    ctx: int


def validate_tuning_input(
    gpu_layers_text: str, ctx_text: str, block_count: int | None, n_ctx_train: int | None
) -> tuple[TuningValues | None, str | None, str | None]:
    """(values, None, warning) when usable — warning asks for confirmation (ctx above the training
    context); (None, error, None) when not."""
    ngl = parse_gpu_layers(gpu_layers_text)
    if ngl is None:
        return (
            None,
            f"gpu-layers: {gpu_layers_text.strip()!r} is not an integer (or auto/all)",
            None,
        )
    if ngl < 0 and ngl not in (-1, -2):
        return None, "gpu-layers: negative values other than -1 (auto) are not allowed", None
    if block_count is not None and ngl > block_count + 1:
        return (
            None,
            f"gpu-layers: {ngl} is above {block_count + 1} "
            f"(the model has {block_count} blocks + the output layer)",
            None,
        )
    t = ctx_text.strip()
    try:
        ctx = int(t)
    except ValueError:
        return None, f"ctx-size: {t!r} is not an integer", None
    if ctx <= 0:
        return None, "ctx-size: must be a positive integer", None
    warning = None
    if n_ctx_train and ctx > n_ctx_train:
        warning = (
            f"ctx-size {ctx} is above the model's training context {n_ctx_train}: "
            "positional encoding degrades past it (answers get worse). Confirm to apply anyway."
        )
    return TuningValues(ngl, ctx), None, warning


def spec_with_values(
    spec: LaunchSpec,
    values: TuningValues,
    cache_type_k: str | None = None,
    cache_type_v: str | None = None,
) -> LaunchSpec:
    new = spec.with_option("gpu_layers", values.gpu_layers).with_option("ctx_size", values.ctx)
    if cache_type_k:
        new = new.with_option("cache_type_k", cache_type_k)
    if cache_type_v:
        new = new.with_option("cache_type_v", cache_type_v)
    return new


def describe_changes(old: LaunchSpec, new: LaunchSpec) -> tuple[str, ...]:
    """'--gpu-layers 10 → 20' for each tuned option that differs; else a generic line."""
    out = []
    for prop, label in TUNED_OPTIONS:
        a, b = getattr(old, prop, None), getattr(new, prop, None)
        if a != b:
            if prop == "gpu_layers":
                a = format_gpu_layers(a) if isinstance(a, int) and a < 0 else a
                b = format_gpu_layers(b) if isinstance(b, int) and b < 0 else b
            out.append(
                f"{label} {a if a is not None else 'default'} → {b if b is not None else 'default'}"
            )
    if not out and old != new:
        out.append("arguments changed")
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class ApplyRecord:
    time: float  # unix seconds, when the apply started
    old_argv: tuple[str, ...]  # redacted
    new_argv: tuple[str, ...]  # redacted
    changes: tuple[str, ...]  # "--gpu-layers 10 → 20"
    result: str  # "applied" | "rolled_back" | "rollback_failed"
    reason: str | None = None  # why it was rolled back (or why the rollback failed)
    duration_s: float = 0.0
    checks: tuple[str, ...] = ()  # what was verified, in words
    offloaded: tuple[int, int] | None = None  # from the -lv 4 line, when printed

    @property
    def ok(self) -> bool:
        return self.result == "applied"

    def summary(self) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(self.time))
        what = "; ".join(self.changes) or "no change"
        tail = f" — {self.reason}" if self.reason else ""
        return f"{when}  {what}  {self.result}{tail}"

    def to_json_dict(self) -> dict[str, object]:
        return {
            "time": self.time,
            "old_argv": list(self.old_argv),
            "new_argv": list(self.new_argv),
            "changes": list(self.changes),
            "result": self.result,
            "reason": self.reason,
            "duration_s": round(self.duration_s, 3),
            "checks": list(self.checks),
            "offloaded": list(self.offloaded) if self.offloaded else None,
        }


class ChangeLog:
    """Bounded history of applied (or rolled back) changes, newest last; remembers the last
    known-good arguments."""

    def __init__(self, maxlen: int = 50, known_good: LaunchSpec | None = None) -> None:
        self._records: deque[ApplyRecord] = deque(maxlen=maxlen)
        self.known_good = known_good

    def add(self, record: ApplyRecord) -> None:
        self._records.append(record)

    def records(self) -> list[ApplyRecord]:
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def to_json(self) -> list[dict[str, object]]:
        return [r.to_json_dict() for r in self._records]


# ---------------------------------------------------------------------------------------------
# Verification


@dataclass
class Verdict:
    """What verifying a restart found: ok, or the reason it is not; the checks passed."""

    ok: bool
    reason: str | None = None
    checks: list[str] = field(default_factory=list)
    offloaded: tuple[int, int] | None = None


def first_error_since(log_store: LogStore, seq0: int) -> str | None:
    """The first error-level server line after seq0 (usually the cause), without its prefix."""
    for ln in log_store.since(seq0):
        if ln.stream != "llmtop" and ln.level == "error":
            return strip_prefix(ln.text).strip()
    return None


def failure_since(log_store: LogStore, seq0: int, t0: float) -> str | None:
    """The first OOM / load / bind failure logged after seq0 (lines) or t0 (llmtop's events),
    with the first error line (the cause) when that says more."""
    found: str | None = None
    for ln in log_store.since(seq0):
        if ln.stream == "llmtop":
            continue
        ev = detect_event(ln.text, ln.time)
        if ev is not None and ev.kind in FAIL_KINDS:
            found = f"{ev.kind.replace('_', ' ')}: {ev.message}"
            break
    if found is None:
        for ev in log_store.events():
            if ev.time >= t0 and ev.kind in FAIL_KINDS:
                found = f"{ev.kind.replace('_', ' ')}: {ev.message}"
                break
    if found is None:
        return None
    cause = first_error_since(log_store, seq0)
    if cause and cause not in found:
        found += f" ({cause})"
    return found


async def _health_ok(client: httpx.AsyncClient, url: str) -> bool:
    try:
        r = await client.get(url, timeout=2.0)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def _state(controller: Controller) -> str | None:
    try:
        return str(controller.status().state)
    except Exception:  # noqa: BLE001 - a status read must not break verification
        log.warning("reading the controller's status failed", exc_info=True)
        return None


async def verify_restart(
    controller: Controller,
    *,
    health_url: str,
    timeout_s: float,
    log_store: LogStore,
    seq0: int,
    t0: float,
    expected_gpu_layers: int | None = None,
    gpu_monitor: GpuSampler | None = None,
    settle_s: float = 0.5,
    spec: LaunchSpec | None = None,
) -> Verdict:
    """Wait for the restarted server to be healthy; look for failures since seq0/t0."""
    v = Verdict(ok=False)
    deadline = time.monotonic() + timeout_s
    healthy = False
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            fail = failure_since(log_store, seq0, t0)
            if fail:
                v.reason = fail
                return v
            state = _state(controller)
            if state in FAILED_STATES:
                cause = first_error_since(log_store, seq0)
                v.reason = f"llama-server {state}" + (f": {cause}" if cause else "")
                return v
            ready_state = controller.mode != "child" or state == "ready"
            if ready_state and await _health_ok(client, health_url):
                healthy = True
                break
            await asyncio.sleep(0.2)
        if not healthy:
            v.reason = f"not healthy within {timeout_s:g} s"
            return v
        v.checks.append("health 200")
        # A server that dies right after its first 200 (e.g. OOM at the first decode) must not
        # count as applied: settle briefly, then look again.
        await asyncio.sleep(settle_s)
        state = _state(controller)
        fail = failure_since(log_store, seq0, t0)
        if fail or state in FAILED_STATES or not await _health_ok(client, health_url):
            v.reason = fail or f"llama-server {state or 'unhealthy'} right after start"
            return v
    v.checks.append("no OOM / load failure in the log")

    parsed = parse_buffer_lines(ln.text for ln in log_store.since(seq0))
    v.offloaded = parsed.offloaded
    if parsed.offloaded is not None and expected_gpu_layers is not None:
        n, m = parsed.offloaded
        want = m if expected_gpu_layers < 0 else min(expected_gpu_layers, m)
        # auto (-1) may be lowered by --fit; only explicit values must match exactly.
        if expected_gpu_layers >= 0 and n != want:
            v.reason = f"llama-server offloaded {n}/{m} layers, {want} requested"
            return v
        v.checks.append(f"offloaded {n}/{m} layers")

    if gpu_monitor is not None and expected_gpu_layers not in (None, 0):
        try:
            gpu_monitor.set_server(controller.pid, spec)
        except Exception as e:  # noqa: BLE001 - the VRAM check below says what it saw
            log_store.note("tuning", f"GPU monitor: cannot follow the new server: {e}", "warning")
        vram, nobody = await asyncio.to_thread(_server_vram, gpu_monitor, log_store)
        if vram:
            v.checks.append(f"server VRAM {vram / 2**20:.0f} MiB")
        elif nobody:
            # The GPU's process list is readable and empty: the server is not on the GPU
            # (a CPU-only build, a hidden device, a driver problem) although layers were asked.
            v.reason = (
                "gpu-layers requested but no process holds VRAM on the server's GPU "
                "(silent CPU fallback?)"
            )
            return v
        elif vram == 0:
            # Processes listed but not ours: PIDs may be namespaced (containers). Say so only.
            v.checks.append("server VRAM not seen by NVML (PID namespace?)")
    v.ok = True
    return v


def _server_vram(gpu_monitor: GpuSampler, log_store: LogStore) -> tuple[int | None, bool]:
    """(the server's VRAM over the GPUs it may use or None, True when those GPUs list no process
    at all). Blocking (NVML): run in a thread."""
    try:
        reading = gpu_monitor.sample_once()
    except Exception as e:  # noqa: BLE001 - no reading: the check is skipped, and said so
        log_store.note("tuning", f"GPU monitor: no reading for the VRAM check: {e}", "warning")
        return None, False
    total: int | None = None
    samples = [s for s in reading.samples if s.used_by_server is not False]
    for s in samples:
        if s.server_memory_bytes is not None:
            total = (total or 0) + s.server_memory_bytes
    nobody = bool(samples) and all(s.processes is not None and not s.processes for s in samples)
    return total, nobody


# ---------------------------------------------------------------------------------------------
# Apply


async def restart_and_verify(
    controller: Controller,
    spec: LaunchSpec,
    *,
    timeout_s: float,
    log_store: LogStore,
    health_url: str | None = None,
    gpu_monitor: GpuSampler | None = None,
    check_layers: bool = True,
    restart: Callable[[], Awaitable[object]] | None = None,
) -> tuple[Verdict | None, str | None]:
    """Restart with *spec* (or run *restart* instead, e.g. a unit revert) and verify it.

    Returns (verdict, reason); (None, reason) when the restart itself raised."""
    seq = log_store.last_seq
    try:
        await (restart() if restart is not None else controller.restart(spec))
        v = await verify_restart(
            controller,
            health_url=health_url or spec.url + "/health",
            timeout_s=timeout_s,
            log_store=log_store,
            seq0=seq,
            t0=time.time(),
            expected_gpu_layers=spec.gpu_layers if check_layers else None,
            gpu_monitor=gpu_monitor,
            spec=spec,
        )
    except Exception as e:  # noqa: BLE001 - any failure to restart is a failed step
        return None, f"restart failed: {e}"
    return v, v.reason


async def apply_with_rollback(
    controller: Controller,
    new_spec: LaunchSpec,
    *,
    health_url: str,
    api_key: str | None = None,
    timeout_s: float = 120.0,
    log_store: LogStore,
    gpu_monitor: GpuSampler | None = None,
    change_log: ChangeLog | None = None,
    known_good: LaunchSpec | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> ApplyRecord:
    """Restart with new_spec, verify, and roll back to the last known-good spec on failure.

    health_url is the server's /health URL (never needs the api key; api_key is accepted for
    future checks and never logged). known_good defaults to change_log.known_good, else the
    controller's current spec. *on_progress* hears each step in words (as the log does)."""
    del api_key  # /health needs no key; never stored in records
    old_spec = controller.spec
    good = known_good or (change_log.known_good if change_log else None) or old_spec
    started = time.time()
    t_mono = time.monotonic()
    changes = describe_changes(old_spec, new_spec)

    def step(message: str, severity: str = "info") -> None:
        log_store.note("tuning", message, severity)
        if on_progress is not None:
            on_progress(message)

    step(f"applying {'; '.join(changes) or 'new arguments'}")

    def record(result: str, reason: str | None, verdict: Verdict | None) -> ApplyRecord:
        rec = ApplyRecord(
            time=started,
            old_argv=tuple(redact_argv(old_spec.argv)),
            new_argv=tuple(redact_argv(new_spec.argv)),
            changes=changes,
            result=result,
            reason=reason,
            duration_s=time.monotonic() - t_mono,
            checks=tuple(verdict.checks) if verdict else (),
            offloaded=verdict.offloaded if verdict else None,
        )
        if change_log is not None:
            change_log.add(rec)
        return rec

    async def apply(spec: LaunchSpec) -> tuple[Verdict | None, str | None]:
        return await restart_and_verify(
            controller,
            spec,
            health_url=health_url,
            timeout_s=timeout_s,
            log_store=log_store,
            gpu_monitor=gpu_monitor,
        )

    verdict, reason = await apply(new_spec)
    if verdict is not None and verdict.ok:
        if change_log is not None:
            change_log.known_good = new_spec
        step(f"applied {'; '.join(changes)}")
        return record("applied", None, verdict)

    step(f"rolling back: {reason}", "warning")
    back, back_reason = await apply(good)
    if back is not None and back.ok:
        step(f"rolled back to the last known-good arguments ({reason})", "warning")
        return record("rolled_back", reason, verdict)
    step(f"rollback failed: {back_reason}", "critical")
    return record("rollback_failed", f"{reason}; rollback: {back_reason}", verdict)


def changed_options(records: Iterable[ApplyRecord]) -> list[str]:
    """One line per record, newest first (for display)."""
    return [r.summary() for r in reversed(list(records))]
