"""`llmtop check`'s launch checks as dashboard alerts in attach mode, against a real server.

Attached by URL, llmtop reads the server process's own argv (and model file): a --ctx-size
above the model's training context (playbook pitfall 2) shows as an alert with the fix, in the
snapshot the TUI, `snapshot --json` and the agent all consume."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest

from llmtop.collector import Collector
from llmtop.sources.llama_http import LlamaClient
from tests.realserver import RunningServer
from tests.test_snapshot_cmd import llmtop

pytestmark = pytest.mark.real_server


async def test_ctx_above_training_context_is_an_alert_when_attached(
    server_factory: Callable[..., RunningServer],
) -> None:
    srv = server_factory("--ctx-size", "1024")  # the tiny model was trained on 512
    collector = Collector(LlamaClient(srv.url), pid_hint=srv.pid)
    try:
        snap = await collector.collect()  # the checks start after the first tick: no wait
        deadline = time.monotonic() + 20
        while not any(a.kind == "check_ctx_size" for a in snap.alerts):
            assert time.monotonic() < deadline, snap.alerts
            await asyncio.sleep(0.1)
            snap = await collector.collect()
        alerts = {a.kind: a for a in snap.alerts}
        a = alerts["check_ctx_size"]
        assert a.severity == "warning"
        assert "ctx-size 1024 is above the model's training context 512" in a.message
        assert "fix: --ctx-size 512" in a.message
        first = a.since
        snap = await collector.collect()  # still there, with the time it was first seen
        assert [x.since for x in snap.alerts if x.kind == "check_ctx_size"] == [first]
    finally:
        await collector.aclose()


async def test_within_training_context_no_check_alert(
    server_factory: Callable[..., RunningServer],
) -> None:
    srv = server_factory("--ctx-size", "512")
    collector = Collector(LlamaClient(srv.url), pid_hint=srv.pid)
    try:
        snap = await collector.collect()
        assert snap.server.health == "ok"
        checks = collector._checking  # noqa: SLF001 - the checks of this spec, running now
        assert checks is not None
        await checks  # they ran: ctx-size 512 is within the training context
        snap = await collector.collect()
        assert [a.kind for a in snap.alerts if a.kind.startswith("check_")] == []
    finally:
        await collector.aclose()


def test_snapshot_json_carries_the_check_alert(
    server_factory: Callable[..., RunningServer],
) -> None:
    srv = server_factory("--ctx-size", "1024")
    p = llmtop("snapshot", "--url", srv.url, "--json")
    assert p.returncode == 0, p.stderr
    kinds = [a["kind"] for a in json.loads(p.stdout)["alerts"]]
    assert "check_ctx_size" in kinds
