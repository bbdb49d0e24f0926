"""Latency probes against a real llama-server: tokens, TTFT, ITL, server timings, cancel."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from llmtop.demo.tiny_model import TinyModelShape, write_tiny_model
from llmtop.sources.probe import (
    ProbeHistory,
    ProbeRequest,
    percentile,
    run_probe,
    validate_probe_input,
)
from tests.realserver import RunningServer, free_port


@pytest.mark.parametrize(
    ("prompt", "n", "t", "words"),
    [
        ("", "16", "0", "prompt is empty"),
        ("   ", "16", "0", "prompt is empty"),
        ("hi", "", "0", "n_predict is empty"),
        ("hi", "abc", "0", "whole number"),
        ("hi", "1.5", "0", "whole number"),
        ("hi", "-3", "0", "must not be negative"),
        ("hi", "0", "0", "at least 1"),
        ("hi", "16", "hot", "temperature must be a number"),
        ("hi", "16", "-1", "temperature must be between"),
    ],
)
def test_prompt_panel_input_errors_in_words(prompt: str, n: str, t: str, words: str) -> None:
    req, err = validate_probe_input(prompt, n, t)
    assert req is None
    assert err is not None and words in err


def test_valid_input_gives_a_request() -> None:
    assert validate_probe_input("Hello", " 64 ", "0.7") == (ProbeRequest("Hello", 64, 0.7), None)
    assert validate_probe_input("Hello", "8", "") == (ProbeRequest("Hello", 8, 0.0), None)


def test_percentile_and_history_summary() -> None:
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0], 95) == 5.0
    hist = ProbeHistory(maxlen=3)
    from llmtop.sources.probe import ProbeResult

    for i in range(5):
        hist.add(ProbeResult(started_at=float(i), prompt="p", n_predict=8, tokens=8,
                             ttft_ms=10.0 + i, itl_ms_p50=1.0, itl_ms_p95=2.0,
                             gen_tokens_per_s=900.0, prompt_tokens_per_s=5000.0,
                             server_timings=None, text="x"))  # fmt: skip
    assert len(hist) == 3  # bounded
    assert hist.recent(1)[0].ttft_ms == 14.0  # newest first
    s = hist.summary()
    assert s.count == 3 and s.failed == 0 and s.ttft_ms_median == 13.0
    times, values = hist.series("ttft_ms")
    assert times == [2.0, 3.0, 4.0] and values == [12.0, 13.0, 14.0]


@pytest.mark.real_server
async def test_probe_reports_tokens_ttft_itl_and_server_timings(
    llama_server: RunningServer,
) -> None:
    chunks: list[str] = []
    async with httpx.AsyncClient() as client:
        r = await run_probe(client, llama_server.url, "The quick brown fox", 256, 0.0,
                            on_chunk=chunks.append)  # fmt: skip
    assert r.error is None and not r.cancelled
    assert r.tokens == 256
    assert r.ttft_ms is not None and r.ttft_ms > 0
    assert r.queue_ms is not None and 0 < r.queue_ms <= r.ttft_ms
    assert r.itl_ms_p50 is not None and r.itl_ms_p95 is not None
    assert 0 < r.itl_ms_p50 <= r.itl_ms_p95
    assert r.gen_tokens_per_s is not None and r.gen_tokens_per_s > 0
    assert r.prompt_tokens_per_s is not None and r.prompt_tokens_per_s > 0
    assert r.server_timings is not None
    assert r.server_timings["predicted_n"] == 256
    assert r.server_timings["prompt_n"] == r.prompt_tokens  # cache_prompt off: all processed
    assert r.text == "".join(chunks)
    assert r.stop_type == "limit"
    # the client cannot see the first token before the server finished the prompt
    assert r.ttft_ms >= r.server_timings["prompt_ms"]


@pytest.mark.real_server
async def test_probe_cancel_mid_stream_gives_partial_result(server_factory, tmp_path) -> None:
    long_ctx = write_tiny_model(tmp_path / "long.gguf", TinyModelShape(n_ctx_train=4096))
    srv = server_factory("--metrics", "-c", "4096", model=long_ctx)  # a long reply to cancel
    first_chunk = asyncio.Event()

    def on_chunk(_: str) -> None:
        first_chunk.set()

    async with httpx.AsyncClient() as client:
        task = asyncio.create_task(
            run_probe(client, srv.url, "Tell me a story", 1900, 0.8, on_chunk=on_chunk)
        )
        await asyncio.wait_for(first_chunk.wait(), 30)
        task.cancel()
        r = await asyncio.wait_for(task, 30)
        assert r.cancelled and r.error is None
        assert 0 < r.tokens < 1900
        assert r.server_timings is None  # the final chunk never came
        # the server is free again: the next probe runs to completion
        again = await run_probe(client, srv.url, "Again", 8, 0.0)
    assert again.error is None and again.tokens == 8


@pytest.mark.real_server
async def test_probe_errors_in_words(server_factory) -> None:
    srv = server_factory(api_key="right-key")
    async with httpx.AsyncClient() as client:
        wrong = await run_probe(client, srv.url, "hi", 8, 0.0, api_key="wrong-key")
        right = await run_probe(client, srv.url, "hi", 8, 0.0, api_key="right-key")
        refused = await run_probe(client, f"http://127.0.0.1:{free_port()}", "hi", 8, 0.0)
    assert wrong.error is not None and "401" in wrong.error and "Invalid API Key" in wrong.error
    assert "wrong-key" not in wrong.error
    assert right.error is None and right.tokens == 8
    assert refused.error == "connection refused" and refused.tokens == 0


@pytest.mark.real_server
async def test_probe_through_httpx_as_for_https(llama_server: RunningServer) -> None:
    async with httpx.AsyncClient() as client:
        r = await run_probe(client, llama_server.url, "Hello", 64, 0.0, via_httpx=True)
    assert r.error is None and r.tokens == 64 and r.server_timings is not None
    assert r.ttft_ms is not None and r.ttft_ms >= r.server_timings["prompt_ms"]
