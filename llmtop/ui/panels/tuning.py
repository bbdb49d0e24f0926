"""Tuning panel: edit --gpu-layers / --ctx-size / cache types, see the predicted VRAM as you type,
apply with automatic rollback, and read the change log.

The plan (llmtop.model.vram_plan) is pure and cheap: it is recomputed on every keystroke from the
model's GGUF header (read once, on a thread). Apply runs `apply_with_rollback` as a worker on the
app's loop (the controller lives there); the result comes back as an `Applied` message.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static

from llmtop.control.sweep import (
    SweepPoint,
    SweepResult,
    format_plot,
    format_table,
    parse_range,
    run_sweep,
)
from llmtop.control.tuning import (
    FIT_EXPLANATION,
    ApplyRecord,
    ChangeLog,
    TuningValues,
    apply_with_rollback,
    describe_changes,
    spec_with_values,
    validate_tuning_input,
)
from llmtop.model.gguf import GgufInfo
from llmtop.model.launch_spec import format_gpu_layers
from llmtop.model.units import fmt_bytes
from llmtop.model.vram_plan import CACHE_TYPES, PlanRequest, VramPlan, plan_vram
from llmtop.snapshot import Snapshot
from llmtop.sources.buffer_lines import (
    FitSuggestion,
    find_fit_params,
    format_comparison,
    parse_buffer_lines,
    predicted_vs_actual,
    run_fit_params,
)
from llmtop.sources.gguf_info import read_gguf_info

BAR_WIDTH = 40
CACHE_OPTIONS = [(t, t) for t in CACHE_TYPES]


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


class TuningPanel(VerticalScroll):
    """Receives the Session; works in child and unit mode (Apply needs a controller)."""

    DEFAULT_CSS = """
    TuningPanel { height: 1fr; padding: 0 1; }
    TuningPanel .tuning-fields { height: auto; }
    TuningPanel .tuning-fields Label { padding: 1 1 0 0; width: 11; }
    TuningPanel .tuning-fields Input { width: 12; }
    TuningPanel .tuning-fields Select { width: 14; }
    TuningPanel #tuning-sweep-fields { height: auto; }
    TuningPanel #tuning-sweep-fields Label { padding: 1 1 0 0; }
    TuningPanel #tuning-sweep-fields Input { width: 14; }
    TuningPanel #tuning-sweep { height: auto; }
    TuningPanel #tuning-model, TuningPanel #tuning-plan, TuningPanel #tuning-error,
    TuningPanel #tuning-warning, TuningPanel #tuning-status, TuningPanel #tuning-fit,
    TuningPanel #tuning-actual, TuningPanel #tuning-fit-params { height: auto; }
    TuningPanel #tuning-log { height: auto; border-top: solid $primary; }
    """

    class Applied(Message):
        """apply_with_rollback finished (applied, rolled back, or rollback failed)."""

        def __init__(self, record: ApplyRecord) -> None:
            super().__init__()
            self.record = record

    class SweepProgress(Message):
        def __init__(self, point: SweepPoint) -> None:
            super().__init__()
            self.point = point

    class SweepDone(Message):
        def __init__(self, result: SweepResult | None, error: str | None = None) -> None:
            super().__init__()
            self.result = result
            self.error = error

    class FitRead(Message):
        def __init__(self, suggestion: FitSuggestion) -> None:
            super().__init__()
            self.suggestion = suggestion

    class ModelRead(Message):
        def __init__(self, info: GgufInfo | None, error: str | None) -> None:
            super().__init__()
            self.info = info
            self.error = error

    def __init__(self, session: Any | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Tuning"
        self.session = session
        self.info: GgufInfo | None = None
        self.model_error: str | None = None
        self.plan: VramPlan | None = None
        self.values: TuningValues | None = None
        self.error: str | None = None
        self.warning: str | None = None
        self.applying = False
        self.sweeping = False
        self.sweep_points: list[SweepPoint] = []
        self.sweep_result: SweepResult | None = None
        self.change_log = ChangeLog(known_good=self._spec())
        self._vram: tuple[int, int | None, str] | None = None  # total, free, label
        self._model_path: str | None = None
        self._actual_seq = -1
        self._fit_started = False

    # ---------------------------------------------------------------- layout
    def compose(self) -> ComposeResult:
        spec = self._spec()
        ngl = spec.gpu_layers if spec is not None else -1
        ctx = spec.ctx_size if spec is not None else None
        yield Static("model: reading…", id="tuning-model")
        with Horizontal(classes="tuning-fields"):
            yield Label("gpu-layers")
            yield Input(
                format_gpu_layers(ngl) if isinstance(ngl, int) and ngl < 0 else str(ngl),
                id="tuning-ngl",
            )
            yield Label("ctx-size")
            yield Input(str(ctx) if ctx else "", id="tuning-ctx", placeholder="tokens")
            yield Button("Apply", id="tuning-apply", variant="primary")
        with Horizontal(classes="tuning-fields"):
            yield Label("cache K")
            yield Select(
                CACHE_OPTIONS, value=self._cache(spec, "k"), allow_blank=False, id="tuning-ctk"
            )
            yield Label("cache V")
            yield Select(
                CACHE_OPTIONS, value=self._cache(spec, "v"), allow_blank=False, id="tuning-ctv"
            )
        yield Static(id="tuning-error")
        yield Static(id="tuning-warning")
        yield Static(id="tuning-plan")
        yield Static(id="tuning-status")
        yield Static(id="tuning-actual")
        yield Static(id="tuning-fit-params")
        yield Static(f"[dim]{escape(FIT_EXPLANATION)}[/]", id="tuning-fit")
        with Horizontal(id="tuning-sweep-fields"):
            yield Label("sweep ngl")
            yield Input("", id="tuning-sweep-range", placeholder="FROM:TO:STEP")
            yield Label("probes")
            yield Input("3", id="tuning-sweep-probes")
            yield Button("Sweep", id="tuning-sweep-start")
            yield Button("Use best", id="tuning-sweep-use", disabled=True)
        yield Static(id="tuning-sweep")
        yield Static("no changes yet", id="tuning-log")

    def on_mount(self) -> None:
        path = self._spec_model()
        if path:
            self._load_model(path)
        else:
            self.query_one("#tuning-model", Static).update(
                "model: unknown (start llmtop with -- llama-server -m MODEL.gguf, or --unit)"
            )
        if self.session is None or getattr(self.session, "controller", None) is None:
            self.query_one("#tuning-apply", Button).disabled = True
            self.query_one("#tuning-sweep-start", Button).disabled = True
            self._status(
                "[dim]plan only: Apply needs llmtop to control the server (child or unit mode)[/]"
            )

    # ---------------------------------------------------------------- data
    def _spec(self) -> Any | None:
        ctl = getattr(self.session, "controller", None)
        return getattr(ctl, "spec", None)

    def _spec_model(self) -> str | None:
        spec = self._spec()
        return spec.model if spec is not None else None

    @staticmethod
    def _cache(spec: Any | None, which: str) -> str:
        v = getattr(spec, f"cache_type_{which}", None) if spec is not None else None
        return v.lower() if isinstance(v, str) and v.lower() in CACHE_TYPES else "f16"

    @work(thread=True, exclusive=True, group="tuning-model", exit_on_error=False)
    def _load_model(self, path: str) -> None:
        try:
            info = read_gguf_info(path)
        except (OSError, ValueError) as e:
            self.post_message(self.ModelRead(None, str(e)))
            return
        self.post_message(self.ModelRead(info, None))

    @work(thread=True, exclusive=True, group="tuning-fit", exit_on_error=False)
    def _run_fit(self, path: str) -> None:
        spec = self._spec()
        fit = find_fit_params(spec.binary) if spec is not None and spec.binary else None
        if fit is not None:
            # No -c/-ngl: llama.cpp fits what it would fit for defaults on this machine.
            self.post_message(self.FitRead(run_fit_params(fit, path)))

    @on(FitRead)
    def _on_fit(self, event: FitRead) -> None:
        s = event.suggestion
        box = self.query_one("#tuning-fit-params", Static)
        if s.error:
            box.update(Text(f"llama-fit-params: {s.error}", style="dim"))
        else:
            extra = f" {s.extra}" if s.extra else ""
            box.update(
                Text(
                    f"llama-fit-params (llama.cpp's own fitter) suggests -c {s.ctx} -ngl {s.gpu_layers}{extra}"
                )
            )

    @on(ModelRead)
    def _on_model(self, event: ModelRead) -> None:
        self.info, self.model_error = event.info, event.error
        self._model_path = event.info.path if event.info else None
        model = self.query_one("#tuning-model", Static)
        if event.info is None:
            model.update(Text(f"model: {event.error}", style="red"))
        else:
            i = event.info
            model.update(
                f"model: [b]{escape(i.name or i.path)}[/]  {i.architecture}, {i.block_count} blocks "
                f"(gpu-layers 0–{i.block_count + 1}), training ctx {i.context_length}, "
                f"{i.file_type_name or '?'}, {fmt_bytes(i.weights_bytes)} of weights"
            )
            rng = self.query_one("#tuning-sweep-range", Input)
            if not rng.value:
                top = i.block_count + 1
                rng.value = f"0:{top}:{max(1, top // 4)}"
            ctx_input = self.query_one("#tuning-ctx", Input)
            if not ctx_input.value and i.context_length:
                ctx_input.value = str(i.context_length)
        self.recompute()

    def show(self, snapshot: Snapshot) -> None:
        """Called by the app with each snapshot while the tab is visible: GPU size, and the model
        path in attach mode."""
        path = self._spec_model()
        if not self._fit_started and path:
            # llama-fit-params loads the model's metadata: run it once, when the tab is first seen.
            self._fit_started = True
            self._run_fit(path)
        vram = self._pick_gpu(snapshot)
        if vram != self._vram:
            self._vram = vram
            self.recompute()
        if self.info is None and self.model_error is None and self._model_path is None:
            path = snapshot.server.model_path
            if path:
                self._model_path = path
                self._load_model(path)
        self._show_actual()

    @staticmethod
    def _pick_gpu(snapshot: Snapshot) -> tuple[int, int | None, str] | None:
        gpus = [g for g in snapshot.gpus if not g.lost and g.memory_total_bytes]
        if not gpus:
            return None
        used = [g for g in gpus if g.used_by_server] or gpus
        g = used[0]
        free = g.memory_free_bytes
        # The running server's own VRAM is given back at the restart.
        if free is not None and g.server_memory_bytes:
            free += g.server_memory_bytes
        assert g.memory_total_bytes is not None
        return g.memory_total_bytes, free, f"GPU {g.index} {g.name or ''}".strip()

    # ---------------------------------------------------------------- typing → plan
    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self, event: Message) -> None:
        event.stop()
        self.recompute()

    def recompute(self) -> None:
        ngl_text = self.query_one("#tuning-ngl", Input).value
        ctx_text = self.query_one("#tuning-ctx", Input).value
        info = self.info
        values, error, warning = validate_tuning_input(
            ngl_text,
            ctx_text,
            info.block_count if info else None,
            info.context_length if info else None,
        )
        self.values, self.error, self.warning = values, error, warning
        err = self.query_one("#tuning-error", Static)
        err.update(Text(error, style="bold red") if error else "")
        self.query_one("#tuning-warning", Static).update(
            Text("⚠ " + warning, style="yellow") if warning else ""
        )
        apply = self.query_one("#tuning-apply", Button)
        apply.disabled = (
            bool(error)
            or self.applying
            or self.sweeping
            or getattr(self.session, "controller", None) is None
        )
        plan_box = self.query_one("#tuning-plan", Static)
        if values is None or info is None:
            self.plan = None
            plan_box.update("" if info else "[dim]no plan without the model's GGUF header[/]")
            return
        req = PlanRequest(
            gpu_layers=values.gpu_layers,
            ctx=values.ctx,
            cache_type_k=self._select("#tuning-ctk"),
            cache_type_v=self._select("#tuning-ctv"),
            parallel=self._parallel(),
        )
        total, free = (self._vram[0], self._vram[1]) if self._vram else (None, None)
        try:
            plan = plan_vram(info, req, vram_bytes=total, free_bytes=free)
        except ValueError as e:
            self.plan = None
            plan_box.update(Text(str(e), style="red"))
            return
        self.plan = plan
        plan_box.update(Text.from_markup(self._plan_markup(plan)))

    def _select(self, sel_id: str) -> str:
        v = self.query_one(sel_id, Select).value
        return v if isinstance(v, str) else "f16"

    def _parallel(self) -> int:
        spec = self._spec()
        n = getattr(spec, "parallel", None) if spec is not None else None
        return n if isinstance(n, int) and n > 0 else 1

    def _plan_markup(self, plan: VramPlan) -> str:
        parts = [
            f"predicted on the GPU: weights {fmt_bytes(plan.weights_bytes)} + KV "
            f"{fmt_bytes(plan.kv_cache_bytes)} + compute ≈{fmt_bytes(plan.compute_bytes)} = "
            f"[b]{fmt_bytes(plan.total_bytes)}[/]  (offloaded {plan.offloaded_text}, "
            f"{plan.n_ctx} cells)"
        ]
        if plan.vram_bytes and self._vram:
            verdict = "[green]fits[/]" if plan.fits else "[bold red]does not fit[/]"
            parts.append(
                f"{escape(self._vram[2])}: "
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
    def _show_actual(self) -> None:
        store = getattr(self.session, "log_store", None)
        if store is None or self.info is None or store.last_seq == self._actual_seq:
            return
        self._actual_seq = store.last_seq
        parsed = parse_buffer_lines(ln.text for ln in store.lines())
        box = self.query_one("#tuning-actual", Static)
        spec = self._spec()
        if parsed.empty or spec is None:
            box.update("[dim]start llama-server with -lv 4 to compare with its buffer sizes[/]")
            return
        running = plan_vram(
            self.info,
            PlanRequest(
                gpu_layers=spec.gpu_layers if isinstance(spec.gpu_layers, int) else -1,
                ctx=spec.ctx_size or 0,
                cache_type_k=self._cache(spec, "k"),
                cache_type_v=self._cache(spec, "v"),
                parallel=self._parallel(),
            ),
        )
        box.update(
            Text(
                "running server, predicted vs llama.cpp (-lv 4):\n"
                + format_comparison(predicted_vs_actual(running, parsed))
            )
        )

    # ---------------------------------------------------------------- apply
    @on(Button.Pressed, "#tuning-apply")
    def _apply_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.request_apply()

    @on(Input.Submitted, "#tuning-ngl, #tuning-ctx")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.request_apply()

    def request_apply(self) -> bool:
        """Apply what is typed: refused on error; asks first when ctx exceeds training context."""
        self.recompute()
        if self.applying or self.sweeping:
            self._status("[yellow]an apply or a sweep is already running[/]")
            return False
        if self.values is None or self.error:
            return False
        controller = getattr(self.session, "controller", None)
        if controller is None:
            self._status("[red]no controller: attach mode cannot restart the server[/]")
            return False
        if self.warning:
            from llmtop.ui.screens.confirm import ConfirmScreen

            def answered(yes: bool | None) -> None:
                if yes:
                    self._start_apply()
                else:
                    self._status("[dim]not applied[/]")

            self.app.push_screen(ConfirmScreen(self.warning + "\n\nApply anyway?"), answered)
            return True
        self._start_apply()
        return True

    def _start_apply(self) -> None:
        controller = self.session.controller  # type: ignore[union-attr]
        assert self.values is not None
        new = spec_with_values(
            controller.spec,
            self.values,
            cache_type_k=self._select("#tuning-ctk"),
            cache_type_v=self._select("#tuning-ctv"),
        )
        if new == controller.spec:
            self._status("[dim]nothing to change[/]")
            return
        self.applying = True
        self.query_one("#tuning-apply", Button).disabled = True
        self._status(
            f"[b]applying[/] {escape('; '.join(describe_changes(controller.spec, new)))} — "
            "restarting, then checking health and the log…"
        )
        self._run_apply(new)

    @work(exclusive=True, group="tuning-apply", exit_on_error=False)
    async def _run_apply(self, new: Any) -> None:
        session = self.session
        controller = session.controller
        gpu = getattr(session, "gpu_monitor", None)
        record = await apply_with_rollback(
            controller,
            new,
            health_url=controller.spec.url + "/health",
            api_key=getattr(session, "api_key", None),
            timeout_s=180.0,
            log_store=session.log_store,
            gpu_monitor=gpu,
            change_log=self.change_log,
        )
        self.post_message(self.Applied(record))

    @on(Applied)
    def _on_applied(self, event: Applied) -> None:
        self.applying = False
        r = event.record
        if r.result == "applied":
            self._status(
                f"[green]applied[/] {escape('; '.join(r.changes))} ({'; '.join(r.checks)})"
            )
        elif r.result == "rolled_back":
            self._status(
                f"[bold yellow]rolled back[/] to the last good arguments: {escape(r.reason or '')}"
            )
        else:
            self._status(f"[bold red]rollback failed[/]: {escape(r.reason or '')}")
        self._actual_seq = -1
        self._render_log()
        self.recompute()

    def _render_log(self) -> None:
        lines = []
        for r in reversed(self.change_log.records()):
            colour = {"applied": "green", "rolled_back": "yellow"}.get(r.result, "red")
            lines.append(f"[{colour}]{escape(r.summary())}[/]")
        self.query_one("#tuning-log", Static).update(
            Text.from_markup("\n".join(lines) if lines else "no changes yet")
        )

    def _status(self, markup: str) -> None:
        self.query_one("#tuning-status", Static).update(Text.from_markup(markup))

    # ---------------------------------------------------------------- sweep
    @on(Button.Pressed, "#tuning-sweep-start")
    def _sweep_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.request_sweep()

    @on(Button.Pressed, "#tuning-sweep-use")
    def _use_best(self, event: Button.Pressed) -> None:
        event.stop()
        best = self.sweep_result.recommended if self.sweep_result else None
        if best is not None:
            self.query_one("#tuning-ngl", Input).value = str(best.gpu_layers)
            self.recompute()

    def request_sweep(self) -> bool:
        """Validate the sweep fields and start it (the server restarts once per setting; the
        original arguments are restored at the end)."""
        sweep_box = self.query_one("#tuning-sweep", Static)
        controller = getattr(self.session, "controller", None)
        if controller is None or self.applying or self.sweeping:
            return False
        try:
            settings = parse_range(self.query_one("#tuning-sweep-range", Input).value)
            probes = int(self.query_one("#tuning-sweep-probes", Input).value)
            if probes < 1:
                raise ValueError("probes must be at least 1")
        except ValueError as e:
            sweep_box.update(Text(f"sweep: {e}", style="bold red"))
            return False
        limit = self.info.block_count + 1 if self.info else None
        if limit is not None and max(settings) > limit:
            sweep_box.update(Text(f"sweep: gpu-layers above {limit}", style="bold red"))
            return False
        self.sweeping = True
        self.sweep_points = []
        self.sweep_result = None
        self.query_one("#tuning-sweep-start", Button).disabled = True
        self.query_one("#tuning-sweep-use", Button).disabled = True
        self.recompute()
        sweep_box.update(f"sweeping {settings} — the server restarts for each setting…")
        ctx = self.values.ctx if self.values else None
        self._run_sweep(settings, probes, ctx)
        return True

    @work(exclusive=True, group="tuning-sweep", exit_on_error=False)
    async def _run_sweep(self, settings: list[int], probes: int, ctx: int | None) -> None:
        session = self.session
        try:
            result = await run_sweep(
                session.controller,
                settings,
                log_store=session.log_store,
                ctx=ctx,
                probes=probes,
                api_key=getattr(session, "api_key", None),
                gpu_monitor=getattr(session, "gpu_monitor", None),
                restore=True,
                on_point=lambda p: self.post_message(self.SweepProgress(p)),
            )
        except Exception as e:  # noqa: BLE001 - shown in the panel
            self.post_message(self.SweepDone(None, str(e)))
            return
        self.post_message(self.SweepDone(result))

    @on(SweepProgress)
    def _on_sweep_point(self, event: SweepProgress) -> None:
        self.sweep_points.append(event.point)
        partial = SweepResult((), list(self.sweep_points), None, "running…")
        self.query_one("#tuning-sweep", Static).update(Text(format_table(partial)))

    @on(SweepDone)
    def _on_sweep_done(self, event: SweepDone) -> None:
        self.sweeping = False
        self.query_one("#tuning-sweep-start", Button).disabled = False
        box = self.query_one("#tuning-sweep", Static)
        if event.result is None:
            box.update(Text(f"sweep failed: {event.error}", style="bold red"))
        else:
            r = self.sweep_result = event.result
            tail = {True: "original arguments restored", False: "RESTORE FAILED"}.get(
                r.restored, ""
            )
            box.update(Text("\n".join(x for x in (format_table(r), format_plot(r), tail) if x)))
            self.query_one("#tuning-sweep-use", Button).disabled = r.recommended is None
        self._actual_seq = -1
        self.recompute()

    # ---------------------------------------------------------------- for tests
    def text_of(self, widget_id: str) -> str:
        w = self.query_one(f"#{widget_id}", Static)
        r = w.render()
        return r.plain if isinstance(r, Text) else str(r)
