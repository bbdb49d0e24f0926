"""VRAM plan arithmetic on generated GGUF files against hand-computed values.

Tiny model (llmtop.demo.tiny_model): f32 weights, n_embd 64, n_head 4, head_dim 16, n_ff 128,
vocab 259 (3 specials + 256 bytes), 4 blocks, training context 512.
Per block: attn_norm 64·4 = 256 B, attn_q 64·64·4 = 16384 B, attn_k/attn_v (n_head_kv·16)·64·4,
attn_output 16384 B, ffn_norm 256 B, ffn_gate/up/down 128·64·4 = 32768 B each.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from llmtop.demo.tiny_model import TinyModelShape, write_tiny_model
from llmtop.model.vram_plan import MiB, PlanRequest, parse_size, plan_vram, row_bytes
from llmtop.sources.gguf_info import read_gguf_info

BLOCK_MHA = 256 + 16384 + 16384 + 16384 + 16384 + 256 + 3 * 32768  # = 164352
BLOCK_GQA = 256 + 16384 + 8192 + 8192 + 16384 + 256 + 3 * 32768  # n_head_kv 2 → 147968
EMBD = 259 * 64 * 4  # token_embd and output: 66304
OUT_NORM = 64 * 4


@pytest.fixture(scope="module")
def gqa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(
        tmp_path_factory.mktemp("gqa") / "gqa.gguf", TinyModelShape(n_head_kv=2, n_ctx_train=4096)
    )


@pytest.fixture(scope="module")
def swa_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shape = TinyModelShape(
        n_layer=6, n_head_kv=2, n_ctx_train=8192, sliding_window=128, sliding_window_pattern=3
    )
    return write_tiny_model(tmp_path_factory.mktemp("swa") / "swa.gguf", shape)


def test_gguf_info_reads_header_and_tensor_table(gqa_model: Path) -> None:
    info = read_gguf_info(gqa_model)
    assert info.architecture == "llama"
    assert info.block_count == 4
    assert info.context_length == 4096
    assert info.embedding_length == 64
    assert info.head_count == 4
    assert info.head_count_kv == (2, 2, 2, 2)
    assert info.key_length == info.value_length == 16
    assert info.vocab_size == 259
    assert info.file_type_name == "F32"
    assert info.layer_bytes == (BLOCK_GQA,) * 4
    assert info.token_embd_bytes == EMBD and info.output_bytes == EMBD
    assert info.output_norm_bytes == OUT_NORM
    assert info.weights_bytes == 4 * BLOCK_GQA + 2 * EMBD + OUT_NORM
    assert info.file_bytes > info.weights_bytes  # header + tokenizer


def test_swa_pattern_every_third_layer_dense(swa_model: Path) -> None:
    info = read_gguf_info(swa_model)
    assert info.sliding_window == 128
    # llama.cpp set_swa_pattern(3): layer il is SWA when il % 3 < 2
    assert info.swa_layers == (True, True, False, True, True, False)


def test_plan_gqa_f16_layer_placement_and_kv(gqa_model: Path) -> None:
    info = read_gguf_info(gqa_model)
    # ctx 1000 → padded to 1024 cells. Per layer per cell: K = n_head_kv·16 = 32 f16 = 64 B, V 64 B.
    plan = plan_vram(info, PlanRequest(gpu_layers=3, ctx=1000))
    assert plan.n_ctx == 1024 and plan.kv_size == 1024
    assert plan.kv_k_bytes == 4 * 1024 * 64 == 262144
    assert plan.kv_cache_total_bytes == 4 * 1024 * 128
    # -ngl 3 with 4 blocks: the output layer + blocks 2 and 3 go to the GPU (the last ones).
    assert plan.output_on_gpu and plan.offloaded_repeating == 2
    assert plan.offloaded_text == "3/5"
    assert plan.weights_bytes == 2 * BLOCK_GQA + EMBD + OUT_NORM
    assert plan.kv_cache_bytes == 2 * 1024 * 128
    assert plan.total_bytes == plan.weights_bytes + plan.kv_cache_bytes + plan.compute_bytes
    # Nothing offloaded → nothing on the GPU.
    cpu = plan_vram(info, PlanRequest(gpu_layers=0, ctx=1000))
    assert cpu.total_bytes == 0 and cpu.offloaded_text == "0/5"
    # auto (-1) and 99 mean everything.
    for ngl in (-1, 99):
        full = plan_vram(info, PlanRequest(gpu_layers=ngl, ctx=1000))
        assert full.gpu_layers == 5
        assert full.weights_bytes == 4 * BLOCK_GQA + EMBD + OUT_NORM  # token_embd stays on CPU
        assert full.kv_cache_bytes == full.kv_cache_total_bytes


def test_plan_quantised_cache_types(gqa_model: Path) -> None:
    info = read_gguf_info(gqa_model)
    # q8_0: 32 elements → 34 B; q4_0: 32 elements → 18 B. A K/V row is 32 elements per cell.
    assert row_bytes("q8_0", 32) == 34 and row_bytes("q4_0", 32) == 18
    plan = plan_vram(
        info,
        PlanRequest(
            gpu_layers=5, ctx=2048, cache_type_k="q8_0", cache_type_v="q4_0", flash_attn=False
        ),
    )
    assert plan.kv_k_bytes == 4 * 2048 * 34
    assert plan.kv_v_bytes == 4 * 2048 * 18
    assert any("flash attention" in w for w in plan.warnings)
    fa = plan_vram(info, PlanRequest(ctx=2048, cache_type_v="q4_0", flash_attn=True))
    assert not any("flash attention" in w for w in fa.warnings)
    with pytest.raises(ValueError, match="unknown cache type"):
        plan_vram(info, PlanRequest(cache_type_k="q3_k"))


def test_plan_sliding_window_layers(swa_model: Path) -> None:
    info = read_gguf_info(swa_model)
    # ctx 8192, parallel 2, n_ubatch 512: SWA cells = PAD(min(8192, 128·2 + 512), 256) = 768.
    plan = plan_vram(info, PlanRequest(ctx=8192, parallel=2))
    assert plan.kv_size == 8192 and plan.kv_size_swa == 768
    per_cell = 64 + 64  # K + V, n_head_kv 2 × 16 f16
    assert plan.kv_cache_total_bytes == 2 * 8192 * per_cell + 4 * 768 * per_cell
    full = plan_vram(info, PlanRequest(ctx=8192, parallel=2, swa_full=True))
    assert full.kv_cache_total_bytes == 6 * 8192 * per_cell


def test_headroom_and_largest_settings(gqa_model: Path) -> None:
    info = read_gguf_info(gqa_model)
    vram = 4 * MiB
    plan = plan_vram(info, PlanRequest(gpu_layers=0, ctx=512), vram_bytes=vram)
    assert plan.fits and plan.headroom_percent == 100.0
    big = plan_vram(info, PlanRequest(gpu_layers=5, ctx=4096), vram_bytes=vram)
    assert big.fits is False and big.headroom_percent is not None and big.headroom_percent < 10
    # The reported maxima really are the edge: they fit with 10 % headroom, one more does not.
    limit = vram * 0.9
    assert big.max_ctx is not None and big.max_ctx % 256 == 0
    at_max = plan_vram(info, PlanRequest(gpu_layers=5, ctx=big.max_ctx))
    assert at_max.total_bytes <= limit
    if big.max_ctx < 4096:
        over = plan_vram(info, PlanRequest(gpu_layers=5, ctx=big.max_ctx + 256))
        assert over.total_bytes > limit
    assert big.max_gpu_layers is not None
    assert (
        plan_vram(info, PlanRequest(gpu_layers=big.max_gpu_layers, ctx=4096)).total_bytes <= limit
    )
    if big.max_gpu_layers < 5:
        nxt = plan_vram(info, PlanRequest(gpu_layers=big.max_gpu_layers + 1, ctx=4096))
        assert nxt.total_bytes > limit
    # Free VRAM below the need: not fitting, and said in words.
    tight = plan_vram(info, PlanRequest(gpu_layers=1, ctx=256), vram_bytes=vram, free_bytes=1000)
    assert tight.fits is False and any("free" in w for w in tight.warnings)


def test_ctx_above_training_context_warns(gqa_model: Path) -> None:
    info = read_gguf_info(gqa_model)
    plan = plan_vram(info, PlanRequest(ctx=8192))
    assert any("training context" in w for w in plan.warnings)


def test_tied_embeddings_put_token_embd_copy_on_gpu(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "tied.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(256)
    w.add_embedding_length(32)
    w.add_head_count(2)
    w.add_tensor("token_embd.weight", np.zeros((10, 32), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((32, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    info = read_gguf_info(path)
    assert info.tied_embeddings and info.output_bytes == 0
    assert info.head_count_kv == (2,)  # defaults to head_count
    plan = plan_vram(info, PlanRequest(gpu_layers=1, ctx=256))
    assert plan.weights_bytes == 10 * 32 * 4 + 32 * 4  # copy of token_embd + output_norm


def test_parse_size() -> None:
    assert parse_size("24G") == 24 * 1024**3
    assert parse_size("24GiB") == 24 * 1024**3
    assert parse_size("8192M") == 8192 * MiB
    assert parse_size("1000") == 1000
    with pytest.raises(ValueError):
        parse_size("lots")


def test_not_gguf(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="GGUF"):
        read_gguf_info(bad)
