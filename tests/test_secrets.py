"""An API key given on a unit's command line never leaves a trace llmtop made.

A real llama-server unit in the confined systemd box runs with `--api-key K`; its ExecStartPost
echoes the key into the journal (the way a wrapper script or a verbose server would), and an
older llmtop left a drop-in backup with the key inside. After llmtop applies a change:
- no file under the unit's directories that other users can read contains K (the drop-in passes
  `--api-key-file`, the key sits in a 0600 file; the old backup is rewritten),
- the server still takes the key and llmtop still reaches it (it reads the key file),
- K is on no tab of the dashboard, nor in the journal panel, `snapshot --json` or `unit status`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from llmtop.commands import dashboard
from llmtop.control.systemd_unit import KEY_FILE_NAME, UnitController, drop_in_text
from llmtop.session import Session, UnitAccess
from llmtop.ui.app import create_app
from tests.realserver import free_port, server_argv, wait_healthy
from tests.screen_text import screen_text
from tests.systemd_box.box import SystemdBox, wait_until
from tests.systemd_box.fixtures import BoxUnit

pytestmark = [pytest.mark.systemd, pytest.mark.real_server, pytest.mark.timeout(300)]

KEY = "sk-secret-e2e-7d41c0ffee"
REPO = Path(__file__).resolve().parent.parent


def _files_others_can_read(root: Path) -> list[Path]:
    out = []
    for path in root.rglob("*"):
        if path.is_file() and stat.S_IMODE(path.stat().st_mode) & stat.S_IROTH:
            out.append(path)
    return out


def _leaks(paths: list[Path]) -> list[Path]:
    return [p for p in paths if KEY in p.read_text(errors="replace")]


async def test_api_key_from_the_command_line_never_leaks(
    systemd_box: SystemdBox,
    unit_factory: Callable[..., BoxUnit],
    llama_server_bin: Path,
    tiny_model: Path,
) -> None:
    port = free_port()
    argv = server_argv(llama_server_bin, tiny_model, port, "-ngl", "0", "--api-key", KEY)
    echo = f"ExecStartPost=/bin/echo pre-start --api-key {KEY} LLAMA_API_KEY={KEY}\n"
    unit = unit_factory(argv, prefix="llmtop-secret", start=False, extra=echo)
    unit.port = port
    # The operator's own unit file holds the key; they keep it private. Everything else is ours.
    os.chmod(unit.path, 0o600)
    # A backup an older llmtop wrote: the full argv and the key as Environment=, world-readable.
    drop_dir = systemd_box.unit_dir / f"{unit.name}.d"
    drop_dir.mkdir(parents=True, exist_ok=True)
    old_bak = drop_dir / "50-llmtop.conf.bak"
    old_bak.write_text(drop_in_text(unit.name, True, argv, {"LLAMA_API_KEY": KEY}))
    os.chmod(old_bak, 0o644)
    assert _leaks([old_bak]) == [old_bak]  # the test's premise
    systemd_box.systemctl("start", unit.name)
    await asyncio.to_thread(wait_healthy, unit.url, 60)

    ctl = UnitController(
        unit.name, user=True, command_prefix=systemd_box.command_prefix,
        config_home=systemd_box.config_home,
    )  # fmt: skip
    await asyncio.to_thread(ctl.refresh)
    first_pid = ctl.pid
    await ctl.restart(ctl.spec.with_option("ctx_size", 1024))
    await asyncio.to_thread(
        wait_until, lambda: ctl.refresh().main_pid not in (None, first_pid), 60, 0.1, "restart"
    )
    await asyncio.to_thread(wait_healthy, unit.url, 60)

    # Files: the drop-in passes a key file; no readable file holds the key.
    readable = _files_others_can_read(systemd_box.unit_dir)
    assert ctl.drop_in_path in readable and old_bak in readable
    assert _leaks(readable) == []
    key_file = drop_dir / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().strip() == KEY
    running = systemd_box.cmdline(ctl.refresh().main_pid or 0)
    assert KEY not in running and running[running.index("--api-key-file") + 1] == str(key_file)
    assert running[running.index("-c") + 1] == "1024"  # the change itself was applied
    # The server still takes the key, and llmtop knows it (from the key file).
    models = f"{unit.url}/v1/models"
    assert httpx.get(models, timeout=5).status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(models, headers=auth, timeout=5).status_code == 200
    assert ctl.spec.api_key == KEY

    # The dashboard: every tab, and the journal (which carries the echoed key) in the log panel.
    parser = argparse.ArgumentParser()
    dashboard.add_arguments(parser)
    args = parser.parse_args(["--unit", unit.name, "--user", "--refresh", "0.5"])
    args.server_argv = []
    access = UnitAccess(tuple(systemd_box.command_prefix), str(systemd_box.journal_dir))
    session = dashboard.build_session(args, access=access)
    assert isinstance(session, Session), session
    session.gpu_factory = None
    app = create_app(session)
    async with app.run_test(size=(200, 50)) as pilot:

        async def shows(*needles: str, timeout: float = 60.0) -> str:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                text = screen_text(app)
                if all(n in text for n in needles):
                    return text
                if loop.time() > deadline:
                    raise AssertionError(f"{needles} not on screen:\n{text}")
                await pilot.pause(0.05)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while (
            app.latest is None or app.latest.server.health != "ok"
        ):  # authorized: it read the file
            assert loop.time() < deadline, screen_text(app)
            await pilot.pause(0.05)
        await shows("active (running)")
        texts = [screen_text(app)]
        await pilot.press("2")
        texts.append(await shows("pre-start --api-key ***", "LLAMA_API_KEY=***"))
        for tab in ("3", "4", "5", "1"):
            await pilot.press(tab)
            await pilot.pause()
            texts.append(screen_text(app))
        assert all(KEY not in t for t in texts)
        journal = [ln.text for ln in session.log_store.lines() if ln.stream == "journal"]
        assert any("pre-start" in t for t in journal) and all(KEY not in t for t in journal)

    # Headless: snapshot --json and unit status print no key either.
    for cmd in (
        ["snapshot", "--unit", unit.name, "--user", "--json", "--interval", "0"],
        ["unit", "status", unit.name, "--user", "--json"],
    ):
        r = systemd_box.run(
            ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "llmtop", *cmd],
            check=False, timeout=90,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert KEY not in r.stdout + r.stderr
        json.loads(r.stdout)
    data = json.loads(r.stdout)
    assert data["name"] == unit.name
