"""What a GGUF model file says about itself, as plain facts: hyper-parameters, the size of every
layer, the file type. Read by `llmtop.sources.gguf_info.read_gguf_info`; the VRAM planner and the
checks work from a `GgufInfo` without touching the file again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# general.file_type → the name llama.cpp prints (LLAMA_FTYPE_*), for display only.
FILE_TYPE_NAMES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
}


@dataclass(frozen=True)
class GgufInfo:
    path: str
    architecture: str
    name: str | None
    block_count: int
    context_length: int  # training context
    embedding_length: int
    feed_forward_length: int  # largest over the layers; 0 when not in the header
    head_count: int
    # One entry per layer (a scalar in the file is repeated); 0 = that layer has no KV cache.
    head_count_kv: tuple[int, ...]
    key_length: int  # per head; defaults to embedding_length / head_count
    value_length: int
    sliding_window: int | None
    # One bool per layer: True = sliding-window layer (from the pattern, scalar or array).
    swa_layers: tuple[bool, ...]
    file_type: int | None
    vocab_size: int | None
    # Bytes of the tensors of each repeating block blk.N.* (index N).
    layer_bytes: tuple[int, ...]
    token_embd_bytes: int
    output_bytes: int  # output.weight; 0 when absent (tied embeddings)
    output_norm_bytes: int
    other_bytes: int  # every other non-block tensor (rope freqs, …)
    file_bytes: int
    metadata: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def file_type_name(self) -> str | None:
        if self.file_type is None:
            return None
        return FILE_TYPE_NAMES.get(self.file_type, f"type {self.file_type}")

    @property
    def tied_embeddings(self) -> bool:
        return self.output_bytes == 0

    @property
    def weights_bytes(self) -> int:
        """Every tensor's bytes: what a CPU-only llama-server maps."""
        return (
            sum(self.layer_bytes)
            + self.token_embd_bytes
            + self.output_bytes
            + self.output_norm_bytes
            + self.other_bytes
        )

    @property
    def output_layer_bytes(self) -> int:
        """What llama.cpp puts on the output layer's device: output_norm + output (or, with tied
        embeddings, a duplicate of token_embd)."""
        return self.output_norm_bytes + (self.output_bytes or self.token_embd_bytes)
