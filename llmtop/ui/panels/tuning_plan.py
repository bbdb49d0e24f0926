"""The tuning panel's plan view: the model's facts, the VRAM plan as you type, llama.cpp's own
fitter, and predicted-vs-actual buffer sizes. Pure rendering over `operations.apply.check` and
`model.vram_plan`; nothing here restarts anything."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.text import Text
from textual.widgets import Button, Input, Select, Static

from llmtop.model.gguf import GgufInfo
from llmtop.model.launch_spec import LaunchSpec
from llmtop.model.units import fmt_bytes
from llmtop.model.vram_plan import CACHE_TYPES, PlanRequest, VramPlan, plan_vram
from llmtop.operations.apply import TuningCheck, TuningInput, check_tuning_input
from llmtop.snapshot import Snapshot
from llmtop.sources.buffer_lines import (
    FitSuggestion,
    format_comparison,
    parse_buffer_lines,
    predicted_vs_actual,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.ui.panels.tuning import TuningPanel

BAR_WIDTH = 40


def vram_bar(used: int, total: int, headroom_target: float, width: int = BAR_WIDTH) -> str:
    """'[██████░░░░|░░] 62 %' as markup: green within the headroom, yellow near, red over."""
    frac = used / total if total else 0.0
    filled = min(width, round(frac * width))
    limit_at = round((1 - headroom_target / 100) * width)
    colour = "green" if frac <= 1 - headroom_target / 100 else ("yellow" if frac <= 1 else "red")
    cells = []
    for i in range(width):
        ch = "█" if i < filled else "░"
        cells.append("|" if i == limit_at and i >= filled else ch)
    return f"[{colour}]{''.join(cells)}[/] {frac * 100:5.1f} %"


def cache_type(spec: LaunchSpec | None, which: str) -> str:
    """The spec's K or V cache type when it is one the selector offers, else f16."""
    if spec is None:
        return "f16"
    v = spec.cache_type_k if which == "k" else spec.cache_type_v
    return v.lower() if isinstance(v, str) and v.lower() in CACHE_TYPES else "f16"


def parallel_of(spec: LaunchSpec | None) -> int:
    n = spec.parallel if spec is not None else None
    return n if isinstance(n, int) and n > 0 else 1


def pick_gpu(snapshot: Snapshot) -> tuple[int, int | None, str] | None:
    """(total, free, label) of the GPU the server uses (its own VRAM counted as free: the
    restart gives it back), or None without a GPU."""
    gpus = [g for g in snapshot.gpus if not g.lost and g.memory_total_bytes]
    if not gpus:
        return None
    used = [g for g in gpus if g.used_by_server] or gpus
    g = used[0]
    free = g.memory_free_bytes
    if free is not None and g.server_memory_bytes:
        free += g.server_memory_bytes
    assert g.memory_total_bytes is not None
    return g.memory_total_bytes, free, f"GPU {g.index} {g.name or ''}".strip()


