"""`llmtop tune` — sweep --gpu-layers, measure each setting, recommend one.

    llmtop tune --gpu-layers 0:40:8 --probes 3 -- llama-server -m model.gguf …   (child mode)
    llmtop tune --gpu-layers 0:40:8 --unit llama-server [--user]                (systemd unit)

For each setting: restart, warm up, K probes (TTFT, prompt and generation tokens/s), peak VRAM
(NVML); stop at out-of-memory; print a table; recommend the fastest setting that keeps the VRAM
headroom; restore the original arguments (or apply the recommendation with --apply). Results are
saved as JSON and CSV with --out DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING

from llmtop.control.sweep import format_plot, format_table, parse_range
from llmtop.control.tuning import FIT_EXPLANATION
from llmtop.model.launch_spec import LaunchSpec
from llmtop.operations.events import Event, Failed, Rejected, SweepFinished, SweepStep

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.control.protocols import Controller, GpuSampler, LogFollower


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpu-layers",
        default=None,
        metavar="FROM:TO:STEP",
        help="settings to try, inclusive (default: 0 to the model's blocks + 1 in 4 steps)",
    )
    p.add_argument("--ctx", type=int, default=None, help="--ctx-size for every setting")
    p.add_argument("--probes", type=int, default=3, help="measured probes per setting (default 3)")
    p.add_argument("--n-predict", type=int, default=64, help="tokens per probe (default 64)")
    p.add_argument("--headroom", type=float, default=10.0, help="VRAM to keep free, percent")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each restart")
    p.add_argument("--apply", action="store_true", help="keep the recommended setting at the end")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--out", metavar="DIR", help="save results as JSON and CSV in DIR")
    p.add_argument("--unit", metavar="NAME", help="tune a systemd unit (through llmtop's drop-in)")
    p.add_argument("--user", action="store_true", help="the unit is a --user unit")
    p.epilog = FIT_EXPLANATION + "  Child mode: llmtop tune … -- /path/to/llama-server ARGS…"


def _default_range(spec: LaunchSpec) -> list[int]:
    from llmtop.sources.gguf_info import read_gguf_info

    n = 0
    if spec.model:
        try:
            n = read_gguf_info(spec.model).block_count
        except (OSError, ValueError):
            n = 0
    top = n + 1 if n else 33
    step = max(1, top // 4)
    return parse_range(f"0:{top}:{step}")


async def _run(args: argparse.Namespace) -> int:
    from llmtop.operations.actions import Operations, SweepRequest
    from llmtop.sources.logs import LogStore

    store = LogStore()
    controller: Controller
    child = not args.unit
    follower: LogFollower | None = None
    if args.unit:
        from llmtop.control.systemd_unit import describe_error, open_unit_session

        try:
            controller, _monitor, follower = await asyncio.to_thread(
                open_unit_session, args.unit, args.user, store
            )
            _ = controller.spec  # the unit's ExecStart must parse
        except Exception as e:  # noqa: BLE001 - told to the operator in words
            print(f"llmtop tune: {describe_error(e)}", file=sys.stderr)
            return 2
        if follower is not None:
            await follower.start()
    else:
        if not args.server_argv:
            print("llmtop tune: give --unit NAME or -- llama-server ARGS…", file=sys.stderr)
            return 2
        from llmtop.control.supervisor import ChildSupervisor, RestartPolicy

        if args.apply:
            print(
                "llmtop tune: --apply keeps a setting on a unit; a child stops with llmtop tune "
                "(the recommended command line is printed instead)",
                file=sys.stderr,
            )

        spec = LaunchSpec.from_argv(args.server_argv)
        controller = ChildSupervisor(spec, store, RestartPolicy(on_failure=False))
    try:
        settings = (
            parse_range(args.gpu_layers) if args.gpu_layers else _default_range(controller.spec)
        )
        if args.probes < 1:
            raise ValueError("--probes must be at least 1")
    except ValueError as e:
        print(f"llmtop tune: {e}", file=sys.stderr)
        return 2

    gpu: GpuSampler | None = None
    try:
        from llmtop.sources.gpu import GpuMonitor

        gpu = GpuMonitor()
        if not gpu.open():
            gpu.stop()
            gpu = None
    except Exception:  # noqa: BLE001 - no NVML: no VRAM column
        gpu = None

    def progress(event: Event) -> None:
        if isinstance(event, SweepStep) and not args.json:
            p = event.point
            gen = "—" if p.gen_tokens_per_s is None else f"{p.gen_tokens_per_s:.1f} tok/s"
            print(
                f"  --gpu-layers {p.gpu_layers}: {p.status} {gen} {p.reason or ''}".rstrip(),
                file=sys.stderr,
                flush=True,
            )

    request = SweepRequest(
        tuple(settings),
        probes=args.probes,
        ctx=args.ctx,
        n_predict=args.n_predict,
        timeout_s=args.timeout,
        headroom_percent=args.headroom,
        # A child ends with llmtop: restoring it only to stop it is wasted time.
        restore=not child,
        apply_best=args.apply and not child,
    )
    try:
        ops = Operations(controller, store, gpu_monitor=gpu, api_key=controller.spec.api_key)
        if child:
            started = await ops.server.start()
            if isinstance(started, Failed):
                print(f"llmtop tune: {started.reason}", file=sys.stderr)
                return 1
        outcome = await ops.sweep.run(request, progress)
    finally:
        if child:
            await controller.stop()
        if follower is not None:
            await follower.stop()
        if gpu is not None:
            gpu.stop()

    if isinstance(outcome, Failed | Rejected):
        print(f"llmtop tune: {outcome.reason}", file=sys.stderr)
        return 1
    result = outcome.result if isinstance(outcome, SweepFinished) else None
    assert result is not None
    paths = result.save(args.out) if args.out else None
    if args.json:
        d = result.to_json_dict()
        d["files"] = [str(p) for p in paths] if paths else []
        print(json.dumps(d, indent=2))
    else:
        print(format_table(result))
        plot = format_plot(result)
        if plot:
            print("\n" + plot)
        if child and result.recommended is not None:
            rec = LaunchSpec.from_argv(args.server_argv).with_option(
                "gpu_layers", result.recommended.gpu_layers
            )
            print("run it with: " + rec.command_line())
        if result.restored is not None:
            print("original arguments restored" if result.restored else "RESTORE FAILED")
        if result.applied is not None:
            print("recommendation applied" if result.applied else "APPLY FAILED")
        if paths:
            print(f"saved {paths[0]} and {paths[1]}")
    return 0 if result.recommended is not None else 1


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))
