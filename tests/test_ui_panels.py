"""The dashboard on injected snapshots (the collector's own message path): what the operator sees.

Snapshots arrive by `SnapshotReady`, as the collector's do; deterministic. Only the periodic
probe needs a real llama-server (a probe is a real request).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import httpx
import pytest

from llmtop.session import DiscoveredTarget, Session
from llmtop.snapshot import ServerStatus, Snapshot, SupervisorStatus
from llmtop.sources.logs import LogStore
from llmtop.ui.app import LlmtopApp, SnapshotReady, create_app
from llmtop.ui.panels.logs import LogsPanel
from llmtop.ui.panels.prompt import PromptPanel
from llmtop.ui.screens.confirm import ConfirmScreen
from llmtop.ui.screens.help import HelpScreen
from tests.realserver import RunningServer
from tests.sample import T0, load_sample, sample_app, sample_snapshot
from tests.screen_text import screen_text


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


async def _inject(app: LlmtopApp, pilot: object, snap: Snapshot) -> None:
    app.post_message(SnapshotReady(snap))
    await pilot.pause()  # type: ignore[attr-defined]


async def wait_until(pilot: object, cond: Callable[[], object], timeout: float = 30.0) -> None:
    """Let the app run until cond() holds (a deadline, never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"condition not met within {timeout} s"
        await pilot.pause(0.02)  # type: ignore[attr-defined]


async def test_overview_80x24_shows_the_essentials() -> None:
    app = sample_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await load_sample(app, pilot)
        text = screen_text(app)
    assert "● ok" in text
    assert "ready (child)" in text
    assert "llama-3.1-8b-instruct" in text
    assert "8192" in text  # n_ctx
    assert "slot 0  processing  ctx 508/8192" in text
    assert "gen 38.0" in text  # tok/s from the counters
    assert "pid 4242" in text and "RSS 1.4 GiB" in text
    assert "GPU0" in text and "84 °C" in text
    assert "3 °C below thermal slowdown" in text  # the alert strip
    assert "model loaded" in text  # the events strip
    assert "TTFT" in text  # last probe line
    assert len(text.splitlines()) == 24


async def test_health_in_words_when_the_server_is_down() -> None:
    app = sample_app(mode="attach")
    snap = dataclasses.replace(
        sample_snapshot(),
        server=ServerStatus(
            url="http://127.0.0.1:8080", health="unreachable", detail="connection refused"
        ),
        supervisor=SupervisorStatus(mode="attach", state="ready"),
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await _inject(app, pilot, snap)
        text = screen_text(app)
    assert "health   ● unreachable" in text
    assert "connection refused" in text
    assert "attached — not supervised" in text


async def test_failed_child_shows_the_servers_error_lines() -> None:
    app = sample_app()
    sup = SupervisorStatus(
        mode="child",
        state="failed",
        restarts=5,
        last_exit="exit code 1",
        last_error_lines=("llama_model_load: error loading model: failed to open /x.gguf",),
    )
    snap = dataclasses.replace(
        sample_snapshot(),
        server=ServerStatus(url="http://127.0.0.1:8080", health="unreachable"),
        supervisor=sup,
    )
    async with app.run_test(size=(100, 30)) as pilot:
        await _inject(app, pilot, snap)
        text = screen_text(app)
    assert "failed (child)" in text
    assert "restarts 5  last: exit code 1" in text
    assert "failed to open /x.gguf" in text


SECRET = "sk-Zq8vX3kP9wLm2Rt7-panel"


@pytest.mark.parametrize(
    "key_args", [("--api-key", SECRET), (f"--api-key={SECRET}",)], ids=["separate", "equals"]
)
async def test_api_key_never_on_screen(key_args: tuple[str, ...]) -> None:
    """The secret goes in as the operator types it (`llmtop -- llama-server … --api-key KEY`),
    through the dashboard's own session builder, the supervisor's status and the panels."""
    import argparse

    from llmtop.commands import dashboard

    parser = argparse.ArgumentParser()
    dashboard.add_arguments(parser)
    args = parser.parse_args([])
    # the key first: the server panel's argv line is cut at its width, and must show the key
    args.server_argv = ["/opt/llama.cpp/bin/llama-server", *key_args, "-m", "/srv/m.gguf",
                        "--port", "8080"]  # fmt: skip
    session = dashboard.build_session(args)
    assert isinstance(session, Session) and session.controller is not None
    assert session.api_key == SECRET  # the key reaches the HTTP client, not the screen
    sup = session.controller.status()  # the real redaction path: spec → SupervisorStatus
    assert SECRET not in repr(sup)
    snap = dataclasses.replace(sample_snapshot(), supervisor=sup)
    app = create_app(session, clock=lambda: T0, auto_collect=False)
    async with app.run_test(size=(160, 48)) as pilot:
        await _inject(app, pilot, snap)
        await wait_until(pilot, lambda: "argv " in screen_text(app))
        first = screen_text(app)
        seen = []
        for key in "123451":
            await pilot.press(key)
            await pilot.pause()
            seen.append(screen_text(app))
            seen.append(app.export_screenshot())
    # the argv line is on screen, its key redacted: the check below looks at real text
    argv_line = next(ln for ln in first.splitlines() if "argv " in ln)
    assert "llama-server --api-key" in argv_line and "***" in argv_line, argv_line
    assert all(SECRET not in page for page in [first, *seen])
    assert all(SECRET[3:11] not in page for page in seen)  # not even a piece of it


async def test_attach_mode_has_no_restart_action() -> None:
    app = sample_app(mode="attach")
    async with app.run_test(size=(80, 24)) as pilot:
        await load_sample(app, pilot)
        for key in ("r", "s", "S"):
            await pilot.press(key)
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen)
        notes = [n.message for n in app._notifications]
    assert any("not supervised" in n for n in notes)


async def test_help_lists_every_key() -> None:
    app = sample_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)
    for word in ("restart", "stop", "start", "probe", "periodic", "search", "follow", "quit"):
        assert word in text


