"""The probe keys' work in the app: fire a probe through `operations.probe.ProbeRun` as a worker,
stream its events into the prompt panel, cancel it with Esc, fire on the periodic schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.worker import Worker

from llmtop.operations.events import Cancelled, Event, Failed, ProbeDone, ProbeText
from llmtop.operations.probe import PeriodicProbe, ProbeRun
from llmtop.ui.panels.latency import LatencyPanel, ProbeSummary, RecentProbes
from llmtop.ui.panels.prompt import PromptPanel
from llmtop.ui.widget_lookup import WidgetLookup

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.session import Session
    from llmtop.snapshot import Snapshot
    from llmtop.sources.probe import ProbeRequest
    from llmtop.ui.series import DashboardHistory


PERIODIC_PROBE_S = 30.0


class ProbeKeys(WidgetLookup):
    """Mixed into LlmtopApp: probes from the prompt panel, `p` and the periodic schedule."""

    if TYPE_CHECKING:  # provided by LlmtopApp
        session: Session
        series: DashboardHistory
        _probe_worker: Worker[ProbeDone | Failed] | None
        _periodic_timer: PeriodicProbe | None
        periodic_probe_s: float | None
        latest: Snapshot | None

    def _server_asleep(self) -> bool:
        return self.latest is not None and self.latest.server.health == "sleeping"

    def start_probe(self, request: ProbeRequest, *, confirmed: bool = False) -> None:
        """Fire *request*; a sleeping server is asked about first: the probe wakes it (the
        model loads again and stays loaded until the next idle timeout) and its TTFT then
        includes the load — the operator should choose that, not get it by a stray key."""
        panel = self._find(PromptPanel)
        if panel is None:
            return
        if self.session.url is None:
            panel.set_error("no server to probe")
            return
        if not confirmed and self._server_asleep():
            from llmtop.ui.screens.confirm import ConfirmScreen

            def answered(yes: bool | None) -> None:
                if yes:
                    self.start_probe(request, confirmed=True)

            self.push_screen(
                ConfirmScreen(
                    "llama-server is asleep: a probe wakes it and loads the model (its TTFT "
                    "includes the load). Probe anyway?"
                ),
                answered,
            )
            return
        panel.started()
        self._probe_worker = self.run_worker(
            ProbeRun(self.session.probe).run(request, self._probe_event),
            group="probe",
            exclusive=True,
            exit_on_error=False,
        )

    def _probe_event(self, event: Event) -> None:
        """The probe's events (on the app's loop: the worker is a coroutine) → the panels."""
        panel = self._q(PromptPanel)
        if isinstance(event, ProbeText):
            panel.stream(event.text)
        elif isinstance(event, Cancelled):
            panel.finished(None, "cancelled")
        elif isinstance(event, Failed):
            panel.finished(None, event.reason)
        elif isinstance(event, ProbeDone):
            self.series.add_probe(event.result)
            self._q(LatencyPanel).add_probe(event.result)
            self._q(ProbeSummary).show()
            self._q(RecentProbes).show()
            panel.finished(event.result)

    def cancel_probe(self) -> bool:
        worker = self._probe_worker
        if worker is not None and worker.is_running:
            worker.cancel()
            return True
        return False

    def action_probe(self) -> None:
        panel = self._find(PromptPanel)
        if panel is not None:
            panel.fire()

    # Handlers by name, not @on: Textual collects @on handlers only on MessagePump classes.
    def on_prompt_panel_fire(self, event: PromptPanel.Fire) -> None:
        self.start_probe(event.request)

    def on_prompt_panel_cancel(self, event: PromptPanel.Cancel) -> None:
        self.cancel_probe()

    def action_toggle_periodic(self) -> None:
        """`P`: a probe every PERIODIC_PROBE_S seconds, until `P` again."""
        if self._periodic_timer is None:
            self.periodic_probe_s = PERIODIC_PROBE_S
            self._periodic_timer = PeriodicProbe(self._periodic_tick, PERIODIC_PROBE_S)
            self._periodic_timer.toggle()
            self.notify(f"periodic probe every {PERIODIC_PROBE_S:.0f} s")
        else:
            self._periodic_timer.stop()
            self._periodic_timer = None
            self.periodic_probe_s = None
            self.notify("periodic probe off")
        summary = self._q(ProbeSummary)
        summary.periodic_s = self.periodic_probe_s
        summary.show()

    def _periodic_tick(self) -> None:
        """The periodic probe skips a sleeping server: waking it every interval would keep the
        model loaded, which is what --sleep-idle-seconds is there to stop."""
        panel = self._find(PromptPanel)
        if panel is not None and not panel.running and not self._server_asleep():
            panel.fire()
