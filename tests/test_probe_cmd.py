"""`llmtop probe` as an operator runs it: a subprocess against a real server."""

from __future__ import annotations

import json

import pytest

from tests.test_snapshot_cmd import llmtop


@pytest.mark.real_server
def test_probe_json_single(server_factory) -> None:
    srv = server_factory(api_key="probe-secret")
    p = llmtop("probe", "--url", srv.url, "--n-predict", "32", "--prompt", "Hello", "--json",
               env={"LLMTOP_API_KEY": "probe-secret"})  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "probe-secret" not in p.stdout + p.stderr
    d = json.loads(p.stdout)
    for key in ("ttft_ms", "itl_ms_p50", "itl_ms_p95", "gen_tokens_per_s", "prompt_tokens_per_s",
                "tokens", "server_timings"):  # fmt: skip
        assert key in d, key
    assert d["tokens"] == 32 and d["ttft_ms"] > 0 and d["server_timings"]["predicted_n"] == 32


@pytest.mark.real_server
def test_probe_repeat_gives_list_and_summary_and_table(llama_server) -> None:
    p = llmtop("probe", "--url", llama_server.url, "--n-predict", "16", "--repeat", "3", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert isinstance(d["server_timings"], list) and len(d["server_timings"]) == 3
    assert len(d["probes"]) == 3 and all(x["tokens"] == 16 for x in d["probes"])
    assert d["summary"]["count"] == 3 and d["summary"]["failed"] == 0
    assert d["ttft_ms"] > 0 and d["tokens"] == 16
    table = llmtop("probe", "--url", llama_server.url, "--n-predict", "8", "--repeat", "2")
    assert table.returncode == 0, table.stderr
    assert "TTFT ms" in table.stdout and "median" in table.stdout and "2/2 ok" in table.stdout


def test_probe_bad_input_says_so_and_sends_nothing() -> None:
    p = llmtop("probe", "--url", "http://127.0.0.1:9", "--n-predict", "-5")
    assert p.returncode == 2
    assert "n_predict must not be negative" in p.stderr


def test_probe_unreachable_exits_1_with_words() -> None:
    from tests.realserver import free_port

    p = llmtop("probe", "--url", f"http://127.0.0.1:{free_port()}", "--json")
    assert p.returncode == 1
    d = json.loads(p.stdout)
    assert d["error"] == "connection refused" and d["tokens"] == 0
