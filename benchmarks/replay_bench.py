"""Replay and history-prefill costs (issue 10): a week at 1 s, as the agent writes it.

- replay key → frame: `llmtop replay` (the real ReplayApp, headless Pilot at 160×48, GPU tab
  with its plots) over a generated 7-day, 1 s, 1-GPU database (604 800 samples, a throttle span
  every hour; written by the agent's recorder in simulated time, benchmarks/agent_bench.py).
  Per key: from the key press to the frame that shows the snapshot at the new cursor, plots
  refilled after a jump. Keys → (one sample), PgDn (+1 min: a jump), ] (next event), g (go to
  a typed time; measured from Enter). Target p95 ≤ 50 ms.
- dashboard first frame with a 1 h prefill: `llmtop --url URL --db PATH` in a pty against a
  real llama-server, PATH holding the last hour of that server (3 600 samples): process start →
  the first frame with the server's data (its model name), beside the same without a DB.
  Target ≤ 1 s.

`python -m benchmarks.replay_bench` prints a table; `run()` returns rows for `python -m benchmarks`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.agent_bench import DAY_S, generate  # noqa: E402
from benchmarks.frame_wait import FrameWaiter  # noqa: E402

KEYS = ("right", "pagedown", "right_square_bracket", "g")


def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=20)[-1]


async def _key_to_frame(db: Path, presses: int) -> dict[str, list[float]]:
    """Per key, seconds from posting it to the end of the first frame handed to the driver that
    shows the snapshot at the new cursor (benchmarks/frame_wait.py). Between presses the app
    settles."""
    from llmtop.commands.replay import replay_session
    from llmtop.sources.replay import ReplaySource
    from llmtop.ui.replay_app import create_replay_app

    source = await asyncio.to_thread(ReplaySource.open, db)
    app = create_replay_app(replay_session(source), source)
    out: dict[str, list[float]] = {k: [] for k in KEYS}
    frames = FrameWaiter(app)

    def moved_and_shown(before: float) -> Callable[[], bool]:
        # the cursor moved (every key measured moves it) and its snapshot is the app's now
        return lambda: (
            source.time != before and app.latest is not None and app.latest.time == source.time
        )

    async def press(key: str) -> float:
        return await frames.press(key, moved_and_shown(source.time)) / 1000.0

    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause(0.5)
            await pilot.press("4")  # the GPU tab: its plots are drawn on every move
            await pilot.pause(0.5)
            source.index = len(source.times) // 3  # start inside the week, not at its edge
            app._cursor_moved()  # noqa: SLF001
            await pilot.pause(0.5)
            for i in range(presses):
                for key in KEYS:
                    if key == "g":
                        await pilot.press("g")
                        target = source.start + (i * 7919 % int(source.end - source.start))
                        await pilot.press(*str(int(target)))
                        out[key].append(await press("enter"))
                    else:
                        out[key].append(await press(key))
                    await pilot.pause(0.1)
    finally:
        source.close()
    return out


def _prefill_db(path: Path, url: str) -> None:
    """An hour at 1 s of the server at *url*, ending now (a fresh file each time)."""
    path.unlink(missing_ok=True)
    rec = generate(path, 3600, time.time() - 2)
    rec.close()
    with sqlite3.connect(path) as c:
        c.execute("INSERT OR REPLACE INTO meta VALUES ('url', ?)", (url,))


def _startup(db: Path | None, runs: int, marker: bytes = b"tiny.gguf") -> list[float]:
    """Process start → *marker* on screen, in a 160×48 pty: the model name (the first data
    frame), or the history toast (the recorded hour is in the plots)."""
    from benchmarks.pty_run import run_in_pty
    from llmtop.demo.tiny_model import write_tiny_model
    from tests.realserver import find_llama_server, start_llama_server

    binary = find_llama_server()
    if binary is None:
        raise RuntimeError("no llama-server (scripts/get-llama-server.sh)")
    with tempfile.TemporaryDirectory() as d:
        model = write_tiny_model(Path(d) / "tiny.gguf")
        srv = start_llama_server(binary, model, ["--metrics"], log_dir=Path(d))
        try:
            if db is not None:
                _prefill_db(db, srv.url)
            where = str(db) if db is not None else str(Path(d) / "none.sqlite")
            argv = [sys.executable, "-m", "llmtop", "--url", srv.url, "--db", where]
            times = []
            for _ in range(runs):
                r = run_in_pty(argv, 10.0, marker=marker, stop_at_marker=True)
                if r.marker_s is not None:
                    times.append(r.marker_s)
            return times
        finally:
            srv.stop()


def run(days: int = 7, presses: int = 50, startup_runs: int = 5) -> list[dict]:
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        week = tmp / "week.sqlite"
        t = time.perf_counter()
        generate(week, days * DAY_S, time.time()).close()
        gen_s = time.perf_counter() - t
        rows.append(dict(benchmark="replay", metric=f"generate {days} d at 1 s (recorder)",
                         value=f"{gen_s:.0f} s", target="", ok=None))  # fmt: skip
        times = asyncio.run(_key_to_frame(week, presses))
        for key, values in times.items():
            p95 = _p95(values) * 1000
            rows.append(dict(benchmark="replay", metric=f"key → frame, {key} ({len(values)}×, {days} d DB)",
                             value=f"p50 {statistics.median(values) * 1000:.1f} / p95 {p95:.1f} ms",
                             target="p95 ≤ 50 ms", ok=p95 <= 50))  # fmt: skip
        hour = tmp / "hour.sqlite"
        starts = (
            ("dashboard first frame with a 1 h prefill", _startup(hour, startup_runs), "≤ 1000 ms"),
            ("dashboard first frame without history", _startup(None, startup_runs), ""),
            ("… the recorded hour in the plots",
             _startup(hour, startup_runs, marker=b"plots open with"), ""),
        )  # fmt: skip
        for label, vals, target in starts:
            med = statistics.median(vals) if vals else float("nan")
            rows.append(dict(benchmark="replay", metric=label,
                             value=f"{med * 1000:.0f} ms ({len(vals)}/{startup_runs} runs)",
                             target=target, ok=(bool(vals) and med <= 1.0) if target else None))  # fmt: skip
    return rows


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--presses", type=int, default=50)
    ap.add_argument("--startup-runs", type=int, default=5)
    a = ap.parse_args()
    for r in run(a.days, a.presses, a.startup_runs):
        ok = "" if r["ok"] is None else "yes" if r["ok"] else "NO"
        print(f"{r['metric']:<52} {r['value']:<30} {r['target']:<12} {ok}")


if __name__ == "__main__":
    main()
