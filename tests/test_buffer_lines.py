"""The VRAM plan against llama.cpp itself: a real llama-server with -lv 4 prints its buffer sizes.

On a CPU-only server every buffer is host memory, so the predicted weights and KV cache must match
the printed values to their print precision (two decimals in MiB). The compute buffer is an
estimate; its error is recorded (printed with -s) and only held to a loose bound.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from llmtop.demo.tiny_model import TinyModelShape, write_tiny_model
from llmtop.model.vram_plan import MiB, PlanRequest, plan_vram
from llmtop.sources.buffer_lines import (
    find_fit_params,
    format_comparison,
    offload_agrees,
    parse_buffer_lines,
    parse_fit_params_output,
    predicted_vs_actual,
    run_fit_params,
)
from llmtop.sources.gguf_info import read_gguf_info
from tests.conftest import missing_component
from tests.realserver import RunningServer

PRINT_PRECISION = 0.005 * MiB + 1  # "%8.2f MiB"

GPU_LOG = """\
0.00.013.775 I load_tensors: offloaded 3/5 layers to GPU
0.00.013.775 I load_tensors:   CPU_Mapped model buffer size =    66.00 MiB
0.00.013.776 I load_tensors:        CUDA0 model buffer size =  3800.50 MiB
0.00.014.106 I llama_context: n_ctx                 = 4096
0.00.014.286 I llama_context:  CUDA_Host  output buffer size =     0.49 MiB
0.00.014.348 I llama_kv_cache:      CUDA0 KV buffer size =   256.00 MiB
0.00.014.349 I llama_kv_cache:        CPU KV buffer size =   256.00 MiB
0.00.014.599 I llama_kv_cache: size =  512.00 MiB (  4096 cells,  32 layers,  4/1 seqs), K (q8_0):  136.00 MiB, V (q8_0):  136.00 MiB
0.00.016.682 I sched_reserve:      CUDA0 compute buffer size =   300.01 MiB
0.00.016.682 I sched_reserve:  CUDA_Host compute buffer size =    16.01 MiB
"""


def test_parse_gpu_style_lines() -> None:
    b = parse_buffer_lines(GPU_LOG)
    assert b.offloaded == (3, 5)
    assert b.n_ctx == 4096
    assert b.model(device=True) == 3800.50 and b.model(device=False) == 66.0
    assert b.kv(device=True) == 256.0 and b.kv() == 512.0
    assert b.kv_caches[0].cells == 4096 and b.kv_caches[0].type_k == "q8_0"
    assert b.compute(device=True) == 300.01 and b.compute(device=False) == 16.01
    # A second load (restart) in the same text replaces the first.
    again = parse_buffer_lines(GPU_LOG + GPU_LOG.replace("3/5", "5/5"))
    assert again.offloaded == (5, 5) and again.model(device=True) == 3800.50


def test_fit_params_output_parsing() -> None:
    out = 'some log\n-c 4096 -ngl 48 -ot "blk\\.14\\.ffn=CPU"\n'
    s = parse_fit_params_output(out)
    assert s is not None and s.ctx == 4096 and s.gpu_layers == 48 and s.extra.startswith("-ot")
    assert parse_fit_params_output("nothing useful") is None


CASES = {
    "tiny f16 ctx512": ((), PlanRequest(gpu_layers=0, ctx=512), None),
    # Quantised caches need a head size divisible by 32: n_embd 128 / 4 heads.
    "head32 q8_0/q4_0 ctx1000": (
        ("-c", "1000", "-ctk", "q8_0", "-ctv", "q4_0", "-fa", "on"),
        PlanRequest(gpu_layers=0, ctx=1000, cache_type_k="q8_0", cache_type_v="q4_0"),
        TinyModelShape(n_embd=128, n_head=4, n_head_kv=2, n_ff=256),
    ),
    "tiny flash-attn off ctx1024": (
        ("-c", "1024", "-fa", "off"),
        PlanRequest(gpu_layers=0, ctx=1024, flash_attn=False),
        None,
    ),
    "GQA ctx2048": (
        ("-c", "2048"),
        PlanRequest(gpu_layers=0, ctx=2048),
        TinyModelShape(n_head_kv=2, n_ctx_train=4096),
    ),
}


@pytest.mark.real_server
@pytest.mark.parametrize("case", list(CASES))
def test_plan_matches_real_llama_server(
    case: str, server_factory: Callable[..., RunningServer], tiny_model: Path, tmp_path: Path
) -> None:
    extra, req, shape = CASES[case]
    model = tiny_model if shape is None else write_tiny_model(tmp_path / "m.gguf", shape)
    srv = server_factory("-lv", "4", *extra, model=model)
    parsed = parse_buffer_lines(srv.log())
    assert not parsed.empty, "llama-server printed no buffer lines with -lv 4"
    plan = plan_vram(read_gguf_info(model), req)
    rows = {r.name: r for r in predicted_vs_actual(plan, parsed)}
    print(f"\n[{case}]\n" + format_comparison(list(rows.values())))

    w = rows["weights (all devices)"]
    kv = rows["KV cache (all layers)"]
    assert w.actual_bytes is not None and kv.actual_bytes is not None
    # CPU buffers are exact: equal to the print precision.
    assert abs(w.predicted_bytes - w.actual_bytes) <= PRINT_PRECISION  # type: ignore[operator]
    assert abs(kv.predicted_bytes - kv.actual_bytes) <= PRINT_PRECISION  # type: ignore[operator]
    assert parsed.kv_caches[0].cells == plan.kv_size
    assert parsed.n_ctx == plan.n_ctx
    # K and V separately, each to print precision.
    assert abs(parsed.kv_caches[0].k_mib * MiB - plan.kv_k_bytes) <= PRINT_PRECISION
    assert abs(parsed.kv_caches[0].v_mib * MiB - plan.kv_v_bytes) <= PRINT_PRECISION
    # The compute buffer is a heuristic: within 15 % on these shapes (measured: <= 7 %).
    c = rows["compute (all devices, est.)"]
    assert c.error_percent is not None and abs(c.error_percent) < 15
    # A CPU-only build prints no "offloaded" line: nothing to contradict.
    assert offload_agrees(plan, parsed) is None


@pytest.mark.real_server
def test_llama_fit_params_suggestion(llama_server_bin: Path, tiny_model: Path) -> None:
    fit = find_fit_params(llama_server_bin)
    if fit is None:
        missing_component("llama-fit-params not built next to llama-server")
    assert fit is not None
    s = run_fit_params(fit, tiny_model, ["-c", "1024", "-ngl", "3"])
    assert s.error is None, s.error
    # Explicit values are taken as given (fit only adjusts defaults).
    assert s.ctx == 1024 and s.gpu_layers == 3
    d = run_fit_params(fit, tiny_model)
    assert d.error is None and d.ctx == 512  # ctx 0 → the training context


@pytest.mark.real_server
def test_plan_command_shows_fit_params_beside(llama_server_bin: Path, tiny_model: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    if find_fit_params(llama_server_bin) is None:
        missing_component("llama-fit-params not built next to llama-server")
    env = {**os.environ, "LLMTOP_LLAMA_SERVER": str(llama_server_bin)}
    cp = subprocess.run(
        [sys.executable, "-m", "llmtop", "plan", str(tiny_model), "--ctx", "256",
         "--fit-params", "--json"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    d = json.loads(cp.stdout)
    assert d["fit_params"] == {"ctx": 256, "gpu_layers": -1, "extra": "", "error": None}
    assert d["n_ctx"] == 256
    cp = subprocess.run(
        [sys.executable, "-m", "llmtop", "plan", str(tiny_model), "--fit-params"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert "llama-fit-params suggests: -c 512 -ngl -1" in cp.stdout
