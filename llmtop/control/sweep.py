"""Sweep --gpu-layers: restart at each setting, warm up, probe, measure, recommend, restore.

For each setting the server is restarted through the Controller (child or unit) and verified
like an apply (health back, no OOM/load failure); then one warm-up probe and K measured probes
(llmtop.sources.probe.run_probe) give TTFT, prompt and generation tokens/s, while the GPU monitor
(when there is one) is sampled for the peak VRAM. An out-of-memory stops the sweep: more layers
will not fit either. The recommendation is the fastest generation rate whose peak VRAM keeps the
headroom (10 % by default). At the end the original arguments are restored (or the
recommendation applied).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil

from llmtop.control.protocols import Controller, DropInController, GpuSampler
from llmtop.control.tuning import failure_since, restart_and_verify
from llmtop.model.launch_spec import LaunchSpec, redact_argv
from llmtop.sources.logs import LogStore
from llmtop.sources.probe import ProbeResult, run_probe

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "Explain in one paragraph why the sky is blue."
CSV_FIELDS = (
    "gpu_layers",
    "ctx",
    "status",
    "reason",
    "probes",
    "errors",
    "ttft_ms",
    "prompt_tokens_per_s",
    "gen_tokens_per_s",
    "peak_vram_bytes",
    "load_s",
)


def parse_range(text: str) -> list[int]:
    """'FROM:TO:STEP' (inclusive; STEP defaults to 1; FROM:TO may run downwards) or 'N'."""
    parts = text.split(":")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"not a range: {text!r} (FROM:TO:STEP, e.g. 0:40:8)") from None
    if len(nums) == 1:
        return nums
    if len(nums) not in (2, 3):
        raise ValueError(f"not a range: {text!r} (FROM:TO:STEP)")
    lo, hi = nums[0], nums[1]
    step = nums[2] if len(nums) == 3 else 1
    if step <= 0:
        raise ValueError("STEP must be positive")
    if min(lo, hi) < 0:
        raise ValueError("gpu-layers in a range must be >= 0")
    if lo <= hi:
        out = list(range(lo, hi + 1, step))
        if out[-1] != hi:
            out.append(hi)
    else:
        out = list(range(lo, hi - 1, -step))
        if out[-1] != hi:
            out.append(hi)
    return out


@dataclass(frozen=True)
class SweepPoint:
    gpu_layers: int
    ctx: int | None
    status: str  # ok | oom | failed | probe_failed
    reason: str | None = None
    probes: int = 0
    errors: int = 0
    ttft_ms: float | None = None  # medians over the probes
    prompt_tokens_per_s: float | None = None
    gen_tokens_per_s: float | None = None
    peak_vram_bytes: int | None = None
    load_s: float | None = None
    # The restarted server as the OS saw it while it was measured (not the requested argv):
    pid: int | None = None
    argv: tuple[str, ...] = ()  # redacted /proc/PID/cmdline

    def row(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in CSV_FIELDS}


@dataclass
class SweepResult:
    original_argv: tuple[str, ...]  # redacted
    points: list[SweepPoint] = field(default_factory=list)
    recommended: SweepPoint | None = None
    recommendation_reason: str = ""
    stopped_early: str | None = None
    restored: bool | None = None  # None: not attempted
    applied: bool | None = None
    final_argv: tuple[str, ...] = ()
    vram_total_bytes: int | None = None
    headroom_percent: float = 10.0

    def to_json_dict(self) -> dict[str, object]:
        return {
            "original_argv": list(self.original_argv),
            "points": [asdict(p) for p in self.points],
            "recommended": asdict(self.recommended) if self.recommended else None,
            "recommendation_reason": self.recommendation_reason,
            "stopped_early": self.stopped_early,
            "restored": self.restored,
            "applied": self.applied,
            "final_argv": list(self.final_argv),
            "vram_total_bytes": self.vram_total_bytes,
            "headroom_percent": self.headroom_percent,
        }

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS))
        w.writeheader()
        for p in self.points:
            w.writerow(p.row())
        return buf.getvalue()

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        j = out / f"llmtop-tune-{stamp}.json"
        c = out / f"llmtop-tune-{stamp}.csv"
        j.write_text(json.dumps(self.to_json_dict(), indent=2) + "\n")
        c.write_text(self.to_csv())
        return j, c


def format_table(result: SweepResult) -> str:
    def f(v: float | None, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    lines = [
        f"{'gpu-layers':>10} {'status':>12} {'TTFT ms':>9} {'prompt t/s':>11} "
        f"{'gen t/s':>9} {'peak VRAM':>10}  note"
    ]
    for p in result.points:
        mark = " *" if result.recommended is p else ""
        vram = "—" if p.peak_vram_bytes is None else f"{p.peak_vram_bytes / 2**20:,.0f} MiB"
        lines.append(
            f"{p.gpu_layers:>10} {p.status:>12} {f(p.ttft_ms, '.1f'):>9} "
            f"{f(p.prompt_tokens_per_s, '.1f'):>11} {f(p.gen_tokens_per_s, '.1f'):>9} "
            f"{vram:>10}  {(p.reason or '')[:60]}{mark}"
        )
    if result.recommended:
        lines.append(
            f"recommended: --gpu-layers {result.recommended.gpu_layers} "
            f"({result.recommendation_reason})"
        )
    else:
        lines.append(f"no recommendation: {result.recommendation_reason}")
    if result.stopped_early:
        lines.append(f"stopped early: {result.stopped_early}")
    return "\n".join(lines)


def format_plot(result: SweepResult, width: int = 40) -> str:
    """Generation tokens/s and peak VRAM against gpu-layers, as horizontal bars."""
    ok = [p for p in result.points if p.gen_tokens_per_s is not None]
    if not ok:
        return ""
    top = max(p.gen_tokens_per_s or 0.0 for p in ok) or 1.0
    vtop = max((p.peak_vram_bytes or 0) for p in result.points) or 0
    lines = ["gen tok/s" + " " * (width - 4) + ("peak VRAM" if vtop else "")]
    for p in result.points:
        rate = p.gen_tokens_per_s or 0.0
        bar = "█" * max(0, round(rate / top * width))
        line = f"{p.gpu_layers:>4} │{bar:<{width}} {rate:8.1f}"
        if vtop:
            vb = "▒" * round((p.peak_vram_bytes or 0) / vtop * 20)
            line += f"  │{vb:<20} {(p.peak_vram_bytes or 0) / 2**30:.1f} GiB"
        if p.status != "ok":
            line += f"  {p.status}"
        lines.append(line)
    return "\n".join(lines)


def recommend(
    points: list[SweepPoint], vram_total: int | None, headroom_percent: float
) -> tuple[SweepPoint | None, str]:
    ok = [p for p in points if p.status == "ok" and p.gen_tokens_per_s is not None]
    if not ok:
        return None, "no setting completed its probes"
    if vram_total:
        limit = vram_total * (1 - headroom_percent / 100)
        within = [p for p in ok if p.peak_vram_bytes is None or p.peak_vram_bytes <= limit]
        if not within:
            return None, f"every setting left less than {headroom_percent:g} % VRAM free"
        ok = within
    best = max(ok, key=lambda p: (p.gen_tokens_per_s or 0.0, -p.gpu_layers))
    why = f"fastest generation, {best.gen_tokens_per_s:.1f} tok/s"
    if vram_total:
        why += f", keeps ≥ {headroom_percent:g} % VRAM free"
    return best, why


def running_argv(pid: int | None, binary: str | None = None) -> tuple[str, ...]:
    """The redacted command line of process *pid* as the OS has it (empty when unreadable):
    what the restarted server really runs with, whatever was asked for.

    With *binary*, a process running another program gives () — the PID may be from another
    PID namespace (a unit reached through nsenter)."""
    if pid is None:
        return ()
    try:
        argv = psutil.Process(pid).cmdline()
    except (psutil.Error, OSError) as e:
        log.info("cannot read the command line of pid %s: %s", pid, e)
        return ()
    if binary and (not argv or Path(argv[0]).name != Path(binary).name):
        return ()
    return tuple(redact_argv(argv))


class _VramPeak:
    """Samples the GPU monitor on a thread every interval; keeps the server's peak VRAM."""

    def __init__(self, gpu_monitor: GpuSampler | None, interval_s: float = 0.25) -> None:
        self.monitor = gpu_monitor
        self.interval_s = interval_s
        self.peak: int | None = None
        self.total: int | None = None
        self._task: asyncio.Task[None] | None = None

    def _read(self) -> None:
        if self.monitor is None:
            return
        reading = self.monitor.sample_once()
        for s in reading.samples:
            used = s.server_memory_bytes
            if used is not None and s.used_by_server is not False:
                self.peak = max(self.peak or 0, used)
                if s.memory_total_bytes:
                    self.total = max(self.total or 0, s.memory_total_bytes)

    async def read(self) -> None:
        """One sample, in a thread; a failed read is logged and skipped (the peak stays)."""
        try:
            await asyncio.to_thread(self._read)
        except Exception:  # noqa: BLE001 - one missed sample must not end the sweep
            log.warning("GPU sample for the sweep's peak VRAM failed", exc_info=True)

    async def _loop(self) -> None:
        while True:
            await self.read()
            await asyncio.sleep(self.interval_s)

    def __enter__(self) -> _VramPeak:
        if self.monitor is not None:
            self._task = asyncio.create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


