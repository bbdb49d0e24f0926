"""SVG snapshots of the dashboard on deterministic sample data (frozen clock, fixed timestamps).

Regenerate deliberately after a UI change and review the diff:
    .venv/bin/pytest tests/test_ui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import time

import pytest
from textual.pilot import Pilot

from tests.sample import load_sample, sample_app


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def _compare(snap_compare: object, size: tuple[int, int], press: tuple[str, ...] = ()) -> bool:
    app = sample_app()

    async def run_before(pilot: Pilot[None]) -> None:
        await load_sample(app, pilot)
        for key in press:
            await pilot.press(key)
        await pilot.pause()

    return snap_compare(app, terminal_size=size, run_before=run_before)  # type: ignore[operator]


def test_main_screen_80x24(snap_compare: object) -> None:
    assert _compare(snap_compare, (80, 24))


def test_main_screen_160x48(snap_compare: object) -> None:
    assert _compare(snap_compare, (160, 48))


def test_gpu_tab_80x24(snap_compare: object) -> None:
    assert _compare(snap_compare, (80, 24), ("4",))


def test_gpu_tab_160x48(snap_compare: object) -> None:
    assert _compare(snap_compare, (160, 48), ("4",))
