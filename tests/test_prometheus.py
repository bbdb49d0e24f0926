"""The /metrics parser and counter rates: what the throughput plot and snapshot show."""

from __future__ import annotations

import httpx
import pytest

from llmtop.sources.prometheus import CounterRates, parse_metrics
from tests.realserver import RunningServer

SAMPLE = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed, excluding cached tokens
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 120
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 0.5
llamacpp:tokens_predicted_total 1000
llamacpp:tokens_predicted_seconds_total 2
# TYPE llamacpp:predicted_tokens_seconds gauge
llamacpp:predicted_tokens_seconds 512.5
llamacpp:requests_processing 1
other_metric{label="a b"} 3.5
broken_line
nan_metric NaN
"""


def _metrics(gen: float, prompt: float, gen_s: float = 0.0, prompt_s: float = 0.0) -> dict:
    return {
        "tokens_predicted_total": gen,
        "prompt_tokens_total": prompt,
        "tokens_predicted_seconds_total": gen_s,
        "prompt_seconds_total": prompt_s,
    }


def test_parser_strips_prefix_keeps_labels_skips_junk() -> None:
    m = parse_metrics(SAMPLE)
    assert m["prompt_tokens_total"] == 120
    assert m["tokens_predicted_total"] == 1000
    assert m["requests_processing"] == 1
    assert m['other_metric{label="a b"}'] == 3.5
    assert "broken_line" not in m and "nan_metric" not in m


def test_rates_come_from_counters_over_wall_time_not_gauges() -> None:
    r = CounterRates()
    assert r.update(_metrics(1000, 100, 2.0, 0.1), now=10.0) is None  # baseline only
    rates = r.update(_metrics(1500, 300, 3.0, 0.3), now=12.0)
    assert rates is not None
    assert rates.gen_tokens_per_s == pytest.approx(250.0)
    assert rates.prompt_tokens_per_s == pytest.approx(100.0)
    assert rates.gen_tokens_per_busy_s == pytest.approx(500.0)  # 500 tokens in 1 busy second
    assert rates.gen_busy_fraction == pytest.approx(0.5)
    assert rates.prompt_tokens_per_busy_s == pytest.approx(1000.0)


def test_restart_by_header_restarts_baseline_no_negative_rates() -> None:
    r = CounterRates()
    r.update(_metrics(1000, 100), now=0.0, start_time=111.0)
    assert r.update(_metrics(1100, 100), now=1.0, start_time=111.0).gen_tokens_per_s == 100
    # the server restarted: new start time, counters small again
    assert r.update(_metrics(5, 3), now=2.0, start_time=222.0) is None
    rates = r.update(_metrics(55, 3), now=3.0, start_time=222.0)
    assert rates is not None and rates.gen_tokens_per_s == pytest.approx(50.0)
    assert r.resets == 1


def test_counters_going_down_without_header_restart_baseline() -> None:
    r = CounterRates()
    r.update(_metrics(1000, 100), now=0.0)
    assert r.update(_metrics(10, 0), now=1.0) is None
    rates = r.update(_metrics(20, 0), now=2.0)
    assert rates is not None and rates.gen_tokens_per_s == pytest.approx(10.0)
    assert rates.prompt_tokens_per_s == 0.0


@pytest.mark.real_server
def test_real_server_counters_move_after_a_completion(llama_server: RunningServer) -> None:
    with httpx.Client(base_url=llama_server.url, timeout=30) as c:
        before = c.get("/metrics")
        assert before.status_code == 200
        assert before.headers.get("Process-Start-Time-Unix")
        m0 = parse_metrics(before.text)
        r = c.post("/completion", json={"prompt": "hello there", "n_predict": 16,
                                         "ignore_eos": True, "cache_prompt": False})  # fmt: skip
        assert r.status_code == 200
        m1 = parse_metrics(c.get("/metrics").text)
    rates = CounterRates()
    rates.update(m0, now=0.0)
    got = rates.update(m1, now=1.0)
    assert got is not None
    assert got.gen_tokens_per_s == pytest.approx(16.0)
    assert got.prompt_tokens_per_s > 0
    assert got.gen_tokens_per_busy_s is not None and got.gen_tokens_per_busy_s > 16
