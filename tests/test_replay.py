"""`llmtop replay`: the dashboard driven by a recorded history under a time cursor.

The throttle test records with the real agent (runner, session, collector, recorder) against a
real llama-server and simulated GPUs that throttle at known times (test_agent_throttle's
scenario), then replays it in a Pilot: a moment inside the span shows that moment's temperature
and reason, and `]` jumps to the span's start. The cursor-key tests use a DB written by the
recorder from snapshots with chosen times (minutes of history in a fraction of a second).
"""

from __future__ import annotations

import asyncio
import ctypes
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llmtop.agent.recorder import HistoryRecorder, RecorderOptions
from llmtop.agent.runner import AgentRunner
from llmtop.commands.replay import replay_session
from llmtop.session import Session, make_alert_engine
from llmtop.snapshot import Alert
from llmtop.sources.history_db import HistoryDB
from llmtop.sources.replay import SPEEDS, ReplaySource, stamp
from llmtop.ui.replay_app import create_replay_app
from tests.nvml_sim.harness import SimGpus
from tests.realserver import RunningServer
from tests.screen_text import screen_text
from tests.test_agent_throttle import HOT, INTERVAL_S, loader, throttle_scenario  # noqa: F401
from tests.test_history_db import T0, record, snap

ROOT = Path(__file__).resolve().parent.parent


