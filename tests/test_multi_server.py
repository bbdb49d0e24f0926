"""Several servers at once (issue 12, item 3): `llmtop snapshot --json --all` against two real
llama-servers, one server down, the GPUs' memory attributed to each server (simulated NVML
listing the real servers' PIDs), and the attribution's arithmetic as a property."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtop.collector import Collector
from llmtop.commands.dashboard import _pairs, listed
from llmtop.multi_server import MultiCollector, ProcessOnlySampler, attribute_gpu_memory
from llmtop.session import DiscoveredTarget, Session
from llmtop.snapshot import GpuProcess, GpuSample, ServerStatus
from llmtop.sources.llama_http import LlamaClient
from tests.nvml_sim.harness import SimGpus
from tests.nvml_sim.scenarios import GiB, datacenter_gpu, scenario
from tests.realserver import RunningServer, free_port

ROOT = Path(__file__).resolve().parents[1]


def _snapshot_cmd(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLMTOP_API_KEY", "LLAMA_API_KEY")}
    env["XDG_CONFIG_HOME"] = "/nonexistent-llmtop-config"
    return subprocess.run(
        [sys.executable, "-m", "llmtop", "snapshot", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )


@pytest.fixture
def two_servers(server_factory: Callable[..., RunningServer]) -> tuple[RunningServer, ...]:
    """A "chat" and an "embed" server (the same tiny model under two aliases)."""
    return (
        server_factory("--metrics", "--alias", "chat"),
        server_factory("--metrics", "--alias", "embed"),
    )


@pytest.mark.real_server
def test_snapshot_json_all_lists_both_servers(two_servers: tuple[RunningServer, ...]) -> None:
    chat, embed = two_servers
    r = _snapshot_cmd("--json", "--all", "--url", chat.url, "--url", embed.url, "--interval", "0.5")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert isinstance(data, list) and len(data) == 2
    by_url = {d["server"]["url"]: d for d in data}
    assert set(by_url) == {chat.url, embed.url}
    for srv, alias in ((chat, "chat"), (embed, "embed")):
        one = by_url[srv.url]
        assert one["server"]["health"] == "ok"
        assert one["server"]["model_alias"] == alias
        assert one["server"]["pid"] == srv.pid  # each found by its own port
        assert one["host"]["process"]["pid"] == srv.pid
        assert one["host"]["memory_total_bytes"]  # the host, read once, in every snapshot
        assert "servers" not in one  # each element is one server's own snapshot


@pytest.mark.real_server
def test_snapshot_without_all_is_one_object(two_servers: tuple[RunningServer, ...]) -> None:
    """One --url: exactly today's object (no multi-server keys); two without --all: the first
    server's snapshot with every server's status under `servers`."""
    chat, embed = two_servers
    one = _snapshot_cmd("--json", "--url", chat.url, "--interval", "0")
    assert one.returncode == 0, one.stderr
    data = json.loads(one.stdout)
    assert isinstance(data, dict) and "servers" not in data
    assert data["server"]["model_alias"] == "chat"
    assert all("server_memory_by_url" not in g for g in data["gpus"])

    both = _snapshot_cmd("--json", "--url", chat.url, "--url", embed.url, "--interval", "0")
    assert both.returncode == 0, both.stderr
    data = json.loads(both.stdout)
    assert data["server"]["url"] == chat.url
    assert [(s["url"], s["health"], s["model_alias"]) for s in data["servers"]] == [
        (chat.url, "ok", "chat"),
        (embed.url, "ok", "embed"),
    ]
    text = _snapshot_cmd("--url", chat.url, "--url", embed.url, "--interval", "0")
    assert f"also    {embed.url}  ok  embed" in text.stdout


@pytest.mark.real_server
def test_one_server_down_is_unreachable_the_other_ok(llama_server: RunningServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    r = _snapshot_cmd(
        "--json", "--all", "--url", llama_server.url, "--url", dead, "--interval", "0.3"
    )
    assert r.returncode == 1  # not every server answered
    data = json.loads(r.stdout)
    health = {d["server"]["url"]: d["server"]["health"] for d in data}
    assert health == {llama_server.url: "ok", dead: "unreachable"}
    down = next(d for d in data if d["server"]["url"] == dead)
    assert "refused" in down["server"]["detail"]
    assert "server_down" in [a["kind"] for a in down["alerts"]]  # its own alert rules


@pytest.mark.nvml_sim
@pytest.mark.real_server
async def test_gpu_memory_is_attributed_to_each_server(
    nvml_sim: Callable[..., SimGpus], two_servers: tuple[RunningServer, ...]
) -> None:
    """NVML lists both real servers' PIDs (and a stranger) on GPU 0, only the embedder on GPU 1:
    each GPU's memory is split by server, whichever has the focus; the focused one's own figure
    is the monitor's, and each server's --all snapshot carries its own share."""
    chat, embed = two_servers
    procs0 = [
        {"pid": chat.pid, "used_memory_bytes": 6 * GiB},
        {"pid": embed.pid, "used_memory_bytes": 1 * GiB},
        {"pid": 999_999, "used_memory_bytes": 2 * GiB},
    ]
    procs1 = [{"pid": embed.pid, "used_memory_bytes": 3 * GiB}]
    sim = nvml_sim(
        scenario(datacenter_gpu(processes=procs0), datacenter_gpu(name="b", processes=procs1))
    )
    first = Collector(LlamaClient(chat.url), gpu_monitor=sim.monitor)
    second = Collector(LlamaClient(embed.url), sampler=ProcessOnlySampler())
    multi = MultiCollector([first, second])
    try:
        await multi.collect()  # the focused collector tells the monitor the chat server's pid
        sim.at(1)
        snap = await multi.collect()
        assert [s.pid for s in snap.servers] == [chat.pid, embed.pid]
        gpu0, gpu1 = snap.gpus
        assert {(m.url, m.used_memory_bytes) for m in gpu0.server_memory_by_url} == {
            (chat.url, 6 * GiB),
            (embed.url, 1 * GiB),
        }
        assert [(m.url, m.used_memory_bytes) for m in gpu1.server_memory_by_url] == [
            (embed.url, 3 * GiB)
        ]
        assert (gpu0.server_memory_bytes, gpu1.server_memory_bytes) == (6 * GiB, 0)
        own = {s.server.url: s for s in multi.each()}
        assert [g.server_memory_bytes for g in own[embed.url].gpus] == [1 * GiB, 3 * GiB]
        assert own[embed.url].host.process is not None
        assert own[embed.url].host.process.pid == embed.pid

        multi.focus(1)  # the GPU monitor follows the focus: its figures are the embedder's now
        assert second.gpu_monitor is sim.monitor and first.gpu_monitor is None
        await multi.collect()
        sim.at(2)
        snap = await multi.collect()
        assert snap.server.url == embed.url
        assert [g.server_memory_bytes for g in snap.gpus] == [1 * GiB, 3 * GiB]
        assert snap.host.memory_total_bytes  # the host is still read (by the first collector)
        assert snap.host.process is not None and snap.host.process.pid == embed.pid
        assert {m.url for m in snap.gpus[0].server_memory_by_url} == {chat.url, embed.url}
    finally:
        await multi.aclose()


def test_url_and_unit_pairs() -> None:
    """One --unit with one --url is one server (the unit at that URL), as before; several
    flags are several servers."""
    assert _pairs(listed(["http://a"]), listed(["x.service"])) == [("http://a", "x.service")]
    assert _pairs(listed("http://a"), listed(None)) == [("http://a", None)]
    assert _pairs(["http://a", "http://b"], []) == [("http://a", None), ("http://b", None)]
    assert _pairs([], ["x", "y"]) == [("", "x"), ("", "y")]
    assert _pairs(["http://a", "http://b"], ["x", "y"]) == [("http://a", "x"), ("http://b", "y")]


_pids = st.integers(min_value=1, max_value=40)
_procs = st.lists(
    st.builds(GpuProcess, _pids, st.one_of(st.none(), st.integers(0, 80 * GiB))), max_size=12
)


@given(
    procs=st.one_of(st.none(), _procs),
    server_pids=st.lists(st.one_of(st.none(), _pids), min_size=1, max_size=5, unique=True),
    monitor_says=st.one_of(st.none(), st.integers(0, 80 * GiB)),
)
def test_attribution_never_invents_memory(
    procs: tuple[GpuProcess, ...] | list[GpuProcess] | None,
    server_pids: list[int | None],
    monitor_says: int | None,
) -> None:
    """Each server's share is its PID's lines in the process list (the focused one's: the
    monitor's figure); servers holding nothing, or with no PID, are not listed; a GPU without
    process readings lists nobody but the focused server the monitor measured."""
    g = GpuSample(
        index=0,
        processes=tuple(procs) if procs is not None else None,
        server_memory_bytes=monitor_says,
    )
    servers = [ServerStatus(url=f"http://s{i}", pid=pid) for i, pid in enumerate(server_pids)]
    (out,) = attribute_gpu_memory([g], servers, 0)
    shares = {m.url: m.used_memory_bytes for m in out.server_memory_by_url}
    assert all(v > 0 for v in shares.values())
    for i, s in enumerate(servers):
        if i == 0 and monitor_says is not None:
            expected = monitor_says
        elif procs is None or s.pid is None:
            expected = 0
        else:
            expected = sum(p.used_memory_bytes or 0 for p in procs if p.pid == s.pid)
        assert shares.get(s.url, 0) == expected


def _dashboard_args(*argv: str) -> argparse.Namespace:
    from llmtop.commands import dashboard

    parser = argparse.ArgumentParser()
    dashboard.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_child_mode_stays_one_server() -> None:
    from llmtop.commands.dashboard import build_session

    args = _dashboard_args("--url", "http://127.0.0.1:8080", "--url", "http://127.0.0.1:8081")
    args.server_argv = ["llama-server", "-m", "m.gguf"]
    assert build_session(args) == (
        "child mode (-- llama-server …) runs one server: give at most one --url"
    )


def test_discovered_servers_open_together_each_with_its_key() -> None:
    """What `llmtop` does when discovery finds several: every one is watched; a key found in
    one server's argv is used for that server only; the focus wraps around."""
    session = Session(mode="none", url=None)
    session.open_several(
        [
            DiscoveredTarget("http://127.0.0.1:8080/", 101, "a", api_key="sk-a"),
            DiscoveredTarget("http://127.0.0.1:8081", 102, "b"),
        ]
    )
    assert [(e.url, e.pid_hint, e.mode) for e in session.servers] == [
        ("http://127.0.0.1:8080", 101, "attach"),
        ("http://127.0.0.1:8081", 102, "attach"),
    ]
    assert [e.api_key for e in session.servers] == ["sk-a", None]
    assert (session.mode, session.url, session.api_key) == (
        "attach",
        "http://127.0.0.1:8080",
        "sk-a",
    )
    entry = session.focus_server(1)
    assert entry is session.servers[1]
    assert (session.url, session.api_key, session.pid_hint) == ("http://127.0.0.1:8081", None, 102)
    session.focus_server(2)  # wraps
    assert session.url == "http://127.0.0.1:8080" and session.focus_index == 0
    assert "sk-a" not in repr(session.servers[0])


def test_a_routers_models_memory_is_the_routers() -> None:
    """A router-mode server's models run as child llama-servers: their lines count for it."""
    from llmtop.snapshot import ModelStatus

    g = GpuSample(index=0, processes=(GpuProcess(5, GiB), GpuProcess(7, 2 * GiB)))
    chat = ServerStatus(url="http://a", pid=3)
    router = ServerStatus(
        url="http://r", pid=4, router=True, models=(ModelStatus("m", "loaded", pid=7),)
    )
    (out,) = attribute_gpu_memory([g], [chat, router], 0)
    assert [(m.url, m.used_memory_bytes) for m in out.server_memory_by_url] == [
        ("http://r", 2 * GiB)
    ]


@pytest.mark.real_server
async def test_servers_without_the_focus_are_polled_for_their_bar_line_only(
    two_servers: tuple[RunningServer, ...],
) -> None:
    """The dashboard's several-server poll (`lean_background`): the focused server is asked
    everything, the other only what its server bar line shows (health, model, tok/s from
    /metrics) — no /slots — and the two swap when the focus moves. `snapshot --all` (no lean
    poll) asks /slots of every server."""
    chat, embed = two_servers
    asked: dict[str, list[str]] = {chat.url: [], embed.url: []}
    clients = [LlamaClient(chat.url), LlamaClient(embed.url)]
    for client in clients:
        real = client.raw_sequence

        async def recording(paths: list[str], *, real=real, url=client.url, **kw):  # type: ignore[no-untyped-def]
            asked[url] += paths
            return await real(paths, **kw)

        client.raw_sequence = recording  # type: ignore[method-assign]
    first = Collector(clients[0])
    second = Collector(clients[1], sampler=ProcessOnlySampler())
    multi = MultiCollector([first, second], lean_background=True)
    try:
        for i in range(3):  # the first poll learns that /metrics answers
            if i:
                await asyncio.sleep(0.1)  # rates need an interval between scrapes
            snap = await multi.collect()
        bar = {s.url: s for s in snap.servers}
        assert bar[embed.url].health == "ok" and bar[embed.url].model_alias == "embed"
        assert bar[embed.url].gen_tokens_per_s is not None  # from /metrics
        assert snap.server.url == chat.url and snap.server.slots  # the focused: everything
        assert not bar[embed.url].slots
        assert asked[chat.url].count("/slots") == 3
        assert asked[embed.url].count("/slots") == 1 and asked[embed.url].count("/metrics") == 3

        multi.focus(1)
        for url in asked:
            asked[url].clear()
        for _ in range(2):
            snap = await multi.collect()
        assert snap.server.url == embed.url and snap.server.slots
        assert asked[embed.url].count("/slots") == 2 and "/slots" not in asked[chat.url]
    finally:
        await multi.aclose()

    plain = MultiCollector([Collector(LlamaClient(chat.url)), Collector(LlamaClient(embed.url))])
    try:
        await plain.collect()
        assert all(s.server.slots for s in plain.each())  # --all: each server's whole poll
    finally:
        await plain.aclose()
