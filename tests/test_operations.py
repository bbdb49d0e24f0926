"""The operations layer without Textual, against a real llama-server: apply from typed input with
rollback, restart/stop/start, revert of a unit's drop-in, and the sweep. What is checked is the
restarted process itself (its argv from /proc, its /props), never the arguments handed in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import psutil
import pytest

from llmtop.control.supervisor import ChildSupervisor
from llmtop.control.systemd_unit import UnitController
from llmtop.model.launch_spec import LaunchSpec
from llmtop.operations.actions import Operations, SweepRequest, TuningInput, parse_sweep_input
from llmtop.operations.events import (
    Applied,
    Done,
    Event,
    Progress,
    Rejected,
    Reverted,
    RolledBack,
    SweepFinished,
    SweepStep,
)
from llmtop.operations.probe import PeriodicProbe
from llmtop.sources.logs import LogStore
from tests.realserver import free_port, server_argv, wait_healthy
from tests.systemd_box.box import SystemdBox
from tests.systemd_box.fixtures import TEST_API_KEY, BoxUnit


def _running(pid: int | None) -> LaunchSpec:
    """The launch arguments of the process the OS runs under *pid*."""
    assert pid is not None
    return LaunchSpec.from_argv(psutil.Process(pid).cmdline())


async def _n_ctx(url: str, api_key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient() as c:
        r = await c.get(url + "/props", headers=headers, timeout=5)
        return int(r.json()["default_generation_settings"]["n_ctx"])


@pytest.fixture
async def child(llama_server_bin: Path, tiny_model: Path) -> AsyncIterator[ChildSupervisor]:
    spec = LaunchSpec.from_argv(server_argv(llama_server_bin, tiny_model, free_port(), "-ngl", "0"))
    sup = ChildSupervisor(spec, LogStore())
    try:
        await sup.start()
        yield sup
    finally:
        await sup.stop()


def test_sweep_input_is_checked_before_anything_runs() -> None:
    assert parse_sweep_input("0:9", "1", block_count=4) == "sweep: gpu-layers above 5"
    assert "probes must be at least 1" in str(parse_sweep_input("0:4", "0"))
    assert str(parse_sweep_input("a:b", "1")).startswith("sweep: not a range")
    req = parse_sweep_input("0:4:4", "2", block_count=4, ctx=256)
    assert req == SweepRequest((0, 4), 2, 256)


async def test_periodic_probe_fires_until_switched_off() -> None:
    fired = asyncio.Event()
    periodic = PeriodicProbe(fired.set, interval_s=0.01)
    assert periodic.toggle() is True and periodic.on
    await asyncio.wait_for(fired.wait(), 5)
    assert periodic.toggle() is False and not periodic.on


@pytest.mark.real_server
async def test_apply_from_typed_input_and_rollback(child: ChildSupervisor) -> None:
    ops = Operations(child, child.log_store)
    events: list[Event] = []
    limits = {"block_count": 4, "n_ctx_train": 512}

    # invalid input, a warning without a yes, and no change are refused: nothing restarts
    pid0 = child.pid
    for raw, why in (
        (TuningInput("ten", "512", **limits), "not an integer"),
        (TuningInput("0", "1024", **limits), "training context 512"),
        (TuningInput("0", "512", **limits), "nothing to change"),
    ):
        ev = await ops.apply.run(raw, listener=events.append)
        assert isinstance(ev, Rejected) and why in ev.reason
    assert child.pid == pid0 and len(ops.apply.change_log) == 0

    # a good change: the restarted process runs it
    ev = await ops.apply.run(TuningInput("3", "256", **limits), listener=events.append)
    assert isinstance(ev, Applied), ev
    assert "--ctx-size 512 → 256" in ev.record.changes
    running = _running(child.pid)
    assert child.pid != pid0 and running.ctx_size == 256 and running.gpu_layers == 3
    assert await _n_ctx(child.spec.url) == 256
    good_pid = child.pid

    # arguments the server fails on: rolled back, and a new process runs the known-good ones
    bad = TuningInput("3", "256", cache_type_k="q8_0", **limits)
    ev = await ops.apply.run(bad, listener=events.append)
    assert isinstance(ev, RolledBack), ev
    assert ev.record.reason and "does not divide" in ev.record.reason
    running = _running(child.pid)
    assert child.pid not in (None, good_pid)
    assert running.cache_type_k in (None, "f16") and running.ctx_size == 256
    assert child.status().state == "ready" and await _n_ctx(child.spec.url) == 256
    assert [r.result for r in ops.apply.change_log.records()] == ["applied", "rolled_back"]

    steps = [e.message for e in events if isinstance(e, Progress)]
    assert any(m.startswith("applying --gpu-layers 0 → 3") for m in steps)
    assert any(m.startswith("rolling back: load failed") for m in steps)
    assert ops.busy is None


@pytest.mark.real_server
async def test_restart_stop_start_are_one_route(child: ChildSupervisor) -> None:
    ops = Operations(child, child.log_store)
    events: list[Event] = []
    pid0 = child.pid
    assert isinstance(await ops.server.restart(events.append), Done)
    assert child.pid not in (None, pid0) and psutil.pid_exists(child.pid)  # type: ignore[arg-type]
    await asyncio.to_thread(wait_healthy, child.spec.url, 60)
    assert isinstance(await ops.server.stop(events.append), Done)
    assert child.status().state == "stopped" and child.pid is None
    assert isinstance(await ops.server.start(events.append), Done)
    await asyncio.to_thread(wait_healthy, child.spec.url, 60)
    assert [type(e).__name__ for e in events] == ["Progress", "Done"] * 3
    # a child has no drop-in: revert is refused, in words
    ev = await ops.server.revert()
    assert isinstance(ev, Rejected) and "not a systemd unit" in ev.reason


@pytest.mark.real_server
async def test_sweep_runs_each_setting_in_a_new_process(child: ChildSupervisor) -> None:
    ops = Operations(child, child.log_store)
    original = child.spec
    seen: list[tuple[int, LaunchSpec, int | None]] = []

    def listen(event: Event) -> None:
        if isinstance(event, SweepStep):  # the measured server is still running now
            seen.append((event.point.gpu_layers, _running(child.pid), child.pid))

    ev = await ops.sweep.run(SweepRequest((0, 2), probes=1, ctx=256, n_predict=8), listen)
    assert isinstance(ev, SweepFinished), ev
    result = ev.result
    assert [p.status for p in result.points] == ["ok", "ok"]
    for (ngl, running, pid), point in zip(seen, result.points, strict=True):
        assert running.gpu_layers == ngl and running.ctx_size == 256
        assert point.pid == pid and LaunchSpec.from_argv(point.argv).gpu_layers == ngl
    assert len({pid for _, _, pid in seen}) == 2
    # restored: the process now running has the original arguments
    assert result.restored is True
    running = _running(child.pid)
    assert running.gpu_layers == original.gpu_layers and running.ctx_size == 512
    assert await _n_ctx(original.url) == 512


@pytest.mark.systemd
@pytest.mark.real_server
@pytest.mark.timeout(300)
async def test_apply_then_revert_a_unit(systemd_box: SystemdBox, llama_unit: BoxUnit) -> None:
    store = LogStore()
    ctl = UnitController(
        llama_unit.name,
        user=True,
        command_prefix=systemd_box.command_prefix,
        config_home=systemd_box.config_home,
        log_store=store,
    )
    await asyncio.to_thread(ctl.refresh)
    ops = Operations(ctl, store)
    assert ops.server.can_revert and ops.server.unit_name == llama_unit.name

    ev = await ops.server.revert()  # nothing written yet: nothing to revert
    assert isinstance(ev, Reverted) and not ev.removed

    ev = await ops.apply.run(TuningInput("2", "256"))
    assert isinstance(ev, Applied), ev
    assert ctl.has_drop_in
    running = LaunchSpec.from_argv(systemd_box.cmdline(llama_unit.main_pid()))
    assert running.ctx_size == 256 and running.gpu_layers == 2
    applied_pid = llama_unit.main_pid()

    ev = await ops.server.revert()
    assert isinstance(ev, Reverted) and ev.removed and "drop-in removed" in ev.message
    assert not ctl.has_drop_in
    await asyncio.to_thread(wait_healthy, llama_unit.url, 60)
    assert llama_unit.main_pid() != applied_pid
    running = LaunchSpec.from_argv(systemd_box.cmdline(llama_unit.main_pid()))
    assert running.ctx_size == 512 and running.gpu_layers == 0
    assert await _n_ctx(llama_unit.url, TEST_API_KEY) == 512
