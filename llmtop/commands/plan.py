"""`llmtop plan MODEL.gguf …` — VRAM plan from the GGUF header: weights, KV cache, compute,
headroom against a GPU, and the largest --gpu-layers / --ctx-size that keep 10 % headroom."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from llmtop.model.gguf import GgufInfo
from llmtop.model.launch_spec import parse_gpu_layers
from llmtop.model.vram_plan import (
    CACHE_TYPES,
    DEFAULT_HEADROOM_PERCENT,
    MiB,
    PlanRequest,
    VramPlan,
    parse_size,
    plan_vram,
)
from llmtop.sources.gguf_info import read_gguf_info

FIT_NOTE = (
    "llama-server's --fit (on by default) only adjusts values left at their defaults "
    "(--gpu-layers auto, --ctx-size 0); an explicit --gpu-layers or --ctx-size is taken as given."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="path to a .gguf model file")
    p.add_argument("--ctx", "-c", type=int, default=0, help="context size (0 = training context)")
    p.add_argument(
        "--gpu-layers",
        "-ngl",
        type=_gpu_layers,
        default=-1,
        help="layers to offload: N, auto or all (default: all)",
    )
    p.add_argument("--cache-type-k", "-ctk", default="f16", choices=sorted(CACHE_TYPES))
    p.add_argument("--cache-type-v", "-ctv", default="f16", choices=sorted(CACHE_TYPES))
    p.add_argument("--parallel", "-np", type=int, default=1, help="parallel slots (default 1)")
    p.add_argument(
        "--flash-attn",
        "-fa",
        nargs="?",
        const="on",
        default="auto",
        choices=("on", "off", "auto"),
        help="flash attention (default auto, which llama.cpp turns on where supported)",
    )
    p.add_argument(
        "--headroom",
        type=float,
        default=DEFAULT_HEADROOM_PERCENT,
        help="VRAM to keep free, percent (default 10; the playbook says 10–15)",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--vram", type=parse_size, help="GPU memory size, e.g. 24G or 8192M")
    g.add_argument(
        "--gpu", type=int, metavar="INDEX", help="read total/free VRAM of this GPU (NVML)"
    )
    p.add_argument(
        "--fit-params",
        nargs="?",
        const="auto",
        metavar="BINARY",
        help="also run llama.cpp's llama-fit-params (found on PATH or next to "
        "$LLMTOP_LLAMA_SERVER unless given) and show its suggestion beside llmtop's",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.epilog = FIT_NOTE


def _gpu_layers(text: str) -> int:
    value = parse_gpu_layers(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"not a layer count: {text!r}")
    return value


def read_gpu_memory(index: int) -> tuple[int, int, str | None]:
    """(total, free, name) of one GPU, read once through llmtop.sources.gpu (NVML;
    LLMTOP_NVML_LIBRARY picks another library). RuntimeError with the reason in words when there is
    no driver or no such GPU."""
    from llmtop.sources.gpu import GpuMonitor

    monitor = GpuMonitor()
    try:
        reading = monitor.sample_once()
    finally:
        monitor.stop()
    for s in reading.samples:
        if s.index == index and not s.lost and s.memory_total_bytes:
            free = s.memory_free_bytes
            if free is None and s.memory_used_bytes is not None:
                free = s.memory_total_bytes - s.memory_used_bytes
            total = s.memory_total_bytes
            return total, free if free is not None else total, s.name
    if reading.samples:
        raise RuntimeError(f"no GPU with index {index} ({len(reading.samples)} found)")
    raise RuntimeError(reading.note or "no NVIDIA GPU found")


def _fit_binary(arg: str) -> str | None:
    import os
    import shutil

    from llmtop.sources.buffer_lines import find_fit_params

    if arg != "auto":
        return arg
    server = os.environ.get("LLMTOP_LLAMA_SERVER")
    if server:
        found = find_fit_params(server)
        if found:
            return str(found)
    return shutil.which("llama-fit-params")


def run_fit(args: argparse.Namespace) -> dict[str, Any]:
    """llama-fit-params' suggestion for the same model; only values left at defaults are fitted,
    so -c / -ngl are passed only when given explicitly."""
    from llmtop.sources.buffer_lines import run_fit_params

    binary = _fit_binary(args.fit_params)
    if binary is None:
        return {"error": "llama-fit-params not found (give its path: --fit-params PATH)"}
    extra: list[str] = []
    if args.ctx:
        extra += ["-c", str(args.ctx)]
    if args.gpu_layers >= 0:
        extra += ["-ngl", str(args.gpu_layers)]
    s = run_fit_params(binary, args.model, extra)
    return {"ctx": s.ctx, "gpu_layers": s.gpu_layers, "extra": s.extra, "error": s.error}


def _mib(n: int | None) -> str:
    return "—" if n is None else f"{n / MiB:,.1f} MiB"


def format_plan(info: GgufInfo, plan: VramPlan, gpu_name: str | None = None) -> str:
    r = plan.request
    lines = [
        f"model     {info.path}",
        f"          {info.architecture}, {info.block_count} blocks, ctx_train {info.context_length}, "
        f"{info.file_type_name or '?'}, {info.weights_bytes / MiB:,.1f} MiB of weights",
        f"setting   --gpu-layers {r.gpu_layers if r.gpu_layers >= 0 else 'all'} "
        f"(offloaded {plan.offloaded_text}) --ctx-size {plan.n_ctx} "
        f"-ctk {r.cache_type_k} -ctv {r.cache_type_v} -np {r.parallel}"
        + ("" if r.flash_attn else " -fa off"),
        "",
        "on the GPU",
        f"  weights        {_mib(plan.weights_bytes):>16}",
        f"  KV cache       {_mib(plan.kv_cache_bytes):>16}   "
        f"(all layers: {_mib(plan.kv_cache_total_bytes)}, {plan.kv_size} cells"
        + (f", SWA {plan.kv_size_swa}" if plan.kv_size_swa else "")
        + ")",
        f"  compute (est.) {_mib(plan.compute_bytes):>16}",
        f"  total          {_mib(plan.total_bytes):>16}",
    ]
    if plan.vram_bytes:
        verdict = "fits" if plan.fits else "DOES NOT FIT"
        lines += [
            "",
            f"GPU       {gpu_name or 'given size'}: {_mib(plan.vram_bytes)}"
            + (f", free {_mib(plan.free_bytes)}" if plan.free_bytes is not None else ""),
            f"headroom  {plan.headroom_percent:.1f} % → {verdict} "
            f"(keeping ≥ {plan.headroom_target_percent:.0f} %)",
            f"largest   --gpu-layers {plan.max_gpu_layers if plan.max_gpu_layers is not None else '—'}"
            f" at this ctx;  --ctx-size {plan.max_ctx if plan.max_ctx else '—'} at these layers",
        ]
    else:
        lines += [
            "",
            "no GPU size: pass --vram SIZE or --gpu INDEX for headroom and the largest values",
        ]
    lines += [f"warning   {w}" for w in plan.warnings]
    lines += ["", FIT_NOTE]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        info = read_gguf_info(args.model)
    except (OSError, ValueError) as e:
        print(f"llmtop plan: {e}", file=sys.stderr)
        return 2
    vram = args.vram
    free: int | None = None
    gpu_name: str | None = None
    note: str | None = None
    if args.gpu is not None:
        try:
            vram, free, gpu_name = read_gpu_memory(args.gpu)
        except RuntimeError as e:
            note = f"no GPU {args.gpu}: {e} — give --vram SIZE to plan against a size"
            print(f"llmtop plan: {note}", file=sys.stderr)
    req = PlanRequest(
        gpu_layers=args.gpu_layers,
        ctx=args.ctx,
        cache_type_k=args.cache_type_k,
        cache_type_v=args.cache_type_v,
        parallel=args.parallel,
        flash_attn=args.flash_attn != "off",
    )
    try:
        plan = plan_vram(
            info, req, vram_bytes=vram, free_bytes=free, headroom_percent=args.headroom
        )
    except ValueError as e:
        print(f"llmtop plan: {e}", file=sys.stderr)
        return 2
    fit = run_fit(args) if args.fit_params else None
    if args.json:
        d: dict[str, Any] = plan.to_json_dict()
        d["fit_params"] = fit
        d["model"] = {
            "path": info.path,
            "architecture": info.architecture,
            "block_count": info.block_count,
            "context_length": info.context_length,
            "file_type": info.file_type_name,
            "weights_bytes": info.weights_bytes,
        }
        d["gpu_name"] = gpu_name
        d["note"] = note or (None if vram else "no GPU size given: use --vram SIZE or --gpu INDEX")
        d["fit_note"] = FIT_NOTE
        print(json.dumps(d, indent=2))
    else:
        print(format_plan(info, plan, gpu_name))
        if fit is not None:
            if fit["error"]:
                print(f"llama-fit-params: {fit['error']}")
            else:
                extra = f" {fit['extra']}" if fit["extra"] else ""
                print(
                    f"llama-fit-params suggests: -c {fit['ctx']} -ngl {fit['gpu_layers']}{extra}"
                    "  (llama.cpp's own fitter; it fits only values left at defaults)"
                )
    return 0 if plan.fits is not False else 1
