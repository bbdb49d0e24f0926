"""Several servers in one dashboard (issue 12, item 3), driven with Pilot: `llmtop --url A --url
B` shows the server bar (one line per server), `>` / `<` move the focus and the server panel
follows; a server that is down says so on its line while the other stays ok; with one server
there is no bar; the GPU tab splits each GPU's memory by server."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable

import pytest

from llmtop.commands import dashboard
from llmtop.session import Session
from llmtop.snapshot import GpuProcess, ServerMemory, ServerStatus
from llmtop.ui.app import LlmtopApp, SnapshotReady, create_app
from llmtop.ui.widgets.gpu_servers import GpuServers
from llmtop.ui.widgets.server_bar import ServerBar
from tests.nvml_sim.scenarios import GiB
from tests.realserver import RunningServer, free_port
from tests.sample import sample_gpu, sample_snapshot
from tests.screen_text import screen_text
from tests.test_ui_real import wait_until


def _session(*argv: str) -> Session:
    parser = argparse.ArgumentParser()
    dashboard.add_arguments(parser)
    args = parser.parse_args([*argv, "--refresh", "0.5"])
    args.server_argv = []
    session = dashboard.build_session(args)
    assert isinstance(session, Session), session
    return session


def _bar_lines(app: LlmtopApp) -> list[str]:
    return [line for line in screen_text(app).splitlines() if "VRAM" in line and "http" in line]


def _all_ok(app: LlmtopApp, n: int = 2) -> bool:
    snap = app.latest
    return (
        snap is not None
        and len(snap.servers) == n
        and all(s.health == "ok" and s.model_alias for s in snap.servers)
    )


@pytest.mark.real_server
async def test_two_urls_show_the_bar_and_the_focus_key_switches_the_server(
    server_factory: Callable[..., RunningServer],
) -> None:
    chat = server_factory("--metrics", "--alias", "chat")
    embed = server_factory("--metrics", "--alias", "embed")
    session = _session("--url", chat.url, "--url", embed.url)
    assert [e.url for e in session.servers] == [chat.url, embed.url]
    app = create_app(session)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: _all_ok(app))
        await pilot.pause(0.1)
        assert app.query_one(ServerBar).display
        lines = _bar_lines(app)
        assert len(lines) == 2, screen_text(app)
        assert "▶ 1 ● ok" in lines[0] and "chat" in lines[0] and chat.url in lines[0]
        assert "  2 ● ok" in lines[1] and "embed" in lines[1] and embed.url in lines[1]
        assert "model    chat" in screen_text(app)  # the server panel shows the focused one
        assert app.latest is not None and app.latest.server.url == chat.url
        await wait_until(pilot, lambda: len(app.series.times) >= 2)  # chat's plot history
        switched_at = app.latest.time

        await pilot.press("greater_than_sign")
        await wait_until(
            pilot, lambda: app.latest is not None and app.latest.server.url == embed.url
        )
        # the overview's sparklines start afresh: nothing of chat's is plotted as embed's
        assert all(t > switched_at for t in app.series.times)
        await pilot.pause(0.1)
        assert session.url == embed.url and session.mode == "attach"
        text = screen_text(app)
        assert "model    embed" in text and "model    chat" not in text
        lines = _bar_lines(app)
        assert "▶ 2" in lines[1] and "▶" not in lines[0]
        assert embed.url in screen_text(app).splitlines()[0]  # the title names the focused one
        assert app.latest.host.process is not None
        assert app.latest.host.process.pid == embed.pid  # its process, not the first one's

        await pilot.press("less_than_sign")
        await wait_until(
            pilot, lambda: app.latest is not None and app.latest.server.url == chat.url
        )
        await pilot.press("r")  # attached: not controllable, whichever has the focus
        await pilot.pause()
        assert any("not supervised" in n.message for n in app._notifications)
        await pilot.press("q")
    assert chat.proc.poll() is None and embed.proc.poll() is None  # attach never stops them


@pytest.mark.real_server
async def test_a_server_that_is_down_says_so_on_its_line(llama_server: RunningServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    app = create_app(_session("--url", llama_server.url, "--url", dead))
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(
            pilot,
            lambda: (
                app.latest is not None
                and [s.health for s in app.latest.servers] == ["ok", "unreachable"]
                and app.latest.server.model_path is not None
            ),
        )
        await pilot.pause(0.1)
        ok_line, down_line = _bar_lines(app)
        assert "● ok" in ok_line and llama_server.url in ok_line
        assert "● unreachable" in down_line and dead in down_line and "refused" in down_line
        # the focused (first) server's panels are unaffected by the other one being down
        assert "model    tiny.gguf" in screen_text(app)
        await pilot.press("greater_than_sign")
        await wait_until(pilot, lambda: app.latest is not None and app.latest.server.url == dead)
        assert app.latest.server.health == "unreachable"
        assert "server_down" in [a.kind for a in app.latest.alerts]
        await pilot.press("q")


@pytest.mark.real_server
async def test_one_server_has_no_bar(llama_server: RunningServer) -> None:
    session = _session("--url", llama_server.url)
    assert session.servers == [] and session.mode == "attach"
    app = create_app(session)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: app.latest is not None and app.latest.server.health == "ok")
        await pilot.pause(0.1)
        assert app.latest.servers == ()
        assert not app.query_one(ServerBar).display
        assert _bar_lines(app) == []
        await pilot.press("greater_than_sign")  # nothing to move to: nothing happens
        await pilot.pause()
        assert session.url == llama_server.url
        await pilot.press("q")


async def test_gpu_tab_splits_memory_by_server() -> None:
    """Injected snapshot (auto_collect=False): the GPU tab's line names each server's share and
    the memory of processes that are none of them."""
    chat = ServerStatus(url="http://127.0.0.1:8080", health="ok", model_alias="chat", pid=11)
    embed = ServerStatus(url="http://127.0.0.1:8081", health="sleeping", model_alias="embed")
    gpu = dataclasses.replace(
        sample_gpu(0),
        processes=(GpuProcess(11, 4 * GiB), GpuProcess(12, 1 * GiB), GpuProcess(99, GiB // 2)),
        server_memory_by_url=(ServerMemory(chat.url, 4 * GiB), ServerMemory(embed.url, 1 * GiB)),
    )
    snap = dataclasses.replace(sample_snapshot(), server=chat, servers=(chat, embed), gpus=(gpu,))
    app = create_app(Session(mode="attach", url=chat.url), auto_collect=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        app.post_message(SnapshotReady(snap))
        await wait_until(pilot, lambda: app.latest is snap)
        await pilot.pause()
        lines = _bar_lines(app)
        assert "● sleeping" in lines[1] and "VRAM 1.0 GiB" in lines[1]
        assert "VRAM 4.0 GiB" in lines[0]
        await pilot.press("4")
        await wait_until(pilot, lambda: app.query_one(GpuServers).display)
        await pilot.pause()
        text = screen_text(app)
        assert "VRAM by server" in text
        assert "GPU0  1 chat 4.0 GiB · 2 embed 1.0 GiB · others 512.0 MiB" in text
        await pilot.press("q")
