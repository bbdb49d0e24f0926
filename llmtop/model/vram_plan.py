"""VRAM plan: what a llama-server with given --gpu-layers/--ctx-size/cache types puts on the GPU.

Pure arithmetic over a `GgufInfo` (llmtop/sources/gguf_info.py); cheap enough to recompute on
every keystroke. The facts below were read off llama.cpp's source at the pinned build (11434):

* Layer placement (src/llama-model.cpp, load_tensors): with N = --gpu-layers and n = block_count,
  layers il >= max(n + 1 - N, 0) go to the GPU, where il = n is the *output layer* (output_norm +
  output, or a duplicate of token_embd when the embeddings are tied). So the output layer is the
  first thing offloaded (N = 1), then blocks are counted from the last one; N = n + 1 offloads
  everything. The input embedding (token_embd) always stays on the CPU. N = -1 (auto) / -2 (all)
  mean n + 1 here — with `--fit on` (the default) llama-server may lower an *auto* value to fit
  free VRAM, but it never touches an explicit number. (Older llama.cpp counted the output layer
  only once N > n; the pinned build does not.)
  The `-lv 4` line reads "offloaded min(N, n+1)/(n+1) layers to GPU".
* KV cache (src/llama-kv-cache.cpp): n_ctx is padded up to a multiple of 256; with the server's
  unified KV one stream of kv_size = n_ctx cells; per layer with KV
  kv_size × (row(type_k, n_head_kv·key_length) + row(type_v, n_head_kv·value_length)).
  Sliding-window layers (src/llama-kv-cache-iswa.cpp) hold PAD(min(n_ctx, n_swa·n_seq + n_ubatch),
  256) cells unless --swa-full. Each layer's KV lives on that layer's device (unless -nkvo).
* Compute buffer: a heuristic, not llama.cpp's graph allocator. The scheduler reserves the
  largest graph (T = min(n_ctx, n_ubatch) tokens); its peak is about
    activations   4 B × T × (3·n_embd + 2·n_ff)
  + the KQ mask   T × kv_size × (2 B with flash attention, 4 B without)
  + with a quantised cache and flash attention, f16 copies of K and V: 2 B × kv_size × n_embd_kv each
  + max(attention scores 4 B × T × kv_size × n_head (without flash attention),
        logits 4 B × T × n_vocab (where the output layer is)).
  Measured against a real CPU llama-server (tests/test_buffer_lines.py) it is within ~10 %; on
  the GPU the activation and mask parts count when any layer is offloaded, the attention part when
  a repeating layer is, the logits when the output layer is. Keep the 10–15 % headroom.
* Not counted: the CUDA context itself (a few hundred MiB per process, outside llama.cpp's
  buffers) — one more reason for the headroom.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from llmtop.model.gguf import GgufInfo

MiB = 1024 * 1024
CTX_PAD = 256
DEFAULT_HEADROOM_PERCENT = 10.0

# (block size in elements, bytes per block) — ggml's type traits for the KV cache types.
CACHE_TYPES: dict[str, tuple[int, int]] = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q8_0": (32, 34),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "iq4_nl": (32, 18),
    "q5_0": (32, 22),
    "q5_1": (32, 24),
}


def pad(n: int, to: int = CTX_PAD) -> int:
    return ((n + to - 1) // to) * to


def row_bytes(cache_type: str, n_elements: int) -> int:
    """ggml_row_size: bytes of a row of n_elements of a cache type."""
    try:
        block, size = CACHE_TYPES[cache_type.lower()]
    except KeyError:
        raise ValueError(
            f"unknown cache type {cache_type!r} (one of {', '.join(CACHE_TYPES)})"
        ) from None
    if n_elements % block:
        raise ValueError(f"{cache_type}: row of {n_elements} is not a multiple of {block}")
    return n_elements // block * size


@dataclass(frozen=True)
class PlanRequest:
    gpu_layers: int = -1  # -1 auto / -2 all → every layer (block_count + 1)
    ctx: int = 0  # 0 → the model's training context
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    parallel: int = 1
    # llama-server's default --flash-attn auto turns it on wherever the backend supports it (the
    # CPU and current CUDA GPUs), so the plan assumes on unless told off.
    flash_attn: bool = True
    n_ubatch: int = 512
    kv_offload: bool = True  # False = -nkvo
    swa_full: bool = False
    kv_unified: bool = True  # llama-server's default


@dataclass(frozen=True)
class VramPlan:
    request: PlanRequest
    n_layer: int  # block_count
    gpu_layers: int  # effective: 0 … block_count + 1
    offloaded_repeating: int
    output_on_gpu: bool
    n_ctx: int  # after padding
    kv_size: int  # cells per stream of the dense layers
    kv_size_swa: int | None
    # GPU side (what VRAM must hold)
    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    total_bytes: int
    # everything, any device (what a CPU-only server allocates)
    model_bytes: int
    kv_cache_total_bytes: int
    kv_k_bytes: int
    kv_v_bytes: int
    compute_total_bytes: int
    # against a GPU
    vram_bytes: int | None = None
    free_bytes: int | None = None
    headroom_percent: float | None = None
    headroom_target_percent: float = DEFAULT_HEADROOM_PERCENT
    fits: bool | None = None
    max_gpu_layers: int | None = None
    max_ctx: int | None = None
    warnings: tuple[str, ...] = ()

    @property
    def offloaded_text(self) -> str:
        """As llama-server's -lv 4 line says it: 'N/M'."""
        return f"{self.gpu_layers}/{self.n_layer + 1}"

    def to_json_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["offloaded"] = self.offloaded_text
        return d


