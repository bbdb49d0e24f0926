"""Sleep-aware polling against the real llama-server (`--sleep-idle-seconds 3`, tiny model).

The requirement is the observation itself: llmtop attached to a sleeping server for 30 s must
not wake it (its log shows no "exiting sleeping state" after it entered sleep) and must say it
sleeps. The 30 s window is watched, not slept through: the log is read on every tick and a
wake-up fails the test at once.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from llmtop.collector import Collector, sleep_idle_seconds
from llmtop.diagnosis.alerts import AlertEngine
from llmtop.snapshot import GpuSample, ServerStatus, Snapshot, to_json_dict
from llmtop.sources.llama_http import LlamaClient
from llmtop.ui.panels.gpu import gpu_card
from llmtop.ui.screens.confirm import ConfirmScreen
from tests.realserver import RunningServer
from tests.screen_text import screen_text

ROOT = Path(__file__).resolve().parent.parent
ENTERED = "entering sleeping state"
WOKE = "exiting sleeping state"
WATCH_S = 30.0


def _sleeping_server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    """A server with --sleep-idle-seconds 3 that has gone to sleep (waited on its log)."""
    srv = server_factory("--sleep-idle-seconds", "3", "--metrics")
    deadline = time.monotonic() + 60
    while ENTERED not in srv.log():
        assert time.monotonic() < deadline, "the server did not go to sleep within 60 s"
        time.sleep(0.1)
    return srv


def _woke(srv: RunningServer) -> bool:
    log = srv.log()
    return WOKE in log[log.index(ENTERED) :]


def _props_sleeping(srv: RunningServer) -> bool:
    return httpx.get(srv.url + "/props", timeout=5).json().get("is_sleeping") is True


def llmtop(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLAMA_API_KEY", "LLMTOP_API_KEY")}
    return subprocess.run([sys.executable, "-m", "llmtop", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env)  # fmt: skip


@pytest.mark.real_server
async def test_collector_keeps_a_sleeping_server_asleep(
    server_factory: Callable[..., RunningServer],
) -> None:
    srv = _sleeping_server(server_factory)
    collector = Collector(LlamaClient(srv.url), pid_hint=srv.pid)
    try:
        end = time.monotonic() + WATCH_S
        snap = await collector.collect()
        while time.monotonic() < end:
            assert not _woke(srv), "llmtop's polling woke the sleeping server"
            await asyncio.sleep(0.5)  # the dashboard's fastest refresh
            snap = await collector.collect()
            assert snap.server.health == "sleeping", snap.server.detail
        assert not _woke(srv)
        assert collector.client.polls >= 40
    finally:
        await collector.aclose()
    s = snap.server
    assert s.sleeping_since is not None and s.detail.startswith("sleeping since ")
    assert "the next request loads the model" in s.detail
    assert s.slots == () and s.gen_tokens_per_s is None
    assert s.model_path is not None and s.n_ctx == 512  # /props still tells the model
    assert to_json_dict(snap)["server"]["health"] == "sleeping"
    assert not [a for a in snap.alerts if a.kind.startswith("server_")]
    assert _props_sleeping(srv)


@pytest.mark.real_server
async def test_watching_an_awake_idle_server_lets_it_fall_asleep(
    server_factory: Callable[..., RunningServer],
) -> None:
    """Attached while awake: /slots and /metrics reset the idle timer, so the collector spaces
    them (it reads --sleep-idle-seconds from the server's argv) and the server still sleeps."""
    srv = server_factory("--sleep-idle-seconds", "3", "--metrics")
    collector = Collector(LlamaClient(srv.url), pid_hint=srv.pid)
    try:
        snap = await collector.collect()
        assert snap.server.health == "ok" and snap.server.total_slots == 1
        assert collector.client.sleep_idle_s == 3.0
        deadline = time.monotonic() + WATCH_S
        while snap.server.health != "sleeping":
            assert time.monotonic() < deadline, "the watched server never fell asleep"
            await asyncio.sleep(0.5)
            snap = await collector.collect()
        assert ENTERED in srv.log()
        end = time.monotonic() + 10.0
        while time.monotonic() < end:
            assert not _woke(srv), "llmtop's polling woke the sleeping server"
            await asyncio.sleep(0.5)
            snap = await collector.collect()
            assert snap.server.health == "sleeping"
    finally:
        await collector.aclose()


async def test_props_is_asked_every_tick_only_of_a_server_that_can_sleep(
    server_factory: Callable[..., RunningServer],
) -> None:
    """/props each tick is the price of seeing sleep at once; a server whose argv llmtop read and
    which has no --sleep-idle-seconds (the flag has no environment form) cannot fall asleep, so
    it is asked /props every 30 s only — and still shows its model and slots on every tick."""
    plain = server_factory("--metrics")
    sleepy = server_factory("--sleep-idle-seconds", "30", "--metrics")
    collectors = {
        "plain": Collector(LlamaClient(plain.url), pid_hint=plain.pid),
        "sleepy": Collector(LlamaClient(sleepy.url), pid_hint=sleepy.pid),
        "found": Collector(LlamaClient(plain.url)),  # its process found by the port
    }
    # before a tick nothing is known of the server's argv: it may sleep
    assert all(c.client.may_sleep for c in collectors.values())
    try:
        for c in collectors.values():
            for _ in range(3):
                snap = await c.collect()
                assert snap.server.health == "ok" and snap.server.total_slots == 1
                assert snap.server.model_path is not None
        assert collectors["plain"].client.may_sleep is False
        assert collectors["sleepy"].client.may_sleep is True
        assert collectors["found"].client.may_sleep is False
    finally:
        for c in collectors.values():
            await c.aclose()


def test_sleep_idle_seconds_from_argv() -> None:
    assert sleep_idle_seconds(["llama-server", "--sleep-idle-seconds", "3"]) == 3.0
    assert sleep_idle_seconds(["llama-server", "--sleep-idle-seconds=90"]) == 90.0
    assert sleep_idle_seconds(["llama-server", "--sleep-idle-seconds", "-1"]) is None
    assert sleep_idle_seconds(["llama-server", "--sleep-idle-seconds", "x"]) is None
    assert sleep_idle_seconds(["llama-server", "-m", "m.gguf"]) is None


@pytest.mark.real_server
async def test_dashboard_says_sleeping_and_does_not_wake_it(
    server_factory: Callable[..., RunningServer],
) -> None:
    from llmtop.session import Session
    from llmtop.ui.app import create_app

    srv = _sleeping_server(server_factory)
    app = create_app(Session(mode="attach", url=srv.url, refresh_s=0.5))
    async with app.run_test(size=(140, 36)) as pilot:
        end = time.monotonic() + WATCH_S
        while time.monotonic() < end:
            assert not _woke(srv), "the dashboard woke the sleeping server"
            await pilot.pause(0.2)
        assert app.latest is not None and app.latest.server.health == "sleeping"
        text = screen_text(app)
        # the server panel and the title bar both say it
        assert text.count("sleeping since") >= 2, text
        assert "the next request loads the model" in text
        # a probe asks first; "no" leaves the server asleep
        await pilot.press("p")
        deadline = time.monotonic() + 10
        while not isinstance(app.screen, ConfirmScreen):
            assert time.monotonic() < deadline, "no confirmation before probing a sleeper"
            await pilot.pause(0.05)
        assert "asleep" in app.screen.question
        await pilot.press("n")
        await pilot.pause(1.0)
    assert not _woke(srv)
    assert _props_sleeping(srv)


@pytest.mark.real_server
def test_snapshot_json_says_sleeping_and_probe_notes_the_load(
    server_factory: Callable[..., RunningServer],
) -> None:
    srv = _sleeping_server(server_factory)
    p = llmtop("snapshot", "--url", srv.url, "--json", "--interval", "0.3")
    assert p.returncode == 0, p.stderr
    server = json.loads(p.stdout)["server"]
    assert server["health"] == "sleeping"
    assert server["sleeping_since"] is not None
    assert server["slots"] == []
    assert not _woke(srv)

    # headless probe: it runs (that is what was asked), says so and marks the TTFT
    p = llmtop("probe", "--url", srv.url, "--n-predict", "4", "--json")
    assert p.returncode == 0, p.stderr
    assert "asleep" in p.stderr and "model load" in p.stderr
    result = json.loads(p.stdout)
    assert result["includes_model_load"] is True
    assert result["ttft_ms"] is not None
    assert _woke(srv)  # the probe, not the monitor, woke it

    # awake now: a second probe is a plain one
    p = llmtop("probe", "--url", srv.url, "--n-predict", "4", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["includes_model_load"] is False


def test_sleeping_server_is_not_down_and_its_vram_reads_freed() -> None:
    asleep = ServerStatus(
        url="http://127.0.0.1:1",
        health="sleeping",
        detail="sleeping since 12:00:00 — the next request loads the model",
        sleeping_since=1.0,
    )
    gpu = GpuSample(
        index=0, name="GPU", memory_used_bytes=1 << 30, memory_total_bytes=8 << 30,
        used_by_server=True, server_memory_bytes=0,
    )  # fmt: skip
    snap = Snapshot(time=2.0, server=asleep, gpus=(gpu,))
    alerts = AlertEngine().evaluate(snap)
    assert not [a for a in alerts if a.kind.startswith("server_")], alerts
    card = "\n".join(gpu_card(gpu, 512 << 20, sleeping=True))
    assert "model VRAM freed" in card and "llama-server:" not in card
    awake = "\n".join(gpu_card(gpu, 512 << 20))
    assert "llama-server: 512.0 MiB" in awake
