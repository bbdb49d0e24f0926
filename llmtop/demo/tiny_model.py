"""Write a tiny llama-architecture GGUF model with the `gguf` package.

The model is random f32 weights with a byte-level tokenizer (<unk> <s> </s> + 256 byte tokens).
It is meaningless as a language model but a real llama-server loads it in well under a second and
generates ~1 000 tokens/s on a CPU, which is what the demo and the tests need.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TinyModelShape:
    arch: str = "llama"
    n_layer: int = 4
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 128
    n_ctx_train: int = 512
    # Optional sliding-window attention (written only when set); pattern = every Nth layer is dense.
    sliding_window: int | None = None
    sliding_window_pattern: int | None = None
    file_type: int = 0  # 0 = ALL_F32


def _vocab() -> tuple[list[bytes], list[int], list[float]]:
    tokens = [b"<unk>", b"<s>", b"</s>"] + [f"<0x{i:02X}>".encode() for i in range(256)]
    types = [2, 3, 3] + [6] * 256  # UNKNOWN, CONTROL, CONTROL, BYTE
    scores = [0.0] * len(tokens)
    return tokens, types, scores


def write_tiny_model(path: str | Path, shape: TinyModelShape | None = None, seed: int = 0) -> Path:
    """Write the model to *path* and return it. Deterministic for a given shape and seed."""
    import gguf  # imported here: only the demo/tests/planner need it

    shape = shape or TinyModelShape()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens, types, scores = _vocab()
    n_vocab = len(tokens)
    head_dim = shape.n_embd // shape.n_head
    n_embd_kv = head_dim * shape.n_head_kv

    w = gguf.GGUFWriter(str(path), shape.arch)
    w.add_name("llmtop-tiny")
    w.add_block_count(shape.n_layer)
    w.add_context_length(shape.n_ctx_train)
    w.add_embedding_length(shape.n_embd)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(shape.file_type)
    if shape.sliding_window is not None:
        w.add_sliding_window(shape.sliding_window)
    if shape.sliding_window_pattern is not None:
        w.add_uint32(f"{shape.arch}.attention.sliding_window_pattern", shape.sliding_window_pattern)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_scores(scores)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def t(name: str, *numpy_shape: int, scale: float = 0.02) -> None:
        w.add_tensor(name, (rng.standard_normal(numpy_shape) * scale).astype(np.float32))

    def ones(name: str, n: int) -> None:
        w.add_tensor(name, np.ones(n, dtype=np.float32))

    t("token_embd.weight", n_vocab, shape.n_embd)
    ones("output_norm.weight", shape.n_embd)
    t("output.weight", n_vocab, shape.n_embd)
    for i in range(shape.n_layer):
        p = f"blk.{i}."
        ones(p + "attn_norm.weight", shape.n_embd)
        t(p + "attn_q.weight", shape.n_embd, shape.n_embd)
        t(p + "attn_k.weight", n_embd_kv, shape.n_embd)
        t(p + "attn_v.weight", n_embd_kv, shape.n_embd)
        t(p + "attn_output.weight", shape.n_embd, shape.n_embd)
        ones(p + "ffn_norm.weight", shape.n_embd)
        t(p + "ffn_gate.weight", shape.n_ff, shape.n_embd)
        t(p + "ffn_up.weight", shape.n_ff, shape.n_embd)
        t(p + "ffn_down.weight", shape.n_embd, shape.n_ff)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
