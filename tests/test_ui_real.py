"""The dashboard end to end against a real llama-server (tiny model): attach and child mode."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from llmtop.control.supervisor import ChildSupervisor, RestartPolicy
from llmtop.model.launch_spec import LaunchSpec
from llmtop.session import Session
from llmtop.sources.logs import LogStore
from llmtop.ui.app import LlmtopApp, create_app
from llmtop.ui.panels.latency import LatencyPanel
from llmtop.ui.panels.logs import LogsPanel
from llmtop.ui.panels.prompt import PromptPanel
from llmtop.ui.screens.confirm import ConfirmScreen
from tests.realserver import RunningServer, free_port, server_argv
from tests.screen_text import screen_text

pytestmark = pytest.mark.real_server

SECRET = "sk-llmtop-test-SECRET-4711"


async def wait_until(pilot: object, cond: Callable[[], object], timeout: float = 60.0) -> None:
    """Let the app run until cond() is true (generous timeout; no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await pilot.pause(0.05)  # type: ignore[attr-defined]


def _tokens_predicted(srv: RunningServer) -> float:
    text = httpx.get(srv.url + "/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total"):
            return float(line.split()[-1])
    raise AssertionError("no tokens_predicted_total in /metrics")


def _attach_app(srv: RunningServer, api_key: str | None = None) -> LlmtopApp:
    session = Session(mode="attach", url=srv.url, api_key=api_key, refresh_s=0.5)
    return create_app(session)


def _healthy(app: LlmtopApp) -> bool:
    return app.latest is not None and app.latest.server.health == "ok"


async def test_attach_shows_ok_model_and_no_restart(llama_server: RunningServer) -> None:
    app = _attach_app(llama_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: _healthy(app) and app.latest.server.model_path)
        await pilot.pause(0.2)
        text = screen_text(app)
        assert "● ok" in text
        assert "tiny.gguf" in text
        assert "attached — not supervised" in text
        await pilot.press("r")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert any("not supervised" in n.message for n in app._notifications)
        await pilot.press("q")
    assert llama_server.proc.poll() is None  # attach mode never stops a server it did not start


async def test_probe_streams_a_reply_and_adds_a_row(llama_server: RunningServer) -> None:
    app = _attach_app(llama_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: _healthy(app))
        await pilot.press("3")
        panel = app.query_one(PromptPanel)
        panel.query_one("#n-predict").value = "48"  # type: ignore[attr-defined]
        chunks: list[str] = []
        original = panel.stream
        panel.stream = lambda c: (chunks.append(c), original(c))  # type: ignore[method-assign]
        await pilot.press("escape")
        await pilot.press("p")
        await wait_until(pilot, lambda: len(app.series.probes) == 1)
        await pilot.pause(0.2)
        result = app.series.probes[-1]
        assert result.error is None
        assert result.tokens > 0 and result.ttft_ms is not None
        assert len(chunks) > 1  # streamed, not one final blob
        assert panel.reply_text  # the reply is on screen
        table = app.query_one(LatencyPanel).table
        assert table.row_count == 1
        ttft_cell = str(table.get_row_at(0)[1])
        assert ttft_cell.endswith("ms")
        assert "TTFT" in screen_text(app)
        await pilot.press("q")


async def test_bad_prompt_input_sends_nothing(llama_server: RunningServer) -> None:
    before = _tokens_predicted(llama_server)
    app = _attach_app(llama_server)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: _healthy(app))
        await pilot.press("3")
        panel = app.query_one(PromptPanel)
        for prompt, n_predict, words in (("", "8", "prompt is empty"), ("hi", "x", "whole number")):
            panel.query_one("#prompt-text").text = prompt  # type: ignore[attr-defined]
            panel.query_one("#n-predict").value = n_predict  # type: ignore[attr-defined]
            await pilot.press("escape")
            await pilot.press("p")
            await pilot.pause(0.3)
            assert words in screen_text(app)
        assert len(app.series.probes) == 0
        await pilot.press("q")
    assert _tokens_predicted(llama_server) == before


