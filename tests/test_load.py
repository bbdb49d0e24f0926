"""`llmtop load` against real llama-servers, and the knee logic it ends with.

The CPU build on shared cores is slow, so every real run keeps n_predict small and requests
few; the --parallel 2 vs 4 comparison is what the command exists to show.
"""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtop.diagnosis.load_knee import CLIMB_FACTOR, CLIMB_FLOOR_MS, LevelPoint, climbed, find_knee
from llmtop.operations.events import Event, LoadFinished, LoadStep, Progress
from llmtop.operations.load import LoadRun, parse_concurrency, validate_load_input
from tests.realserver import free_port
from tests.test_snapshot_cmd import llmtop

LEVEL_KEYS = {"concurrency", "requests", "ok", "errors", "cut_off", "ttft_p50_ms", "ttft_p95_ms",
              "itl_p50_ms", "itl_p95_ms", "gen_tokens_per_s", "requests_deferred", "duration_s",
              "first_error"}  # fmt: skip


def _level(d: dict, concurrency: int) -> dict:
    return next(lv for lv in d["levels"] if lv["concurrency"] == concurrency)


# -- the real server: --parallel 2 against --parallel 4 ----------------------------------------


# llama-server's HTTP pool is max(--parallel + 2, cores - 1) threads: 4 on a 2-core CI box, where
# four streaming clients pin all of them and /metrics (the deferred count) is answered only
# between streams. A box with more cores has the room by default; the tests give it explicitly.
HTTP_POOL = ("--threads-http", "8")


@pytest.mark.real_server
def test_parallel_2_defers_at_4_and_names_parallel_parallel_4_does_not(server_factory) -> None:
    p2 = server_factory("--parallel", "2", "--metrics", *HTTP_POOL)
    p4 = server_factory("--parallel", "4", "--metrics", *HTTP_POOL)
    args = ("--concurrency", "1,2,4", "--n-predict", "64", "--json")
    two = llmtop("load", "--url", p2.url, *args)
    assert two.returncode == 0, two.stderr
    d2 = json.loads(two.stdout)
    assert d2["total_slots"] == 2 and d2["metrics_enabled"] is True
    assert [lv["concurrency"] for lv in d2["levels"]] == [1, 2, 4]
    for lv in d2["levels"]:
        assert lv.keys() >= LEVEL_KEYS
        # default --requests: 2 × the level, every one streamed to the end
        assert lv["requests"] == lv["ok"] == 2 * lv["concurrency"] and lv["errors"] == 0
        assert lv["ttft_p50_ms"] > 0 and lv["ttft_p95_ms"] >= lv["ttft_p50_ms"]
        assert lv["gen_tokens_per_s"] > 0
        # ITL is unknown (None) only when a request's tokens all came in one read: on a
        # starved 2-core box the tiny model can finish before the client is scheduled again
        if lv["itl_p50_ms"] is not None:
            assert 0 < lv["itl_p50_ms"] <= lv["itl_p95_ms"]
    # four clients on two slots: two wait in the queue, and /metrics showed it
    assert _level(d2, 4)["requests_deferred"] > 0
    assert _level(d2, 1)["requests_deferred"] == 0
    # a queued request waits a whole other request's generation: p95 TTFT climbs by 4 at most
    assert d2["knee_concurrency"] is not None and d2["knee_concurrency"] <= 4
    assert d2["parallel_limited"] is True
    assert "--parallel limits it" in d2["recommendation"], d2["recommendation"]

    four = llmtop("load", "--url", p4.url, *args)
    assert four.returncode == 0, four.stderr
    d4 = json.loads(four.stdout)
    assert d4["total_slots"] == 4
    # four clients on four slots: nobody waits for a slot
    assert _level(d4, 4)["requests_deferred"] == 0
    assert d4["parallel_limited"] is not True
    assert "--parallel limits it" not in d4["recommendation"], d4["recommendation"]


@pytest.mark.real_server
def test_table_an_operator_reads(server_factory) -> None:
    srv = server_factory("--parallel", "2", "--metrics", *HTTP_POOL)
    p = llmtop("load", "--url", srv.url, "--concurrency", "1,4", "--n-predict", "64")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    head = lines[0].split()
    assert head[:2] == ["concurrency", "requests"] and "deferred" in head
    for words in ("TTFT p50 ms", "TTFT p95 ms", "ITL p50 ms", "ITL p95 ms", "agg tok/s"):
        assert words in lines[0]
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert rows["1"][1:3] == ["2", "2/0"] and rows["4"][1:3] == ["8", "8/0"]
    assert int(rows["4"][-1]) > 0  # deferred at 4 on two slots
    assert "slots: 2   /metrics: on" in p.stdout
    assert any(line.startswith("recommendation: ") for line in lines)
    # progress went to stderr, one line per level
    assert "concurrency 4: 8/8 ok" in p.stderr


