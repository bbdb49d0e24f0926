"""Bad servers: the client says in words what is wrong and recovers by itself.

Real llama-server for: unreachable, SIGKILL + restart, 503 while loading, 401 wrong key, 501
(--no-slots, /metrics without --metrics). The fault proxy (tests/faultserver.py) only for what a
real server cannot do on demand: hang, malformed JSON, HTTP 500.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from llmtop.demo.tiny_model import TinyModelShape, write_tiny_model
from llmtop.sources.llama_http import LlamaClient
from tests.faultserver import FaultServer
from tests.realserver import RunningServer, free_port

GENEROUS_S = 30.0


async def poll_until(client: LlamaClient, pred, timeout: float = GENEROUS_S):
    """Poll until pred(status) holds; returns the status (fails with the last one otherwise)."""
    deadline = time.monotonic() + timeout
    s = await client.poll()
    while not pred(s):
        assert time.monotonic() < deadline, f"condition never held; last: {s.health} {s.detail}"
        await asyncio.sleep(0.05)
        s = await client.poll()
    return s


async def test_unreachable_says_connection_refused() -> None:
    async with LlamaClient(f"http://127.0.0.1:{free_port()}", timeout_s=2.0) as client:
        s = await asyncio.wait_for(client.poll(), GENEROUS_S)
    assert s.health == "unreachable"
    assert s.detail == "connection refused"
    assert s.model_path is None and s.slots == () and s.pid is None


async def test_hanging_server_times_out_in_words() -> None:
    with FaultServer(fault="hang") as fs:
        async with LlamaClient(fs.url, timeout_s=0.5) as client:
            s = await asyncio.wait_for(client.poll(), GENEROUS_S)
    assert s.health == "unreachable"
    assert s.detail == "timed out after 0.5 s"


@pytest.mark.real_server
async def test_sigkill_then_restart_on_same_port_recovers(server_factory) -> None:
    srv: RunningServer = server_factory("--metrics")
    async with LlamaClient(srv.url) as client:
        first = await client.poll()
        assert first.health == "ok"
        os.kill(srv.pid, signal.SIGKILL)
        srv.proc.wait(10)
        down = await poll_until(client, lambda s: s.health == "unreachable")
        assert down.detail in ("connection refused", "connection closed by the server")
        again = server_factory("--metrics", port=srv.port)
        up = await poll_until(client, lambda s: s.health == "ok" and s.model_path is not None)
        assert up.model_path == first.model_path and up.n_ctx == 512
        assert up.process_start_time is not None
        assert up.process_start_time >= (first.process_start_time or 0)
        again.stop()


@pytest.mark.real_server
async def test_wrong_key_unauthorized_then_recovers_with_right_key(server_factory) -> None:
    srv = server_factory("--metrics", api_key="the-right-key")
    async with LlamaClient(srv.url, api_key="a-wrong-key") as client:
        s = await client.poll()
        assert s.health == "unauthorized"
        assert s.detail == "401 Invalid API Key — check --api-key / LLAMA_API_KEY"
        assert "a-wrong-key" not in repr(s) and "the-right-key" not in repr(s)
        assert s.model_path is None  # nothing leaks from a refused server
        again = await client.poll()  # keeps asking: still unauthorized, not switched off
        assert again.health == "unauthorized"
        client.set_api_key("the-right-key")
        ok = await client.poll()
    assert ok.health == "ok" and ok.model_path is not None and ok.endpoint_metrics is True


@pytest.mark.real_server
async def test_no_key_at_all_is_unauthorized(server_factory) -> None:
    srv = server_factory(api_key="k")
    async with LlamaClient(srv.url) as client:
        s = await client.poll()
    assert s.health == "unauthorized" and "401" in s.detail


@pytest.mark.real_server
async def test_disabled_slots_and_metrics_then_enabled_after_restart(server_factory) -> None:
    srv = server_factory("--no-slots")  # and no --metrics
    async with LlamaClient(srv.url, disabled_retry_s=0.2) as client:
        s = await client.poll()
        assert s.health == "ok", s.detail
        assert s.endpoint_slots is False and s.endpoint_metrics is False
        assert "/metrics disabled — start llama-server with --metrics" in s.problems
        assert any(p.startswith("/slots disabled") for p in s.problems)
        assert s.gen_tokens_per_s is None and s.tokens_predicted_total is None
        srv.stop()
        await poll_until(client, lambda s: s.health == "unreachable")
        server_factory("--metrics", port=srv.port)  # restarted with the flag, slots back on
        up = await poll_until(
            client, lambda s: s.health == "ok" and s.endpoint_metrics and s.endpoint_slots
        )
    assert up.problems == () and up.tokens_predicted_total is not None and len(up.slots) == 1


@pytest.mark.real_server
async def test_metrics_reprobed_while_server_stays_up(server_factory) -> None:
    """A disabled endpoint is asked again at the lower cadence, not switched off for good.

    The real server has no --metrics (501); a pass-through FaultServer logs what is asked."""
    srv = server_factory()
    retry_s = 0.3
    with FaultServer(upstream=srv.url) as fs:
        async with LlamaClient(fs.url, disabled_retry_s=retry_s) as client:

            def metrics_asks() -> list[float]:
                return [t for t, r in zip(fs.request_times, fs.requests, strict=True)
                        if r == "GET /metrics"]  # fmt: skip

            first = await client.poll()
            assert first.endpoint_metrics is False and len(metrics_asks()) == 1
            polls_before = client.polls
            again = await client.poll()  # right away: /metrics is not asked on every poll
            assert again.health == "ok" and len(metrics_asks()) == 1, fs.requests
            assert fs.requests.count("GET /health") == 2
            s = await poll_until(client, lambda s: len(metrics_asks()) >= 3)
            polls = client.polls - polls_before
    asks = metrics_asks()
    assert s.endpoint_metrics is False and s.health == "ok"
    assert "/metrics disabled — start llama-server with --metrics" in s.problems
    # asked again and again, at the lower cadence: not on every poll, and over at least
    # disabled_retry_s (the first ask ends a longer first poll: its own time is not counted)
    assert polls > len(asks) - 1, (polls, asks)
    assert asks[-1] - asks[0] >= retry_s, asks


@pytest.mark.real_server
async def test_503_while_loading_then_ok(llama_server_bin, tmp_path) -> None:
    """Real server caught in its loading window (~0.3 s here): a 135 MB model read without mmap.

    The window is short, so the test polls tightly and tries up to three fresh starts.
    """
    from tests.realserver import start_llama_server

    shape = TinyModelShape(n_layer=8, n_embd=512, n_head=8, n_head_kv=8, n_ff=2048)
    big = write_tiny_model(tmp_path / "big.gguf", shape)
    loading = None
    for _attempt in range(3):
        srv = start_llama_server(llama_server_bin, big, ["--load-mode", "none"],
                                 log_dir=tmp_path, wait=False)  # fmt: skip
        try:
            async with LlamaClient(srv.url, timeout_s=5.0) as client:
                deadline = time.monotonic() + 60
                s = await client.poll()
                while s.health == "unreachable" and time.monotonic() < deadline:
                    assert srv.proc.poll() is None, srv.log()
                    s = await client.poll()
                if s.health != "loading":
                    continue  # loaded before we could see it: try again
                loading = s
                up = await poll_until(client, lambda s: s.health == "ok", timeout=120)
                break
        finally:
            srv.stop()
    assert loading is not None, "never caught the loading window in three starts"
    assert loading.detail == "Loading model"
    assert loading.model_path is None and loading.slots == ()
    assert up.model_path is not None and up.model_path.endswith("big.gguf")


@pytest.mark.real_server
async def test_malformed_json_is_an_error_in_words_and_recovers(llama_server) -> None:
    with FaultServer(upstream=llama_server.url, fault="malformed", paths={"/props"}) as fs:
        async with LlamaClient(fs.url) as client:
            s = await client.poll()
            assert s.health == "error"
            assert s.detail == "malformed JSON from /props"
            fs.set_fault("malformed", {"/health"})
            h = await client.poll()
            assert h.health == "error" and h.detail == "malformed JSON from /health"
            fs.set_fault(None)
            ok = await poll_until(client, lambda s: s.health == "ok")
    assert ok.model_path is not None and ok.n_ctx == 512 and ok.problems == ()


@pytest.mark.real_server
async def test_http_500_is_an_error_in_words_and_recovers(llama_server) -> None:
    with FaultServer(upstream=llama_server.url, fault="500", paths={"/health"}) as fs:
        async with LlamaClient(fs.url) as client:
            s = await client.poll()
            assert s.health == "error"
            assert s.detail == "HTTP 500 from /health: injected internal error"
            fs.set_fault(None)
            ok = await client.poll()
    assert ok.health == "ok" and ok.model_path is not None


async def test_probe_against_hanging_or_failing_server_reports_words() -> None:
    from llmtop.sources.probe import run_probe

    with FaultServer(fault="hang") as fs:
        hung = await asyncio.wait_for(run_probe(None, fs.url, "hi", 8, timeout_s=0.5), GENEROUS_S)
        fs.set_fault("500")
        failed = await run_probe(None, fs.url, "hi", 8, timeout_s=5.0)
    assert hung.error == "timed out after 0.5 s" and hung.tokens == 0 and not hung.cancelled
    assert failed.error == "HTTP 500: injected internal error"


@pytest.mark.real_server
async def test_one_hanging_endpoint_is_named_and_the_rest_still_shows(llama_server) -> None:
    with FaultServer(upstream=llama_server.url, fault="hang", paths={"/slots"}) as fs:
        async with LlamaClient(fs.url, timeout_s=0.5) as client:
            s = await asyncio.wait_for(client.poll(), GENEROUS_S)
            assert s.health == "ok" and s.model_path is not None  # the others answered
            assert "/slots: timed out after 0.5 s" in s.problems and s.slots == ()
            fs.set_fault(None)
            ok = await poll_until(client, lambda s: len(s.slots) == 1)
    assert ok.problems == ()


@pytest.mark.real_server
async def test_a_dropped_kept_alive_connection_is_asked_again(llama_server) -> None:
    """The poll asks its endpoints over one kept-alive connection; a server that closes it after
    an answer (without saying so) must not turn into "connection closed" on the dashboard."""
    with FaultServer(upstream=llama_server.url, fault="drop") as fs:
        async with LlamaClient(fs.url) as client:
            s = await asyncio.wait_for(client.poll(), GENEROUS_S)
        asked = list(fs.requests)
    assert s.health == "ok" and s.problems == ()
    assert len(s.slots) == 1 and client.last_metrics is not None
    for path in ("/health", "/props", "/v1/models", "/slots", "/metrics"):
        assert asked.count(f"GET {path}") == 1, asked  # each asked once, none lost


async def test_quitting_while_the_server_hangs_does_not_wait_for_the_timeout() -> None:
    """Closing the client (what quitting llmtop does) ends a poll stuck on a hung server at
    once, instead of leaving a thread waiting out a long timeout before llmtop can exit."""
    with FaultServer(fault="hang") as fs:
        client = LlamaClient(fs.url, timeout_s=60.0)
        task = asyncio.ensure_future(client.poll())
        while not fs.requests:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await client.aclose()
        s = await asyncio.wait_for(task, GENEROUS_S)
        took = time.monotonic() - started
    assert s.health == "unreachable" and "cancelled" in s.detail
    assert took < GENEROUS_S / 2  # nowhere near the 60 s timeout