class PlanView:
    """State and rendering of the plan half of the tuning panel (its widgets live in the panel)."""

    def __init__(self, panel: TuningPanel) -> None:
        self.panel = panel
        self.info: GgufInfo | None = None
        self.model_error: str | None = None
        self.plan: VramPlan | None = None
        self.check = TuningCheck(None, None, None)
        self.vram: tuple[int, int | None, str] | None = None  # total, free, label
        self.model_path: str | None = None
        self.actual_seq = -1

    # ---------------------------------------------------------------- input
    def select(self, sel_id: str) -> str:
        v = self.panel.query_one(sel_id, Select).value
        return v if isinstance(v, str) else "f16"

    def tuning_input(self) -> TuningInput:
        """The fields as typed, with the model's limits."""
        q = self.panel.query_one
        info = self.info
        return TuningInput(
            q("#tuning-ngl", Input).value,
            q("#tuning-ctx", Input).value,
            cache_type_k=self.select("#tuning-ctk"),
            cache_type_v=self.select("#tuning-ctv"),
            block_count=info.block_count if info else None,
            n_ctx_train=info.context_length if info else None,
        )

    # ---------------------------------------------------------------- model facts
    def model_read(self, info: GgufInfo | None, error: str | None) -> None:
        self.info, self.model_error = info, error
        self.model_path = info.path if info else None
        q = self.panel.query_one
        model = q("#tuning-model", Static)
        if info is None:
            model.update(Text(f"model: {error}", style="red"))
        else:
            model.update(
                f"model: [b]{escape(info.name or info.path)}[/]  {info.architecture}, "
                f"{info.block_count} blocks (gpu-layers 0–{info.block_count + 1}), training ctx "
                f"{info.context_length}, {info.file_type_name or '?'}, "
                f"{fmt_bytes(info.weights_bytes)} of weights"
            )
            rng = q("#tuning-sweep-range", Input)
            if not rng.value:
                top = info.block_count + 1
                rng.value = f"0:{top}:{max(1, top // 4)}"
            ctx_input = q("#tuning-ctx", Input)
            if not ctx_input.value and info.context_length:
                ctx_input.value = str(info.context_length)

    def fit_read(self, s: FitSuggestion) -> None:
        box = self.panel.query_one("#tuning-fit-params", Static)
        if s.error:
            box.update(Text(f"llama-fit-params: {s.error}", style="dim"))
        else:
            extra = f" {s.extra}" if s.extra else ""
            box.update(
                Text(
                    "llama-fit-params (llama.cpp's own fitter) suggests "
                    f"-c {s.ctx} -ngl {s.gpu_layers}{extra}"
                )
            )

    # ---------------------------------------------------------------- typing → plan
    def recompute(self, spec: LaunchSpec | None, can_apply: bool) -> TuningCheck:
        """Check the fields (the apply operation's own check) and redraw errors and the plan."""
        q = self.panel.query_one
        raw = self.tuning_input()
        check = self.check = check_tuning_input(raw, spec)
        q("#tuning-error", Static).update(
            Text(check.error, style="bold red") if check.error else ""
        )
        q("#tuning-warning", Static).update(
            Text("⚠ " + check.warning, style="yellow") if check.warning else ""
        )
        q("#tuning-apply", Button).disabled = bool(check.error) or not can_apply
        plan_box = q("#tuning-plan", Static)
        info, values = self.info, check.values
        if values is None or info is None:
            self.plan = None
            plan_box.update("" if info else "[dim]no plan without the model's GGUF header[/]")
            return check
        req = PlanRequest(
            gpu_layers=values.gpu_layers,
            ctx=values.ctx,
            cache_type_k=raw.cache_type_k or "f16",
            cache_type_v=raw.cache_type_v or "f16",
            parallel=parallel_of(spec),
        )
        total, free = (self.vram[0], self.vram[1]) if self.vram else (None, None)
        try:
            plan = plan_vram(info, req, vram_bytes=total, free_bytes=free)
        except ValueError as e:
            self.plan = None
            plan_box.update(Text(str(e), style="red"))
            return check
        self.plan = plan
        plan_box.update(Text.from_markup(self.plan_markup(plan)))
        return check

    def plan_markup(self, plan: VramPlan) -> str:
        parts = [
            f"predicted on the GPU: weights {fmt_bytes(plan.weights_bytes)} + KV "
            f"{fmt_bytes(plan.kv_cache_bytes)} + compute ≈{fmt_bytes(plan.compute_bytes)} = "
            f"[b]{fmt_bytes(plan.total_bytes)}[/]  (offloaded {plan.offloaded_text}, "
            f"{plan.n_ctx} cells)"
        ]
        if plan.vram_bytes and self.vram:
            verdict = "[green]fits[/]" if plan.fits else "[bold red]does not fit[/]"
            parts.append(
                f"{escape(self.vram[2])}: "
                + vram_bar(plan.total_bytes, plan.vram_bytes, plan.headroom_target_percent)
                + f" of {fmt_bytes(plan.vram_bytes)}  headroom {plan.headroom_percent:.1f} % "
                f"{verdict} (keep ≥ {plan.headroom_target_percent:.0f} %)"
            )
            parts.append(
                f"largest keeping the headroom: gpu-layers {plan.max_gpu_layers}, "
                f"ctx-size {plan.max_ctx or '—'}"
            )
        else:
            parts.append("[dim]no GPU seen: sizes only (no headroom)[/]")
        parts += [f"[yellow]⚠ {escape(w)}[/]" for w in plan.warnings if "training context" not in w]
        return "\n".join(parts)

    # ---------------------------------------------------------------- -lv 4 check
    def show_actual(self, spec: LaunchSpec | None) -> None:
        store = self.panel.log_store
        if store is None or self.info is None or store.last_seq == self.actual_seq:
            return
        self.actual_seq = store.last_seq
        parsed = parse_buffer_lines(ln.text for ln in store.lines())
        box = self.panel.query_one("#tuning-actual", Static)
        if parsed.empty or spec is None:
            box.update("[dim]start llama-server with -lv 4 to compare with its buffer sizes[/]")
            return
        running = plan_vram(
            self.info,
            PlanRequest(
                gpu_layers=spec.gpu_layers if isinstance(spec.gpu_layers, int) else -1,
                ctx=spec.ctx_size or 0,
                cache_type_k=cache_type(spec, "k"),
                cache_type_v=cache_type(spec, "v"),
                parallel=parallel_of(spec),
            ),
        )
        box.update(
            Text(
                "running server, predicted vs llama.cpp (-lv 4):\n"
                + format_comparison(predicted_vs_actual(running, parsed))
            )
        )
