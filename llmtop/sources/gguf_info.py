"""What a GGUF model file says about itself: hyper-parameters and the size of every layer.

Read with the `gguf` package's GGUFReader (memory-mapped; only the header and tensor table are
touched). The VRAM planner (llmtop/model/vram_plan.py) works from a `GgufInfo`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from llmtop.model.gguf import GgufInfo

_BLOCK_RE = re.compile(r"^blk\.(\d+)\.")


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
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as e:
        raise ValueError(f"{path}: not a readable GGUF file ({e})") from e

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
