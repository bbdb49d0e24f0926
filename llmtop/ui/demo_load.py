"""The dashboard of `llmtop demo`, with a light periodic load on its server.

A demo whose server only idles shows flat tokens/s and no latency: nothing to look at. Every
few seconds this fires the prompt panel's short prompt through the same probe path as `p`
(operations.probe.PeriodicProbe → ProbeRun, the panel's n_predict), so the tokens/s plots, the
latency table and the probe summary move. A probe is skipped while one runs or the server
sleeps. `llmtop demo --no-load` turns it off.
"""

from __future__ import annotations

from collections.abc import Callable

from llmtop.operations.probe import PeriodicProbe
from llmtop.session import Session
from llmtop.ui.app import LlmtopApp

DEMO_LOAD_S = 5.0


class DemoApp(LlmtopApp):
    """`LlmtopApp` plus the demo's load (see the module docstring)."""

    def __init__(
        self,
        session: Session,
        *,
        load_every_s: float = DEMO_LOAD_S,
        clock: Callable[[], float] | None = None,
        log_lines: int = 10_000,
        auto_collect: bool = True,
    ) -> None:
        super().__init__(session, clock=clock, log_lines=log_lines, auto_collect=auto_collect)
        self.load_every_s = load_every_s
        self.demo_load: PeriodicProbe | None = None

    def on_mount(self) -> None:
        # LlmtopApp.on_mount runs too (Textual calls each class's handler).
        self.demo_load = PeriodicProbe(self._periodic_tick, self.load_every_s)
        self.demo_load.toggle()
        self.notify(f"demo: a short prompt every {self.load_every_s:.0f} s (--no-load: none)")
