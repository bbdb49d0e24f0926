"""`llmtop load`: streamed requests at rising concurrency — TTFT/ITL, throughput, the knee.

`llmtop load --url URL --concurrency 1,2,4,8 [--requests N] [--n-predict K] [--json]` keeps
each level's number of requests in flight at once (N per level, default 2 × the level), then
prints one row per level and a recommendation: the concurrency where p95 TTFT starts to climb
and whether `--parallel` (the slots) is what limits it. Bounded by --requests and --max-seconds.

Exit 0 when every request succeeded, 1 when some failed, 2 for bad input or a server that cannot
be tested (unreachable, 401, loading) — one line on stderr, nothing sent for bad input. The key
(--api-key, $LLMTOP_API_KEY, $LLAMA_API_KEY) is never printed. JSON (--json): one object,
`levels` a list of {concurrency, requests, ok, errors, cut_off, ttft_p50_ms, ttft_p95_ms,
itl_p50_ms, itl_p95_ms, gen_tokens_per_s, requests_deferred, duration_s, first_error}, plus
total_slots, metrics_enabled, knee_concurrency, best_concurrency, parallel_limited,
recommendation, duration_s, stopped_early.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable

from llmtop.commands.common import resolve_api_key
from llmtop.operations.events import Event, Failed, LoadFinished, LoadStep, Progress, Rejected
from llmtop.operations.load import (
    DEFAULT_CONCURRENCY,
    DEFAULT_PROMPT,
    LoadLevel,
    LoadResult,
    LoadRun,
    validate_load_input,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="llama-server base URL")
    parser.add_argument(
        "--concurrency",
        default=DEFAULT_CONCURRENCY,
        help=f"requests in flight at once, per level, comma-separated (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--requests", type=int, default=None, help="requests per level (default 2 × the level)"
    )
    parser.add_argument(
        "--n-predict", type=int, default=32, help="tokens each request generates (default 32)"
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt text")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=120.0,
        help="time limit for the whole test; levels past it are not run (default 120)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout, s")
    parser.add_argument(
        "--api-key", help="API key (default: env LLMTOP_API_KEY or LLAMA_API_KEY); never printed"
    )
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if v is not None else "—"


def _deferred(v: int | None) -> str:
    return "unknown" if v is None else str(v)


HEAD = ["concurrency", "requests", "ok/errors", "TTFT p50 ms", "TTFT p95 ms", "ITL p50 ms",
        "ITL p95 ms", "agg tok/s", "deferred"]  # fmt: skip


def _row(lv: LoadLevel) -> list[str]:
    ok = f"{lv.ok}/{lv.errors}" + (f" (+{lv.cut_off} cut off)" if lv.cut_off else "")
    return [str(lv.concurrency), str(lv.requests), ok, _f(lv.ttft_p50_ms, "{:.2f}"),
            _f(lv.ttft_p95_ms, "{:.2f}"), _f(lv.itl_p50_ms, "{:.2f}"),
            _f(lv.itl_p95_ms, "{:.2f}"), _f(lv.gen_tokens_per_s), _deferred(lv.requests_deferred)]  # fmt: skip


def result_table(result: LoadResult) -> str:
    """The table an operator reads, then slots, /metrics and the recommendation."""
    rows = [HEAD, *(_row(lv) for lv in result.levels)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(HEAD))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    slots = "unknown" if result.total_slots is None else str(result.total_slots)
    metrics = "on" if result.metrics_enabled else "off (start llama-server with --metrics)"
    lines.append("")
    lines.append(f"slots: {slots}   /metrics: {metrics}")
    if result.was_sleeping:
        lines.append("note: the server was asleep; the warm-up request loaded the model")
    if result.stopped_early:
        lines.append(f"stopped early: {result.stopped_early}")
    for lv in result.levels:
        if lv.first_error:
            lines.append(f"errors at concurrency {lv.concurrency}: {lv.first_error}")
    lines.append(f"recommendation: {result.recommendation}")
    return "\n".join(lines)


def _progress_printer(quiet: bool) -> Callable[[Event], None]:
    """Progress lines on stderr (stdout keeps only the table or the JSON)."""

    def tell(event: Event) -> None:
        if quiet:
            return
        if isinstance(event, Progress):
            print(event.message, file=sys.stderr, flush=True)
        elif isinstance(event, LoadStep):
            lv = event.level
            print(
                f"concurrency {lv.concurrency}: {lv.ok}/{lv.requests} ok, p95 TTFT "
                f"{_f(lv.ttft_p95_ms, '{:.1f}')} ms, deferred {_deferred(lv.requests_deferred)}",
                file=sys.stderr,
                flush=True,
            )

    return tell


def run(args: argparse.Namespace) -> int:
    req = validate_load_input(
        str(args.url),
        str(args.concurrency),
        args.requests,
        args.n_predict,
        args.max_seconds,
        args.timeout,
        prompt=str(args.prompt),
        api_key=resolve_api_key(args),
    )
    if isinstance(req, str):
        print(f"llmtop load: {req}", file=sys.stderr)
        return 2
    try:
        event = asyncio.run(LoadRun().run(req, _progress_printer(quiet=bool(args.json))))
    except KeyboardInterrupt:  # Ctrl-C: the requests in flight are closed with the loop
        print("llmtop load: interrupted", file=sys.stderr)
        return 130
    if isinstance(event, Failed | Rejected):
        print(f"llmtop load: {event.reason}", file=sys.stderr)
        return 2
    assert isinstance(event, LoadFinished)
    result = event.result
    if args.json:
        json.dump(result.to_json_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(result_table(result))
    return 0 if result.ok else 1