async def test_tabs_switch_by_number() -> None:
    app = sample_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await load_sample(app, pilot)
        for key, tab in (
            ("2", "logs"),
            ("3", "probe"),
            ("4", "gpu"),
            ("5", "tuning"),
            ("1", "overview"),
        ):
            await pilot.press(key)
            await pilot.pause()
            assert app.active_tab == tab


async def test_logs_panel_batches_follow_and_search() -> None:
    app = sample_app()
    store = app.session.log_store
    async with app.run_test(size=(100, 30)) as pilot:
        await load_sample(app, pilot)
        await pilot.press("2")
        panel = app.query_one(LogsPanel)
        await wait_until(pilot, lambda: panel.log_view.line_count == len(store))
        text = screen_text(app)
        assert "listening on http://127.0.0.1:8080" in text  # a log line
        assert "✓ srv  llama_server: model loaded" in text  # events strip
        # 5 000 lines arrive at once: they land in one batch, none lost.
        before = panel.log_view.line_count
        store.extend((f"flood line {i}", "stdout") for i in range(5000))
        await wait_until(pilot, lambda: panel.log_view.line_count >= before + 5000)
        assert panel.log_view.line_count == before + 5000
        assert "flood line 4999" in screen_text(app)
        # pause: the view stops following
        await pilot.press("f")
        await pilot.pause()
        assert "paused" in screen_text(app)
        await pilot.press("f")
        # search filters and keeps only matching lines
        await pilot.press("slash")
        await pilot.pause()
        for ch in "memory slot":
            await pilot.press("space" if ch == " " else ch)
        await pilot.press("enter")
        await pilot.pause()
        assert panel.log_view.line_count == 1
        assert "filter: memory slot" in screen_text(app)
        await pilot.press("slash")
        await pilot.press("escape")
        await pilot.pause()
        assert panel.log_view.line_count == len(store)


