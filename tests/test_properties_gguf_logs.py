"""Property tests: the GGUF reader on truncated and byte-mutated real files, and the log path
(classification, LogStore, the supervisor's pipe reader) on arbitrary bytes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmtop.control.supervisor import ChildSupervisor
from llmtop.model.gguf import GgufInfo
from llmtop.model.launch_spec import LaunchSpec
from llmtop.sources.gguf_info import read_gguf_info
from llmtop.sources.logs import (
    LEVELS,
    MAX_LINE_CHARS,
    LogStore,
    classify_level,
    detect_event,
    truncation_marker,
)

FAST = settings(max_examples=150, deadline=None)

# -- GGUF -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from llmtop.demo.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.gguf").read_bytes()


HEADER = 8_768  # the tiny model's header and tensor table end here (GGUFReader.data_offset)
GGUF_SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _read(path: Path, data: bytes) -> GgufInfo | None:
    path.write_bytes(data)
    t = time.perf_counter()
    try:
        info = read_gguf_info(path)
    except ValueError as e:  # its own error, naming the file and the problem
        assert str(e).startswith(f"{path}:")
        info = None
    assert time.perf_counter() - t < 2.0  # never a hang
    return info


@GGUF_SETTINGS
@given(st.integers(0, HEADER + 64))
def test_a_truncated_model_is_a_clean_error(
    gguf_bytes: bytes, tmp_path_factory: pytest.TempPathFactory, cut: int
) -> None:
    assert _read(tmp_path_factory.mktemp("cut") / "m.gguf", gguf_bytes[:cut]) is None


@GGUF_SETTINGS
@given(
    st.lists(
        st.tuples(st.integers(0, HEADER - 1), st.sampled_from([0, 1, 0x7F, 0x80, 0xFF])
                  | st.integers(0, 255)),
        min_size=1,
        max_size=6,
    ),
)  # fmt: skip
def test_a_byte_mutated_model_reads_or_is_a_clean_error(
    gguf_bytes: bytes, tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[int, int]]
) -> None:
    data = bytearray(gguf_bytes)
    for pos, byte in edits:
        data[pos] = byte
    info = _read(tmp_path_factory.mktemp("mut") / "m.gguf", bytes(data))
    if info is not None:  # what it read is usable by the planner
        assert 0 <= info.block_count <= 1 << 16
        assert len(info.layer_bytes) == len(info.swa_layers) == info.block_count
        assert len(info.head_count_kv) == info.block_count


def test_the_real_file_reads(gguf_bytes: bytes, tmp_path: Path) -> None:
    info = _read(tmp_path / "m.gguf", gguf_bytes)
    assert info is not None and info.block_count == 4 and info.architecture == "llama"


def test_a_huge_array_count_fails_fast_with_words(gguf_bytes: bytes, tmp_path: Path) -> None:
    """The token list's count set to 2^32-1 (a corrupt header): refused in words at once."""
    import struct

    at = gguf_bytes.index(b"tokenizer.ggml.tokens") + len(b"tokenizer.ggml.tokens") + 8
    data = bytearray(gguf_bytes)
    data[at : at + 8] = struct.pack("<Q", 2**32 - 1)
    path = tmp_path / "m.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt GGUF header"):
        read_gguf_info(path)


def test_a_huge_layer_count_is_refused(gguf_bytes: bytes, tmp_path: Path) -> None:
    import struct

    at = gguf_bytes.index(b"llama.block_count") + len(b"llama.block_count") + 4
    data = bytearray(gguf_bytes)
    data[at : at + 4] = struct.pack("<I", 2**32 - 1)
    path = tmp_path / "m.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="block_count 4294967295 is not a layer count"):
        read_gguf_info(path)


# -- log classification and the store ------------------------------------------------------------

any_text = st.text(st.characters(codec="utf-8"), max_size=400)


@FAST
@given(any_text)
def test_classification_takes_any_text(text: str) -> None:
    assert classify_level(text) in LEVELS
    ev = detect_event(text, 1.0)
    assert ev is None or ev.severity in ("info", "warning", "critical")


