"""Property tests: every parser of what llama-server, systemd or /proc hand us takes anything —
malformed JSON, odd numbers, invalid UTF-8 — and gives a clean value or its own clean error."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmtop.snapshot import ServerStatus
from llmtop.sources import journal, llama_http, prometheus, unit_status
from llmtop.sources.buffer_lines import parse_buffer_lines, parse_fit_params_output
from llmtop.sources.discovery import server_from_process
from llmtop.sources.probe import _error_words, _result, _Stream

FAST = settings(max_examples=200, deadline=None)
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

any_text = st.text(st.characters(codec="utf-8"), max_size=300)

# -- JSON of any shape, with the keys the parsers look for -------------------------------------

KEYS = [
    "id", "n_ctx", "is_processing", "n_prompt_tokens", "next_token", "n_decoded", "n_remain",
    "default_generation_settings", "model_path", "model_alias", "total_slots", "build_info",
    "endpoint_slots", "endpoint_metrics", "data", "meta", "n_ctx_train", "status", "error",
    "message", "content", "tokens", "tokens_predicted", "tokens_evaluated", "stop", "timings",
    "prompt_per_second", "stop_type", "MESSAGE", "PRIORITY", "__REALTIME_TIMESTAMP",
]  # fmt: skip
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["ok", "loading", "on", ""]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=6),
    ),
    max_leaves=25,
)
json_objects = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8)
DEEP = "[" * 100_000  # nested past what json.loads can take: RecursionError, not ValueError


def dumps(value: Any) -> str:
    return json.dumps(value)  # NaN/Infinity as JSON's extensions, as a server might send them


# -- /metrics ---------------------------------------------------------------------------------

metric_names = st.from_regex(r"\A(llamacpp:)?[a-z_][a-z0-9_]{0,20}\Z")
metric_values = st.floats(allow_nan=False, allow_infinity=False, width=64)


@FAST
@given(any_text)
def test_parse_metrics_takes_any_text(text: str) -> None:
    out = prometheus.parse_metrics(text)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.values())
    assert not any(k.startswith(prometheus.PREFIX) for k in out)


@FAST
@given(st.dictionaries(metric_names, metric_values, max_size=8), any_text)
def test_parse_metrics_reads_every_sample_line_among_rubbish(
    samples: dict[str, float], junk: str
) -> None:
    # rubbish lines (comments, half lines) in between do not hide the samples
    junk_lines = ["#" + line for line in junk.splitlines()]
    lines = [f"{k} {v!r}" for k, v in samples.items()]
    text = "\n".join(x for pair in zip(junk_lines, lines, strict=False) for x in pair)
    text += "\n" + "\n".join(lines)
    out = prometheus.parse_metrics(text)
    expected: dict[str, float] = {}
    for k, v in samples.items():
        expected[k.removeprefix(prometheus.PREFIX)] = v
    assert out == expected


@FAST
@given(st.lists(st.tuples(any_text, st.floats(0, 1e6)), max_size=6))
def test_counter_rates_never_raise_and_are_finite(scrapes: list[tuple[str, float]]) -> None:
    rates = prometheus.CounterRates()
    now = 0.0
    for text, dt in scrapes:
        now += dt
        r = rates.update(prometheus.parse_metrics(text), now)
        if r is not None:
            assert r.interval_s >= rates.min_interval_s


# -- /slots, /props, /v1/models, /health --------------------------------------------------------


@FAST
@given(json_values)
def test_parse_slots_and_props_give_values_or_value_error(body: Any) -> None:
    for parse in (llama_http.parse_slots, llama_http.parse_props):
        with suppress(ValueError):
            parse(body)
    # a list of objects is always slots, one per object, ids whole numbers
    if isinstance(body, list):
        slots = llama_http.parse_slots(body)
        assert len(slots) == sum(isinstance(x, dict) for x in body)
        assert all(isinstance(s.id, int) for s in slots)


@FAST
@given(st.one_of(json_values.map(dumps), any_text, st.just(DEEP)))
def test_malformed_json_is_a_probe_error_in_words(text: str) -> None:
    reply = llama_http._Reply(200, {}, text, 0.0)
    try:
        llama_http.LlamaClient._json("/slots", reply)
    except llama_http.ProbeError as e:
        assert e.detail == "malformed JSON from /slots"
    msg = llama_http.error_message(text)
    assert msg is None or isinstance(msg, str)


def _result_for(path: str, value: Any) -> Any:
    if isinstance(value, str) and value.startswith("probe-error:"):
        kind = value.split(":", 1)[1] or "error"
        return llama_http.ProbeError(kind, f"{path}: {kind}", 500)
    return value


probe_errors = st.sampled_from(
    ["probe-error:" + k for k in ("unreachable", "timeout", "unauthorized", "loading",
                                  "disabled", "error")]
)  # fmt: skip
answers = st.one_of(json_values, json_objects, probe_errors, st.none())


@FAST
@given(
    answers,
    answers,
    answers,
    answers,
    st.one_of(any_text, st.none(), probe_errors),
    any_text,
    st.booleans(),
)
def test_a_poll_folds_any_answers_into_a_status(
    health: Any,
    props: Any,
    models: Any,
    slots: Any,
    metrics: str | None,
    start_header: str,
    asked_props: bool,
) -> None:
    """Whatever the five endpoints answer, a poll gives a ServerStatus — never an exception."""
    client = llama_http.LlamaClient("http://127.0.0.1:1")
    if isinstance(health, dict) and "status" not in health:
        health = {**health, "status": "ok"}  # reach the endpoints' parsing more often
    metrics_r: Any = metrics
    if metrics is not None and not metrics.startswith("probe-error:"):
        metrics_r = llama_http._Reply(200, {"process-start-time-unix": start_header}, metrics, 1.0)
    for _ in range(2):  # twice: the second fold sees the first's state
        status = client._fold(
            1.0,
            _result_for("/health", health),
            _result_for("/props", props),
            _result_for("/v1/models", models),
            _result_for("/slots", slots),
            _result_for("/metrics", metrics_r),
            asked_props,
        )
        assert isinstance(status, ServerStatus)
        assert status.health in ("ok", "error", "unreachable", "loading", "unauthorized")
        assert isinstance(status.detail, str) and status.detail


# -- the probe's event stream ---------------------------------------------------------------------

events = st.one_of(
    json_objects.map(lambda o: b"data: " + dumps(o).encode()),
    json_values.map(lambda o: b"data: " + dumps(o).encode()),
    st.binary(max_size=40).map(lambda b: b"data: " + b.replace(b"\n", b"")),
    st.sampled_from([b"", b": keep-alive", b"data: " + DEEP.encode(), b"event: x"]),
)


@FAST
@given(st.lists(events, max_size=8), st.lists(st.integers(1, 50), min_size=1, max_size=8))
def test_probe_stream_takes_any_events_in_any_chunks(lines: list[bytes], cuts: list[int]) -> None:
    """Any event lines, split across reads anywhere: a ProbeResult, and the text shown is
    exactly the string `content` of the token events, in order."""
    body = b"".join(line + b"\n" for line in lines)
    stream = _Stream(None)
    pos, t = 0, 1_000
    for cut in cuts * (len(body) // max(1, sum(cuts)) + 1):
        if pos >= len(body) or stream.final is not None:
            break
        stream.feed(t, body[pos : pos + cut])
        pos, t = pos + cut, t + 1_000_000
    if stream.final is None:
        stream.feed(t, body[pos:])
    r = _result(0.0, {"prompt": "p", "n_predict": 8}, 0, 500, t + 1, stream.marks, stream.parts,
                stream.final, stream.error, False, 0.0)  # fmt: skip
    assert isinstance(r.text, str) and r.text == "".join(stream.parts)
    assert all(isinstance(p, str) for p in stream.parts)
    for v in (r.ttft_ms, r.itl_ms_p50, r.gen_tokens_per_s, r.prompt_tokens_per_s):
        assert v is None or isinstance(v, float)
    if stream.error:
        assert r.error == stream.error or r.error is None


@FAST
@given(st.integers(100, 599), st.one_of(json_values.map(dumps).map(str.encode), st.binary()))
def test_probe_error_bodies_become_words(status: int, body: bytes) -> None:
    words = _error_words(status, body)
    assert words.startswith(f"HTTP {status}")
    assert _error_words(status, DEEP.encode()).startswith(f"HTTP {status}")


# -- -lv 4 buffer-size lines, llama-fit-params ----------------------------------------------------

buffer_shaped = st.sampled_from(
    [
        "load_tensors:   CPU_Mapped model buffer size =     {n} MiB",
        "llama_kv_cache:        CUDA0 KV buffer size =     {n} MiB",
        "sched_reserve:        CPU compute buffer size =     {n} MiB",
        "llama_context:  CUDA_Host  output buffer size =     {n} MiB",
        "load_tensors: offloaded {n}/{n} layers to GPU",
        "llama_context: n_ctx = {n}",
        "llama_kv_cache: size =    {n} MiB (   {n} cells,   {n} layers,  {n}/{n} seqs), "
        "K (f16):    {n} MiB, V (f16):    {n} MiB",
    ]
)
numberish = st.one_of(
    st.from_regex(r"\A[0-9.]{1,12}\Z"), st.just("9" * 5000), st.just("."), st.just("1.2.3")
)


@FAST
@given(st.lists(st.tuples(buffer_shaped, numberish), max_size=8), any_text)
def test_buffer_lines_take_any_numbers(shaped: list[tuple[str, str]], junk: str) -> None:
    lines = [s.replace("{n}", n) for s, n in shaped] + junk.splitlines()
    parsed = parse_buffer_lines(lines)
    assert all(math.isfinite(v) and v >= 0 for v in parsed.model_mib.values())
    assert parse_buffer_lines("\n".join(lines)) == parsed
    fit = parse_fit_params_output("\n".join(lines))
    assert fit is None or isinstance(fit.ctx, int)


@FAST
@given(st.integers(0, 10**6), st.integers(-2, 999), st.floats(0, 1e5))
def test_buffer_lines_read_back_what_llama_cpp_prints(ctx: int, ngl: int, mib: float) -> None:
    text = (
        f"load_tensors: offloaded {max(ngl, 0)}/{ngl + 3} layers to GPU\n"
        f"load_tensors:   CPU_Mapped model buffer size = {mib:10.2f} MiB\n"
        f"llama_context: n_ctx = {ctx}\n"
        f"sched_reserve:        CPU compute buffer size = {mib:10.2f} MiB\n"
    )
    parsed = parse_buffer_lines(text)
    assert parsed.offloaded == (max(ngl, 0), ngl + 3)
    assert parsed.model_mib == {"CPU_Mapped": float(f"{mib:.2f}")}
    assert parsed.n_ctx == ctx
    fit = parse_fit_params_output(f"noise\n-c {ctx} -ngl {ngl} -ts 1,1\n")
    assert fit is not None and (fit.ctx, fit.gpu_layers, fit.extra) == (ctx, ngl, "-ts 1,1")


# -- journal entries ------------------------------------------------------------------------------

messages = st.one_of(
    st.text(max_size=40),
    st.lists(st.integers(0, 255), max_size=40),  # journalctl's form of a non-UTF-8 message
    json_values,
)


class _Store:
    def __init__(self) -> None:
        self.lines: list[tuple[str, float | None, str | None]] = []

    def append(self, text: str, stream: str = "journal", time: float | None = None,
               level: str | None = None) -> None:  # fmt: skip
        assert isinstance(text, str)
        self.lines.append((text, time, level))


@FAST
@given(st.lists(st.one_of(json_objects, st.fixed_dictionaries({"MESSAGE": messages}, optional={
    "PRIORITY": json_values, "__REALTIME_TIMESTAMP": json_values})), max_size=6),
    st.lists(st.one_of(any_text, st.binary(max_size=30), st.just(DEEP)), max_size=3))  # fmt: skip
def test_journalctl_lines_of_any_shape_reach_the_store(
    entries: list[dict[str, Any]], junk: list[Any]
) -> None:
    """`journalctl -o json` lines, fed through the follower's real reader: every entry with a
    MESSAGE becomes one line of text (byte-array messages decoded, invalid UTF-8 replaced);
    anything else is skipped."""
    lines = [dumps(e).encode() for e in entries]
    lines += [j if isinstance(j, bytes) else j.encode() for j in junk]
    lines = [ln.replace(b"\n", b" ") for ln in lines]
    store = _Store()
    f = journal.JournalFollower("x", store, backend="journalctl", resolve_unit=False)

    class Proc:
        returncode = 0

        def __init__(self) -> None:
            self.stdout = asyncio.StreamReader(limit=1 << 22)
            self.stdout.feed_data(b"".join(ln + b"\n" for ln in lines))
            self.stdout.feed_eof()

    async def run() -> None:
        f._proc = Proc()  # type: ignore[assignment]
        await f._read_journalctl()

    asyncio.run(run())
    expected = [e for e in entries if e.get("MESSAGE") is not None]
    assert len(store.lines) >= len(expected)
    for (text, _, _), e in zip(store.lines, expected, strict=False):
        msg = e["MESSAGE"]
        if isinstance(msg, str):
            assert text == msg
        elif isinstance(msg, list) and all(type(b) is int and 0 <= b < 256 for b in msg):
            assert text == bytes(msg).decode("utf-8", "replace")
        else:
            assert text == str(msg)


@FAST
@given(st.binary(max_size=60), st.one_of(st.integers(0, 7), st.none()))
def test_systemd_python_messages_as_bytes_are_decoded(raw: bytes, prio: int | None) -> None:
    """The systemd-python reader hands invalid UTF-8 as bytes: it is decoded, never raised."""
    store = _Store()
    f = journal.JournalFollower("x", store, backend="python", resolve_unit=False)

    class Reader:
        def __init__(self) -> None:
            self.left = 2

        def _next(self) -> bool:
            self.left -= 1
            return self.left >= 0

        def _get(self, name: str) -> Any:
            if name == "PRIORITY" and prio is None:
                raise KeyError(name)
            return raw if name == "MESSAGE" else prio

        def _get_realtime(self) -> int:
            return 1_700_000_000_000_000

    f._reader = Reader()
    f._drain()
    assert [t for t, _, _ in store.lines] == [raw.decode("utf-8", "replace")] * 2
    assert all(lvl == journal.PRIORITY_LEVEL.get(prio, "info") or prio is None
               for _, _, lvl in store.lines)  # fmt: skip


# -- systemctl show, ExecStart, Environment=, timestamps ------------------------------------------

prop_values = st.one_of(
    any_text.map(lambda t: t.replace("\n", " ")),
    st.sampled_from(["", "n/a", "0", "[not set]", "@1e999", "@nan", "@-inf", "Wed 2026-11-25 "
                     "17:22:40.123456 UTC", "{ path=/x ; argv[]=/x --api-key k ; ignore_errors=no"]),
)  # fmt: skip
props = st.dictionaries(st.sampled_from(unit_status.SHOW_PROPERTIES), prop_values, max_size=10)


@FAST
@given(st.one_of(any_text, prop_values))
def test_unit_value_parsers_take_any_text(value: str) -> None:
    ts = unit_status.parse_timestamp(value)
    assert ts is None or (isinstance(ts, float) and math.isfinite(ts))
    for argv in unit_status.parse_exec_start(value):
        assert all(isinstance(a, str) and a for a in argv)
    env = unit_status.parse_environment(value)
    assert all(isinstance(k, str) and k for k in env)
    words = unit_status.exec_start_from_unit_text(value)
    assert words is None or all(isinstance(w, str) for w in words)


@FAST
@given(st.floats(0, 4e9), st.booleans())
def test_timestamps_read_back(t: float, at: bool) -> None:
    from datetime import UTC, datetime

    if at:
        assert unit_status.parse_timestamp(f"@{t}") == t
    else:
        d = datetime.fromtimestamp(round(t, 6), UTC)
        text = d.strftime("%a %Y-%m-%d %H:%M:%S.%f UTC")
        assert unit_status.parse_timestamp(text) == pytest.approx(d.timestamp(), abs=1e-6)


@FAST
@given(props, st.booleans())
def test_status_from_any_properties(p: dict[str, str], user: bool) -> None:
    status = unit_status.status_from_properties("x.service", user, p)
    assert isinstance(status.warnings, tuple)
    assert all(isinstance(a, str) for a in status.exec_start)
    shown = " ".join(status.exec_start) + " ".join(status.environment)
    assert "--api-key k " not in shown + " "


@contextmanager
def _show_output(tmp: Path, text: str):  # type: ignore[no-untyped-def]
    out = tmp / "show.txt"
    out.write_bytes(text.encode("utf-8", "surrogateescape"))
    # systemctl's stand-in: prints the file, whatever arguments follow
    yield unit_status.Systemctl(command_prefix=("sh", "-c", f"cat '{out}'", "sh"))


@FEW
@given(st.lists(props, max_size=3), any_text)
def test_systemctl_show_output_splits_into_one_dict_per_unit(
    tmp_path_factory: pytest.TempPathFactory, blocks: list[dict[str, str]], junk: str
) -> None:
    # (systemctl's output is read as text: universal newlines make a lone \r a line break)
    blocks = [{k: v.replace("\r", " ") for k, v in b.items()} for b in blocks if b]
    text = "\n\n".join("\n".join(f"{k}={v}" for k, v in b.items()) for b in blocks)
    with _show_output(tmp_path_factory.mktemp("show"), text) as ctl:
        got = ctl.show(["x.service"])
    assert got == blocks  # a value holding U+2028, \x1c, \x85 … stays one value
    with _show_output(tmp_path_factory.mktemp("show"), junk) as ctl:
        assert all(isinstance(b, dict) for b in ctl.show(["x.service"]))


# -- /proc discovery ------------------------------------------------------------------------------

env_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)


class _FakeProc:
    def __init__(self, cmdline: list[str], environ: Any, name: str = "llama-server") -> None:
        self._cmdline, self._environ, self._name, self.pid = cmdline, environ, name, 4242

    @contextmanager
    def oneshot(self):  # type: ignore[no-untyped-def]
        yield

    def status(self) -> str:
        return "running"

    def name(self) -> str:
        return self._name

    def cmdline(self) -> list[str]:
        return self._cmdline

    def create_time(self) -> float:
        return 1.0

    def environ(self) -> dict[str, str]:
        if isinstance(self._environ, Exception):
            raise self._environ
        return self._environ

    def net_connections(self, kind: str) -> list[Any]:
        return []


@FAST
@given(
    st.lists(env_text, max_size=8),
    st.one_of(
        st.dictionaries(st.one_of(st.sampled_from(["LLAMA_ARG_PORT", "LLAMA_ARG_HOST",
              "LLAMA_API_KEY", "LLAMA_ARG_N_GPU_LAYERS", "LLAMA_ARG_CTX_SIZE"]), env_text),
              env_text, max_size=6),
        st.just(PermissionError("denied")),
    ),
)  # fmt: skip
def test_discovery_reads_any_process(argv: list[str], environ: Any) -> None:
    srv = server_from_process(_FakeProc(["/opt/llama-server", *argv], environ))
    assert srv is not None
    assert srv.url.startswith("http://")
    key = environ.get("LLAMA_API_KEY") if isinstance(environ, dict) else None
    if key and len(key) >= 4 and key not in " ".join(["/opt/llama-server", *argv]):
        assert key not in repr(srv)


def test_environ_of_a_real_process_is_read(tmp_path: Path) -> None:
    """/proc/PID/environ through psutil for a real child: the LLAMA_ARG_* form of the port."""
    import subprocess

    import psutil

    exe = tmp_path / "llama-server"
    exe.write_text("#!/bin/sh\nexec sleep 30\n")
    exe.chmod(0o755)
    env = {**os.environ, "LLAMA_ARG_PORT": "9123", "JUNK": "\udcff".encode(
        "utf-8", "surrogateescape").decode("latin-1")}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env,
                            executable=sys.executable)  # fmt: skip
    try:
        p = psutil.Process(proc.pid)
        srv = server_from_process(_Named(p, str(exe)))
        assert srv is not None and srv.url.endswith(":9123")
    finally:
        proc.kill()
        proc.wait()


class _Named:
    """A real psutil.Process whose argv[0] reads as llama-server."""

    def __init__(self, p: Any, argv0: str) -> None:
        self._p, self._argv0 = p, argv0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._p, name)

    def cmdline(self) -> list[str]:
        return [self._argv0]


def test_buffer_lines_stay_linear_on_long_lines() -> None:
    """A log of lines as long as the store keeps (8 KiB), one long run of non-space each, that
    mention a buffer size: parsed in well under a second, not quadratically."""
    import time

    lines = ["x" * 8000 + f" model buffer size = {i}.00 MiB" for i in range(200)]
    lines += ["y" * 8000 + " output buffer size" for _ in range(200)]
    t = time.perf_counter()
    parsed = parse_buffer_lines(lines)
    assert time.perf_counter() - t < 5.0
    assert parsed.model_mib == {"x" * 8000: float(sum(range(200)))}
