"""Several servers (issue 12, item 3): the dashboard's CPU attached to 1 and to 4 idle real
llama-servers (`llmtop --url A --url B …`), at 1 s refresh in a 160×48 pty.

CPU is user+system time over wall time (% of one core), as in benchmarks/overhead.py. Targets:
4 servers ≤ 2 % of a core, and ≤ 4 × the 1-server figure (polling N servers costs at most N ×
one server's; the host, the GPUs and the screen are shared). Rounds are interleaved so machine
noise falls on both alike; medians reported.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from benchmarks.pty_run import run_in_pty
from llmtop.demo.tiny_model import write_tiny_model
from tests.realserver import RunningServer, find_llama_server, start_llama_server

SERVERS = 4


def _cpu(runs: list[float]) -> str:
    med = statistics.median(runs)
    if len(runs) == 1:
        return f"{med:.2f} % of a core"
    return f"{med:.2f} % of a core (median of {len(runs)}: {', '.join(f'{x:.2f}' for x in runs)})"


def _argv(servers: list[RunningServer]) -> list[str]:
    argv = [sys.executable, "-m", "llmtop", "--refresh", "1"]
    for srv in servers:
        argv += ["--url", srv.url]
    return argv


def _tick_cpu_ms(urls: list[str], ticks: int) -> float:
    """Collector CPU (all threads) per tick, in this process: one collector per server as the
    dashboard builds them (the first samples the host, the others their process only)."""
    import asyncio
    import time

    from llmtop.multi_server import MultiCollector, ProcessOnlySampler
    from llmtop.session import build_collector

    async def measure() -> float:
        collectors = [
            build_collector(u, None, sampler=ProcessOnlySampler() if i else None)
            for i, u in enumerate(urls)
        ]
        multi = MultiCollector(collectors, lean_background=True)  # as the dashboard builds it
        try:
            for _ in range(3):  # connections open, pids found, argv read
                await (multi.collect() if len(urls) > 1 else collectors[0].collect())
            cpu0 = time.process_time()
            for _ in range(ticks):
                await (multi.collect() if len(urls) > 1 else collectors[0].collect())
                await asyncio.sleep(0.1)
            return (time.process_time() - cpu0) * 1000.0 / ticks
        finally:
            await multi.aclose()

    return asyncio.run(measure())


def run(seconds: float = 30.0, repeat: int = 3, ticks: int = 100) -> list[dict]:
    binary = find_llama_server()
    if binary is None:
        raise SystemExit("no llama-server: run scripts/get-llama-server.sh")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = write_tiny_model(Path(tmp) / "tiny.gguf")
        servers: list[RunningServer] = []
        try:
            for i in range(SERVERS):
                alias = f"model-{i + 1}"
                servers.append(
                    start_llama_server(
                        binary, model, ["--metrics", "--alias", alias], log_dir=Path(tmp)
                    )
                )
            one: list[float] = []
            four: list[float] = []
            for _ in range(max(1, repeat)):
                # marker: the last server's alias on screen = the bar shows every server
                one.append(
                    run_in_pty(_argv(servers[:1]), seconds, warmup_s=3.0).cpu_percent_of_core
                )
                r = run_in_pty(_argv(servers), seconds, warmup_s=3.0, marker=b"model-4")
                four.append(r.cpu_percent_of_core)
                if r.marker_s is None:
                    print("multi_server: the bar never showed the 4th server", file=sys.stderr)
            tick1 = statistics.median(_tick_cpu_ms([servers[0].url], ticks) for _ in range(repeat))
            tick4 = statistics.median(
                _tick_cpu_ms([s.url for s in servers], ticks) for _ in range(repeat)
            )
            cpu1, cpu4 = statistics.median(one), statistics.median(four)
            title = f"several servers (idle, 1 s, 160×48, {seconds:.0f} s)"
            rows.append(
                dict(
                    benchmark=title,
                    metric="llmtop CPU, 1 server",
                    value=_cpu(one),
                    target="",
                    ok=None,
                )
            )
            rows.append(
                dict(
                    benchmark="",
                    metric=f"llmtop CPU, {SERVERS} servers",
                    value=_cpu(four),
                    target="≤ 2 %",
                    ok=cpu4 <= 2.0,
                )
            )
            rows.append(
                dict(
                    benchmark=f"collector tick, {ticks} ticks (in process)",
                    metric=f"CPU per tick, 1 / {SERVERS} servers",
                    value=f"{tick1:.2f} / {tick4:.2f} ms ({tick4 / tick1:.2f} ×)",
                    target=f"≤ {SERVERS} ×",
                    ok=tick4 <= SERVERS * tick1,
                )
            )
            ratio = cpu4 / cpu1 if cpu1 > 0 else float("inf")
            rows.append(
                dict(
                    benchmark="",
                    metric=f"{SERVERS} servers / 1 server",
                    value=f"{ratio:.2f} ×",
                    target=f"≤ {SERVERS} ×",
                    ok=ratio <= SERVERS,
                )
            )
        finally:
            for srv in servers:
                srv.stop()
    return rows
