"""What a GGUF model file says about itself: hyper-parameters and the size of every layer.

Read with the `gguf` package's GGUFReader (memory-mapped; only the header and tensor table are
touched). The VRAM planner (llmtop/model/vram_plan.py) works from a `GgufInfo`.
"""

from __future__ import annotations

import mmap
import re
import struct
from pathlib import Path
from typing import Any

from llmtop.model.gguf import GgufInfo

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.")

# Bounds for a header read from outside: a corrupt count must fail fast, not make GGUFReader loop
# over millions of elements or `read_gguf_info` allocate per-layer tables of billions of entries.
# The largest vocabularies have ~260 k tokens, the deepest models a few hundred layers.
MAX_ARRAY_LEN = 1 << 22
MAX_ENTRIES = 1 << 20  # key/value pairs, tensors
MAX_LAYERS = 1 << 16
# GGUFValueType → bytes, for the fixed-size scalars (8 = STRING and 9 = ARRAY are walked).
_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_MIN_TENSOR_INFO = 24  # name length, n_dims, type, offset


class _Header:
    """A cheap walk over the key/value header (struct on a memory map) that checks every length
    and count against the bytes the file holds, before GGUFReader walks it element by element."""

    def __init__(self, buf: Any, order: str) -> None:
        self.buf = buf
        self.size = len(buf)
        self.u32 = struct.Struct(order + "I")
        self.u64 = struct.Struct(order + "Q")
        self.pos = 24

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise ValueError(f"{what} at byte {self.pos} runs past the end of the file")

    def read(self, s: struct.Struct, what: str) -> int:
        self.need(s.size, what)
        (v,) = s.unpack_from(self.buf, self.pos)
        self.pos += s.size
        return int(v)

    def string(self, what: str) -> None:
        n = self.read(self.u64, what)
        self.need(n, what)
        self.pos += n

    def value(self, vtype: int, what: str, depth: int = 0) -> None:
        if vtype in _SCALAR_BYTES:
            self.need(_SCALAR_BYTES[vtype], what)
            self.pos += _SCALAR_BYTES[vtype]
        elif vtype == _STRING:
            self.string(what)
        elif vtype == _ARRAY and depth < 2:
            etype = self.read(self.u32, what)
            count = self.read(self.u64, what)
            if count > MAX_ARRAY_LEN:
                raise ValueError(f"{what} claims an array of {count} elements")
            if etype in _SCALAR_BYTES:
                self.need(count * _SCALAR_BYTES[etype], what)
                self.pos += count * _SCALAR_BYTES[etype]
            else:
                self.need(count * 8, what)  # every string or array element is >= 8 bytes
                for _ in range(count):
                    self.value(etype, what, depth + 1)
        else:
            raise ValueError(f"{what} has an unknown value type {vtype}")


def check_header(buf: Any) -> None:
    """Raise ValueError, naming the problem, for a GGUF header whose counts or lengths the data
    cannot hold. Files that are not GGUF v2/v3 pass: GGUFReader says what is wrong with them."""
    if len(buf) < 24 or bytes(buf[:4]) != b"GGUF":
        return
    (version,) = struct.unpack_from("<I", buf, 4)
    order = ">" if version & 0xFFFF == 0 else "<"
    (version,) = struct.unpack_from(order + "I", buf, 4)
    if version not in (2, 3):
        return
    n_tensors, n_kv = struct.unpack_from(order + "QQ", buf, 8)
    if n_kv > MAX_ENTRIES or n_tensors > MAX_ENTRIES:
        raise ValueError(f"header claims {n_kv} keys and {n_tensors} tensors")
    h = _Header(buf, order)
    for i in range(n_kv):
        h.string(f"key #{i}")
        h.value(h.read(h.u32, f"key #{i}"), f"value of key #{i}")
    h.need(n_tensors * _MIN_TENSOR_INFO, f"the table of {n_tensors} tensors")


def _check_file(path: Path) -> None:
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        return  # GGUFReader says what is wrong
    with f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # an empty file cannot be mapped: GGUFReader says so
            return
        with buf:
            try:
                check_header(buf)
            except ValueError as e:
                raise ValueError(f"{path}: corrupt GGUF header: {e}") from None


def _field_value(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # older gguf packages: fall back to the raw parts
        if not f.data:
            return None
        vals = [f.parts[i].tolist() for i in f.data]
        flat = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in vals]
        return flat[0] if len(flat) == 1 else flat


def _per_layer(value: Any, n: int, default: int) -> tuple[int, ...]:
    if value is None:
        return (default,) * n
    if isinstance(value, list | tuple):
        vals = [int(v) for v in value][:n]
        return tuple(vals + [vals[-1] if vals else default] * (n - len(vals)))
    return (int(value),) * n