@FAST
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_log_store_keeps_every_line_bounded_and_printable(raw: list[bytes]) -> None:
    store = LogStore()
    for b in raw:
        store.append(b.decode("utf-8", "replace"))
    lines = store.lines()
    assert len(lines) == store.total_written == len(raw)
    for ln in lines:
        assert len(ln.text) <= MAX_LINE_CHARS
        assert "\x1b" not in ln.text and "\x00" not in ln.text  # no escape reaches the terminal
        assert ln.level in LEVELS


# -- the supervisor's pipe reader ------------------------------------------------------------------

line_bytes = st.binary(max_size=200).map(lambda b: b.replace(b"\n", b""))


async def _pump(data: bytes, chunks: list[int], secret: str | None = None) -> LogStore:
    store = LogStore()
    sup = ChildSupervisor(LaunchSpec.from_argv(["llama-server"]), store)
    reader = asyncio.StreamReader()
    pos = 0
    for n in chunks:
        reader.feed_data(data[pos : pos + n])
        pos += n
    reader.feed_data(data[pos:])
    reader.feed_eof()
    await sup._pump(reader, "stdout", secret)
    return store


@FAST
@given(st.lists(line_bytes, max_size=30), st.lists(st.integers(1, 64), max_size=10),
       st.booleans())  # fmt: skip
def test_pipe_reader_keeps_every_line(lines: list[bytes], chunks: list[int], eol: bool) -> None:
    """Arbitrary bytes (invalid UTF-8, NUL, ESC), split across reads anywhere: one stored line
    per line written, in order, each the decoded line (no line lost, none merged)."""
    data = b"\n".join(lines) + (b"\n" if eol and lines else b"")
    store = asyncio.run(_pump(data, chunks))
    got = store.lines()
    expected = data.split(b"\n")
    if data.endswith(b"\n") or not data:
        expected.pop()
    assert len(got) == len(expected)
    probe = LogStore()  # the same line appended directly: what the store makes of it
    for ln, raw in zip(got, expected, strict=True):
        assert ln.text == probe.append(raw.decode("utf-8", "replace").rstrip("\r")).text
        assert ln.stream == "stdout"


@settings(max_examples=8, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.integers(0, 3), st.sampled_from([1, 4096, 65536]))
def test_pipe_reader_bounds_a_10_mb_line(seed: bytes, k: int, chunk: int) -> None:
    """A 10 MB line without a newline (a prompt dump, binary garbage) between short ones: kept
    as its head with a visible '[truncated N bytes]' that counts exactly what was cut."""
    huge = (seed.replace(b"\n", b"") or b"x") * (10_000_000 // max(1, len(seed)) + 1)
    data = b"before\n" * k + huge + b"\nafter\n"
    store = asyncio.run(_pump(data, [chunk] * 4))
    got = store.lines()
    assert [ln.text for ln in got[:k]] == ["before"] * k
    assert got[-1].text == "after"
    assert len(got) == k + 2
    cut = got[k].text
    assert len(cut) <= MAX_LINE_CHARS
    from llmtop.control.supervisor import MAX_LINE_BYTES

    assert cut.endswith(truncation_marker(len(huge) - MAX_LINE_BYTES))
    assert store.stored_chars <= MAX_LINE_CHARS * (k + 2)


@FAST
@given(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=4, max_size=20),
       st.lists(line_bytes, max_size=5), st.lists(st.integers(1, 16), max_size=6))  # fmt: skip
def test_pipe_reader_never_stores_the_key(key: str, lines: list[bytes], chunks: list[int]) -> None:
    raw = [b"serving with key " + key.encode() + b" " + ln for ln in lines]
    raw.append(key.encode())
    store = asyncio.run(_pump(b"\n".join(raw) + b"\n", chunks, secret=key))
    assert len(store.lines()) == len(raw)
    assert all(key not in ln.text for ln in store.lines())