def gen_rate(r: ProbeResult) -> float | None:
    """Generation tokens/s of one probe: the server's own timing (predicted_per_second) when
    given — chunks coalesce on a busy client — else the probe's client-side rate."""
    t = r.server_timings or {}
    v = t.get("predicted_per_second")
    if isinstance(v, int | float) and v > 0:
        return float(v)
    return r.gen_tokens_per_s


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(statistics.median(vals), 2) if vals else None


async def run_sweep(
    controller: Controller,
    gpu_layers: list[int],
    *,
    log_store: LogStore,
    ctx: int | None = None,
    probes: int = 3,
    prompt: str = DEFAULT_PROMPT,
    n_predict: int = 64,
    api_key: str | None = None,
    timeout_s: float = 180.0,
    gpu_monitor: GpuSampler | None = None,
    headroom_percent: float = 10.0,
    restore: bool = True,
    apply_best: bool = False,
    on_point: Callable[[SweepPoint], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> SweepResult:
    """Restart at each --gpu-layers setting, measure it, recommend one, then restore (or apply
    the recommendation). *on_point* gets each measured point, *on_progress* each step in words."""

    def step(message: str, severity: str = "info") -> None:
        log_store.note("tuning", message, severity)
        if on_progress is not None:
            on_progress(message)

    original = controller.spec
    # Unit mode: when the unit had no llmtop drop-in, restoring removes ours (kept as .bak).
    drop_in = controller if isinstance(controller, DropInController) else None
    had_drop_in = drop_in.has_drop_in if drop_in is not None else None
    result = SweepResult(
        original_argv=tuple(redact_argv(original.argv)), headroom_percent=headroom_percent
    )
    url = original.url
    async with httpx.AsyncClient() as client:
        for ngl in gpu_layers:
            spec = original.with_option("gpu_layers", ngl)
            if ctx is not None:
                spec = spec.with_option("ctx_size", ctx)
            seq0 = log_store.last_seq
            step(f"sweep: restarting with --gpu-layers {ngl}")
            t_load = time.monotonic()
            t_restart = time.time()
            verdict, reason = await restart_and_verify(
                controller, spec, timeout_s=timeout_s, log_store=log_store
            )
            ok = verdict is not None and verdict.ok
            load_s = round(time.monotonic() - t_load, 2)
            if not ok:
                status = "oom" if (reason or "").startswith("oom") else "failed"
                point = SweepPoint(ngl, spec.ctx_size, status, reason, load_s=load_s)
                result.points.append(point)
                if on_point:
                    on_point(point)
                if status == "oom":
                    result.stopped_early = f"out of memory at --gpu-layers {ngl}"
                    break
                continue
            url = spec.url
            pid = controller.pid
            argv = running_argv(pid, spec.binary)
            if gpu_monitor is not None:
                gpu_monitor.set_server(pid, spec)
            with _VramPeak(gpu_monitor) as peak:
                await run_probe(client, url, prompt, 8, 0.0, api_key)  # warm-up
                results = [
                    await run_probe(client, url, prompt, n_predict, 0.0, api_key)
                    for _ in range(probes)
                ]
                if gpu_monitor is not None:
                    await peak.read()
            good = [r for r in results if r.error is None]
            errors = len(results) - len(good)
            point = SweepPoint(
                gpu_layers=ngl,
                ctx=spec.ctx_size,
                status="ok" if good else "probe_failed",
                reason=None if good else (results[-1].error if results else "no probes"),
                probes=len(good),
                errors=errors,
                ttft_ms=_median([r.ttft_ms for r in good]),
                prompt_tokens_per_s=_median([r.prompt_tokens_per_s for r in good]),
                gen_tokens_per_s=_median([gen_rate(r) for r in good]),
                peak_vram_bytes=peak.peak,
                load_s=load_s,
                pid=pid,
                argv=argv,
            )
            if peak.total:
                result.vram_total_bytes = peak.total
            result.points.append(point)
            if on_point:
                on_point(point)
            # OOM during decode (CUDA aborts) shows up in the log after the probes.

            fail = failure_since(log_store, seq0, t_restart)
            if fail and fail.startswith("oom"):
                result.points[-1] = SweepPoint(**{**asdict(point), "status": "oom", "reason": fail})
                result.stopped_early = f"out of memory at --gpu-layers {ngl}"
                break

    result.recommended, result.recommendation_reason = recommend(
        result.points, result.vram_total_bytes, headroom_percent
    )
    final: LaunchSpec | None = None
    if apply_best and result.recommended is not None:
        final = original.with_option("gpu_layers", result.recommended.gpu_layers)
        if ctx is not None:
            final = final.with_option("ctx_size", ctx)
    elif restore:
        final = original
    if final is not None:
        revert = drop_in.revert if final is original and had_drop_in is False and drop_in else None
        v, _ = await restart_and_verify(
            controller,
            final,
            timeout_s=timeout_s,
            log_store=log_store,
            check_layers=False,
            restart=revert,
        )
        done = v is not None and v.ok
        if final is original:
            result.restored = done
        else:
            result.applied = done
        result.final_argv = tuple(redact_argv(controller.spec.argv))
        if not done:
            what = "sweep: could not bring the server back healthy"
        elif final is original:
            what = "sweep: restored the original arguments"
        else:
            what = f"sweep: applied --gpu-layers {final.gpu_layers}"
        step(what, "info" if done else "critical")
    return result