def effective_gpu_layers(gpu_layers: int, block_count: int) -> int:
    if gpu_layers < 0:  # auto / all
        return block_count + 1
    return min(gpu_layers, block_count + 1)


def gpu_layer_set(gpu_layers: int, block_count: int) -> tuple[range, bool]:
    """(repeating layer indices on the GPU, output layer on the GPU) — llama.cpp's placement."""
    n = effective_gpu_layers(gpu_layers, block_count)
    start = max(block_count + 1 - n, 0)
    return range(min(start, block_count), block_count), n >= 1


def _kv_layer_bytes(info: GgufInfo, il: int, cells: int, tk: str, tv: str) -> tuple[int, int]:
    nkv = info.head_count_kv[il]
    if nkv <= 0:
        return 0, 0
    return (
        cells * row_bytes(tk, nkv * info.key_length),
        cells * row_bytes(tv, nkv * info.value_length),
    )


def _compute_estimate(
    info: GgufInfo, req: PlanRequest, n_tokens: int, kv_size: int, attn: bool, logits: bool
) -> int:
    n_embd = info.embedding_length
    n_ff = info.feed_forward_length or 4 * n_embd
    act = 4 * n_tokens * (3 * n_embd + 2 * n_ff)
    mask = n_tokens * kv_size * (2 if req.flash_attn else 4)
    extra = 0
    n_embd_kv = max(info.head_count_kv, default=0) * max(info.key_length, info.value_length)
    quantised = req.cache_type_k.lower() not in ("f16", "f32", "bf16") or (
        req.cache_type_v.lower() not in ("f16", "f32", "bf16")
    )
    if req.flash_attn and quantised and attn:
        extra = 2 * 2 * kv_size * n_embd_kv
    attn_b = 0 if req.flash_attn else 4 * n_tokens * kv_size * info.head_count
    logits_b = 4 * n_tokens * (info.vocab_size or 0)
    return act + mask + extra + max(attn_b if attn else 0, logits_b if logits else 0)


