"""LogStore, levels and events: on llama.cpp's own log lines and on a real server's log."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from llmtop.sources.logs import (
    LogLine,
    LogStore,
    classify_level,
    detect_event,
    level_from_priority,
    strip_prefix,
)
from tests.realserver import RunningServer

# Lines as llama-server writes them (llama-server.md, "Log lines worth recognising").
OOM_LINES = [
    "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 7100.00 MiB on device 0: cudaMalloc failed: out of memory",
    "alloc_tensor_range: failed to allocate CUDA0 buffer of size 7444889600",
    "llama_model_load: error loading model: unable to allocate CUDA0 buffer",
    "llama_init_from_model: failed to allocate buffer for kv cache",
    "llama_init_from_model: failed to allocate compute pp buffers",
    "ggml_vulkan: Device memory allocation of size 4294967296 failed.",
    "CUDA error: out of memory",
]


@pytest.mark.parametrize("line", OOM_LINES)
def test_every_out_of_memory_line_is_an_oom_event(line: str) -> None:
    ev = detect_event(line, 1.0)
    assert ev is not None
    assert (ev.kind, ev.severity) == ("oom", "critical")
    assert ev.message == line
    assert classify_level(line) == "error"


@pytest.mark.parametrize(
    ("line", "kind", "severity"),
    [
        ("0.00.035.080 I srv    load_model: loading model '/m/tiny.gguf'", "loading_model", "info"),
        ("0.00.301.512 I srv  llama_server: model loaded", "model_loaded", "info"),
        (
            "0.00.301.600 I srv  llama_server: listening on http://127.0.0.1:8080",
            "listening",
            "info",
        ),
        (
            "0.00.001.000 E srv  llama_server: exiting due to model loading error",
            "load_failed",
            "critical",
        ),
        (
            "couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8080",
            "bind_failed",
            "critical",
        ),
        (
            "decode: failed to find a memory slot for batch of size 512",
            "context_exceeded",
            "warning",
        ),
        ("Context size has been exceeded.", "context_exceeded", "warning"),
        ("load_tensors:        CUDA0 model buffer size =  4096.00 MiB", "buffer_sizes", "info"),
        ("llama_kv_cache:      CUDA0 KV buffer size =   256.00 MiB", "buffer_sizes", "info"),
        ("sched_reserve:      CUDA0 compute buffer size =   164.01 MiB", "buffer_sizes", "info"),
        ("load_tensors: offloaded 33/33 layers to GPU", "buffer_sizes", "info"),
    ],
)
def test_milestones_and_failures(line: str, kind: str, severity: str) -> None:
    ev = detect_event(line, 5.0)
    assert ev is not None
    assert (ev.kind, ev.severity, ev.time) == (kind, severity, 5.0)
    assert ev.message == strip_prefix(line).strip()


def test_buffer_size_event_keeps_the_numbers() -> None:
    ev = detect_event("0.01.000.000 I load_tensors:   CPU_Mapped model buffer size =  0.83 MiB", 0)
    assert (
        ev is not None and ev.message == "load_tensors:   CPU_Mapped model buffer size =  0.83 MiB"
    )


def test_ordinary_lines_raise_no_event() -> None:
    for line in [
        "0.00.400.000 I slot print_timing: id  0 | task 0 | prompt eval time = 1.2 ms / 3 tokens",
        "0.00.400.000 I srv  log_server_r: request: GET /health 127.0.0.1 200",
        "",
        "................................",
    ]:
        assert detect_event(line, 0.0) is None


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("0.00.035.080 I srv    load_model: loading model 'x'", "info"),
        ("0.00.035.080 W llama_context: n_ctx_seq (512) < n_ctx_train (4096)", "warning"),
        ("0.00.035.080 E main: error: something", "error"),
        ("0.00.035.080 D some debug detail", "debug"),
        # the prefix decides, even when words look alarming
        ("0.00.035.080 I srv  params_from_: error_count = 0", "info"),
        ("error: invalid argument: --bogus", "error"),
        ("gguf_init_from_file: failed to open GGUF file 'x.gguf'", "error"),
        ("warning: no usable GPU found", "warning"),
        ("build: 11434 (abcdef) with cc", "info"),
    ],
)
def test_levels(line: str, level: str) -> None:
    assert classify_level(line) == level


def test_journald_priority_sets_the_level() -> None:
    assert level_from_priority(3) == "error"
    assert level_from_priority("4") == "warning"
    assert level_from_priority(6) == "info"
    assert level_from_priority(7) == "debug"
    assert level_from_priority(None) is None
    store = LogStore()
    line = store.append("all is well", "journal", priority=3)
    assert line.level == "error" and line.stream == "journal"


def test_store_is_bounded_and_counts_everything() -> None:
    store = LogStore(maxlen=100)
    for i in range(1050):
        store.append(f"line {i}")
    assert len(store.lines()) == 100
    assert store.total_written == 1050 == store.last_seq
    assert store.lines()[0].text == "line 950"
    assert store.lines()[-1].text == "line 1049"


def test_since_gives_the_new_lines_for_batched_appends() -> None:
    store = LogStore(maxlen=10)
    store.extend([("a", "stdout"), ("b", "stderr")])
    seen = store.last_seq
    assert store.since(seen) == []
    store.extend((f"x{i}", "stdout") for i in range(3))
    new = store.since(seen)
    assert [ln.text for ln in new] == ["x0", "x1", "x2"]
    assert [ln.seq for ln in new] == [3, 4, 5]
    # a reader far behind gets what is still kept
    store.extend((f"y{i}", "stdout") for i in range(20))
    assert [ln.text for ln in store.since(0)][0] == "y10"
    assert len(store.since(0)) == 10


def test_extend_takes_loglines_and_returns_events() -> None:
    store = LogStore()
    events = store.extend(
        [
            LogLine(99, 7.0, "srv  llama_server: model loaded", "journal", "info"),
            ("cudaMalloc failed: out of memory", "stderr"),
        ]
    )
    assert [e.kind for e in events] == ["model_loaded", "oom"]
    assert [ln.seq for ln in store.lines()] == [1, 2]  # renumbered
    assert store.lines()[0].time == 7.0


def test_events_are_bounded_and_llmtop_notes_are_events() -> None:
    store = LogStore(max_events=3)
    for _ in range(5):
        store.append("srv  llama_server: model loaded")
    assert len(store.events()) == 3
    ev = store.note("exited", "llama-server exited: exit code 1", "critical")
    assert store.events()[-1] == ev
    last = store.lines()[-1]
    assert (last.stream, last.level, last.text) == ("llmtop", "error", ev.message)


def test_search_ignores_case() -> None:
    store = LogStore()
    store.extend([("Loading model", "stderr"), ("other", "stderr"), ("model LOADED", "stderr")])
    assert [ln.text for ln in store.search("model")] == ["Loading model", "model LOADED"]


def test_tail_errors_gives_the_servers_own_error_lines() -> None:
    store = LogStore()
    store.append("0.00.000.100 I build info")
    store.append("0.00.000.200 E gguf_init_from_file: failed to open GGUF file 'nope.gguf'")
    start = store.last_seq
    store.append("0.00.000.300 E llama_model_load: error loading model: bad")
    store.append("0.00.000.400 I srv    load_model: loading model 'nope.gguf'")
    store.note("exited", "llama-server exited: exit code 1", "critical")
    assert store.tail_errors() == [
        "gguf_init_from_file: failed to open GGUF file 'nope.gguf'",
        "llama_model_load: error loading model: bad",
    ]
    assert store.tail_errors(since_seq=start) == ["llama_model_load: error loading model: bad"]
    assert store.tail_errors(n=1) == ["llama_model_load: error loading model: bad"]


def test_store_is_thread_safe() -> None:
    store = LogStore(maxlen=1000)

    def writer(tag: str) -> None:
        for i in range(2000):
            store.append(f"{tag} {i}", tag)

    threads = [threading.Thread(target=writer, args=(f"t{k}",)) for k in range(4)]
    for t in threads:
        t.start()
    seen = 0
    while any(t.is_alive() for t in threads):
        batch = store.since(seen)
        if batch:
            assert [ln.seq for ln in batch] == list(range(batch[0].seq, batch[-1].seq + 1))
            seen = batch[-1].seq
    for t in threads:
        t.join()
    assert store.total_written == 8000
    assert len(store.lines()) == 1000


@pytest.mark.real_server
def test_events_from_a_real_server_log(
    server_factory: Callable[..., RunningServer],
) -> None:
    srv = server_factory()
    # the log is written by the real server; wait for the "listening" line to reach the file
    deadline = time.monotonic() + 20
    while "listening" not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    store = LogStore()
    store.extend((ln, "stderr") for ln in srv.log().splitlines())
    kinds = [e.kind for e in store.events()]
    assert "loading_model" in kinds
    assert "model_loaded" in kinds
    assert "listening" in kinds
    listening = next(e for e in store.events() if e.kind == "listening")
    assert srv.url.split("//")[1] in listening.message
    assert not any(e.severity == "critical" for e in store.events())
    assert store.tail_errors() == []  # a healthy start shows no error lines


@pytest.mark.real_server
def test_buffer_size_events_from_a_real_server_at_lv4(
    server_factory: Callable[..., RunningServer],
) -> None:
    srv = server_factory("-lv", "4")
    store = LogStore()
    store.extend((ln, "stderr") for ln in srv.log().splitlines())
    sizes = [e.message for e in store.events() if e.kind == "buffer_sizes"]
    assert any("model buffer size" in m for m in sizes), sizes
    assert any("KV buffer size" in m or "llama_kv_cache: size" in m for m in sizes), sizes
