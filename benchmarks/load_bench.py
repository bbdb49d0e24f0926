"""What `llmtop load` adds to client TTFT: a concurrency-1 load request against a single probe.

Target (issue 12): `load` adds ≤ 1 ms to client TTFT versus a single probe. Both go through
`sources.probe.run_probe`; the load test adds its level machinery (worker tasks) and the
/metrics sampler that asks for `requests_deferred` every 20 ms while the request runs. Each pair is
5 probes one after another (their median TTFT) and one concurrency-1 load level of 5 requests
(its p50 TTFT; the sampler scrapes while the later ones run); pairs alternate against one real
llama-server with /metrics on, so drift in the server or the machine hits both alike; the
figure is the median of the per-pair differences.

`python -m benchmarks.load_bench [--url URL] [-n 30] [--n-predict 16] [--per-pair 5]` starts a real
llama-server with the tiny model (tests.realserver) unless --url is given.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

from benchmarks.tiny_server import TinyServer
from llmtop.operations.events import LoadFinished
from llmtop.operations.load import DEFAULT_PROMPT, LoadRequest, LoadRun
from llmtop.sources.probe import run_probe


async def _pairs(url: str, n: int, n_predict: int, per_pair: int) -> list[tuple[float, float]]:
    """(probe TTFT ms, load TTFT ms) per pair: the median of *per_pair* probes one after another
    against the p50 of a concurrency-1 level of *per_pair* requests (its /metrics sampler runs
    from the first request's end on, so the later requests are timed while it scrapes)."""
    out: list[tuple[float, float]] = []
    await run_probe(None, url, DEFAULT_PROMPT, 4)  # warm the server
    req = LoadRequest(url, (1,), requests_per_level=per_pair, n_predict=n_predict, max_seconds=60.0)
    for _ in range(n):
        probes = [await run_probe(None, url, DEFAULT_PROMPT, n_predict) for _ in range(per_pair)]
        ttfts = [p.ttft_ms for p in probes if p.ttft_ms is not None]
        event = await LoadRun().run(req)
        if not isinstance(event, LoadFinished):
            raise RuntimeError(f"load failed: {event}")
        level = event.result.levels[0]
        if len(ttfts) < per_pair or level.ttft_p50_ms is None or level.ok < per_pair:
            raise RuntimeError(f"a request failed: load {level.first_error}")
        out.append((statistics.median(ttfts), level.ttft_p50_ms))
    return out


def measure(url: str, n: int = 30, n_predict: int = 16, per_pair: int = 5) -> dict[str, float]:
    pairs = asyncio.run(_pairs(url, n, n_predict, per_pair))
    return {
        "pairs": len(pairs),
        "probe_ttft_ms_median": statistics.median(p for p, _ in pairs),
        "load_ttft_ms_median": statistics.median(x for _, x in pairs),
        "diff_ms_median": statistics.median(x - p for p, x in pairs),
    }


def run(
    server_url: str | None = None, n: int = 30, n_predict: int = 16, per_pair: int = 5
) -> list[dict[str, object]]:
    """Rows for the benchmark table. Without a URL a real tiny-model server is started."""
    if server_url is None:
        with TinyServer(["--metrics"]) as url:
            return run(url, n, n_predict, per_pair)
    m = measure(server_url, n, n_predict, per_pair)
    diff = m["diff_ms_median"]
    name = "load"
    return [
        dict(benchmark=name, metric="pairs (probes, concurrency-1 load level)",
             value=f"{m['pairs']:.0f} × {per_pair} requests × {n_predict} tokens", target="",
             ok=None),
        dict(benchmark=name, metric="client TTFT median: probe / load",
             value=f"{m['probe_ttft_ms_median']:.2f} / {m['load_ttft_ms_median']:.2f} ms",
             target="", ok=None),
        dict(benchmark=name, metric="median(load TTFT − probe TTFT), paired",
             value=f"{diff:+.3f} ms", target="≤ 1 ms", ok=diff <= 1.0),
    ]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.load_bench")
    ap.add_argument("--url", default=None, help="existing server (default: start a tiny one)")
    ap.add_argument("-n", type=int, default=30)
    ap.add_argument("--n-predict", type=int, default=16)
    ap.add_argument("--per-pair", type=int, default=5, help="requests on each side of a pair")
    args = ap.parse_args()
    for r in run(args.url, args.n, args.n_predict, args.per_pair):
        met = {True: "yes", False: "NO", None: ""}[r["ok"]]  # type: ignore[index]
        print(f"{str(r['metric']).ljust(44)}  {str(r['value']).ljust(24)}  "
              f"{str(r['target']).ljust(8)}  {met}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