async def test_api_key_is_never_rendered(server_factory: Callable[..., RunningServer]) -> None:
    srv = server_factory("--metrics", api_key=SECRET)
    app = _attach_app(srv, api_key=SECRET)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_until(pilot, lambda: _healthy(app) and app.latest.server.model_path)
        pages = []
        for key in "12345":
            await pilot.press(key)
            await pilot.pause(0.2)
            pages += [screen_text(app), app.export_screenshot()]
        await pilot.press("q")
    assert "tiny.gguf" in pages[0]  # authorised: /props answered with the key
    assert all(SECRET not in page for page in pages)


def _child_app(llama_server_bin: Path, tiny_model: Path, *extra: str) -> tuple[LlmtopApp, int]:
    port = free_port()
    argv = server_argv(llama_server_bin, tiny_model, port, "--metrics", *extra)
    store = LogStore()
    sup = ChildSupervisor(LaunchSpec.from_argv(argv), store, RestartPolicy(stop_timeout_s=5.0))
    session = Session(
        mode="child",
        url=f"http://127.0.0.1:{port}",
        controller=sup,
        log_store=store,
        refresh_s=0.5,
        api_key=SECRET if "--api-key" in extra else None,
    )
    return create_app(session), port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); look at its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


async def test_child_mode_logs_events_restart_and_clean_quit(
    llama_server_bin: Path, tiny_model: Path
) -> None:
    app, _ = _child_app(llama_server_bin, tiny_model, "--api-key", SECRET)
    sup = app.session.controller
    pids: list[int] = []
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_until(pilot, lambda: sup.state == "ready" and _healthy(app))
            first = sup.pid
            pids.append(first)
            await pilot.press("2")
            await wait_until(pilot, lambda: app.query_one(LogsPanel).log_view.line_count > 5)
            await pilot.pause(0.2)
            text = screen_text(app)
            assert "model loaded" in text  # events strip (and the log line)
            assert SECRET not in text
            # restart asks first, then a new process serves
            await pilot.press("r")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_until(pilot, lambda: sup.pid not in (None, first) and sup.state == "ready")
            pids.append(sup.pid)
            await wait_until(pilot, lambda: _healthy(app))
            assert not _alive(first)
            await pilot.press("q")
            await wait_until(pilot, lambda: not _alive(pids[-1]), timeout=20)
    finally:
        app.session.shutdown_sync()
    assert all(not _alive(pid) for pid in pids)


async def test_child_that_fails_at_once_shows_failed_and_its_error(
    llama_server_bin: Path, tmp_path: Path
) -> None:
    app, _ = _child_app(llama_server_bin, tmp_path / "missing.gguf")
    sup = app.session.controller
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: sup.state == "failed", timeout=60)
            await wait_until(
                pilot,
                lambda: (
                    "server failed" in screen_text(app) and "failed (child)" in screen_text(app)
                ),
                timeout=10,
            )
            text = screen_text(app)
            assert sup.last_error_lines, "the supervisor kept the server's error lines"
            assert sup.last_error_lines[-1][:40] in text
            await pilot.press("q")
    finally:
        app.session.shutdown_sync()


async def test_hanging_server_keeps_the_ui_responsive_and_probe_cancels(
    llama_server: RunningServer,
) -> None:
    """Every endpoint hangs (fault proxy in front of the real server): keys still work, the
    dashboard says what is wrong, a hanging probe is cancelled with Esc, and it recovers."""
    from tests.faultserver import FaultServer

    with FaultServer(upstream=llama_server.url, fault="hang") as proxy:
        session = Session(mode="attach", url=proxy.url, refresh_s=0.5)
        app = create_app(session)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: app.latest is not None, timeout=30)
            assert app.latest.server.health != "ok"
            await pilot.press("3")
            await pilot.press("escape", "p")
            panel = app.query_one(PromptPanel)
            await wait_until(pilot, lambda: panel.running, timeout=10)
            await pilot.press("escape")  # cancel
            await wait_until(pilot, lambda: not panel.running, timeout=10)
            assert "cancelled" in screen_text(app)
            await pilot.press("1")  # still responsive
            assert app.active_tab == "overview"
            proxy.set_fault(None)  # the server answers again
            await wait_until(pilot, lambda: _healthy(app), timeout=30)
            await pilot.press("q")