def swa_pattern_layers(pattern: Any, n_layer: int, sliding_window: int | None) -> tuple[bool, ...]:
    """Which layers use sliding-window attention, as llama.cpp's set_swa_pattern decides:
    with a scalar pattern N, layer il is SWA when il % N < N - 1 (every Nth layer is dense);
    N = 0 means every layer is SWA. An array pattern is taken as is (true = SWA)."""
    if not sliding_window:
        return (False,) * n_layer
    if pattern is None:
        # A window without a pattern: llama.cpp's architectures that read only the window use
        # it on every layer.
        return (True,) * n_layer
    if isinstance(pattern, list | tuple):
        vals = [bool(v) for v in pattern][:n_layer]
        return tuple(vals + [False] * (n_layer - len(vals)))
    n = int(pattern)
    if n == 0:
        return (True,) * n_layer
    return tuple(il % n < n - 1 for il in range(n_layer))


def read_gguf_info(path: str | Path) -> GgufInfo:
    """Read the header and tensor table of a GGUF file. Raises ValueError for a file that is not
    GGUF or lacks the keys a plan needs."""
    import gguf  # heavy import (numpy): only here

    path = Path(path)
    _check_file(path)
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as e:
        raise ValueError(f"{path}: not a readable GGUF file ({e})") from e
    try:
        return _info(path, reader)
    except (TypeError, ValueError, ArithmeticError) as e:
        # a value of the wrong type or range (a float layer count, an array where a number
        # belongs …): this reader's own error, naming the problem
        if isinstance(e, ValueError) and str(e).startswith(f"{path}:"):
            raise
        raise ValueError(f"{path}: malformed GGUF header value ({type(e).__name__}: {e})") from e


def _info(path: Path, reader: Any) -> GgufInfo:

    arch = _field_value(reader, "general.architecture")
    if not isinstance(arch, str):
        raise ValueError(f"{path}: no general.architecture in the GGUF header")

    def key(suffix: str) -> Any:
        return _field_value(reader, f"{arch}.{suffix}")

    block_count = key("block_count")
    n_embd = key("embedding_length")
    n_head_raw = key("attention.head_count")
    if block_count is None or n_embd is None or n_head_raw is None:
        raise ValueError(f"{path}: header lacks {arch}.block_count/embedding_length/head_count")
    n_layer = int(block_count)
    if not 0 <= n_layer <= MAX_LAYERS:
        raise ValueError(f"{path}: {arch}.block_count {n_layer} is not a layer count")
    n_head_layers = _per_layer(n_head_raw, n_layer, 0)
    n_head = max(n_head_layers) if n_head_layers else 0
    head_kv_raw = key("attention.head_count_kv")
    head_count_kv = (
        _per_layer(head_kv_raw, n_layer, n_head) if head_kv_raw is not None else n_head_layers
    )
    default_head_dim = int(n_embd) // n_head if n_head else 0
    key_length = key("attention.key_length")
    value_length = key("attention.value_length")
    sliding_window = key("attention.sliding_window")
    sliding_window = int(sliding_window) if sliding_window else None
    swa = swa_pattern_layers(key("attention.sliding_window_pattern"), n_layer, sliding_window)
    ctx_train = key("context_length")
    file_type = _field_value(reader, "general.file_type")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    vocab_size = key("vocab_size")
    if vocab_size is None and tokens is not None:
        vocab_size = len(tokens.data)

    layer_bytes = [0] * n_layer
    token_embd = output = output_norm = other = 0
    for t in reader.tensors:
        n = int(t.n_bytes)
        m = _BLOCK_RE.match(t.name)
        if m and int(m.group(1)) < n_layer:
            layer_bytes[int(m.group(1))] += n
        elif t.name == "token_embd.weight":
            token_embd += n
        elif t.name == "output.weight":
            output += n
        elif t.name.startswith("output_norm."):
            output_norm += n
        else:
            other += n

    name = _field_value(reader, "general.name")
    return GgufInfo(
        path=str(path),
        architecture=arch,
        name=name if isinstance(name, str) else None,
        block_count=n_layer,
        context_length=int(ctx_train) if ctx_train else 0,
        embedding_length=int(n_embd),
        feed_forward_length=max(_per_layer(key("feed_forward_length"), n_layer, 0), default=0),
        head_count=n_head,
        head_count_kv=head_count_kv,
        key_length=int(key_length) if key_length else default_head_dim,
        value_length=int(value_length) if value_length else default_head_dim,
        sliding_window=sliding_window,
        swa_layers=swa,
        file_type=int(file_type) if file_type is not None else None,
        vocab_size=int(vocab_size) if vocab_size is not None else None,
        layer_bytes=tuple(layer_bytes),
        token_embd_bytes=token_embd,
        output_bytes=output,
        output_norm_bytes=output_norm,
        other_bytes=other,
        file_bytes=path.stat().st_size,
    )