@pytest.mark.real_server
def test_api_key_no_metrics_and_the_time_limit(server_factory) -> None:
    srv = server_factory(api_key="load-secret-key")
    # without the key: one line, exit 2, no traceback
    p = llmtop("load", "--url", srv.url, "--concurrency", "1")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "401" in p.stderr and "--api-key" in p.stderr
    # the key from the environment, as `llmtop probe` takes it; never printed
    p = llmtop("load", "--url", srv.url, "--concurrency", "1,2", "--requests", "2",
               "--n-predict", "8", "--json", env={"LLAMA_API_KEY": "load-secret-key"})  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "load-secret-key" not in p.stdout + p.stderr
    d = json.loads(p.stdout)
    assert d["metrics_enabled"] is False and d["total_slots"] == 1
    assert all(lv["requests_deferred"] is None for lv in d["levels"])
    # the table says so too: deferred unknown, /metrics off
    table = llmtop("load", "--url", srv.url, "--concurrency", "1", "--requests", "1",
                   "--n-predict", "4", "--api-key", "load-secret-key")  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "unknown" in table.stdout and "/metrics: off" in table.stdout
    assert "load-secret-key" not in table.stdout + table.stderr
    # bounded by time: far more requests than the limit allows; it stops by itself
    p = llmtop("load", "--url", srv.url, "--concurrency", "1,2", "--requests", "100000",
               "--n-predict", "8", "--max-seconds", "1", "--json",
               env={"LLAMA_API_KEY": "load-secret-key"})  # fmt: skip
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert "time limit of 1 s" in d["stopped_early"]
    assert len(d["levels"]) == 1 and d["levels"][0]["ok"] > 0
    assert d["duration_s"] < 5


@pytest.mark.real_server
def test_load_run_reports_each_level_as_an_event(server_factory) -> None:
    srv = server_factory("--parallel", "2", "--metrics", *HTTP_POOL)
    req = validate_load_input(srv.url, "1,2", 2, 8, 30.0, 30.0)
    assert not isinstance(req, str)
    events: list[Event] = []
    final = asyncio.run(LoadRun().run(req, events.append))
    assert isinstance(final, LoadFinished) and events[-1] is final
    steps = [e.level.concurrency for e in events if isinstance(e, LoadStep)]
    assert steps == [1, 2]
    assert isinstance(events[0], Progress) and "2 slots" in events[0].message
    assert final.result.levels[1].ok == 2 and final.result.total_slots == 2


# -- bad input: one clear line, exit 2 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (("--concurrency", "1,x"), "'x' is not a whole number"),
        (("--concurrency", "0"), "at least 1"),
        (("--concurrency", "1,,2"), "whole numbers separated by commas"),
        (("--concurrency", "1", "--requests", "0"), "--requests must be between"),
        (("--concurrency", "1", "--n-predict", "0"), "--n-predict must be between"),
        (("--concurrency", "1", "--max-seconds", "nan"), "--max-seconds must be a positive"),
    ],
)
def test_bad_input_says_so_and_exits_2(flags: tuple[str, ...], words: str) -> None:
    p = llmtop("load", "--url", "http://127.0.0.1:9", *flags)
    assert p.returncode == 2, p.stderr
    assert words in p.stderr and "Traceback" not in p.stderr
    assert p.stderr.startswith("llmtop load: ") and len(p.stderr.strip().splitlines()) == 1


def test_unreachable_server_exits_2_with_words() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    p = llmtop("load", "--url", url, "--concurrency", "1")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"cannot reach llama-server at {url}: connection refused" in p.stderr


def test_non_int_requests_is_argparse_exit_2() -> None:
    p = llmtop("load", "--url", "http://127.0.0.1:9", "--requests", "many")
    assert p.returncode == 2 and "invalid int value" in p.stderr and "Traceback" not in p.stderr


# -- parsing and the knee, pure ----------------------------------------------------------------


