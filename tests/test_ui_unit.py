"""The dashboard in unit mode, end to end: `llmtop --unit NAME --user` on a real llama-server unit
in the confined systemd box — state and MainPID on screen, the journal in the log panel, and
`r` + `y` restarting the unit through systemd (new MainPID shown, unit left running on quit)."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llmtop.commands import dashboard
from llmtop.session import Session, UnitAccess
from llmtop.ui.app import LlmtopApp, create_app
from llmtop.ui.panels.logs import LogsPanel
from llmtop.ui.screens.confirm import ConfirmScreen
from tests.realserver import free_port, server_argv, wait_healthy
from tests.screen_text import screen_text
from tests.systemd_box.box import SystemdBox
from tests.systemd_box.fixtures import TEST_API_KEY, BoxUnit

pytestmark = [pytest.mark.systemd, pytest.mark.real_server, pytest.mark.timeout(240)]


async def wait_until(pilot: object, cond: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            app = pilot.app  # type: ignore[attr-defined]
            raise AssertionError(f"condition not met within {timeout} s; screen:\n"
                                 f"{screen_text(app)}")  # fmt: skip
        await pilot.pause(0.05)  # type: ignore[attr-defined]


def _unit_session(box: SystemdBox, unit: BoxUnit) -> Session:
    parser = argparse.ArgumentParser()
    dashboard.add_arguments(parser)
    args = parser.parse_args(["--unit", unit.name, "--user", "--refresh", "0.5"])
    args.server_argv = []
    # the product path, with systemctl/journal pointed into the box
    access = UnitAccess(tuple(box.command_prefix), str(box.journal_dir))
    session = dashboard.build_session(args, access=access)
    assert isinstance(session, Session), session
    session.gpu_factory = None  # no GPU in this test
    return session


def _shows(app: LlmtopApp, *needles: str) -> bool:
    text = screen_text(app)
    return all(n in text for n in needles)


async def test_unit_mode_dashboard_shows_state_journal_and_restarts(
    systemd_box: SystemdBox, llama_unit: BoxUnit
) -> None:
    session = _unit_session(systemd_box, llama_unit)
    assert session.mode == "unit" and session.url == llama_unit.url
    first = llama_unit.main_pid()
    app = create_app(session)
    async with app.run_test(size=(240, 40)) as pilot:
        await wait_until(
            pilot,
            lambda: (
                app.latest is not None
                and app.latest.server.health == "ok"
                and _shows(app, llama_unit.name, "active (running)", f"pid {first}")
            ),
        )
        text = screen_text(app)
        assert "--user" in text and "(unit)" in text
        assert TEST_API_KEY not in text

        # the unit's journal in the log panel (llama-server's own startup lines)
        await pilot.press("2")
        listening = f"listening on {llama_unit.url}"
        await wait_until(pilot, lambda: _shows(app, "model loaded", listening), 30)
        assert any(ln.stream == "journal" for ln in session.log_store.lines())
        await pilot.press("1")

        # restart through systemd: confirm first, then a new MainPID on screen
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
        assert f"pid {first}" in screen_text(app)  # the question names the running process
        await pilot.press("y")

        def restarted() -> bool:
            pid = llama_unit.main_pid()
            return pid not in (0, first) and _shows(app, "active (running)", f"pid {pid}")

        await wait_until(pilot, restarted, 90)
        second = llama_unit.main_pid()
        await asyncio.to_thread(wait_healthy, llama_unit.url, 60)
        await wait_until(pilot, lambda: app.latest is not None and app.latest.server.health == "ok")
        assert TEST_API_KEY not in screen_text(app)
        await pilot.press("q")
    # quitting never touches a unit
    assert llama_unit.show("ActiveState")["ActiveState"] == "active"
    assert llama_unit.main_pid() == second


async def test_two_units_each_show_their_own_journal(
    systemd_box: SystemdBox,
    unit_factory: Callable[..., BoxUnit],
    llama_server_bin: Path,
    tiny_model: Path,
) -> None:
    """`--unit A --unit B`: the logs tab shows the focused unit's journal only, and `>` turns it
    to the other unit's (two journals in one stream would mix two servers' failures)."""
    units: list[BoxUnit] = []
    for _ in range(2):
        port = free_port()
        unit = unit_factory(server_argv(llama_server_bin, tiny_model, port, "-ngl", "0"))
        unit.port = port
        units.append(unit)
    for unit in units:
        await asyncio.to_thread(wait_healthy, unit.url, 60)
    a, b = units
    parser = argparse.ArgumentParser()
    dashboard.add_arguments(parser)
    args = parser.parse_args(["--unit", a.name, "--unit", b.name, "--user", "--refresh", "0.5"])
    args.server_argv = []
    access = UnitAccess(tuple(systemd_box.command_prefix), str(systemd_box.journal_dir))
    session = dashboard.build_session(args, access=access)
    assert isinstance(session, Session), session
    session.gpu_factory = None
    assert [e.url for e in session.servers] == [a.url, b.url]

    def log_text(app: LlmtopApp) -> str:
        return "\n".join(app.query_one(LogsPanel).log_view.lines)

    app = create_app(session)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_until(pilot, lambda: app.latest is not None and len(app.latest.servers) == 2)
        await pilot.press("2")
        await wait_until(pilot, lambda: f"listening on {a.url}" in log_text(app), 30)
        assert f"listening on {b.url}" not in log_text(app)

        await pilot.press("greater_than_sign")
        await wait_until(pilot, lambda: f"listening on {b.url}" in log_text(app), 30)
        assert f"listening on {a.url}" not in log_text(app)  # rewritten, not appended
        assert f"listening on {a.url}" not in screen_text(app)

        await pilot.press("less_than_sign")
        await wait_until(pilot, lambda: f"listening on {a.url}" in log_text(app), 30)
        assert f"listening on {b.url}" not in log_text(app)
        await pilot.press("q")