@pytest.mark.parametrize(
    ("prompt", "n_predict", "words"),
    [
        ("", "32", "prompt is empty"),
        ("hello", "abc", "whole number"),
        ("hello", "-5", "must not be negative"),
    ],
)
async def test_prompt_validation_is_inline_and_sends_nothing(
    prompt: str, n_predict: str, words: str
) -> None:
    # A URL nothing listens on: a request, if one were sent, would come back as an error row.
    store = LogStore()
    session = Session(mode="attach", url="http://127.0.0.1:9", log_store=store)
    app = create_app(session, clock=lambda: T0, auto_collect=False)
    fired: list[object] = []
    async with app.run_test(
        size=(80, 24),
        message_hook=lambda m: fired.append(m) if isinstance(m, PromptPanel.Fire) else None,
    ) as pilot:
        await pilot.press("3")
        panel = app.query_one(PromptPanel)
        panel.query_one("#prompt-text").text = prompt  # type: ignore[attr-defined]
        panel.query_one("#n-predict").value = n_predict  # type: ignore[attr-defined]
        await pilot.press("escape")
        await pilot.press("p")
        await pilot.pause()
        text = screen_text(app)
    assert words in text
    assert fired == []
    assert len(app.series.probes) == 0


async def test_no_server_screen_says_how_to_start_one() -> None:
    session = Session(mode="none", url=None)
    app = create_app(session)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        await pilot.press("q")
    assert "No llama-server found" in text
    assert "llmtop -- /path/to/llama-server -m" in text
    assert "llmtop --url http://127.0.0.1:8080" in text


async def test_several_servers_give_a_pick_list() -> None:
    session = Session(
        mode="none",
        url=None,
        candidates=[
            DiscoveredTarget(
                "http://127.0.0.1:8080", 101, "pid 101  http://127.0.0.1:8080  a.gguf"
            ),
            DiscoveredTarget(
                "http://127.0.0.1:8081", 102, "pid 102  http://127.0.0.1:8081  b.gguf"
            ),
        ],
    )
    app = create_app(session)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "2 llama-servers found" in text and "b.gguf" in text
        await pilot.press("down")
        await pilot.press("enter")
        await pilot.pause()
        assert session.mode == "attach"
        assert session.url == "http://127.0.0.1:8081"
        await pilot.press("q")


async def test_ctrl_c_and_q_quit() -> None:
    for key in ("ctrl+c", "q"):
        app = sample_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await load_sample(app, pilot)
            await pilot.press(key)
            await pilot.pause()
        # quitting went through the clean shutdown (a supervised child would be stopped)
        assert app.session._closed


def _tokens_predicted(srv: RunningServer) -> float:
    for line in httpx.get(srv.url + "/metrics", timeout=5).text.splitlines():
        if line.startswith("llamacpp:tokens_predicted_total"):
            return float(line.split()[-1])
    raise AssertionError("no tokens_predicted_total in /metrics")


@pytest.mark.real_server
async def test_periodic_probe_fires_real_probes_until_toggled_off(
    llama_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """P starts real probes on a timer (1 s here instead of 30 s); P again stops them. Nothing
    else fires a probe: no key 'p', no collector."""
    import llmtop.ui.probe_keys as probe_keys

    monkeypatch.setattr(probe_keys, "PERIODIC_PROBE_S", 1.0)
    session = Session(mode="attach", url=llama_server.url, log_store=LogStore())
    app = create_app(session, auto_collect=False)
    before = _tokens_predicted(llama_server)
    async with app.run_test(size=(100, 30)) as pilot:
        started = time.time()
        await pilot.press("P")
        await wait_until(pilot, lambda: "every 1 s" in screen_text(app))
        await wait_until(pilot, lambda: len(app.series.probes) >= 2, timeout=60)
        await pilot.press("P")
        await wait_until(pilot, lambda: "every 1 s" not in screen_text(app))
        assert app._periodic_timer is None and app.periodic_probe_s is None
        panel = app.query_one(PromptPanel)
        await wait_until(pilot, lambda: not panel.running)  # a probe in flight may finish
        probes = list(app.series.probes)
    assert len(probes) >= 2
    for probe in probes:
        assert probe.ok and probe.tokens > 0, probe
        assert probe.started_at >= started and probe.ttft_ms is not None
    # on the 1 s timer, not back to back: a start may lag its tick under load (a worker starts
    # it), so the spacing is checked with slack and the count against the time they took
    assert probes[1].started_at - probes[0].started_at >= 0.5
    assert len(probes) <= (probes[-1].started_at - started) / 1.0 + 1
    # the server counted them: its /metrics says it generated (at least) those tokens
    assert _tokens_predicted(llama_server) >= before + sum(p.tokens for p in probes)


async def test_revert_key_outside_unit_mode_says_not_a_unit() -> None:
    for mode in ("child", "attach"):
        app = sample_app(mode=mode)
        async with app.run_test(size=(80, 24)) as pilot:
            await load_sample(app, pilot)
            await pilot.press("R")
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen)
            notes = [n.message for n in app._notifications]
        assert any("not a systemd unit" in n for n in notes), (mode, notes)


