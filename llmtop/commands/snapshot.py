"""`llmtop snapshot`: print one complete snapshot (JSON or a short summary) and exit.

Two scrapes `--interval` apart so throughput rates exist. Exit 0 when the server answered
(health ok, loading or sleeping — a sleeping server is asked only /health and /props, so taking
a snapshot does not wake it), 1 when it is unreachable, unauthorized or in error — the JSON is printed
either way. The API key comes from --api-key or LLMTOP_API_KEY / LLAMA_API_KEY and is never
printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from llmtop.collector import Collector
from llmtop.commands.common import resolve_api_key
from llmtop.config import ConfigError, add_threshold_arguments, thresholds_from_args
from llmtop.snapshot import Snapshot, to_json_dict
from llmtop.sources.llama_http import LlamaClient

DEFAULT_URL = "http://127.0.0.1:8080"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="llama-server base URL (default: discover a local one)")
    parser.add_argument(
        "--api-key",
        help="API key (default: env LLMTOP_API_KEY or LLAMA_API_KEY); never printed",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=1.0,
        help="seconds between the two scrapes that give rates (default 1)",
    )
    parser.add_argument("--timeout", type=float, default=2.0, help="per-request timeout, s")
    parser.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    parser.add_argument(
        "--unit", metavar="NAME", help="a systemd unit: its state, and URL/API key from ExecStart"
    )
    parser.add_argument("--user", action="store_true", help="--unit is a user unit")
    add_threshold_arguments(parser)


def resolve_target(url: str | None) -> tuple[str, int | None]:
    """(url, pid or None): the given URL, else the first discovered local server, else :8080."""
    if url:
        return url.rstrip("/"), None
    try:
        from llmtop.sources import discovery  # written by another part; optional here
    except ImportError:
        return DEFAULT_URL, None
    try:
        found = list(discovery.discover_servers())
    except Exception:  # noqa: BLE001 - discovery is best effort
        found = []
    for item in found:
        u = item.get("url") if isinstance(item, dict) else getattr(item, "url", None)
        if u:
            pid = item.get("pid") if isinstance(item, dict) else getattr(item, "pid", None)
            return str(u).rstrip("/"), pid if isinstance(pid, int) else None
    return DEFAULT_URL, None


def build_collector(args: argparse.Namespace) -> Collector:
    """The collector the command reads from (hook for --unit etc. added by other commands)."""
    from llmtop.commands.unit import build_unit_parts  # --unit NAME [--user] (issue 4)

    unit_monitor = build_unit_parts(args)
    api_key = resolve_api_key(args)
    unit_spec = unit_monitor.spec if unit_monitor is not None else None
    if unit_monitor is not None and unit_spec is not None and not getattr(args, "url", None):
        url = unit_spec.url
        pid = unit_monitor.last.main_pid if unit_monitor.last is not None else None
        api_key = api_key or unit_spec.api_key
    else:
        url, pid = resolve_target(getattr(args, "url", None))
    client = LlamaClient(url, api_key=api_key, timeout_s=getattr(args, "timeout", 2.0))
    from llmtop.diagnosis.alerts import AlertEngine
    from llmtop.sources.gpu import default_gpu_monitor

    engine = AlertEngine(thresholds_from_args(args))
    gpu = default_gpu_monitor()
    if gpu is not None and pid is not None:
        gpu.set_server(pid, unit_spec)
    return Collector(
        client, pid_hint=pid, gpu_monitor=gpu, alert_engine=engine, unit_monitor=unit_monitor
    )


async def take_snapshot(collector: Collector, interval_s: float = 1.0) -> Snapshot:
    first = await collector.collect()
    if first.server.health in ("unreachable",) or interval_s <= 0:
        return first
    gpu = getattr(collector, "gpu_monitor", None)
    if gpu is not None and first.server.pid is not None:
        # The first tick told the GPU monitor the server's pid: read the GPUs again knowing it
        # (the server's VRAM), instead of the reading taken before the server was found.
        await asyncio.to_thread(gpu.sample_once)
    await asyncio.sleep(interval_s)
    return await collector.collect()


def _mib(n: int | None) -> str:
    return f"{n / 2**20:.0f} MiB" if n is not None else "—"


def _num(v: float | None, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if v is not None else "—"


def human_summary(snap: Snapshot) -> str:
    s = snap.server
    lines = [
        f"server  {s.url}  {s.health}" + (f" — {s.detail}" if s.detail not in ("", "ok") else "")
    ]
    if s.model_path or s.model_alias:
        lines.append(f"model   {s.model_path or s.model_alias}")
    if s.n_ctx is not None:
        busy = sum(1 for sl in s.slots if sl.is_processing)
        slots = f"{busy}/{s.total_slots} busy" if s.total_slots is not None else "—"
        lines.append(f"ctx     {s.n_ctx}  slots {slots}  build {s.build_info or '—'}")
    lines.append(
        f"rates   gen {_num(s.gen_tokens_per_s)} tok/s  prompt {_num(s.prompt_tokens_per_s)} tok/s"
        f"  processing {s.requests_processing if s.requests_processing is not None else '—'}"
    )
    for p in s.problems:
        lines.append(f"note    {p}")
    h = snap.host
    lines.append(
        f"host    CPU {_num(h.cpu_percent, '{:.0f}')} %  RAM {_mib(h.memory_used_bytes)}"
        f" / {_mib(h.memory_total_bytes)}"
    )
    if h.process is not None:
        pr = h.process
        lines.append(
            f"process pid {pr.pid}  CPU {_num(pr.cpu_percent, '{:.0f}')} %  RSS {_mib(pr.rss_bytes)}"
            f"  threads {pr.threads if pr.threads is not None else '—'}"
            f"  up {_num(pr.uptime_s, '{:.0f}')} s"
        )
    if snap.gpu_note:
        lines.append(f"gpu     {snap.gpu_note}")
    for g in snap.gpus:
        lines.append(f"gpu {g.index}   {g.name or ''}  {_mib(g.memory_used_bytes)} used")
    for a in snap.alerts:
        lines.append(f"alert   [{a.severity}] {a.message}")
    return "\n".join(lines)


def exit_code(snap: Snapshot) -> int:
    return 0 if snap.server.health in ("ok", "loading", "sleeping") else 1


async def _run(args: argparse.Namespace) -> tuple[Snapshot, int]:
    collector = build_collector(args)
    gpu = getattr(collector, "gpu_monitor", None)
    try:
        if gpu is not None:  # NVML off the loop: open, then one fresh reading
            await asyncio.to_thread(gpu.start)
            await asyncio.to_thread(gpu.sample_once)
        snap = await take_snapshot(collector, max(0.0, args.interval))
    finally:
        if gpu is not None:
            await asyncio.to_thread(gpu.stop)
        await collector.aclose()
    return snap, exit_code(snap)


def run(args: argparse.Namespace) -> int:
    try:
        thresholds_from_args(args)  # a broken config file is told in words, not a traceback
    except ConfigError as exc:
        print(f"llmtop snapshot: {exc}", file=sys.stderr)
        return 2
    snap, code = asyncio.run(_run(args))
    if args.json:
        data: dict[str, Any] = to_json_dict(snap)
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(human_summary(snap))
    sys.stdout.flush()
    return code
