"""Probe accuracy: llmtop's client-side latency against the server's own timings.

n probes of n_predict tokens (ignore_eos, cache_prompt off). Targets (issue 2):
- median(client TTFT − server prompt_ms) ≤ 2 ms
- client ITL median within 10 % of the server's predicted_per_token_ms

`python -m benchmarks.probe_accuracy [--url URL] [-n 20] [--n-predict 128]` starts a real
llama-server with the tiny model (tests.realserver) unless --url is given, and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

import httpx

from benchmarks.tiny_server import TinyServer
from llmtop.sources.probe import ProbeResult, run_probe

PROMPT = "The operators of the cluster wrote down every step of the deployment so that"


async def _probes(server_url: str, n: int, n_predict: int) -> list[ProbeResult]:
    out: list[ProbeResult] = []
    async with httpx.AsyncClient(trust_env=False) as client:
        await run_probe(client, server_url, PROMPT, 8, 0.0)  # warm the connection and server
        for _ in range(n):
            out.append(await run_probe(client, server_url, PROMPT, n_predict, 0.0))
    return out


def measure(server_url: str, n: int = 20, n_predict: int = 128) -> dict[str, float | int]:
    results = [r for r in asyncio.run(_probes(server_url, n, n_predict)) if r.ok]
    if not results:
        raise RuntimeError("no probe succeeded")
    ttft_gap = [
        r.ttft_ms - r.server_timings["prompt_ms"]
        for r in results
        if r.ttft_ms is not None and r.server_timings
    ]
    itl = [r.itl_ms_p50 for r in results if r.itl_ms_p50 is not None]
    itl_mean = [r.itl_ms_mean for r in results if r.itl_ms_mean is not None]
    server_itl = [r.server_timings["predicted_per_token_ms"] for r in results if r.server_timings]
    # per probe: how far the client's ITL median is from the server's per-token time
    itl_rel = [
        abs(r.itl_ms_p50 - r.server_timings["predicted_per_token_ms"])
        / r.server_timings["predicted_per_token_ms"]
        * 100
        for r in results
        if r.itl_ms_p50 is not None
        and r.server_timings
        and r.server_timings.get("predicted_per_token_ms")
    ]
    return {
        "probes": len(results),
        "ttft_minus_prompt_ms_median": statistics.median(ttft_gap),
        "ttft_ms_median": statistics.median(r.ttft_ms for r in results if r.ttft_ms),
        "server_prompt_ms_median": statistics.median(
            r.server_timings["prompt_ms"] for r in results if r.server_timings
        ),
        "client_itl_ms_median": statistics.median(itl),
        "client_itl_mean_ms_median": statistics.median(itl_mean),
        "server_per_token_ms_median": statistics.median(server_itl),
        "itl_rel_error_percent_median": statistics.median(itl_rel),
    }


def run(
    server_url: str | None = None, n: int = 20, n_predict: int = 128
) -> list[dict[str, object]]:
    """Rows for the benchmark table. Without a URL a real tiny-model server is started."""
    if server_url is None:
        with TinyServer() as url:
            return run(url, n, n_predict)
    m = measure(server_url, n, n_predict)
    gap = float(m["ttft_minus_prompt_ms_median"])
    itl = float(m["client_itl_ms_median"])
    srv = float(m["server_per_token_ms_median"])
    rel = abs(itl - srv) / srv * 100 if srv else float("inf")
    per_probe = float(m["itl_rel_error_percent_median"])
    name = "probe"
    return [
        dict(
            benchmark=name,
            metric="probes × tokens",
            value=f"{m['probes']} × {n_predict}",
            target="",
            ok=None,
        ),  # fmt: skip
        dict(
            benchmark=name,
            metric="median(client TTFT − server prompt_ms)",
            value=f"{gap:.2f} ms",
            target="≤ 2 ms",
            ok=gap <= 2.0,
        ),  # fmt: skip
        dict(
            benchmark=name,
            metric="client TTFT median / server prompt_ms median",
            value=f"{m['ttft_ms_median']:.2f} / {m['server_prompt_ms_median']:.2f} ms",
            target="",
            ok=None,
        ),  # fmt: skip
        dict(
            benchmark=name,
            metric="client ITL median vs server predicted_per_token_ms",
            value=f"{itl:.3f} vs {srv:.3f} ms ({rel:.1f} %)",
            target="within 10 %",
            ok=rel <= 10.0,
        ),  # fmt: skip
        dict(
            benchmark=name,
            metric="per probe |ITL p50 − predicted_per_token_ms|, median",
            value=f"{per_probe:.1f} %",
            target="",
            ok=None,
        ),
        dict(
            benchmark=name,
            metric="client mean ITL (median over probes)",
            value=f"{m['client_itl_mean_ms_median']:.3f} ms",
            target="",
            ok=None,
        ),  # fmt: skip
    ]


def _print(rows: list[dict[str, object]]) -> None:
    w = max(len(str(r["metric"])) for r in rows)
    for r in rows:
        met = {True: "yes", False: "NO", None: ""}[r["ok"]]  # type: ignore[index]
        print(f"{str(r['metric']).ljust(w)}  {str(r['value']).ljust(28)}  "
              f"{str(r['target']).ljust(12)}  {met}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.probe_accuracy")
    ap.add_argument("--url", default=None, help="existing server (default: start a tiny one)")
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--n-predict", type=int, default=128)
    args = ap.parse_args()
    _print(run(args.url, args.n, args.n_predict))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