async def test_help_lists_the_drop_in_revert_key() -> None:
    app = sample_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        text = screen_text(app)
    line = next(ln for ln in text.splitlines() if "drop-in" in ln)
    assert "R" in line and "revert" in line and "unit mode only" in line


def _svg_rows(svg: str) -> dict[str, list[str]]:
    """The text runs of an exported screenshot, per screen line, as SVG viewers draw them."""
    import html
    import re

    rows: dict[str, list[str]] = {}
    for line_id, body in re.findall(r'clip-path="url\(#[\w-]+-line-(\d+)\)">([^<]*)</text>', svg):
        rows.setdefault(line_id, []).append(html.unescape(body))
    return rows


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_screenshot_keeps_spaces_between_coloured_words(size: tuple[int, int]) -> None:
    # SVG viewers drop the spaces a text run starts with: "● okhttp://…", "84 °CSM 2235 MHz".
    app = sample_app()
    async with app.run_test(size=size) as pilot:
        await load_sample(app, pilot)
        svg = app.export_screenshot()
        text = screen_text(app)
    rows = _svg_rows(svg)
    assert len(rows) >= size[1] - 8  # the parse found the screen's lines
    runs = [run for line in rows.values() for run in line]
    # (labels padded on both sides, " q " or " Server ", sit on their own background)
    bad = [r for r in runs if r[:1] == "\xa0" and r.strip("\xa0 ") and r[-1:] != "\xa0"]
    for words in ("● ok  http://", "processing  ctx", "ms  ITL p50", "°C SM", "ready (child)"):
        assert words in text
    assert bad == []  # no run starts with spaces before words (they would be drawn joined)


def _host_rows(app: LlmtopApp) -> list[str]:
    return [line for line in screen_text(app).splitlines() if "RAM " in line or "up " in line]


async def test_a_tick_repaints_changed_lines_and_a_theme_change_repaints_all() -> None:
    """Each panel line is cached and only changed lines are rendered again (idle CPU budget):
    the new values must still reach the screen, unchanged lines must stay, and a theme change
    must repaint every line in the new colours."""
    app = sample_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await load_sample(app, pilot)
        first = sample_snapshot()
        host = first.host
        assert host.process is not None
        later = dataclasses.replace(
            first,
            time=first.time + 1,
            host=dataclasses.replace(
                host,
                memory_used_bytes=20_480 << 20,
                process=dataclasses.replace(host.process, uptime_s=7_325.0),
            ),
        )
        await _inject(app, pilot, later)
        text = screen_text(app)
        assert "RAM      20.0 GiB / 62.7 GiB (32 %)" in text
        assert "up 2h02m" in text
        assert "load     1.21  1.05  0.98" in text  # an unchanged line is still there
        assert "pid 4242" in text and "RSS 1.4 GiB" in text

        panel = app.query_one("#host")
        # what a relayout measures is the new text, not the first one
        assert "RAM      20.0 GiB / 62.7 GiB (32 %)" in panel.visual.plain
        before = {s.style for s in panel.render_line(1)}  # the RAM line
        app.theme = "textual-light" if app.theme != "textual-light" else "nord"
        await pilot.pause()
        after = {s.style for s in panel.render_line(1)}
        assert before != after  # rendered again in the new theme's colours
        assert "RAM      20.0 GiB / 62.7 GiB (32 %)" in screen_text(app)


