"""Replay's plots and events strip after a jump: the window that ends at the cursor, read from
the recording, and the recorded log events (an OOM) up to the cursor.

The recording is written by the agent's recorder from snapshots with chosen times (ten
minutes in a fraction of a second): GPU 0 thermal-throttles in [300, 360) s with its clock cut
to 1410 MHz, and the server's log says out of memory at 320 s.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from llmtop.agent.recorder import HistoryRecorder, RecorderOptions
from llmtop.commands.replay import replay_session
from llmtop.sources.logs import LogStore
from llmtop.sources.replay import ReplaySource, stamp
from llmtop.ui.panels.thermal import ThermalPanel
from llmtop.ui.replay_app import create_replay_app
from llmtop.ui.widgets.time_plot import LEFT_W, SPAN_MARK
from tests.screen_text import screen_text
from tests.test_history_db import SECRET, T0, snap
from tests.test_replay import shown, wait_until

HOT = (300, 360)
OOM_AT = 320


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def throttle_db(tmp_path: Path) -> Path:
    path = tmp_path / "h.sqlite"
    store = LogStore()
    rec = HistoryRecorder.open(path, RecorderOptions(), log_store=store, secrets=(SECRET,),
                               report=lambda _l: None)  # fmt: skip
    for i in range(600):
        hot = HOT[0] <= i < HOT[1]
        s = snap(T0 + i, reasons=("HwThermalSlowdown",) if hot else (),
                 temp=91.0 if hot else 70.0 + (i % 5), gen=30.0 if hot else 45.0)  # fmt: skip
        s = dataclasses.replace(
            s, gpus=(dataclasses.replace(s.gpus[0], sm_clock_mhz=1410 if hot else 1980),)
        )
        if i == OOM_AT:
            store.append("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9000 MiB on "
                         "device 0: cudaMalloc failed: out of memory", "stderr", time=T0 + i - 0.1)  # fmt: skip
        rec.on_snapshot(s)
    rec.close()
    return path


def rows_of(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        title = line[:LEFT_W].strip()
        if ("│" in line or "╰" in line) and title and title not in out:
            out[title] = line
    return out


async def test_a_jump_refills_the_plots_to_the_cursor_and_lists_recorded_events(
    tmp_path: Path,
) -> None:
    source = ReplaySource.open(throttle_db(tmp_path), end=T0 + 599)
    app = create_replay_app(replay_session(source), source)
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await wait_until(pilot, lambda: shown(app))
            assert "no events yet" in screen_text(app)  # nothing recorded before the start
            await pilot.press("4")
            await wait_until(pilot, lambda: isinstance(app._find("#thermal-panel"), ThermalPanel))  # noqa: SLF001
            # ] ] : the throttle start, then the OOM inside the span
            for _ in range(4):
                await pilot.press("right_square_bracket")
                if source.time >= T0 + OOM_AT:
                    break
            assert source.time == T0 + OOM_AT
            await wait_until(
                pilot, lambda: shown(app) and stamp(T0 + OOM_AT)[-8:] in screen_text(app)
            )
            panel = app._find("#thermal-panel")  # noqa: SLF001
            data = panel.plots[0].data
            # the window ends at the cursor and holds the recorded minutes before the jump
            assert data.end == T0 + OOM_AT and data.start == T0 + OOM_AT - 300
            temps = [t for t, v in data.rows[0].series[0].points if v is not None]
            assert min(temps) <= T0 + OOM_AT - 290 and max(temps) == T0 + OOM_AT
            rows = rows_of(screen_text(app))
            assert "slowdown 87" in screen_text(app)
            assert (
                rows["temp °C"]
                and "91"
                in screen_text(app).splitlines()[
                    screen_text(app).splitlines().index(rows["temp °C"]) + 1
                ][:LEFT_W]
            )
            marks = rows["throttled"][LEFT_W : rows["throttled"].rindex("│")]
            # the span: the last 20 s of the 300 s window, nothing before it
            assert (
                marks.rstrip().endswith(SPAN_MARK) and 0 < marks.count(SPAN_MARK) < len(marks) / 8
            )
            temp_row = rows["temp °C"][LEFT_W : rows["temp °C"].rindex("│")]
            assert (
                len(temp_row) - len(temp_row.lstrip()) < len(temp_row) / 10
            )  # filled from the left
            # the events strip (overview) lists the recorded OOM, up to the cursor only
            await pilot.press("1")
            await wait_until(pilot, lambda: "out of memory" in screen_text(app))
            assert SECRET not in screen_text(app)
            await pilot.press("left_square_bracket")  # back: just before the OOM was logged
            await wait_until(pilot, lambda: shown(app) and source.time < T0 + OOM_AT - 0.1)
            await wait_until(pilot, lambda: "out of memory" not in screen_text(app))
    finally:
        source.close()


async def test_w_in_replay_reads_the_hour_before_the_cursor(tmp_path: Path) -> None:
    source = ReplaySource.open(throttle_db(tmp_path), end=T0 + 599)
    app = create_replay_app(replay_session(source), source)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: shown(app))
            source.goto(T0 + 590)
            app._cursor_moved()  # noqa: SLF001 - what the `g` prompt does after parsing
            await wait_until(pilot, lambda: shown(app) and source.time == T0 + 590)
            await pilot.press("4")
            await wait_until(pilot, lambda: "5 min" in rows_of(screen_text(app)))
            await pilot.press("w")
            await wait_until(pilot, lambda: "1 h" in rows_of(screen_text(app)))
            panel = app._find("#thermal-panel")  # noqa: SLF001
            await wait_until(pilot, lambda: min(
                (t for t, v in panel.plots[0].data.rows[0].series[0].points if v is not None),
                default=1e18) < T0 + 10)  # fmt: skip
            marks = rows_of(screen_text(app))["throttled"]
            assert SPAN_MARK in marks  # the span at 300-360 s is inside the hour
    finally:
        source.close()


def test_record_after_discovery_stores_the_servers_url(tmp_path: Path) -> None:
    """`llmtop --record` with several discovered servers opens its recorder before the pick
    (no URL yet): the URL stored is the one of the samples (the focused server), so the next
    dashboard on it opens with the recording and replay's title names it."""
    from llmtop.commands.dashboard import use_history
    from llmtop.session import Session
    from llmtop.sources.history_db import HistoryDB
    from llmtop.sources.prefill import read_prefill

    path = tmp_path / "rec.sqlite"
    session = Session(mode="none", url=None)
    import argparse

    assert use_history(session, argparse.Namespace(db=None, record=str(path))) is None
    (recorder,) = session.recorders
    for i in range(5):
        recorder.on_snapshot(snap(time.time() - 10 + i))  # server url http://127.0.0.1:8080
    recorder.close()
    with HistoryDB.open(path) as db:
        assert db.meta()["url"] == "http://127.0.0.1:8080"
    assert len(read_prefill(path, "http://127.0.0.1:8080", time.time(), 3600)) == 5
