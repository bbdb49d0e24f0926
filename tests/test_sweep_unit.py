"""`llmtop tune --unit` inside the confined systemd box: the sweep restarts a real llama-server
unit per setting through llmtop's drop-in and restores the original arguments at the end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from llmtop.control.systemd_unit import DROP_IN_NAME
from llmtop.model.launch_spec import LaunchSpec
from tests.systemd_box.box import SystemdBox
from tests.systemd_box.fixtures import TEST_API_KEY, BoxUnit

pytestmark = [pytest.mark.systemd, pytest.mark.real_server, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parent.parent


def test_tune_unit_mode_restores(systemd_box: SystemdBox, llama_unit: BoxUnit) -> None:
    before = llama_unit.main_pid()
    r = systemd_box.run(
        ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "llmtop", "tune", "--unit",
         llama_unit.name, "--user", "--gpu-layers", "0:2:2", "--ctx", "256", "--probes", "1",
         "--n-predict", "8", "--json"],
        check=False, timeout=240,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:] + r.stdout[-3000:]
    assert TEST_API_KEY not in r.stdout and TEST_API_KEY not in r.stderr
    data = json.loads(r.stdout)
    assert [p["gpu_layers"] for p in data["points"]] == [0, 2]
    assert all(p["status"] == "ok" and p["ctx"] == 256 for p in data["points"])
    # each setting ran as a new MainPID started with it (its /proc cmdline inside the box)
    ran = [LaunchSpec.from_argv(p["argv"]) for p in data["points"]]
    assert [(s.gpu_layers, s.ctx_size) for s in ran] == [(0, 256), (2, 256)]
    assert len({p["pid"] for p in data["points"]} | {before}) == 3
    assert data["restored"] is True
    # the unit had no drop-in before: llmtop's is gone again (kept as .bak)
    drop_in = llama_unit.path.parent / f"{llama_unit.name}.d" / DROP_IN_NAME
    assert not drop_in.exists()
    # back on the original arguments (-c 512), as a new process, healthy
    assert llama_unit.main_pid() != before
    assert LaunchSpec.from_argv(systemd_box.cmdline(llama_unit.main_pid())).ctx_size == 512
    headers = {"Authorization": f"Bearer {TEST_API_KEY}"}
    props = httpx.get(llama_unit.url + "/props", headers=headers, timeout=5).json()
    assert props["default_generation_settings"]["n_ctx"] == 512
