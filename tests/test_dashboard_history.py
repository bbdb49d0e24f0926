"""The dashboard and the history DB: plots open with the recorded last hour of this server
(and not of another), and `--record` records what the dashboard sees with the agent's own
recorder, so the recording replays and prefills like an agent's.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from llmtop.agent.recorder import HistoryRecorder, RecorderOptions
from llmtop.commands.dashboard import use_history
from llmtop.session import DiscoveredTarget, Session, make_alert_engine
from llmtop.snapshot import Snapshot
from llmtop.sources.history_db import HistoryDB
from llmtop.ui.app import LlmtopApp, create_app
from llmtop.ui.series import SERIES_LEN
from tests.realserver import RunningServer
from tests.screen_text import screen_text
from tests.test_history_db import snap as _snap

DEAD_URL = "http://127.0.0.1:9"  # nothing listens: the live snapshots say unreachable


def snap(t: float, url: str = DEAD_URL, **kw: object) -> Snapshot:
    """A recorded sample of the server at *url* (the recorder files samples by their URL)."""
    s = _snap(t, **kw)  # type: ignore[arg-type]
    return dataclasses.replace(s, server=dataclasses.replace(s.server, url=url))


async def wait_until(pilot: object, cond: Callable[[], object], timeout: float = 30.0) -> None:
    """Let the app run until cond() holds (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        await pilot.pause(0.02)  # type: ignore[attr-defined]


def merged(app: LlmtopApp) -> bool:
    """The recorded past has been read and put before the live snapshots (or there was none)."""
    return app.live_before_past is None and not app._prefill_pending  # noqa: SLF001


def recorded(path: Path, url: str, minutes: int = 20) -> float:
    """*minutes* of 1 s samples of the server at *url*, ending two seconds ago; the first time."""
    now = time.time()
    rec = HistoryRecorder.open(path, RecorderOptions(), url=url, report=lambda _line: None)
    start = now - minutes * 60 - 2
    for i in range(minutes * 60):
        rec.on_snapshot(snap(start + i, url, gen=40.0 + i % 5, temp=60.0 + i % 20))
    rec.close()
    return start


def dashboard_on_recorded(path: Path, refresh_s: float) -> LlmtopApp:
    """The dashboard on the (dead) server whose 20 minutes are recorded in *path*."""
    recorded(path, DEAD_URL)
    return create_app(
        Session(mode="attach", url=DEAD_URL, history_db=str(path), refresh_s=refresh_s)
    )


async def test_plots_open_with_the_recorded_hour_of_this_server(tmp_path: Path) -> None:
    app = dashboard_on_recorded(tmp_path / "history.sqlite", refresh_s=0.5)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.snapshots_seen >= 1)
        live = app.latest
        assert live is not None and live.server.health != "ok"
        # the present is shown first; the recorded past is put before it once read
        await wait_until(pilot, lambda: merged(app))
        gen = list(app.series.gen_tps)
        assert len(gen) == SERIES_LEN  # full: 20 min recorded, 10 min kept
        recorded_part = [g for g in gen if g is not None]  # the live samples say unreachable
        assert len(recorded_part) >= SERIES_LEN - 10
        assert all(40.0 <= g <= 44.0 for g in recorded_part)
        assert gen[-1] is None  # the newest is the live one
        assert app.prefill and app.prefill[-1].time < live.time
        await pilot.press("4")  # the GPU tab: its thermal history holds the past too
        await wait_until(pilot, lambda: app._find("#thermal-panel") is not None)  # noqa: SLF001
        thermal = app._find("#thermal-panel")  # noqa: SLF001
        times = thermal.plot_history.tiers["5m"].group.times()  # the GPU plots' 1 s window
        assert len(times) >= SERIES_LEN and times[0] < app.prefill[-1].time < times[-1]
        await pilot.press("q")


def gen_line(app: LlmtopApp) -> str:
    """The overview's tokens/s sparkline, as on screen (blank: nothing generated)."""
    line = next(r for r in screen_text(app).splitlines() if "gen  " in r)
    return line.split("gen", 1)[1].split("│")[0].strip()