def _plan_core(info: GgufInfo, req: PlanRequest) -> VramPlan:
    n = info.block_count
    ngl = effective_gpu_layers(req.gpu_layers, n)
    gpu_blocks, output_on_gpu = gpu_layer_set(req.gpu_layers, n)
    ctx = req.ctx if req.ctx > 0 else (info.context_length or CTX_PAD)
    n_ctx = pad(ctx)
    n_seq = max(1, req.parallel)
    if req.kv_unified:
        n_stream, kv_size = 1, n_ctx
    else:
        n_stream, kv_size = n_seq, pad(n_ctx // n_seq)
    kv_swa: int | None = None
    if info.sliding_window and any(info.swa_layers):
        kv_swa = (
            kv_size
            if req.swa_full
            else pad(
                min(kv_size, info.sliding_window * (n_seq if req.kv_unified else 1) + req.n_ubatch)
            )
        )

    k_total = v_total = kv_gpu = 0
    gpu_set = set(gpu_blocks)
    for il in range(n):
        cells = kv_swa if (kv_swa is not None and info.swa_layers[il]) else kv_size
        k, v = _kv_layer_bytes(info, il, cells, req.cache_type_k, req.cache_type_v)
        k, v = k * n_stream, v * n_stream
        k_total += k
        v_total += v
        if il in gpu_set and req.kv_offload:
            kv_gpu += k + v

    weights_gpu = sum(info.layer_bytes[il] for il in gpu_blocks)
    if output_on_gpu:
        weights_gpu += info.output_layer_bytes

    n_tokens = min(n_ctx, req.n_ubatch)
    compute_total = _compute_estimate(info, req, n_tokens, kv_size, True, True)
    compute_gpu = 0
    if ngl > 0:
        compute_gpu = _compute_estimate(
            info, req, n_tokens, kv_size, len(gpu_blocks) > 0, output_on_gpu
        )

    warnings: list[str] = []
    if info.context_length and ctx > info.context_length:
        warnings.append(
            f"ctx {ctx} is above the model's training context {info.context_length}: "
            "positional encoding degrades past it"
        )
    for label, ctype, head in (
        ("K", req.cache_type_k, info.key_length),
        ("V", req.cache_type_v, info.value_length),
    ):
        block = CACHE_TYPES[ctype.lower()][0]
        if head % block:
            warnings.append(
                f"{label} cache type {ctype} (blocks of {block}) does not divide the head size "
                f"{head}: llama-server will refuse to start"
            )
    if req.cache_type_v.lower() not in ("f16", "f32", "bf16") and not req.flash_attn:
        warnings.append("a quantised V cache needs flash attention (-fa on)")

    return VramPlan(
        request=req,
        n_layer=n,
        gpu_layers=ngl,
        offloaded_repeating=len(gpu_blocks),
        output_on_gpu=output_on_gpu,
        n_ctx=n_ctx,
        kv_size=kv_size,
        kv_size_swa=kv_swa,
        weights_bytes=weights_gpu,
        kv_cache_bytes=kv_gpu,
        compute_bytes=compute_gpu,
        total_bytes=weights_gpu + kv_gpu + compute_gpu,
        model_bytes=info.weights_bytes,
        kv_cache_total_bytes=k_total + v_total,
        kv_k_bytes=k_total,
        kv_v_bytes=v_total,
        compute_total_bytes=compute_total,
        warnings=tuple(warnings),
    )


def _limit(vram: int, free: int | None, headroom_percent: float) -> int:
    lim = int(vram * (1 - headroom_percent / 100.0))
    return min(lim, free) if free is not None else lim


def plan_vram(
    info: GgufInfo,
    req: PlanRequest | None = None,
    *,
    vram_bytes: int | None = None,
    free_bytes: int | None = None,
    headroom_percent: float = DEFAULT_HEADROOM_PERCENT,
) -> VramPlan:
    """Plan one setting; with a GPU size also headroom, fits, and the largest gpu-layers (at this
    ctx) and ctx (at this gpu-layers, up to the training context) that keep `headroom_percent`
    free (and stay within `free_bytes` when given)."""
    req = req or PlanRequest()
    plan = _plan_core(info, req)
    if not vram_bytes:
        return plan
    limit = _limit(vram_bytes, free_bytes, headroom_percent)

    def ok(p: VramPlan) -> bool:
        return p.total_bytes <= limit

    max_ngl: int | None = None
    for ngl in range(info.block_count + 1, -1, -1):
        if ok(_plan_core(info, dataclasses.replace(req, gpu_layers=ngl))):
            max_ngl = ngl
            break

    # Largest ctx (a multiple of 256) up to the training context; monotonic → binary search.
    top = max(1, (info.context_length or 1 << 20) // CTX_PAD)
    lo, hi, best = 1, top, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if ok(_plan_core(info, dataclasses.replace(req, ctx=mid * CTX_PAD))):
            best, lo = mid * CTX_PAD, mid + 1
        else:
            hi = mid - 1

    headroom = 100.0 * (vram_bytes - plan.total_bytes) / vram_bytes
    warnings = list(plan.warnings)
    if free_bytes is not None and plan.total_bytes > free_bytes:
        warnings.append(
            f"needs {plan.total_bytes / MiB:.0f} MiB but only {free_bytes / MiB:.0f} MiB are free now"
        )
    return dataclasses.replace(
        plan,
        vram_bytes=vram_bytes,
        free_bytes=free_bytes,
        headroom_percent=round(headroom, 2),
        headroom_target_percent=headroom_percent,
        fits=ok(plan),
        max_gpu_layers=max_ngl,
        max_ctx=best,
        warnings=tuple(warnings),
    )


def parse_size(text: str) -> int:
    """'24G', '24GiB', '8192M', '16000000000' → bytes (binary units: G = GiB)."""
    s = text.strip().lower().replace(" ", "")
    for suffix in ("ib", "b"):
        if s.endswith(suffix) and s[: -len(suffix)][-1:].isalpha():
            s = s[: -len(suffix)]
            break
    mult = 1
    if s and s[-1] in "kmgt":
        mult = 1024 ** ("kmgt".index(s[-1]) + 1)
        s = s[:-1]
    try:
        value = float(s)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (e.g. 24G, 8192M)") from None
    if not math.isfinite(value) or value * mult >= 2**63:
        raise ValueError(f"not a size: {text!r} (e.g. 24G, 8192M)")
    if value <= 0:
        raise ValueError(f"size must be positive: {text!r}")
    return int(value * mult)
