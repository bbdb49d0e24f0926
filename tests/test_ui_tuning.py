"""Pilot tests of the Tuning panel: the plan follows the typing, errors are inline, Apply restarts
a real llama-server and rolls back a failing change, ctx above the training context asks first."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Button, Input, Select

from llmtop.control.supervisor import ChildSupervisor
from llmtop.model.launch_spec import LaunchSpec
from llmtop.session import Session
from llmtop.snapshot import GpuSample, ServerStatus, Snapshot
from llmtop.sources.logs import LogStore
from llmtop.ui.panels.tuning import TuningPanel
from llmtop.ui.screens.confirm import ConfirmScreen
from tests.realserver import free_port, server_argv

MiB = 1 << 20


class TuningApp(App[None]):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def compose(self) -> ComposeResult:
        yield TuningPanel(self.session, id="tuning-panel")


def _spec(binary: Path | str, model: Path, port: int) -> LaunchSpec:
    return LaunchSpec.from_argv(server_argv(Path(binary), model, port, "-ngl", "0"))


def _session(spec: LaunchSpec) -> tuple[Session, ChildSupervisor]:
    store = LogStore()
    sup = ChildSupervisor(spec, store)
    return Session(mode="child", url=spec.url, log_store=store, controller=sup), sup


def _require_fit_params(llama_server_bin: Path) -> None:
    """scripts/get-llama-server.sh builds llama-fit-params beside llama-server: CI needs it."""
    from llmtop.sources.buffer_lines import find_fit_params

    if find_fit_params(llama_server_bin) is None:
        from tests.conftest import missing_component

        missing_component("llama-fit-params not built next to llama-server")


async def _until(pilot: object, cond: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.1)  # type: ignore[attr-defined]


def _snapshot(total: int, free: int) -> Snapshot:
    gpu = GpuSample(index=0, name="Sim GPU", memory_total_bytes=total, memory_free_bytes=free)
    return Snapshot(time=time.time(), server=ServerStatus(url="http://127.0.0.1:1"), gpus=(gpu,))


async def test_plan_follows_typing_and_errors_are_inline(tiny_model: Path) -> None:
    # Not started: the panel plans from the spec's model without a running server.
    session, _sup = _session(_spec("llama-server", tiny_model, free_port()))
    app = TuningApp(session)
    async with app.run_test(size=(160, 50)) as pilot:
        panel = app.query_one(TuningPanel)
        await _until(pilot, lambda: panel.info is not None, 10)
        assert "4 blocks" in panel.text_of("tuning-model")
        assert "training ctx 512" in panel.text_of("tuning-model")
        assert "offloaded 0/5" in panel.text_of("tuning-plan")

        ngl = panel.query_one("#tuning-ngl", Input)
        ngl.value = "abc"
        await pilot.pause()
        assert "not an integer" in panel.text_of("tuning-error")
        assert panel.query_one("#tuning-apply", Button).disabled

        ngl.value = "9"
        await pilot.pause()
        assert "above 5" in panel.text_of("tuning-error")

        ngl.value = "3"
        await pilot.pause()
        assert panel.text_of("tuning-error") == ""
        assert not panel.query_one("#tuning-apply", Button).disabled
        assert "offloaded 3/5" in panel.text_of("tuning-plan")
        before = panel.plan.total_bytes if panel.plan else 0

        # a GPU appears: the bar and the headroom
        panel.show(_snapshot(64 * MiB, 60 * MiB))
        await pilot.pause()
        plan_text = panel.text_of("tuning-plan")
        assert "Sim GPU" in plan_text and "headroom" in plan_text and "fits" in plan_text

        # more context → more KV on the GPU, recomputed as you type
        panel.query_one("#tuning-ctx", Input).value = "4096"
        await pilot.pause()
        assert panel.plan is not None and panel.plan.total_bytes > before
        assert "training context 512" in panel.text_of("tuning-warning")

        panel.show(_snapshot(4 * MiB, 4 * MiB))
        await pilot.pause()
        assert "does not fit" in panel.text_of("tuning-plan")

        # a cache type this model's head size (16) cannot hold is flagged before applying
        panel.query_one("#tuning-ctk", Select).value = "q8_0"
        await pilot.pause()
        assert "refuse to start" in panel.text_of("tuning-plan")
        assert "--fit" in panel.text_of("tuning-fit")


@pytest.mark.real_server
async def test_apply_rollback_and_confirm(llama_server_bin: Path, tiny_model: Path) -> None:
    _require_fit_params(llama_server_bin)
    spec = _spec(llama_server_bin, tiny_model, free_port())
    session, sup = _session(spec)
    try:
        await sup.start()
        app = TuningApp(session)
        async with app.run_test(size=(160, 50)) as pilot:
            panel = app.query_one(TuningPanel)
            await _until(pilot, lambda: panel.info is not None and sup.status().state == "ready")
            # llama.cpp's own fitter (built next to llama-server) is shown beside the plan
            # (started when the tab is first shown a snapshot)
            panel.show(_snapshot(64 * MiB, 60 * MiB))
            await _until(pilot, lambda: "suggests" in panel.text_of("tuning-fit-params"), 30)
            assert "-c 512 -ngl -1" in panel.text_of("tuning-fit-params")

            # 1. apply a smaller context
            panel.query_one("#tuning-ctx", Input).value = "256"
            await pilot.pause()
            await pilot.click("#tuning-apply")
            await _until(pilot, lambda: "applied" in panel.text_of("tuning-status"))
            assert sup.spec.ctx_size == 256
            assert "--ctx-size 512 → 256" in panel.text_of("tuning-log")

            # 2. a failing change is rolled back, and the log says why
            panel.query_one("#tuning-ctk", Select).value = "q8_0"
            await pilot.pause()
            await pilot.click("#tuning-apply")
            await _until(pilot, lambda: "rolled back" in panel.text_of("tuning-status"))
            assert "does not divide" in panel.text_of("tuning-status")
            assert sup.spec.ctx_size == 256 and sup.spec.cache_type_k == "f16"
            assert sup.status().state == "ready"
            assert "rolled_back" in panel.text_of("tuning-log")

            # 3. ctx above the training context asks first; "n" applies nothing
            panel.query_one("#tuning-ctk", Select).value = "f16"
            panel.query_one("#tuning-ctx", Input).value = "1024"
            await pilot.pause()
            await pilot.click("#tuning-apply")
            await _until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
            await pilot.press("n")
            await pilot.pause()
            assert sup.spec.ctx_size == 256
            assert "not applied" in panel.text_of("tuning-status")
            #    …and "y" applies it
            await pilot.click("#tuning-apply")
            await _until(pilot, lambda: isinstance(app.screen, ConfirmScreen), 10)
            await pilot.press("y")
            await _until(pilot, lambda: sup.spec.ctx_size == 1024 and not panel.applying)
            assert "applied" in panel.text_of("tuning-status")
            assert len(panel.change_log) == 3
    finally:
        await sup.stop()
        await asyncio.sleep(0)


@pytest.mark.real_server
async def test_sweep_from_the_panel(llama_server_bin: Path, tiny_model: Path) -> None:
    _require_fit_params(llama_server_bin)
    spec = _spec(llama_server_bin, tiny_model, free_port())
    session, sup = _session(spec)
    try:
        await sup.start()
        app = TuningApp(session)
        async with app.run_test(size=(160, 60)) as pilot:
            panel = app.query_one(TuningPanel)
            await _until(pilot, lambda: panel.info is not None and sup.status().state == "ready")
            panel.show(_snapshot(64 * MiB, 60 * MiB))
            # layout settled
            await _until(pilot, lambda: "suggests" in panel.text_of("tuning-fit-params"), 30)
            assert panel.query_one("#tuning-sweep-range", Input).value == "0:5:1"
            panel.query_one("#tuning-sweep-range", Input).value = "0:9"
            panel.query_one("#tuning-sweep-start", Button).press()
            await pilot.pause()
            assert "above 5" in panel.text_of("tuning-sweep")  # nothing started
            assert not panel.sweeping

            panel.query_one("#tuning-sweep-range", Input).value = "0:4:4"
            panel.query_one("#tuning-sweep-probes", Input).value = "1"
            panel.query_one("#tuning-sweep-start", Button).press()
            await pilot.pause()
            assert panel.sweeping, panel.text_of("tuning-sweep")
            assert panel.query_one("#tuning-apply", Button).disabled
            await _until(pilot, lambda: not panel.sweeping, 120)
            text = panel.text_of("tuning-sweep")
            assert "original arguments restored" in text and "recommended: --gpu-layers" in text
            assert panel.sweep_result is not None
            assert [p.gpu_layers for p in panel.sweep_result.points] == [0, 4]
            assert sup.spec == spec and sup.status().state == "ready"
            best = panel.sweep_result.recommended
            assert best is not None
            panel.query_one("#tuning-sweep-use", Button).press()
            await pilot.pause()
            assert panel.query_one("#tuning-ngl", Input).value == str(best.gpu_layers)
    finally:
        await sup.stop()