def test_parse_concurrency() -> None:
    assert parse_concurrency("1,2,4,8") == (1, 2, 4, 8)
    assert parse_concurrency(" 8, 2,2 ,1") == (1, 2, 8)
    assert isinstance(parse_concurrency(""), str)
    assert isinstance(parse_concurrency("-1"), str)
    assert isinstance(parse_concurrency("100000"), str)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_parse_concurrency_takes_any_text(text: str) -> None:
    out = parse_concurrency(text)
    if isinstance(out, str):
        assert out.startswith("--concurrency")
    else:
        assert out and list(out) == sorted(set(out)) and all(1 <= c <= 512 for c in out)
        assert set(out) == {int(p) for p in text.split(",")}


def test_knee_examples() -> None:
    L = LevelPoint
    queued = find_knee([L(1, 3.0, 0), L(2, 4.0, 0), L(4, 60.0, 2)], 2)
    assert (queued.knee_concurrency, queued.best_concurrency, queued.parallel_limited) == (
        4,
        2,
        True,
    )
    assert (
        "--parallel limits it" in queued.recommendation
        and "2 requests deferred" in queued.recommendation
    )
    compute = find_knee([L(1, 30.0, 0), L(2, 32.0, 0), L(4, 90.0, 0)], 4)
    assert compute.knee_concurrency == 4 and compute.parallel_limited is False
    assert "--parallel does not limit it" in compute.recommendation
    flat = find_knee([L(1, 3.0, 0), L(2, 4.0, 0), L(4, 6.0, 0)], 4)
    assert flat.knee_concurrency is None and "no knee up to concurrency 4" in flat.recommendation
    unknown = find_knee([L(1, 3.0, None), L(2, 40.0, None)], None)
    assert unknown.parallel_limited is None and "unknown" in unknown.recommendation
    # no /metrics, but more clients than slots: they had to wait
    assert find_knee([L(1, 3.0, None), L(4, 40.0, None)], 2).parallel_limited is True
    assert find_knee([], 2).knee_concurrency is None


ttft = st.one_of(
    st.none(),
    st.floats(min_value=0, max_value=1e6),
    st.sampled_from([math.nan, math.inf, -1.0]),
)
levels_st = st.lists(
    st.builds(
        LevelPoint,
        st.integers(min_value=1, max_value=512),
        ttft,
        st.one_of(st.none(), st.integers(min_value=0, max_value=64)),
    ),
    max_size=8,
    unique_by=lambda lv: lv.concurrency,
)


@settings(max_examples=400, deadline=None)
@given(levels_st, st.one_of(st.none(), st.integers(min_value=1, max_value=64)))
def test_knee_is_the_first_level_that_climbed(levels: list[LevelPoint], slots: int | None) -> None:
    knee = find_knee(levels, slots)
    assert knee.recommendation
    measured = sorted(
        (lv for lv in levels if lv.ttft_p95_ms is not None and math.isfinite(lv.ttft_p95_ms)
         and lv.ttft_p95_ms >= 0),
        key=lambda lv: lv.concurrency,
    )  # fmt: skip
    if not measured:
        assert knee.knee_concurrency is None and knee.best_concurrency is None
        return
    p95 = [lv.ttft_p95_ms for lv in measured]
    # the knee: the first level past the lowest p95 of the levels below it
    up = [i for i in range(1, len(measured)) if climbed(min(p95[:i]), p95[i])]
    if not up:
        assert knee.knee_concurrency is None and knee.parallel_limited is None
        assert knee.best_concurrency == measured[-1].concurrency
        assert knee.baseline_ttft_p95_ms == min(p95)
        assert "--parallel limits it" not in knee.recommendation
        return
    first = measured[up[0]]
    assert knee.knee_concurrency == first.concurrency
    assert knee.knee_ttft_p95_ms == first.ttft_p95_ms
    base = min(p95[: up[0]])
    assert knee.baseline_ttft_p95_ms == base
    assert first.ttft_p95_ms > base * CLIMB_FACTOR and first.ttft_p95_ms - base >= CLIMB_FLOOR_MS
    # the best concurrency is the level before the knee
    before = [lv.concurrency for lv in measured if lv.concurrency < first.concurrency]
    assert knee.best_concurrency == before[-1]
    # --parallel is named as the limit exactly when some level from the knee on waited for a slot
    waited = any(
        (lv.requests_deferred or 0) > 0 or (slots is not None and lv.concurrency > slots)
        for lv in measured
        if lv.concurrency >= first.concurrency
    )
    assert (knee.parallel_limited is True) == waited
    assert ("--parallel limits it" in knee.recommendation) == waited
    if not waited and (slots is not None or first.requests_deferred is not None):
        assert knee.parallel_limited is False
