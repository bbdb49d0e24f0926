"""Log flood: a supervised child writes 20 000 lines/s for 10 s while keys are pressed.

The real app runs in-process (`App.run_test`, 160×48) in child mode; the child is a small Python
script standing in for a very chatty llama-server (the flood is what is measured, not the server).
Reported: lines written vs lines counted by the store, key-press-to-repaint latency (p50/p95) for
a tab switch (1 ↔ 2) and for the follow toggle (f on the Logs tab), and RSS at the start, middle
and end of the flood ("memory flat").

Key-press-to-repaint is the time from posting the key event to the first frame the app hands to
its driver after the key's effect is in place (the tab is active / the follow state flipped):
`LlmtopApp._display` is wrapped to timestamp every frame.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.frame_wait import FrameWaiter

FLOOD = r"""
import sys, time
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
batch = rate // 100
n = 0
t0 = time.perf_counter()
out = sys.stdout
for tick in range(int(seconds * 100)):
    out.write("".join(f"0.00.{n + i:06d} I slot update_slots: flood line {n + i} of the benchmark\n" for i in range(batch)))
    out.flush()
    n += batch
    delay = t0 + (tick + 1) / 100 - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
sys.stderr.write(f"flood done: {n} lines\n")
"""


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _row(label: str, values: list[float]) -> dict:
    p95 = _p(values, 0.95) if values else float("nan")
    return dict(
        benchmark="",
        metric=f"key-press-to-repaint p50 / p95: {label}",
        value=f"{statistics.median(values):.1f} / {p95:.1f} ms ({len(values)} presses)"
        if values
        else "n/a",
        target="p95 ≤ 50 ms",
        ok=bool(values) and p95 <= 50,
    )


async def _bench(rate: int, seconds: float) -> list[dict]:
    from llmtop.commands import dashboard
    from llmtop.ui.app import create_app
    from llmtop.ui.panels.logs import LogsPanel

    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "flood.py"
        script.write_text(FLOOD)
        parser = argparse.ArgumentParser()
        dashboard.add_arguments(parser)
        args = parser.parse_args(["--no-restart"])
        args.server_argv = [sys.executable, str(script), str(rate), str(seconds)]
        session = dashboard.build_session(args)
        assert not isinstance(session, str), session
        app = create_app(session)
        frames = FrameWaiter(app)  # a frame painted while the flood runs is not the key's
        proc = psutil.Process()
        rss: list[int] = []
        switch: list[float] = []
        follow: list[float] = []
        expected = (rate // 100) * int(seconds * 100)
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            t_end = time.monotonic() + seconds
            i = 0
            while time.monotonic() < t_end:
                # 1 ↔ 2; on the Logs tab, f twice (pause, follow again) before going back.
                if app.active_tab == "logs":
                    panel = app.query_one(LogsPanel)
                    for _ in range(2):
                        want = not panel.follow
                        follow.append(
                            await frames.press("f", lambda w=want, p=panel: p.follow == w)
                        )
                        await asyncio.sleep(0.1)
                    key, tab = "1", "overview"
                else:
                    key, tab = "2", "logs"
                switch.append(await frames.press(key, lambda t=tab: app.active_tab == t))
                i += 1
                if i % 4 == 0:
                    rss.append(proc.memory_info().rss)
                await asyncio.sleep(0.1)
            # let the reader drain what is left
            deadline = time.monotonic() + 10
            while session.log_store.total_written < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            counted = sum(1 for line in session.log_store.lines() if "flood line" in line.text)
            total = session.log_store.total_written
            await pilot.press("q")
        await session.close()
    flood_lines = min(total, expected)
    mid = rss[len(rss) // 2] if rss else 0
    return [
        dict(
            benchmark=f"log flood ({rate} lines/s × {seconds:g} s)",
            metric="lines written / stored",
            value=f"{expected} / {flood_lines} (store keeps last {len(session.log_store.lines())}, "
            f"{counted} flood lines)",
            target="counts match",
            ok=total >= expected,
        ),
        _row("tab switch (1 ↔ 2)", switch),
        _row("follow toggle (f, Logs tab)", follow),
        dict(
            benchmark="",
            metric="RSS start / middle / end",
            value=" / ".join(f"{x / 2**20:.0f}" for x in (rss[0], mid, rss[-1])) + " MB"
            if rss
            else "n/a",
            target="flat",
            ok=bool(rss) and rss[-1] - rss[0] < 40 * 2**20,
        ),
    ]


def run(rate: int = 20_000, seconds: float = 10.0) -> list[dict]:
    return asyncio.run(_bench(rate, seconds))


if __name__ == "__main__":
    for row in run():
        print(row)
