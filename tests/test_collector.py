"""The collector against a real llama-server: one snapshot per tick with pid, process, rates."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from llmtop.collector import Collector
from llmtop.model.timeseries import SeriesGroup as History
from llmtop.model.timeseries import TimeSeries as Series
from llmtop.snapshot import Alert, to_json_dict
from llmtop.sources.llama_http import LlamaClient
from tests.realserver import free_port


def test_series_is_bounded_and_downsamples_to_width() -> None:
    s = Series(maxlen=100)
    for i in range(250):
        s.append(float(i), float(i) if i % 10 else None)
    assert len(s) == 100 and s.times()[0] == 150.0
    t, v = s.downsample(10)
    assert len(t) == len(v) == 10
    assert v[0] is not None and 150 <= v[0] <= 160  # a mean of its bucket, gaps skipped
    assert s.latest() == 249.0
    few_t, few_v = s.downsample(500)
    assert len(few_t) == 100  # never more points than samples
    h = History(maxlen=5)
    h.record(1.0, gen=1.0, prompt=None)
    assert h["gen"].values() == [1.0] and h["prompt"].values() == [None]


async def test_unreachable_server_still_gives_a_complete_snapshot() -> None:
    async with LlamaClient(f"http://127.0.0.1:{free_port()}") as client:
        c = Collector(client)
        snap = await c.collect()
    assert snap.server.health == "unreachable" and snap.server.detail == "connection refused"
    assert snap.host.cpu_percent is not None and snap.host.memory_total_bytes
    assert snap.server.pid is None and snap.host.process is None
    assert to_json_dict(snap)["server"]["health"] == "unreachable"


@pytest.mark.real_server
async def test_collector_finds_pid_and_computes_rates(llama_server) -> None:
    async with LlamaClient(llama_server.url) as client:
        c = Collector(client)
        first = await c.collect()
        assert first.server.health == "ok"
        assert first.server.pid == llama_server.pid  # found by the listening port
        proc = first.host.process
        assert proc is not None and proc.pid == llama_server.pid
        assert proc.rss_bytes and proc.rss_bytes > 0 and proc.threads and proc.threads >= 1
        assert proc.uptime_s is not None and proc.uptime_s >= 0
        assert first.server.gen_tokens_per_s is None  # one scrape: no rate yet
        async with httpx.AsyncClient(timeout=60) as http:
            r = await http.post(llama_server.url + "/completion",
                                json={"prompt": "abc", "n_predict": 64, "ignore_eos": True})  # fmt: skip
            assert r.status_code == 200
        await asyncio.sleep(0.1)
        second = await c.collect()
    assert second.server.gen_tokens_per_s is not None and second.server.gen_tokens_per_s > 0
    assert second.server.prompt_tokens_per_s is not None and second.server.prompt_tokens_per_s > 0
    assert second.host.process is not None and second.host.process.cpu_percent is not None
    assert c.last_rates is not None and c.last_rates.gen_tokens_per_busy_s


@pytest.mark.real_server
async def test_pid_hint_and_optional_parts_duck_typed(llama_server) -> None:
    class Alerts:  # the alert engine's contract: evaluate(snapshot) -> alerts
        def evaluate(self, snap):
            return (Alert("test", "warning", f"health {snap.server.health}", time.time()),)

    class BrokenGpus:  # a failing part must not break the tick
        def latest(self):
            raise RuntimeError("boom")

    async with LlamaClient(llama_server.url) as client:
        c = Collector(client, pid_hint=llama_server.pid, alert_engine=Alerts(),
                      gpu_monitor=BrokenGpus())  # fmt: skip
        a, b = await asyncio.gather(c.collect(), c.collect())  # overlapping ticks coalesce
    assert a is b
    assert a.server.pid == llama_server.pid
    assert a.alerts[0].message == "health ok"
    assert a.gpus == () and a.gpu_note is not None and "boom" in a.gpu_note


@pytest.mark.real_server
async def test_rates_never_negative_across_a_restart(server_factory) -> None:
    srv = server_factory("--metrics")
    async with LlamaClient(srv.url) as client, httpx.AsyncClient(timeout=60) as http:
        c = Collector(client)
        await c.collect()
        await http.post(srv.url + "/completion",
                        json={"prompt": "x", "n_predict": 64, "ignore_eos": True})  # fmt: skip
        await asyncio.sleep(0.1)  # rates need an interval between scrapes
        before = await c.collect()
        assert before.server.gen_tokens_per_s and before.server.gen_tokens_per_s > 0
        srv.stop()
        server_factory("--metrics", port=srv.port)
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len([s for s in seen if s.server.health == "ok"]) < 3:
            seen.append(await c.collect())
            await asyncio.sleep(0.05)
    ok = [s for s in seen if s.server.health == "ok"]
    assert len(ok) == 3, [(s.server.health, s.server.detail) for s in seen]
    assert seen[-1].server.pid not in (None, srv.pid)
    # the counters went down (64 tokens → 0): the first scrape of the new server restarts the
    # baseline (no rate, never a negative one), the next ones are real rates of an idle server
    assert [s.server.gen_tokens_per_s for s in ok] == [None, 0.0, 0.0]
    assert [s.server.prompt_tokens_per_s for s in ok] == [None, 0.0, 0.0]
    assert c.rates.resets == 1  # seen as a restart (new start time or counters went down)


@pytest.mark.real_server
async def test_collector_with_a_real_child_supervisor(llama_server_bin, tiny_model) -> None:
    from llmtop.control.supervisor import ChildSupervisor
    from llmtop.model.launch_spec import LaunchSpec
    from llmtop.sources.logs import LogStore

    port = free_port()
    spec = LaunchSpec.from_argv([str(llama_server_bin), "-m", str(tiny_model), "--host",
                                 "127.0.0.1", "--port", str(port), "-c", "512", "-np", "1",
                                 "-t", "1", "--metrics"])  # fmt: skip
    sup = ChildSupervisor(spec, LogStore())
    try:
        await sup.start()
        async with LlamaClient(spec.url) as client:
            c = Collector(client, supervisor=sup)
            deadline = time.monotonic() + 30
            snap = await c.collect()
            while snap.server.health != "ok" or snap.supervisor.state != "ready":
                assert time.monotonic() < deadline, (snap.server.detail, snap.supervisor)
                await asyncio.sleep(0.1)
                snap = await c.collect()
        assert snap.supervisor is not None and snap.supervisor.mode == "child"
        assert snap.server.pid == sup.pid and snap.host.process is not None
        assert snap.host.process.pid == sup.pid
    finally:
        await sup.stop()
    assert sup.pid is None or sup.state in ("stopped", "exited")


@pytest.mark.real_server
async def test_stale_pid_hint_falls_back_to_the_port_owner(llama_server) -> None:
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    async with LlamaClient(llama_server.url) as client:
        snap = await Collector(client, pid_hint=gone.pid).collect()
    assert snap.server.pid == llama_server.pid
    assert snap.host.process is not None and snap.host.process.pid == llama_server.pid
