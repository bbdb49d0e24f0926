"""--probe-every: the agent's latency probes against a real llama-server land in the history
and in the report's latency table (TTFT/ITL per hour)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmtop.agent.recorder import HistoryRecorder, RecorderOptions
from llmtop.agent.runner import AgentRunner
from llmtop.commands.report import load_report
from llmtop.session import Session
from llmtop.sources.history_db import HistoryDB
from tests.realserver import RunningServer

pytestmark = [pytest.mark.real_server]


def test_probes_are_recorded_and_reported(llama_server: RunningServer, tmp_path: Path) -> None:
    db_path = tmp_path / "h.sqlite"
    session = Session(mode="attach", url=llama_server.url)
    rec = HistoryRecorder.open(db_path, RecorderOptions(interval_s=0.3), url=llama_server.url)
    runner = AgentRunner(session, [rec], interval_s=0.3, probe_every_s=0.5)

    async def main() -> None:
        task = asyncio.ensure_future(runner.run())
        deadline = asyncio.get_running_loop().time() + 60
        while rec.conn.execute("SELECT count(*) FROM probes").fetchone()[0] < 2:
            assert asyncio.get_running_loop().time() < deadline, "no probes recorded"
            assert not task.done()
            await asyncio.sleep(0.1)
        runner.stop()
        await task

    asyncio.run(main())
    with HistoryDB.open(db_path) as db:
        probes = db.probes(0, 2e10)
        assert len(probes) >= 2 and all(p.ok and p.ttft_ms and p.ttft_ms > 0 for p in probes)
        rng = db.time_range()
        assert rng is not None
        report = load_report(db, rng.start - 5, rng.end + 5)
    assert report.latency  # one row per hour (two if the run crossed an hour)
    assert sum(h.probes for h in report.latency) >= 2
    assert all(h.failed == 0 and h.ttft_ms_p50 is not None and h.itl_ms_p95 is not None
               for h in report.latency)  # fmt: skip
