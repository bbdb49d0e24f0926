"""Apply with rollback in unit mode: a real llama-server systemd user unit in the confined box.

The new arguments go into llmtop's drop-in; a failing change (a cache type the tiny model cannot
hold) is seen in the journal and rolled back by writing the old arguments back."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from llmtop.control.systemd_unit import UnitController
from llmtop.control.tuning import ChangeLog, TuningValues, apply_with_rollback, spec_with_values
from llmtop.sources.journal import JournalFollower
from llmtop.sources.logs import LogStore
from tests.systemd_box.box import SystemdBox
from tests.systemd_box.fixtures import TEST_API_KEY, BoxUnit

pytestmark = [pytest.mark.systemd, pytest.mark.real_server, pytest.mark.timeout(300)]


async def _n_ctx(url: str) -> int:
    async with httpx.AsyncClient() as c:
        r = await c.get(
            url + "/props", headers={"Authorization": f"Bearer {TEST_API_KEY}"}, timeout=5
        )
        return int(r.json()["default_generation_settings"]["n_ctx"])


async def test_apply_and_rollback_unit_mode(systemd_box: SystemdBox, llama_unit: BoxUnit) -> None:
    store = LogStore()
    ctl = UnitController(
        llama_unit.name,
        user=True,
        command_prefix=systemd_box.command_prefix,
        config_home=systemd_box.config_home,
        log_store=store,
    )
    follower = JournalFollower(
        ctl.name,
        store,
        user=True,
        syslog_identifier=llama_unit.name.removesuffix(".service"),
        directory=systemd_box.journal_dir,
        command_prefix=systemd_box.command_prefix,
    )
    await asyncio.to_thread(ctl.refresh)
    original = ctl.spec
    assert original.ctx_size == 512
    await follower.start()
    try:
        log = ChangeLog(known_good=original)
        kw = {"health_url": llama_unit.url + "/health", "timeout_s": 90.0, "log_store": store}
        good = spec_with_values(original, TuningValues(2, 256))
        rec = await apply_with_rollback(ctl, good, change_log=log, **kw)  # type: ignore[arg-type]
        assert rec.result == "applied", rec.reason
        assert ctl.has_drop_in
        assert await _n_ctx(llama_unit.url) == 256

        bad = good.with_option("cache_type_k", "q8_0")
        rec = await apply_with_rollback(ctl, bad, change_log=log, **kw)  # type: ignore[arg-type]
        assert rec.result == "rolled_back", rec.reason
        assert rec.reason and "load failed" in rec.reason
        await asyncio.to_thread(ctl.refresh)
        assert ctl.spec.cache_type_k == "f16" and ctl.spec.ctx_size == 256
        assert await _n_ctx(llama_unit.url) == 256
        # the API key of the unit never reaches the records
        assert all(TEST_API_KEY not in r.summary() for r in log.records())
        assert all(TEST_API_KEY not in str(r.to_json_dict()) for r in log.records())
    finally:
        await follower.stop()
        await ctl.revert()
