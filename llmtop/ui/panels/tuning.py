"""Tuning panel: edit --gpu-layers / --ctx-size / cache types, see the predicted VRAM as you type,
apply with automatic rollback, sweep, and read the change log.

The panel lays the widgets out and routes messages; three views do the work, each over the
operations layer: `tuning_plan.PlanView` (the plan, recomputed on every keystroke from the
model's GGUF header, read once on a thread), `tuning_apply.ApplyView` and
`tuning_sweep.SweepView` (they run `Session.operations`' apply and sweep as workers on the app's
loop, where the controller lives; the operations' events come back as `Reported` messages).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static

from llmtop.control.sweep import SweepPoint, SweepResult
from llmtop.control.tuning import FIT_EXPLANATION, ChangeLog, TuningValues
from llmtop.model.gguf import GgufInfo
from llmtop.model.launch_spec import LaunchSpec, format_gpu_layers
from llmtop.model.vram_plan import CACHE_TYPES, VramPlan
from llmtop.operations.apply import TuningCheck
from llmtop.operations.events import Event
from llmtop.snapshot import Snapshot
from llmtop.sources.buffer_lines import FitSuggestion, find_fit_params, run_fit_params
from llmtop.sources.gguf_info import read_gguf_info
from llmtop.ui.panels.tuning_apply import ApplyView
from llmtop.ui.panels.tuning_plan import PlanView, cache_type, pick_gpu, vram_bar
from llmtop.ui.panels.tuning_sweep import SweepView

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.operations.actions import Operations
    from llmtop.session import Session
    from llmtop.sources.logs import LogStore

__all__ = ["TuningPanel", "vram_bar"]

CACHE_OPTIONS = [(t, t) for t in CACHE_TYPES]


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

    class Reported(Message):
        """An event of the apply or sweep operation, delivered on the UI thread."""

        def __init__(self, event: Event) -> None:
            super().__init__()
            self.event = event

    class FitRead(Message):
        def __init__(self, suggestion: FitSuggestion) -> None:
            super().__init__()
            self.suggestion = suggestion

    class ModelRead(Message):
        def __init__(self, info: GgufInfo | None, error: str | None) -> None:
            super().__init__()
            self.info = info
            self.error = error

    def __init__(self, session: Session | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.border_title = "Tuning"
        self.session = session
        self.plan_view = PlanView(self)
        self.apply_view = ApplyView(self)
        self.sweep_view = SweepView(self)
        self._fit_started = False

    # ---------------------------------------------------------------- what tests and the app read
    @property
    def operations(self) -> Operations | None:
        return self.session.operations if self.session is not None else None

    @property
    def log_store(self) -> LogStore | None:
        return self.session.log_store if self.session is not None else None

    @property
    def change_log(self) -> ChangeLog:
        ops = self.operations
        return ops.apply.change_log if ops is not None else ChangeLog()

    @property
    def info(self) -> GgufInfo | None:
        return self.plan_view.info

    @property
    def plan(self) -> VramPlan | None:
        return self.plan_view.plan

    @property
    def applying(self) -> bool:
        return self.apply_view.applying

    @property
    def sweeping(self) -> bool:
        return self.sweep_view.sweeping

    @property
    def sweep_points(self) -> list[SweepPoint]:
        return self.sweep_view.points

    @property
    def sweep_result(self) -> SweepResult | None:
        return self.sweep_view.result

    @property
    def values(self) -> TuningValues | None:
        return self.plan_view.check.values

    @property
    def error(self) -> str | None:
        return self.plan_view.check.error

    @property
    def warning(self) -> str | None:
        return self.plan_view.check.warning

    def _spec(self) -> LaunchSpec | None:
        ctl = self.session.controller if self.session is not None else None
        return ctl.spec if ctl is not None else None

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
                CACHE_OPTIONS, value=cache_type(spec, "k"), allow_blank=False, id="tuning-ctk"
            )
            yield Label("cache V")
            yield Select(
                CACHE_OPTIONS, value=cache_type(spec, "v"), allow_blank=False, id="tuning-ctv"
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
        spec = self._spec()
        if spec is not None and spec.model:
            self._load_model(spec.model)
        else:
            self.query_one("#tuning-model", Static).update(
                "model: unknown (start llmtop with -- llama-server -m MODEL.gguf, or --unit)"
            )
        if self.operations is None:
            self.query_one("#tuning-apply", Button).disabled = True
            self.query_one("#tuning-sweep-start", Button).disabled = True
            self.apply_view.status(
                "[dim]plan only: Apply needs llmtop to control the server (child or unit mode)[/]"
            )
        else:
            self.apply_view.render_log()

    # ---------------------------------------------------------------- model facts (threads)
    def _load_model(self, path: str) -> None:
        def read() -> None:
            try:
                info = read_gguf_info(path)
            except (OSError, ValueError) as e:
                self.post_message(self.ModelRead(None, str(e)))
                return
            self.post_message(self.ModelRead(info, None))

        self.run_worker(
            read, thread=True, exclusive=True, group="tuning-model", exit_on_error=False
        )

    def _run_fit(self, path: str) -> None:
        binary = spec.binary if (spec := self._spec()) is not None else None

        def fit() -> None:
            tool = find_fit_params(binary) if binary else None
            if tool is not None:
                # No -c/-ngl: llama.cpp fits what it would fit for defaults on this machine.
                self.post_message(self.FitRead(run_fit_params(tool, path)))

        self.run_worker(fit, thread=True, exclusive=True, group="tuning-fit", exit_on_error=False)

    @on(FitRead)
    def _on_fit(self, event: FitRead) -> None:
        self.plan_view.fit_read(event.suggestion)

    @on(ModelRead)
    def _on_model(self, event: ModelRead) -> None:
        self.plan_view.model_read(event.info, event.error)
        self.recompute()

    def show(self, snapshot: Snapshot) -> None:
        """Called by the app with each snapshot while the tab is visible: GPU size, and the model
        path in attach mode."""
        spec = self._spec()
        if not self._fit_started and spec is not None and spec.model:
            # llama-fit-params loads the model's metadata: run it once, when the tab is first seen.
            self._fit_started = True
            self._run_fit(spec.model)
        plan = self.plan_view
        vram = pick_gpu(snapshot)
        if vram != plan.vram:
            plan.vram = vram
            self.recompute()
        if plan.info is None and plan.model_error is None and plan.model_path is None:
            path = snapshot.server.model_path
            if path:
                plan.model_path = path
                self._load_model(path)
        plan.show_actual(spec)

    # ---------------------------------------------------------------- typing → plan
    @on(Input.Changed)
    @on(Select.Changed)
    def _changed(self, event: Message) -> None:
        event.stop()
        self.recompute()

    def recompute(self) -> TuningCheck:
        can_apply = self.operations is not None and not self.applying and not self.sweeping
        return self.plan_view.recompute(self._spec(), can_apply)

    # ---------------------------------------------------------------- apply and sweep
    @on(Button.Pressed, "#tuning-apply")
    def _apply_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.request_apply()

    @on(Input.Submitted, "#tuning-ngl, #tuning-ctx")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.request_apply()

    def request_apply(self) -> bool:
        return self.apply_view.request(self.operations)

    @on(Button.Pressed, "#tuning-sweep-start")
    def _sweep_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.request_sweep()

    @on(Button.Pressed, "#tuning-sweep-use")
    def _use_best(self, event: Button.Pressed) -> None:
        event.stop()
        self.sweep_view.use_best()

    def request_sweep(self) -> bool:
        return self.sweep_view.request(self.operations)

    def report(self, event: Event) -> None:
        """The operations' listener: events become messages, handled on the UI thread."""
        self.post_message(self.Reported(event))

    @on(Reported)
    def _on_reported(self, message: Reported) -> None:
        event = message.event
        if event.operation == "sweep":
            self.sweep_view.render(event)
        else:
            self.apply_view.render(event)
        if not self.applying and not self.sweeping:
            self.plan_view.actual_seq = -1
        self.recompute()

    # ---------------------------------------------------------------- for tests
    def text_of(self, widget_id: str) -> str:
        w = self.query_one(f"#{widget_id}", Static)
        r = w.render()
        return r.plain if isinstance(r, Text) else str(r)
