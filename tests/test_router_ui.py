"""The dashboard on a real router-mode llama-server (llmtop supervises the router): the model
table lists both models, L asks first and then loads the selected one, l shows only that model's
log lines, U asks and unloads. The router and every child it had are gone at the end (by PID)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from llmtop.control.supervisor import ChildSupervisor, RestartPolicy
from llmtop.model.launch_spec import LaunchSpec
from llmtop.session import Session
from llmtop.snapshot import ModelStatus
from llmtop.sources.logs import LogStore
from llmtop.sources.router import model_log_prefix
from llmtop.ui.app import LlmtopApp, create_app
from llmtop.ui.panels.logs import LogsPanel
from llmtop.ui.screens.confirm import ConfirmScreen
from tests.realserver import free_port
from tests.screen_text import screen_text
from tests.test_router import router_argv, two_models  # noqa: F401 - the fixture

pytestmark = pytest.mark.real_server


async def wait_until(pilot: object, cond: Callable[[], object], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.05)  # type: ignore[attr-defined]


def model(app: LlmtopApp, model_id: str) -> ModelStatus | None:
    snap = app.latest
    if snap is None:
        return None
    return next((m for m in snap.server.models if m.id == model_id), None)


def status_of(app: LlmtopApp, model_id: str) -> str | None:
    m = model(app, model_id)
    return m.status if m is not None else None


def children(pid: int | None) -> list[int]:
    if pid is None:
        return []
    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


async def test_model_table_load_confirm_logs_and_unload(
    llama_server_bin: Path,
    two_models: Path,  # noqa: F811 - the fixture
) -> None:
    port = free_port()
    store = LogStore()
    argv = router_argv(llama_server_bin, two_models, port)
    sup = ChildSupervisor(LaunchSpec.from_argv(argv), store, RestartPolicy(stop_timeout_s=5.0))
    session = Session(
        mode="child",
        url=f"http://127.0.0.1:{port}",
        controller=sup,
        log_store=store,
        refresh_s=0.5,
    )
    app = create_app(session)
    seen: set[int] = set()
    router_pid: int | None = None
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_until(pilot, lambda: status_of(app, "tiny-b") == "unloaded")
            await wait_until(pilot, lambda: "tiny-b" in screen_text(app))
            router_pid = sup.pid
            text = screen_text(app)
            assert "tiny-a" in text and "unloaded" in text and "2 models, 0 loaded" in text

            await pilot.press("L")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert "Load model tiny-a?" in screen_text(app)
            assert children(router_pid) == []  # asked, not done
            await pilot.press("y")
            await wait_until(pilot, lambda: status_of(app, "tiny-a") == "loaded")
            await wait_until(pilot, lambda: (m := model(app, "tiny-a")) and m.pid is not None)
            a = model(app, "tiny-a")
            assert a is not None and a.pid is not None and a.port is not None
            seen.update(children(router_pid))
            assert a.pid in seen
            await wait_until(pilot, lambda: f"pid {a.pid}" in screen_text(app))
            assert status_of(app, "tiny-b") == "unloaded"

            await pilot.press("l")  # the selected model's log lines only
            panel = app.query_one(LogsPanel)
            prefix = model_log_prefix(a.port).strip()
            await wait_until(pilot, lambda: panel.needle == prefix)
            await wait_until(pilot, lambda: panel.log_view.line_count > 3)
            assert all(prefix in line for line in panel.log_view.lines)
            assert len(store.lines()) > panel.log_view.line_count  # the router's own lines hidden

            await pilot.press("1")
            await pilot.press("U")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            assert f"Unload model tiny-a? (stops pid {a.pid}" in screen_text(app)
            await pilot.press("y")
            await wait_until(pilot, lambda: status_of(app, "tiny-a") == "unloaded")
            await pilot.press("q")
    finally:
        if sup.pid is not None:
            await sup.stop()
    for pid in sorted(seen | ({router_pid} if router_pid else set())):
        try:
            psutil.Process(pid).wait(5)
        except psutil.NoSuchProcess:
            continue
        except psutil.TimeoutExpired:
            psutil.Process(pid).kill()
            raise AssertionError(f"pid {pid} outlived the dashboard") from None