async def test_the_past_is_shown_at_once_and_says_where_it_comes_from(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    # one tick a minute: what the screen shows after the merge was painted by the merge itself
    app = dashboard_on_recorded(path, refresh_s=60)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.snapshots_seen >= 1)
        assert app.first_frame_shown.is_set() or app.live_before_past is not None
        await wait_until(pilot, lambda: merged(app) and gen_line(app) != "")
        assert app.snapshots_seen == 1  # no second tick: the past was painted on its own
        assert any(ch in gen_line(app) for ch in "▁▂▃▄▅▆▇█")
        toasts = [str(n.message) for n in app._notifications]  # noqa: SLF001
        assert any(f"plots open with 20 min recorded in {path}" in t for t in toasts), toasts
        # the hidden tabs were mounted after it, with the past in their plots
        await pilot.press("4")
        await wait_until(pilot, lambda: app._find("#thermal-panel") is not None)  # noqa: SLF001
        times = app._find("#thermal-panel").plot_history.tiers["5m"].group.times()  # noqa: SLF001
        assert times[0] < app.prefill[-1].time and times[-1] == app.latest.time
        await pilot.press("q")


async def test_thermal_verdict_covers_the_recorded_minutes(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    now = time.time()
    rec = HistoryRecorder.open(path, RecorderOptions(), url=DEAD_URL, report=lambda _line: None)
    for i in range(240):  # the last 4 minutes; thermally throttled in the second half
        hot = i >= 120
        rec.on_snapshot(snap(now - 242 + i, reasons=("HwThermalSlowdown",) if hot else (),
                             temp=90.0 if hot else 70.0))  # fmt: skip
    rec.close()
    session = Session(mode="attach", url=DEAD_URL, history_db=str(path), refresh_s=0.5,
                      alert_factory=make_alert_engine)  # fmt: skip
    app = create_app(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.snapshots_seen >= 1 and merged(app))
        assert session.alert_engine is not None
        report = session.alert_engine.thermal(
            snap(time.time(), reasons=("HwThermalSlowdown",), temp=90.0)
        )
        assert report is not None and report.throttled_percent, report
        assert 30 <= report.throttled_percent <= 70, report  # half of the recorded window
        await pilot.press("q")


async def test_no_prefill_from_another_servers_history(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    recorded(path, "http://10.1.2.3:8080", minutes=2)
    session = Session(mode="attach", url=DEAD_URL, history_db=str(path), refresh_s=0.5)
    app = create_app(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.snapshots_seen >= 1 and merged(app))
        assert app.prefill == [] and len(app.series.gen_tps) <= 3
        await pilot.press("q")


async def test_record_writes_what_the_dashboard_sees(
    llama_server: RunningServer, tmp_path: Path
) -> None:
    path = tmp_path / "rec" / "history.sqlite"
    args = argparse.Namespace(db=None, record=str(path))
    session = Session(mode="attach", url=llama_server.url, refresh_s=0.3)
    assert use_history(session, args) is None and session.history_db == str(path)
    app = create_app(session)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app.snapshots_seen >= 4)
        seen = app.snapshots_seen
        await pilot.press("q")
    with HistoryDB.open(path) as db:
        rng = db.time_range()
        assert rng is not None
        rows = db.server_rows(rng.start, rng.end)
        assert len(rows) >= seen - 1 and rows[-1].health == "ok"
        assert db.meta()["url"] == llama_server.url
    # ... and the next dashboard on this server opens with it
    again = Session(mode="attach", url=llama_server.url, refresh_s=0.3, history_db=str(path))
    app2 = create_app(again)
    async with app2.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: app2.snapshots_seen >= 1 and merged(app2))
        assert len(app2.prefill) >= seen - 1
        await pilot.press("q")


def test_record_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    session = Session(mode="attach", url=DEAD_URL)
    problem = use_history(session, argparse.Namespace(db=None, record=str(bad)))
    assert problem is not None and str(bad) in problem and session.recorders == []


def test_record_refuses_several_servers(tmp_path: Path) -> None:
    """One DB holds one server: recording whichever has the focus would file the other's
    samples under the first one's URL. Refused in words, nothing created."""
    session = Session(mode="none", url=None)
    session.open_several(
        [DiscoveredTarget(url="http://127.0.0.1:9"), DiscoveredTarget(url="http://127.0.0.1:10")]
    )
    path = tmp_path / "rec.sqlite"
    problem = use_history(session, argparse.Namespace(db=None, record=str(path)))
    assert problem is not None and "records one server" in problem and "llmtop agent" in problem
    assert session.recorders == [] and not path.exists()
