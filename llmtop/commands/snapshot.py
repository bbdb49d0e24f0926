"""`llmtop snapshot`: print one complete snapshot (JSON or a short summary) and exit.

Two scrapes `--interval` apart so throughput rates exist. Exit 0 when the server answered
(health ok, loading or sleeping — a sleeping server is asked only /health and /props, so taking
a snapshot does not wake it), 1 when it is unreachable, unauthorized or in error — the JSON is printed
either way. The API key comes from --api-key or LLMTOP_API_KEY / LLAMA_API_KEY and is never
printed.

Several servers (`--url A --url B`, `--unit X --unit Y`): one snapshot of the first, with every
server's status under `servers`; `--all` prints a JSON list, one complete snapshot per server
(with no --url/--unit: every local llama-server discovered). Exit 0 when every server answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from llmtop.collector import Collector, GpuReadings
from llmtop.commands.common import resolve_api_key
from llmtop.config import ConfigError, add_threshold_arguments, thresholds_from_args
from llmtop.snapshot import Snapshot, to_json_dict
from llmtop.sources.llama_http import LlamaClient

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.multi_server import MultiCollector
    from llmtop.sources.gpu import GpuMonitor
    from llmtop.sources.process import ProcessSampler

DEFAULT_URL = "http://127.0.0.1:8080"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        action="append",
        help="llama-server base URL (default: discover a local one); repeat for several",
    )
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
        "--all",
        action="store_true",
        help="every server (the --url/--unit given, else every local one): a list, one each",
    )
    parser.add_argument(
        "--unit",
        action="append",
        metavar="NAME",
        help="a systemd unit: its state, and URL/API key from ExecStart; repeat for several",
    )
    parser.add_argument("--user", action="store_true", help="--unit is a user unit")
    parser.add_argument(
        "--router",
        action="store_true",
        help="a router-mode llama-server (--models-dir / --models-preset): list its models "
        "(found out by itself otherwise)",
    )
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


def build_collector(
    args: argparse.Namespace, *, gpu_monitor: bool = True, sampler: ProcessSampler | None = None
) -> Collector:
    """The collector the command reads from (hook for --unit etc. added by other commands).

    *args* name one server (`url`, `unit`: strings or None); `gpu_monitor=False` for all but
    the first of several servers (the GPUs are read once)."""
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
    gpu = default_gpu_monitor() if gpu_monitor else None
    if gpu is not None and pid is not None:
        gpu.set_server(pid, unit_spec)
    return Collector(
        client,
        pid_hint=pid,
        gpu_monitor=gpu,
        alert_engine=engine,
        unit_monitor=unit_monitor,
        sampler=sampler,
        router=bool(getattr(args, "router", False)),
    )


def one_server(args: argparse.Namespace, url: str | None, unit: str | None) -> argparse.Namespace:
    """*args* for one of several servers (`url`, `unit` as single values)."""
    return argparse.Namespace(**{**vars(args), "url": url, "unit": unit})


def server_targets(args: argparse.Namespace) -> list[tuple[str | None, str | None]]:
    """(url, unit) of each server asked for: the --url/--unit given (see dashboard._pairs);
    none given: with --all every local llama-server discovered, else one (discover or :8080)."""
    from llmtop.commands.dashboard import _pairs, listed

    pairs: list[tuple[str | None, str | None]] = [
        (u or None, n) for u, n in _pairs(listed(args.url), listed(args.unit))
    ]
    if pairs or not getattr(args, "all", False):
        return pairs or [(None, None)]
    try:
        from llmtop.sources.discovery import discover_servers

        found = [s.url for s in discover_servers()]
    except Exception:  # noqa: BLE001 - discovery is best effort, as for one server
        found = []
    return [(u, None) for u in dict.fromkeys(found)] or [(DEFAULT_URL, None)]


def build_several(
    args: argparse.Namespace, targets: list[tuple[str | None, str | None]]
) -> MultiCollector:
    """One collector per server (the first reads the host and the GPUs, each its own alerts)."""
    from llmtop.multi_server import MultiCollector, ProcessOnlySampler

    collectors = [
        build_collector(
            one_server(args, url, unit),
            gpu_monitor=i == 0,
            sampler=ProcessOnlySampler() if i else None,
        )
        for i, (url, unit) in enumerate(targets)
    ]
    return MultiCollector(collectors)


async def take_snapshot(collector: Collector | MultiCollector, interval_s: float = 1.0) -> Snapshot:
    first = await collector.collect()
    if all(s.health == "unreachable" for s in first.servers or (first.server,)):
        return first
    if interval_s <= 0:
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
    for m in s.models:  # router mode
        lines.append(
            f"model   {m.id}  {m.status}  pid {m.pid or '—'}  ctx {m.n_ctx or '—'}"
            f"  gen {_num(m.gen_tokens_per_s)} tok/s  VRAM {_mib(m.gpu_memory_bytes)}"
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
    answered = ("ok", "loading", "sleeping")
    return 0 if all(s.health in answered for s in snap.servers or (snap.server,)) else 1


def several_summary(snap: Snapshot) -> str:
    """The focused server's summary, then one line for each other server."""
    lines = [human_summary(snap)]
    for s in snap.servers:
        if s.url != snap.server.url:
            model = s.model_alias or s.model_path or "—"
            lines.append(f"also    {s.url}  {s.health}  {model}")
    return "\n".join(lines)


async def _run(args: argparse.Namespace) -> tuple[Snapshot, int]:
    snap, _each, code = await _run_all(args)
    return snap, code


async def _run_all(args: argparse.Namespace) -> tuple[Snapshot, tuple[Snapshot, ...], int]:
    """(the snapshot, every server's own snapshot, exit status)."""
    targets = server_targets(args)
    if len(targets) > 1 or getattr(args, "all", False):
        several = build_several(args, targets)
        snap = await _take(several, several.gpu_monitor, args.interval)
        return snap, several.each(), exit_code(snap)
    snap, code = await _run_one(args, targets[0])
    return snap, (snap,), code


async def _run_one(
    args: argparse.Namespace, target: tuple[str | None, str | None]
) -> tuple[Snapshot, int]:
    collector = build_collector(one_server(args, *target))
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


async def _take(collector: MultiCollector, gpu: GpuReadings | None, interval_s: float) -> Snapshot:
    """A snapshot of several servers (the GPU monitor opened and closed around it)."""
    from llmtop.sources.gpu import GpuMonitor

    monitor: GpuMonitor | None = gpu if isinstance(gpu, GpuMonitor) else None
    try:
        if monitor is not None:
            await asyncio.to_thread(monitor.start)
            await asyncio.to_thread(monitor.sample_once)
        return await take_snapshot(collector, max(0.0, interval_s))
    finally:
        if monitor is not None:
            await asyncio.to_thread(monitor.stop)
        await collector.aclose()


def run(args: argparse.Namespace) -> int:
    try:
        thresholds_from_args(args)  # a broken config file is told in words, not a traceback
    except ConfigError as exc:
        print(f"llmtop snapshot: {exc}", file=sys.stderr)
        return 2
    snap, each, code = asyncio.run(_run_all(args))
    if getattr(args, "all", False):
        if args.json:
            json.dump([to_json_dict(one) for one in each], sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print("\n\n".join(human_summary(one) for one in each))
    elif args.json:
        data: dict[str, Any] = to_json_dict(snap)
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(several_summary(snap) if snap.servers else human_summary(snap))
    sys.stdout.flush()
    return code
