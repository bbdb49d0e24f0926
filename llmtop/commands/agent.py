"""`llmtop agent`: record the server, host and GPUs around the clock, with no UI.

  llmtop agent                              discover the local server (as the dashboard does)
  llmtop agent --url http://127.0.0.1:8080  a given server
  llmtop agent --unit llama.service [--user]
  llmtop agent --print-unit                 a systemd unit that runs this agent

It runs the dashboard's own session and collector (`commands/dashboard.build_session`): same
discovery, same flags, same snapshots. Every snapshot goes to the sinks from `build_sinks`: the
history database (`--db`) here; other sinks (an exporter) add their flags in `add_arguments`
and their sink in `build_sinks`. SIGTERM or Ctrl-C end it after the tick in flight; a unit is
never touched. Exit 2 for a bad flag or an unusable database, in words.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from llmtop.agent.exporter_http import (
    ExporterConfigError,
    add_exporter_arguments,
    exporter_options,
    open_exporter,
)
from llmtop.agent.runner import AgentRunner
from llmtop.agent.sinks import SnapshotSink
from llmtop.config import add_threshold_arguments
from llmtop.model.timespec import parse_duration
from llmtop.model.vram_plan import parse_size
from llmtop.session import Session


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _interval(text: str) -> float:
    value = _duration(text)
    if value < 0.1:
        raise argparse.ArgumentTypeError(f"--interval must be at least 0.1 s, not {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    add_recording_arguments(parser)
    add_exporter_arguments(parser)
    parser.add_argument(
        "--print-unit",
        action="store_true",
        help="print a systemd unit that runs this agent with these flags, and exit",
    )
    add_threshold_arguments(parser)


def add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """Which server: the dashboard's flags (none: discover a local one)."""
    parser.add_argument("--url", help="record the llama-server at this URL (http://host:port)")
    parser.add_argument(
        "--api-key",
        help="API key for the server (default: env LLMTOP_API_KEY or LLAMA_API_KEY); never stored",
    )
    parser.add_argument("--unit", metavar="NAME", help="record a systemd unit's server")
    parser.add_argument("--user", action="store_true", help="--unit is a user unit")
    parser.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        metavar="SECONDS",
        help="seconds between samples (1)",
    )
    parser.add_argument(
        "--probe-every",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="fire a short latency probe this often (e.g. 5m; off by default: a probe is load)",
    )


def add_recording_arguments(parser: argparse.ArgumentParser) -> None:
    """The history database and its retention."""
    from llmtop.sources.history_db import default_db_path

    parser.add_argument(
        "--db",
        metavar="PATH",
        default=None,
        help=f"history database (default {default_db_path()})",
    )
    parser.add_argument(
        "--keep",
        type=_duration,
        default=parse_duration("7d"),
        metavar="DURATION",
        help="keep raw samples this long (7d)",
    )
    parser.add_argument(
        "--keep-aggregates",
        type=_duration,
        default=parse_duration("90d"),
        metavar="DURATION",
        help="keep per-minute min/avg/max aggregates, alerts and events this long (90d)",
    )
    parser.add_argument(
        "--max-size",
        type=_size,
        default=parse_size("1GiB"),
        metavar="SIZE",
        help="hard cap on the database size; the oldest samples go first (1GiB)",
    )


def build_sinks(args: argparse.Namespace, session: Session) -> list[SnapshotSink]:
    """Every sink the flags ask for. Raises `SinkError` (in words) when one cannot be opened."""
    from llmtop.agent.recorder import HistoryRecorder, RecorderOptions
    from llmtop.sources.history_db import default_db_path

    sinks: list[SnapshotSink] = []
    secrets = (session.api_key,) if session.api_key else ()
    # The exporter first: its flags fail fast, before a database is opened. `--listen` without
    # `--db` only exports (Prometheus keeps the history); `--db` records as well.
    options = exporter_options(args)
    if options is not None:
        sinks.append(
            open_exporter(
                options, mode=session.mode, secrets=secrets, probes=args.probe_every is not None
            )
        )
    if options is not None and not args.db:
        return sinks
    path = args.db or str(default_db_path())
    try:
        recorder = HistoryRecorder.open(
            path,
            RecorderOptions(
                interval_s=args.interval,
                keep_s=args.keep,
                keep_aggregates_s=args.keep_aggregates,
                max_size_bytes=args.max_size,
            ),
            log_store=session.log_store,
            secrets=secrets,
            url=session.url,
        )
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    sinks.append(recorder)
    return sinks


def build_agent_session(args: argparse.Namespace) -> Session | str:
    """The dashboard's session for these flags (or an error in words).

    The GPU sampler thread only opens NVML and then idles: the runner reads the GPUs on its own
    tick, so GPU fields and the sample's time belong together."""
    from llmtop.commands.dashboard import build_session
    from llmtop.session import make_gpu_monitor

    ns = argparse.Namespace(**vars(args))
    ns.refresh = args.interval
    ns.log_lines = 2_000
    ns.no_restart, ns.restart_sec, ns.max_restart_sec = True, 2.0, 30.0
    session = build_session(ns)
    if isinstance(session, str):
        return session
    session.gpu_factory = lambda: make_gpu_monitor(GPU_THREAD_IDLE_S)
    if session.mode == "none":
        if session.candidates:
            listed = "; ".join(c.label or c.url for c in session.candidates)
            return f"several llama-servers found ({listed}): choose one with --url or --unit"
        print(
            f"llmtop agent: no llama-server found; recording {DEFAULT_URL} (it is down until one"
            " answers there)",
            file=sys.stderr,
        )
        session.mode, session.url = "attach", DEFAULT_URL
    return session


DEFAULT_URL = "http://127.0.0.1:8080"
# The GPU monitor's own thread samples this rarely; the runner samples on every tick.
GPU_THREAD_IDLE_S = 3600.0


def run(args: argparse.Namespace) -> int:
    if getattr(args, "server_argv", None):
        print(
            "llmtop agent: records a running server; it does not start one (give --url or --unit)",
            file=sys.stderr,
        )
        return 2
    if args.print_unit:
        try:
            from llmtop.agent.service import agent_unit_text
        except ImportError:
            print("llmtop agent: --print-unit is not yet available in this build", file=sys.stderr)
            return 2
        sys.stdout.write(agent_unit_text(args))
        return 0
    session = build_agent_session(args)
    if isinstance(session, str):
        print(f"llmtop agent: {session}", file=sys.stderr)
        return 2
    from llmtop.agent.recorder import SinkError

    try:
        sinks = build_sinks(args, session)
    except (SinkError, ExporterConfigError) as exc:
        print(f"llmtop agent: {exc}", file=sys.stderr)
        return 2
    runner = AgentRunner(session, sinks, interval_s=args.interval, probe_every_s=args.probe_every)
    with contextlib.suppress(ImportError):
        from llmtop.agent.service import service_hooks

        runner.on_tick.extend(service_hooks())
    return asyncio.run(_run(runner))


async def _run(runner: AgentRunner) -> int:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, runner.stop)
    try:
        await runner.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    return 0


__all__ = ["add_arguments", "build_agent_session", "build_sinks", "run"]