class _Terminal:
    """A minimal terminal: applies the updates the app writes (cursor moves and text)."""

    def __init__(self, width: int, height: int) -> None:
        self.rows = [[" "] * width for _ in range(height)]
        self.x = self.y = 0

    def apply(self, update: object, console: object) -> None:
        from rich.cells import cell_len
        from rich.segment import ControlType

        for seg in update.__rich_console__(console, console.options):  # type: ignore[attr-defined]
            if seg.control:
                for code in seg.control:
                    if code[0] == ControlType.CURSOR_MOVE_TO:
                        self.x, self.y = code[1], code[2]
                continue
            for ch in seg.text:
                if ch == "\n":
                    self.x, self.y = 0, self.y + 1
                    continue
                if 0 <= self.y < len(self.rows) and 0 <= self.x < len(self.rows[0]):
                    self.rows[self.y][self.x] = ch
                self.x += max(1, cell_len(ch))

    def text(self) -> str:
        return "\n".join("".join(row).rstrip() for row in self.rows)


def _stock_full_render(app: LlmtopApp) -> str:
    """The whole screen rendered by Textual's own compositor code (without partial_render)."""
    from textual._compositor import Compositor

    from llmtop.ui import textual_private as partial_render

    patched = Compositor._get_renders
    Compositor._get_renders = partial_render._original  # type: ignore[method-assign]
    try:
        return screen_text(app)
    finally:
        Compositor._get_renders = patched  # type: ignore[method-assign]


async def test_what_the_terminal_shows_matches_the_screen_after_every_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ticks repaint only changed rows of changed lines (panels' line cache, and the partial
    render fix in llmtop.ui.partial_render). Replaying every update the app writes into a
    terminal must give, after each tick, exactly the screen a full render shows."""
    from llmtop.ui import textual_private as partial_render

    terminal = _Terminal(160, 48)
    updates: list[str] = []
    original = LlmtopApp._display

    def display(self: LlmtopApp, screen: object, renderable: object) -> None:
        if renderable is not None and not self._batch_count:
            terminal.apply(renderable, self.console)
            updates.append(type(renderable).__name__)
        original(self, screen, renderable)  # type: ignore[arg-type]

    monkeypatch.setattr(LlmtopApp, "_display", display)
    app = sample_app()
    assert partial_render.installed()  # the pinned Textual: the fix is in use
    async with app.run_test(size=(160, 48)) as pilot:
        await load_sample(app, pilot)
        snap = sample_snapshot()
        for i in range(1, 6):
            host = snap.host
            assert host.process is not None
            snap = dataclasses.replace(
                sample_snapshot(t=T0 + i, gen_tps=38.0 + i, temperature_c=84.0 + i % 2),
                host=dataclasses.replace(
                    host,
                    cpu_percent=14.0 + 7 * i,
                    memory_used_bytes=(11_811 + 500 * i) << 20,
                    process=dataclasses.replace(host.process, uptime_s=3_725.0 + 60 * i),
                ),
            )
            await _inject(app, pilot, snap)
            await pilot.pause()
            assert terminal.text() == _stock_full_render(app), f"tick {i}"
        assert f"CPU       {14 + 7 * 5} %" in terminal.text()
        assert "up 1h07m" in terminal.text()
    assert "ChopsUpdate" in updates  # ticks were partial updates, not full repaints


async def test_an_idle_server_draws_no_throughput_bars() -> None:
    """0 tok/s draws nothing in the gen sparkline (the line stays still while idle); the first
    tokens draw a bar at once."""
    app = sample_app(mode="attach")
    async with app.run_test(size=(80, 24)) as pilot:
        idle_lines = []
        for i in range(4):
            await _inject(app, pilot, sample_snapshot(t=T0 + i, gen_tps=0.0))
            idle_lines.append(next(x for x in screen_text(app).splitlines() if "│ gen" in x))
        await _inject(app, pilot, sample_snapshot(t=T0 + 5, gen_tps=40.0))
        busy = next(x for x in screen_text(app).splitlines() if "│ gen" in x)
    assert len(set(idle_lines)) == 1  # nothing moved
    bars = set("▁▂▃▄▅▆▇█")
    assert not bars & set(idle_lines[0])
    assert bars & set(busy)