async def wait_until(pilot: object, cond: Callable[[], object], timeout: float = 30.0) -> None:
    """Let the app run until cond() holds (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        await pilot.pause(0.02)  # type: ignore[attr-defined]


def shown(app: object) -> bool:
    """The snapshot under the cursor is on screen (read back and handled)."""
    src = app.source  # type: ignore[attr-defined]
    latest = app.latest  # type: ignore[attr-defined]
    return latest is not None and latest.time == src.time


def notes(app: object) -> list[str]:
    return [n.message for n in app._notifications]  # type: ignore[attr-defined]  # noqa: SLF001


# ---------------------------------------------------------------------- real agent, throttling
RUN_S = 6.5  # past the end of GPU 0's span (HOT ends at 5.5)


@pytest.mark.nvml_sim
@pytest.mark.real_server
async def test_replay_shows_the_throttled_moment_and_jumps_to_it(
    nvml_sim: Callable[..., SimGpus],
    llama_server: RunningServer,
    loader: threading.Event,  # noqa: F811 - the fixture, imported
    tmp_path: Path,
) -> None:
    before = time.time()
    sim = nvml_sim(throttle_scenario(), refresh_s=3600.0)
    after = time.time()
    sim._lib().nvmlSimSetTime(ctypes.c_double(-1.0))  # the simulator's own clock
    t0 = (before + after) / 2
    db_path = tmp_path / "history.sqlite"
    session = Session(mode="attach", url=llama_server.url, gpu_monitor=sim.monitor,
                      alert_factory=make_alert_engine)  # fmt: skip
    recorder = HistoryRecorder.open(db_path, RecorderOptions(interval_s=INTERVAL_S),
                                    log_store=session.log_store, url=llama_server.url)  # fmt: skip
    runner = AgentRunner(session, [recorder], interval_s=INTERVAL_S)
    task = asyncio.ensure_future(runner.run())
    while time.time() < t0 + RUN_S and not task.done():
        await asyncio.sleep(0.1)
    runner.stop()
    await task

    source = ReplaySource.open(db_path, end=t0 + RUN_S + 5)  # a closed window: no following
    app = create_replay_app(replay_session(source), source)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda: shown(app))
            await pilot.press("4")  # the GPU tab
            # a moment inside GPU 0's span: that moment's temperature and reason
            inside = t0 + HOT[0] + 1.2
            source.goto(inside)
            app._cursor_moved()  # noqa: SLF001 - what the `g` prompt does after parsing
            await wait_until(pilot, lambda: shown(app))
            with HistoryDB.open(db_path) as db:
                row = next(r for r in db.gpu_rows(source.time, source.time) if r.gpu_index == 0)
            assert row.temperature_c in (88.0, 89.0) and "HwThermalSlowdown" in (
                row.throttle_reasons or ""
            )
            await wait_until(pilot, lambda: f"{row.temperature_c:.0f} °C" in screen_text(app))
            text = screen_text(app)
            assert f"REPLAY {stamp(source.time)}" in text
            assert "HwThermalSlowdown" in text
            assert f"temp  {row.temperature_c:.0f} °C" in text  # GPU 0's card

            # `]` from before the span lands on its first throttled sample
            source.goto(t0 + HOT[0] - 1.0)
            app._cursor_moved()  # noqa: SLF001
            await wait_until(pilot, lambda: shown(app))
            starts = [e for e in source.events if e.kind == "throttle_start" and "GPU0" in e.label]
            assert len(starts) == 1 and abs(starts[0].time - (t0 + HOT[0])) <= INTERVAL_S + 0.1
            for _ in range(5):  # alerts are events too: at most a few stops before it
                await pilot.press("right_square_bracket")
                if source.time >= starts[0].time:
                    break
            assert source.time == starts[0].time
            await wait_until(pilot, lambda: shown(app))
            assert f"REPLAY {stamp(starts[0].time)}" in screen_text(app)
            assert "HwThermalSlowdown" in screen_text(app)
            # the title bar names the event the cursor is on, until it moves off it
            title = screen_text(app).splitlines()[0]
            assert f"◆ {starts[0].label}" in title, title
            await pilot.press("right")
            await wait_until(pilot, lambda: "◆" not in screen_text(app).splitlines()[0])
    finally:
        source.close()


# ---------------------------------------------------------------------- cursor keys
def minutes_db(tmp_path: Path, minutes: int = 5) -> Path:
    """A recording of *minutes* at 1 s: GPU 0 throttles thermally in [120, 150) s and an alert
    is active in [200, 230) s."""
    path = tmp_path / "h.sqlite"
    hot = Alert("vram_high", "warning", "VRAM nearly full", T0 + 200)
    snaps = []
    for i in range(minutes * 60):
        throttled = 120 <= i < 150
        snaps.append(
            snap(
                T0 + i,
                reasons=("HwThermalSlowdown",) if throttled else (),
                temp=91.0 if throttled else 70.0 + (i % 7),
                alerts=(hot,) if 200 <= i < 230 else (),
            )  # fmt: skip
        )
    record(path, snaps).close()
    return path


async def test_keys_move_the_cursor_and_world_changing_keys_say_why(tmp_path: Path) -> None:
    source = ReplaySource.open(minutes_db(tmp_path), end=T0 + 299)  # closed: play stops at its end
    app = create_replay_app(replay_session(source), source)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(pilot, lambda: shown(app))
            assert source.time == T0 and f"REPLAY {stamp(T0)}" in screen_text(app)
            await pilot.press("right")
            await wait_until(pilot, lambda: shown(app))
            assert source.time == T0 + 1 and f"REPLAY {stamp(T0 + 1)}" in screen_text(app)
            await pilot.press("pagedown")
            await wait_until(pilot, lambda: shown(app))
            assert source.time == T0 + 61 and f"REPLAY {stamp(T0 + 61)}" in screen_text(app)
            await pilot.press("pageup")
            await pilot.press("left")
            await wait_until(pilot, lambda: shown(app))
            assert source.time == T0
            # next event: the throttle start, then the alert; previous goes back
            await pilot.press("right_square_bracket")
            assert source.time == T0 + 120
            await wait_until(pilot, lambda: shown(app))
            assert app.latest is not None and app.latest.gpus[0].temperature_c == 91.0
            # the thermal verdict over the window before the cursor, as live would show it
            await pilot.press(*["right"] * 20)
            await wait_until(pilot, lambda: shown(app) and source.time == T0 + 140)
            report = app.latest.thermal
            assert report is not None and report.throttled_percent, report
            await pilot.press("left_square_bracket")
            assert source.time == T0 + 120
            await pilot.press("right_square_bracket")
            assert source.time == T0 + 200
            await pilot.press("left_square_bracket")
            assert source.time == T0 + 120
            # g: type a time on the title line (keys are the prompt's while it is open:
            # digits would switch tabs, space would play, backspace edits)
            await pilot.press("g")
            await wait_until(pilot, lambda: "GO TO" in screen_text(app).splitlines()[0])
            await pilot.press(*str(int(T0 + 250)), "9", "backspace", "space", "backspace")
            await wait_until(pilot, lambda: f"GO TO  {int(T0 + 250)}▏" in screen_text(app))
            assert not app.playing and app.active_tab == "overview"
            await pilot.press("enter")
            await wait_until(pilot, lambda: shown(app) and source.time == T0 + 250)
            assert "GO TO" not in screen_text(app).splitlines()[0]
            # Esc closes the prompt and leaves the cursor where it was
            await pilot.press("g", "1", "escape")
            await wait_until(pilot, lambda: f"REPLAY {stamp(T0 + 250)}" in screen_text(app))
            assert source.time == T0 + 250
            # a time outside the recording says which range exists
            await pilot.press("g")
            await pilot.press(*str(int(T0 + 9000)), "enter")
            await wait_until(pilot, lambda: any("outside the recording" in n for n in notes(app)))
            assert any(stamp(T0) in n and stamp(T0 + 299) in n for n in notes(app))
            assert source.time == T0 + 250
            # play at 600x reaches the end and stops there (a closed recording)
            await pilot.press(*["plus"] * len(SPEEDS))
            await pilot.press("space")  # at 600x one play tick reaches the end: speed first
            assert app.speed == SPEEDS[-1] and (app.playing or source.at_end)
            await wait_until(pilot, lambda: source.at_end and not app.playing, timeout=10)
            # world-changing keys do nothing and say why
            for key in ("r", "s", "p"):
                await pilot.press(key)
            await pilot.press("5")  # tuning: would apply settings to a server
            await pilot.pause()
            text = " | ".join(notes(app))
            for what in ("restart", "stop", "probe", "apply"):
                assert f"replay: nothing to {what}" in text, text
            assert app.active_tab == "overview"
    finally:
        source.close()


async def test_follows_the_live_end_of_a_db_being_written(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    rec = record(path, [snap(T0 + i) for i in range(10)])
    source = ReplaySource.open(path)  # no --to: follow
    app = create_replay_app(replay_session(source), source)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await wait_until(pilot, lambda: shown(app))
            source.index = len(source.times) - 1
            app._cursor_moved()  # noqa: SLF001
            await wait_until(pilot, lambda: shown(app) and source.time == T0 + 9)
            for i in range(10, 13):
                rec.on_snapshot(snap(T0 + i))
            rec.close()
            await wait_until(pilot, lambda: shown(app) and source.time == T0 + 12, timeout=10)
            assert "live end" in screen_text(app)
    finally:
        source.close()


def test_command_errors_name_the_file_or_the_range(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a database\n" * 10)
    path = minutes_db(tmp_path, minutes=1)

    def replay(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "llmtop", "replay", *argv],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip

    out = replay("--db", str(bad))
    assert out.returncode == 2 and str(bad) in out.stderr and "Traceback" not in out.stderr
    out = replay("--db", str(tmp_path / "missing.sqlite"))
    assert out.returncode == 2 and "missing.sqlite" in out.stderr
    out = replay("--db", str(path), "--from", str(T0 + 5000), "--to", str(T0 + 6000))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert stamp(T0) in out.stderr and stamp(T0 + 59) in out.stderr
    out = replay("--db", str(path), "--from", "yesterday-ish")
    assert out.returncode == 2 and "not a time" in out.stderr
