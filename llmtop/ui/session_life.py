"""Starting and ending the app's session: the pick list or "no server" screen, starting the
session off the first frame, the collector loop, SIGTERM/SIGHUP, and quitting (a supervised
child is stopped)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING

from textual.app import App

from llmtop.session import DiscoveredTarget, Session
from llmtop.ui.messages import SnapshotReady

# The longest the recorded past may take to read (a slow disk: go on without it).
PREFILL_WAIT_S = 3.0
# The longest the past waits for the first data frame to be painted before it is read anyway.
FIRST_FRAME_WAIT_S = 3.0

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.snapshot import Snapshot

    _AppBase = App[None]
else:
    _AppBase = object


class SessionLife(_AppBase):
    """Mixed into LlmtopApp: the session's start and end."""

    if TYPE_CHECKING:  # provided by LlmtopApp
        session: Session
        _shutting_down: bool
        _prefill_pending: bool
        first_frame_shown: asyncio.Event
        latest: Snapshot | None
        active_tab: str
        defer_hidden_tabs: bool

        def _show_tab(self, tab: str, snap: Snapshot | None) -> None: ...

        async def _reveal_hidden_tabs(self, pane: str | None = None) -> None: ...

        def apply_prefill(self, snapshots: list[Snapshot], live: list[Snapshot]) -> None: ...

        live_before_past: list[Snapshot] | None
        prefill: list[Snapshot]

        _collect_task: asyncio.Task[None] | None
        _collecting: bool
        dropped_ticks: int

        def _refresh_title(self) -> None: ...

        def cancel_probe(self) -> bool: ...

    def _choose_server(self) -> None:
        if self.session.candidates:
            from llmtop.ui.screens.pick_server import PickServerScreen

            self.push_screen(PickServerScreen(self.session.candidates), self._picked)
        else:
            from llmtop.ui.screens.no_server import NoServerScreen

            self.push_screen(NoServerScreen())

    def _picked(self, target: DiscoveredTarget | None) -> None:
        if target is None:
            self.exit()
            return
        self.run_worker(self._pick_and_start(target), group="session", exit_on_error=False)

    async def _pick_and_start(self, target: DiscoveredTarget) -> None:
        # A unit is read with systemctl: keep that off the event loop.
        try:
            await asyncio.to_thread(self.session.pick, target)
        except Exception as exc:  # noqa: BLE001 - shown to the operator
            self.notify(f"could not open {target.label or target.url}: {exc}", severity="error")
            return
        await self._start_session()

    async def _start_session(self) -> None:
        # The present is on screen first; the recorded past is read once that frame is
        # painted, and put before it in the plots and the thermal window. Read meanwhile (a
        # thread) it competed for the GIL with the first frame: 50-80 ms later on a 2-core box,
        # and the past itself no sooner (measured: benchmarks/replay_bench.py, start-up).
        wants_past = self.session.history_db is not None and self.session.url is not None
        if wants_past:
            self.live_before_past = []
        try:
            await self.session.start()
        except Exception as exc:  # noqa: BLE001 - shown to the operator
            self.notify(f"could not start: {exc}", severity="error", timeout=10)
        self._tick()
        if not wants_past:
            return
        with contextlib.suppress(TimeoutError):  # no data frame: read the past anyway
            await asyncio.wait_for(self.first_frame_shown.wait(), FIRST_FRAME_WAIT_S)
        try:
            past = await asyncio.wait_for(
                asyncio.to_thread(self.session.read_history), PREFILL_WAIT_S
            )
            await self._merge_past(past)
        except Exception as exc:  # noqa: BLE001 - go on without the past rather than not
            self.notify(f"history not shown: {exc}", severity="warning")
        try:
            # The hidden tabs are mounted once the past is painted (mounting them meanwhile
            # doubled the read), with the past and the live snapshots shown so far.
            await self._after_next_paint()
            if self.defer_hidden_tabs:
                await self._reveal_hidden_tabs()
        finally:
            self.live_before_past = None

    async def _after_next_paint(self, timeout_s: float = 1.0) -> None:
        painted = asyncio.Event()
        self.call_after_refresh(painted.set)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(painted.wait(), timeout_s)

    async def _merge_past(self, past: list[Snapshot]) -> None:
        """The recorded past before the live snapshots seen so far: ticks pause (a few hundred
        milliseconds) so that the alert engine is the feeding thread's alone."""
        self._prefill_pending = True
        try:
            task = self._collect_task
            if task is not None and not task.done():  # a collect in flight lands first
                await asyncio.wait({task})
            live = list(self.live_before_past or [])
            self.apply_prefill(past, live)
            await asyncio.to_thread(self.session.feed_history, self.prefill, live)
        finally:
            self._prefill_pending = False
        if self.prefill:  # shown now, not at the next tick; and where it comes from
            self._show_tab(self.active_tab, self.latest)
            minutes = max(1, round((self.prefill[-1].time - self.prefill[0].time) / 60))
            self.notify(
                f"plots open with {minutes} min recorded in {self.session.history_db}",
                title="history",
                timeout=4,
            )

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        self.run_worker(self.shutdown(), group="shutdown", exclusive=True)

    async def action_quit_app(self) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop a supervised child cleanly, then leave (the terminal is restored by Textual)."""
        if self._shutting_down:
            return
        self._shutting_down = True
        self.cancel_probe()
        if self._collect_task is not None and not self._collect_task.done():
            self._collect_task.cancel()
        try:
            await asyncio.wait_for(self.session.close(), timeout=15.0)
        except Exception:  # noqa: BLE001 - make sure nothing is left behind
            self.session.shutdown_sync()
        self.exit()

    # -- the collector loop ---------------------------------------------------------------
    def _tick(self) -> None:
        """A timer at the refresh rate: start one collect, unless the last one still runs (the
        tick is dropped: latest value wins, nothing queues)."""
        if self.session.collector is None or self._shutting_down or self._prefill_pending:
            self._refresh_title()
            return
        if self._collecting:
            self.dropped_ticks += 1
            return
        self._collecting = True
        # A plain task, not a Worker: no state-change messages every tick (CPU budget).
        self._collect_task = asyncio.get_running_loop().create_task(self._collect_once())

    async def _collect_once(self) -> None:
        try:
            snap = await self.session.collect()
        except Exception as exc:  # noqa: BLE001 - the collector should not raise; say so
            self.notify(f"collector error: {exc}", severity="error")
            snap = None
        finally:
            self._collecting = False
        if snap is not None:
            self.post_message(SnapshotReady(snap))
