"""The llama-server client against a real server: what the server panel and snapshot show."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from llmtop.demo.tiny_model import TinyModelShape, write_tiny_model
from llmtop.sources.llama_http import LlamaClient, parse_slots
from tests.realserver import RunningServer, free_port


def test_slots_next_token_as_array_or_object() -> None:
    as_array = [{"id": 0, "n_ctx": 512, "is_processing": True, "n_prompt_tokens": 7,
                 "next_token": [{"n_decoded": 5, "n_remain": 11}]}]  # fmt: skip
    as_object = [{"id": 1, "n_ctx": 512, "is_processing": False,
                  "next_token": {"n_decoded": 2, "n_remain": -1}}]  # fmt: skip
    (a,) = parse_slots(as_array)
    assert (a.id, a.is_processing, a.n_decoded, a.n_remain, a.context_used) == (0, True, 5, 11, 12)
    (b,) = parse_slots(as_object)
    assert (b.id, b.is_processing, b.n_decoded, b.n_prompt_tokens) == (1, False, 2, None)
    idle = parse_slots([{"id": 0, "n_ctx": 512, "is_processing": False}])
    assert idle[0].context_used is None


@pytest.mark.real_server
async def test_poll_reports_model_ctx_slots_and_counters(llama_server: RunningServer) -> None:
    async with LlamaClient(llama_server.url) as client:
        s = await client.poll()
    assert s.health == "ok", s.detail
    assert s.model_path is not None and s.model_path.endswith("tiny.gguf")
    assert s.n_ctx == 512
    assert s.n_ctx_train == 512
    assert s.total_slots == 1
    assert s.build_info
    assert s.endpoint_slots is True and s.endpoint_metrics is True
    assert len(s.slots) == 1 and s.slots[0].n_ctx == 512
    assert s.tokens_predicted_total is not None and s.prompt_tokens_total is not None
    assert s.requests_processing == 0
    assert s.process_start_time is not None and s.process_start_time > 0
    assert s.problems == ()


@pytest.mark.real_server
async def test_busy_slot_shows_progress_while_generating(server_factory, tmp_path) -> None:
    long_ctx = write_tiny_model(tmp_path / "long.gguf", TinyModelShape(n_ctx_train=4096))
    srv = server_factory("--metrics", "-c", "4096", model=long_ctx)  # a long reply to watch
    async with LlamaClient(srv.url) as client, httpx.AsyncClient(timeout=60) as http:
        gen = asyncio.create_task(
            http.post(srv.url + "/completion",
                      json={"prompt": "Once upon", "n_predict": 1000, "ignore_eos": True})
        )  # fmt: skip
        busy = None
        while not gen.done():
            s = await client.poll()
            if s.slots and s.slots[0].is_processing and (s.slots[0].n_decoded or 0) > 0:
                busy = s
                break
        await gen
        after = await client.poll()
    assert busy is not None, "never saw the slot busy"
    assert busy.slots[0].context_used is not None and busy.slots[0].context_used > 0
    assert after.slots[0].is_processing is False
    assert after.tokens_predicted_total is not None and after.tokens_predicted_total >= 1000


@pytest.mark.real_server
async def test_api_key_is_sent_and_never_shown(server_factory) -> None:
    srv = server_factory("--metrics", api_key="s3cret-key-123")
    async with LlamaClient(srv.url, api_key="s3cret-key-123") as client:
        s = await client.poll()
        assert s.health == "ok", s.detail
        assert s.model_path is not None and s.endpoint_metrics is True
        assert "s3cret-key-123" not in repr(s) and "s3cret-key-123" not in repr(client)


@pytest.mark.real_server
async def test_httpx_path_used_for_https_gives_the_same_answers(server_factory) -> None:
    srv = server_factory("--metrics", api_key="k1")
    async with LlamaClient(srv.url, api_key="k1", use_httpx=True) as client:
        s = await client.poll()
        client.set_api_key("wrong")
        bad = await client.poll()
    assert s.health == "ok" and s.model_path and s.n_ctx == 512 and s.endpoint_metrics is True
    assert s.process_start_time is not None and len(s.slots) == 1
    assert bad.health == "unauthorized"
    async with LlamaClient(f"http://127.0.0.1:{free_port()}", use_httpx=True) as client:
        down = await client.poll()
    assert down.health == "unreachable" and down.detail == "connection refused"
