"""Router mode's keys: m selects the next model, L loads and U unloads it (each asks first,
then runs operations/models.py — the one route to the router), l shows its log lines (the
router starts each line of a child with "[PORT] ")."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from textual.app import App
from textual.binding import Binding

from llmtop.operations.events import Done, Event, Failed, Progress, Rejected
from llmtop.snapshot import ModelStatus
from llmtop.ui.panels.models import next_model, selected_model
from llmtop.ui.panels.server import ServerPanel

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.operations.models import ModelActions
    from llmtop.session import Session
    from llmtop.snapshot import Snapshot

    _AppBase = App[None]
else:
    _AppBase = object

MODEL_BINDINGS = [
    Binding("m", "next_model", "next model", show=False),
    Binding("L", "load_model", "load model", show=False),
    Binding("U", "unload_model", "unload model", show=False),
    Binding("l", "model_logs", "model logs", show=False),
]


class ModelKeys(_AppBase):
    """Mixed into LlmtopApp: the keys of a router's model table."""

    if TYPE_CHECKING:  # provided by LlmtopApp
        session: Session
        latest: Snapshot | None

        def _tick(self) -> None: ...

        def action_tab(self, tab: str) -> None: ...

    _model_actions: ModelActions | None = None

    def _router_models(self) -> tuple[ModelStatus, ...] | None:
        snap = self.latest
        if snap is None or not snap.server.router:
            self.notify(
                "not a router: L / U load and unload models of a router-mode llama-server "
                "(--models-dir / --models-preset)",
                severity="warning",
            )
            return None
        return snap.server.models

    def _chosen(self) -> ModelStatus | None:
        models = self._router_models()
        if models is None:
            return None
        chosen = selected_model(models, self.query_one(ServerPanel).selected_model)
        if chosen is None:
            self.notify("the router lists no models", severity="warning")
        return chosen

    def action_next_model(self) -> None:
        models = self._router_models()
        if not models:
            return
        panel = self.query_one(ServerPanel)
        panel.selected_model = next_model(models, panel.selected_model)
        if self.latest is not None:
            panel.show(self.latest)

    def action_load_model(self) -> None:
        m = self._chosen()
        if m is None:
            return
        if m.status in ("loaded", "loading", "sleeping"):
            self.notify(f"{m.id} is already {m.status}")
            return
        from llmtop.ui.screens.confirm import ConfirmScreen

        question = f"Load model {m.id}? (the router starts a llama-server for it)"
        self.push_screen(ConfirmScreen(question), self._model_confirmed("load", m.id))

    def action_unload_model(self) -> None:
        m = self._chosen()
        if m is None:
            return
        if m.status in ("unloaded", "failed"):
            self.notify(f"{m.id} is not loaded")
            return
        from llmtop.ui.screens.confirm import ConfirmScreen

        what = f"pid {m.pid}" if m.pid is not None else "its llama-server"
        question = f"Unload model {m.id}? (stops {what}; requests to it fail or reload it)"
        self.push_screen(ConfirmScreen(question), self._model_confirmed("unload", m.id))

    def action_model_logs(self) -> None:
        m = self._chosen()
        if m is None:
            return
        if m.port is None:
            self.notify(f"{m.id} has no running llama-server: no log lines to tell apart")
            return
        from llmtop.ui.panels.logs import LogsPanel

        self.action_tab("logs")
        panels = list(self.query(LogsPanel))
        if panels:
            from llmtop.sources.router import model_log_prefix  # off start-up

            panels[0].set_filter(model_log_prefix(m.port).strip())
        self.notify(f"logs: {m.id} only (Esc in the search box shows all)")

    def _model_confirmed(self, what: str, model_id: str) -> Callable[[bool | None], None]:
        def answered(yes: bool | None) -> None:
            if yes:
                self._run_model_action(what, model_id)

        return answered

    def _run_model_action(self, what: str, model_id: str) -> None:
        url = (self.latest.server.url if self.latest is not None else self.session.url) or ""
        if self._model_actions is None or self._model_actions.control.url != url.rstrip("/"):
            from llmtop.operations.models import model_actions

            self._model_actions = model_actions(url, self.session.api_key)
        actions = self._model_actions
        run = actions.load if what == "load" else actions.unload

        async def act() -> None:
            await run(model_id, self._model_event)
            self._tick()

        self.run_worker(act(), group="models", exit_on_error=False)

    def _model_event(self, event: Event) -> None:
        """Load/unload progress → a toast (failures stay up longer)."""
        if isinstance(event, Progress):
            self.notify(event.message)
        elif isinstance(event, Rejected):
            self.notify(event.reason, severity="warning")
        elif isinstance(event, Failed):
            self.notify(event.reason, severity="error", timeout=10)
        elif isinstance(event, Done):
            self.notify(event.message)
