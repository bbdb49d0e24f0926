"""The --gpu-layers sweep end to end against a real llama-server in child mode.

On a CPU build gpu-layers has no speed effect, so what is tested is the mechanics: a restart per
setting with that setting, probes measured per setting, a recommendation, results as JSON and CSV,
and the original arguments restored at the end.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from llmtop.control.supervisor import ChildSupervisor
from llmtop.control.sweep import (
    SweepPoint,
    SweepResult,
    format_plot,
    format_table,
    parse_range,
    recommend,
    run_sweep,
)
from llmtop.model.launch_spec import LaunchSpec
from llmtop.sources.logs import LogStore
from tests.realserver import free_port, server_argv


def test_parse_range() -> None:
    assert parse_range("0:40:8") == [0, 8, 16, 24, 32, 40]
    assert parse_range("0:10:4") == [0, 4, 8, 10]  # the end is always tried
    assert parse_range("8:0:4") == [8, 4, 0]
    assert parse_range("3") == [3]
    for bad in ("a:b", "0:10:0", "1:2:3:4", "-2:4"):
        with pytest.raises(ValueError):
            parse_range(bad)


def test_recommend_fastest_within_headroom() -> None:
    gib = 2**30
    pts = [
        SweepPoint(0, 4096, "ok", gen_tokens_per_s=10.0, peak_vram_bytes=1 * gib),
        SweepPoint(20, 4096, "ok", gen_tokens_per_s=40.0, peak_vram_bytes=20 * gib),
        SweepPoint(32, 4096, "ok", gen_tokens_per_s=55.0, peak_vram_bytes=23 * gib),  # 4 % free
        SweepPoint(40, 4096, "oom", reason="oom: cudaMalloc failed"),
    ]
    best, why = recommend(pts, 24 * gib, 10.0)
    assert best is pts[1] and "40.0 tok/s" in why
    best, _ = recommend(pts, None, 10.0)  # no VRAM data: fastest wins
    assert best is pts[2]
    assert recommend(pts[3:], 24 * gib, 10.0)[0] is None
    result = SweepResult(("llama-server",), pts, best, why)
    table = format_table(result)
    assert "recommended: --gpu-layers 32" in table and "oom" in table
    plot = format_plot(result).splitlines()
    assert plot[0].startswith("gen tok/s") and "peak VRAM" in plot[0]
    assert plot[3].count("█") == 40 and "23.0 GiB" in plot[3]  # the fastest fills the width
    assert plot[4].endswith("oom")


def _argv(binary: Path, model: Path, port: int) -> list[str]:
    return server_argv(binary, model, port)


@pytest.mark.real_server
async def test_sweep_child_mode_restores(
    llama_server_bin: Path, tiny_model: Path, tmp_path: Path
) -> None:
    original = LaunchSpec.from_argv(
        [*_argv(llama_server_bin, tiny_model, free_port()), "-ngl", "1"]
    )
    store = LogStore()
    sup = ChildSupervisor(original, store)
    seen: list[SweepPoint] = []
    running: list[tuple[int | None, LaunchSpec]] = []

    def on_point(point: SweepPoint) -> None:
        # the measured server still runs: what the OS says it was started with
        seen.append(point)
        assert sup.pid is not None
        running.append((sup.pid, LaunchSpec.from_argv(psutil.Process(sup.pid).cmdline())))

    try:
        await sup.start()
        result = await run_sweep(
            sup,  # type: ignore[arg-type]
            [0, 2, 5],
            log_store=store,
            ctx=256,
            probes=2,
            n_predict=12,
            timeout_s=60.0,
            on_point=on_point,
        )
        # one restart per setting, each measured, each a new process with that setting
        assert [p.gpu_layers for p in result.points] == [0, 2, 5]
        assert seen == result.points
        assert [(r.gpu_layers, r.ctx_size) for _, r in running] == [(0, 256), (2, 256), (5, 256)]
        assert len({pid for pid, _ in running}) == 3
        assert [p.pid for p in result.points] == [pid for pid, _ in running]
        for p in result.points:
            assert p.status == "ok", p.reason
            assert p.ctx == 256
            assert p.probes == 2 and p.errors == 0
            assert p.gen_tokens_per_s and p.gen_tokens_per_s > 0
            assert p.ttft_ms and p.ttft_ms > 0
            assert p.peak_vram_bytes is None  # no GPU here
        launched = [ln.text for ln in store.lines() if "sweep: restarting" in ln.text]
        assert len(launched) == 3
        assert result.recommended in result.points
        # the original arguments are back, and the server answers with them
        assert result.restored is True
        assert sup.spec == original and sup.status().state == "ready"
        back = LaunchSpec.from_argv(psutil.Process(sup.pid).cmdline())  # type: ignore[arg-type]
        assert back.gpu_layers == 1 and back.ctx_size == 512
        async with httpx.AsyncClient() as c:
            props = (await c.get(original.url + "/props", timeout=5)).json()
        assert props["default_generation_settings"]["n_ctx"] == 512
        # saved as JSON and CSV
        jpath, cpath = result.save(tmp_path / "out")
        data = json.loads(jpath.read_text())
        assert [p["gpu_layers"] for p in data["points"]] == [0, 2, 5]
        assert data["restored"] is True and data["recommended"]["gpu_layers"] in (0, 2, 5)
        rows = list(csv.DictReader(cpath.open()))
        assert [r["gpu_layers"] for r in rows] == ["0", "2", "5"]
        assert all(float(r["gen_tokens_per_s"]) > 0 for r in rows)
    finally:
        await sup.stop()


@pytest.mark.real_server
def test_tune_command_child_mode(llama_server_bin: Path, tiny_model: Path, tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "results"
    cp = subprocess.run(
        [sys.executable, "-m", "llmtop", "tune", "--gpu-layers", "0:5:5", "--probes", "1",
         "--n-predict", "8", "--json", "--out", str(out), "--",
         *_argv(llama_server_bin, tiny_model, port)],
        capture_output=True, text=True, timeout=240, env=dict(os.environ),
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr[-2000:] + cp.stdout[-3000:]
    data = json.loads(cp.stdout)
    assert [p["gpu_layers"] for p in data["points"]] == [0, 5]
    assert all(p["status"] == "ok" for p in data["points"])
    # each setting ran in its own process, started with it (its /proc cmdline, read by the sweep)
    assert [LaunchSpec.from_argv(p["argv"]).gpu_layers for p in data["points"]] == [0, 5]
    assert len({p["pid"] for p in data["points"]}) == 2
    assert data["recommended"] is not None
    assert sorted(Path(f).suffix for f in data["files"]) == [".csv", ".json"]
    assert all(Path(f).is_file() for f in data["files"])
    # the child is gone when llmtop tune exits
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


@pytest.mark.real_server
async def test_sweep_stops_at_out_of_memory(llama_server_bin: Path, tmp_path: Path) -> None:
    from tests.test_tuning import IMPOSSIBLE_CTX, limited_argv, wide_model

    ctx = IMPOSSIBLE_CTX
    model = wide_model(tmp_path)
    original = LaunchSpec.from_argv(
        limited_argv([*_argv(llama_server_bin, model, free_port()), "-fit", "off"])
    )
    store = LogStore()
    sup = ChildSupervisor(original, store)
    try:
        await sup.start()
        result = await run_sweep(
            sup,  # type: ignore[arg-type]
            [0, 1, 2],
            log_store=store,
            ctx=ctx,
            probes=1,
            timeout_s=60.0,
        )
        # the first setting runs out of memory: the others are not tried
        assert [p.gpu_layers for p in result.points] == [0]
        assert result.points[0].status == "oom"
        assert result.stopped_early == "out of memory at --gpu-layers 0"
        assert result.recommended is None
        assert "out of memory" in format_table(result)
        assert result.restored is True and sup.spec == original
        assert sup.status().state == "ready"
    finally:
        await sup.stop()
