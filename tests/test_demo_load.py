"""`llmtop demo`'s light periodic load, against a real llama-server: a short prompt every few
seconds through the probe path, so the tokens/s and latency the dashboard shows move."""

from __future__ import annotations

import time
from collections.abc import Callable

from llmtop.session import Session
from llmtop.ui.demo_load import DemoApp
from tests.realserver import RunningServer


async def wait_until(pilot: object, cond: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        await pilot.pause(0.05)  # type: ignore[attr-defined]


async def test_demo_load_moves_tokens_per_second_and_latency(llama_server: RunningServer) -> None:
    session = Session(mode="attach", url=llama_server.url, refresh_s=0.3)
    app = DemoApp(session, load_every_s=0.8)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_until(pilot, lambda: len(app.series.probes) >= 2)
        ok = [p for p in app.series.probes if p.error is None]
        assert ok and all(p.ttft_ms and p.tokens for p in ok)  # latency measured
        # the server generated between two samples: tokens/s moved off zero
        await wait_until(pilot, lambda: any((g or 0) > 0 for g in app.series.gen_tps))
        assert any("demo: a short prompt every" in n.message for n in app._notifications)  # noqa: SLF001
        await pilot.press("q")
