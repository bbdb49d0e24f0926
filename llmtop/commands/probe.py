"""`llmtop probe`: fire test prompts at a server and report TTFT, inter-token latency, tokens/s.

Exit 0 when every probe succeeded, 1 otherwise. JSON (--json): one object for a single probe;
with --repeat K > 1 an object with `probes` (a list), `summary`, and the summary's medians at the
top level, so `ttft_ms`, `itl_ms_p50`, `itl_ms_p95`, `gen_tokens_per_s`, `prompt_tokens_per_s`,
`tokens` and `server_timings` (a list then) are always there.

A server asleep (--sleep-idle-seconds; /props `is_sleeping`, which asking does not change) is
probed all the same — the probe is what the operator asked for — but a note on stderr says so
and the probe's `includes_model_load` is true: its TTFT includes loading the model.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any

import httpx

from llmtop.commands.common import resolve_api_key
from llmtop.sources.probe import (
    ProbeResult,
    run_probe,
    server_sleeping,
    summarize,
    validate_probe_input,
)

DEFAULT_PROMPT = "Write a short paragraph about the sea."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", required=True, help="llama-server base URL")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt text")
    parser.add_argument("--n-predict", default="128", help="tokens to generate (default 128)")
    parser.add_argument("--temperature", default="0", help="sampling temperature (default 0)")
    parser.add_argument("--repeat", type=int, default=1, help="number of probes (default 1)")
    parser.add_argument(
        "--interval", type=float, default=0.0, help="seconds between probes (default 0)"
    )
    parser.add_argument(
        "--stop-at-eos",
        action="store_true",
        help="let the model stop early at end-of-sequence (default: always n_predict tokens)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="per-probe timeout, s")
    parser.add_argument(
        "--api-key", help="API key (default: env LLMTOP_API_KEY or LLAMA_API_KEY); never printed"
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON")


def _probe_json(r: ProbeResult) -> dict[str, Any]:
    d = r.to_json_dict()
    d.pop("prompt", None)  # the caller knows it; keeps output short
    return d


def results_json(results: list[ProbeResult]) -> dict[str, Any]:
    if len(results) == 1:
        return _probe_json(results[0])
    s = summarize(results)
    ok = [r for r in results if r.ok]
    return {
        "ttft_ms": s.ttft_ms_median,
        "itl_ms_p50": s.itl_ms_p50_median,
        "itl_ms_p95": s.itl_ms_p95_median,
        "gen_tokens_per_s": s.gen_tokens_per_s_median,
        "prompt_tokens_per_s": s.prompt_tokens_per_s_median,
        "tokens": ok[-1].tokens if ok else 0,
        "server_timings": [r.server_timings for r in results],
        "summary": dataclasses.asdict(s),
        "probes": [_probe_json(r) for r in results],
    }


def _f(v: float | None, fmt: str = "{:.1f}") -> str:
    return fmt.format(v) if v is not None else "—"


def results_table(results: list[ProbeResult]) -> str:
    head = ["#", "tokens", "TTFT ms", "queue ms", "ITL p50", "ITL p95", "gen tok/s",
            "prompt tok/s", "server gen tok/s", "status"]  # fmt: skip
    rows = [head]
    for i, r in enumerate(results, 1):
        t = r.server_timings or {}
        status = "ok" if r.ok else ("cancelled" if r.cancelled else (r.error or "failed"))
        if r.includes_model_load:
            status += " (TTFT includes the model load: the server was asleep)"
        rows.append(
            [
                str(i),
                str(r.tokens),
                _f(r.ttft_ms, "{:.2f}"),
                _f(r.queue_ms, "{:.2f}"),
                _f(r.itl_ms_p50, "{:.2f}"),
                _f(r.itl_ms_p95, "{:.2f}"),
                _f(r.gen_tokens_per_s),
                _f(r.prompt_tokens_per_s),
                _f(t.get("predicted_per_second")),
                status,
            ]
        )
    if len(results) > 1:
        s = summarize(results)
        rows.append(["median", "", _f(s.ttft_ms_median, "{:.2f}"), "",
                     _f(s.itl_ms_p50_median, "{:.2f}"), _f(s.itl_ms_p95_median, "{:.2f}"),
                     _f(s.gen_tokens_per_s_median), _f(s.prompt_tokens_per_s_median), "",
                     f"{s.count - s.failed}/{s.count} ok"])  # fmt: skip
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    return "\n".join(
        "  ".join(
            cell.rjust(w) if c < len(head) - 1 else cell
            for c, (cell, w) in enumerate(zip(row, widths, strict=True))
        )  # fmt: skip
        for row in rows
    )


async def probe_many(
    url: str,
    prompt: str,
    n_predict: int,
    temperature: float,
    repeat: int,
    *,
    interval_s: float = 0.0,
    api_key: str | None = None,
    ignore_eos: bool = True,
    timeout_s: float = 60.0,
) -> list[ProbeResult]:
    results: list[ProbeResult] = []
    async with httpx.AsyncClient(trust_env=False) as client:
        for i in range(max(1, repeat)):
            if i and interval_s > 0:
                await asyncio.sleep(interval_s)
            asleep = await server_sleeping(client, url, api_key)
            if asleep:
                print(
                    f"note: llama-server at {url} is asleep (--sleep-idle-seconds): this probe "
                    "loads the model first, so its TTFT includes the model load",
                    file=sys.stderr,
                )
            result = await run_probe(
                client,
                url,
                prompt,
                n_predict,
                temperature,
                api_key=api_key,
                ignore_eos=ignore_eos,
                timeout_s=timeout_s,
            )
            if asleep:
                result = dataclasses.replace(result, includes_model_load=True)
            results.append(result)
    return results


def run(args: argparse.Namespace) -> int:
    request, error = validate_probe_input(args.prompt, str(args.n_predict), str(args.temperature))
    if request is None:
        print(f"llmtop probe: {error}", file=sys.stderr)
        return 2
    if args.repeat < 1:
        print("llmtop probe: --repeat must be at least 1", file=sys.stderr)
        return 2
    api_key = resolve_api_key(args)
    results = asyncio.run(
        probe_many(
            args.url.rstrip("/"),
            request.prompt,
            request.n_predict,
            request.temperature,
            args.repeat,
            interval_s=args.interval,
            api_key=api_key or None,
            ignore_eos=not args.stop_at_eos,
            timeout_s=args.timeout,
        )
    )
    if args.json:
        json.dump(results_json(results), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(results_table(results))
        for r in results:
            if r.error:
                print(f"error: {r.error}", file=sys.stderr)
                break
    return 0 if all(r.ok for r in results) else 1
