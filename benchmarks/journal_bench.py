"""Journal follow under load: a unit writing 20 000 lines/s through a real journald.

Runs in the confined systemd box of the tests (root, unshare; see tests/systemd_box). A writer
unit prints timestamped lines in 5 ms batches; llmtop's JournalFollower feeds a real LogStore.
Reported: p50/p95 latency from a line's write to its arrival in the store (target p95 ≤ 200 ms),
lines delivered, llmtop's CPU (this process: follower + store), and the event loop's lag (how
responsive a UI on the same loop would stay).

    python -m benchmarks.journal_bench [--seconds 5] [--rate 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WRITER = r"""
import sys, time
rate = int(sys.argv[1]); batch = max(1, rate // 200); period = batch / rate
out = sys.stdout; seq = 0; nxt = time.monotonic()
while True:
    now = time.time()
    out.write("".join(f"bench {seq + i} {now:.6f}\n" for i in range(batch)))
    out.flush(); seq += batch
    nxt += period
    d = nxt - time.monotonic()
    if d > 0:
        time.sleep(d)
"""


class MeasuringStore:
    """A real LogStore, plus the arrival time of every bench line."""

    def __init__(self) -> None:
        from llmtop.sources.logs import LogStore

        self.store = LogStore()
        self.latencies: list[float] = []  # write → store
        self.follow: list[float] = []  # journald's receive timestamp → store (llmtop's part)
        self.after: float = float("inf")  # count nothing until the live window starts
        self.seqs: list[int] = []

    def append(
        self, text: str, stream: str = "stdout", time: float | None = None, **kw: Any
    ) -> None:
        self.store.append(text, stream, time, **kw)
        if text.startswith("bench "):
            arrived = _now()
            _, seq, stamp = text.split(" ")
            written = float(stamp)
            if written >= self.after:
                self.latencies.append(arrived - written)
                if time is not None:
                    self.follow.append(arrived - time)
                self.seqs.append(int(seq))


_now = time.time


async def _loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - t - 0.01)


def _child(follower: Any) -> Any:
    proc = getattr(follower, "_proc", None)
    if proc is None:
        return None
    import psutil

    try:
        return psutil.Process(proc.pid)
    except psutil.Error:
        return None


def _cpu(p: Any) -> float:
    if p is None:
        return 0.0
    try:
        t = p.cpu_times()
        return float(t.user + t.system)
    except Exception:  # noqa: BLE001 - gone
        return 0.0


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _measure(box: Any, unit: str, backend: str, seconds: float) -> dict[str, Any]:
    from llmtop.sources.journal import JournalFollower

    store = MeasuringStore()
    props = box.show(unit, "ExecMainStartTimestamp")
    from llmtop.sources.unit_status import parse_timestamp

    follower = JournalFollower(
        unit,
        store,
        user=True,
        syslog_identifier=unit.removesuffix(".service"),
        since=parse_timestamp(props["ExecMainStartTimestamp"]),
        directory=box.journal_dir,
        backend=backend,
    )
    await follower.start()
    await asyncio.sleep(1.0)  # let the backfill pass; measure live lines only
    store.after = time.time()
    stop = asyncio.Event()
    lags: list[float] = []
    lag_task = asyncio.create_task(_loop_lag(stop, lags))
    child = _child(follower)
    cpu0 = time.process_time() + _cpu(child)
    t0 = time.monotonic()
    await asyncio.sleep(seconds)
    cpu = time.process_time() + _cpu(child) - cpu0  # the journalctl child counts as llmtop's
    wall = time.monotonic() - t0
    stop.set()
    await lag_task
    await follower.stop()
    lat = store.latencies
    written = (max(store.seqs) - min(store.seqs) + 1) if store.seqs else 0
    return dict(
        backend=backend,
        n=len(lat),
        rate=len(lat) / wall,
        written_rate=written / wall,
        missing=written - len(set(store.seqs)),
        gaps=[(a, b) for a, b in zip(store.seqs, store.seqs[1:], strict=False) if b != a + 1][:5],
        follow_p95_ms=1000 * _pct(store.follow, 0.95),
        p50_ms=1000 * statistics.median(lat) if lat else float("nan"),
        p95_ms=1000 * _pct(lat, 0.95),
        cpu_percent=100 * cpu / wall,
        lag_p95_ms=1000 * _pct(lags, 0.95),
        error=follower.error,
    )


def run(seconds: float = 5.0, rate: int = 20_000) -> list[dict]:
    from llmtop.sources.journal import have_systemd_python
    from tests.systemd_box.box import start_box, why_no_box
    from tests.systemd_box.fixtures import unit_text

    reason = why_no_box()
    if reason:
        return [dict(benchmark="journal", metric="skipped", value=reason, target="", ok=None)]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="llmtop-journal-bench-") as d:
        box = start_box(Path(d))
        try:
            name = "llmtop-bench-writer.service"
            box.unit_dir.mkdir(parents=True, exist_ok=True)
            (box.unit_dir / name).write_text(
                unit_text(
                    [sys.executable, "-c", WRITER, str(rate)],
                    ident=name.removesuffix(".service"),
                    extra="LogRateLimitIntervalSec=0\n",
                )
            )
            box.systemctl("daemon-reload")
            backends = ["python", "journalctl"] if have_systemd_python() else ["journalctl"]
            for backend in backends:
                # a fresh start per backend: each follows from the unit's start (small backfill)
                box.systemctl("restart", name)
                r = asyncio.run(_measure(box, name, backend, seconds))
                label = "systemd-python" if backend == "python" else "journalctl -o json -f"
                rows += [
                    dict(
                        benchmark="journal",
                        metric=f"{label}: write→store latency at {rate} lines/s",
                        value=f"p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms",
                        target="p95 ≤ 200 ms",
                        ok=r["p95_ms"] <= 200,
                    ),
                    dict(
                        benchmark="journal",
                        metric=f"{label}: journald→store part of it (p95)",
                        value=f"{r['follow_p95_ms']:.0f} ms",
                        target="",
                        ok=None,
                    ),
                    dict(
                        benchmark="journal",
                        metric=f"{label}: lines/s into the store / lines missing",
                        value=f"{r['rate']:.0f} / {r['missing']}",
                        target=f"{rate} asked / 0",
                        ok=r["missing"] == 0,
                    ),
                    dict(
                        benchmark="journal",
                        metric=f"{label}: llmtop CPU (+journalctl) / event-loop lag p95",
                        value=f"{r['cpu_percent']:.0f} % of a core / {r['lag_p95_ms']:.1f} ms",
                        target="UI stays responsive",
                        ok=r["lag_p95_ms"] <= 100,
                    ),
                ]
                if r["error"]:
                    rows.append(dict(benchmark="journal", metric=f"{label}: error",
                                     value=r["error"], target="", ok=False))  # fmt: skip
            box.systemctl("stop", name, check=False)
        finally:
            box.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.journal_bench")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rate", type=int, default=20_000)
    args = ap.parse_args()
    rows = run(args.seconds, args.rate)
    w = max(len(r["metric"]) for r in rows)
    print(f"{'metric':<{w}}  {'value':<48}  target")
    for r in rows:
        met = {True: "yes", False: "NO"}.get(r["ok"], "")
        print(f"{r['metric']:<{w}}  {r['value']:<48}  {r['target']} {met}")


if __name__ == "__main__":
    main()
