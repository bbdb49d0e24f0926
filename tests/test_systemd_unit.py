"""Unit mode against a real, confined systemd user manager running a real llama-server unit."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from llmtop.control.systemd_unit import UnitController, UnitPermissionError
from llmtop.model.launch_spec import LaunchSpec
from llmtop.sources.unit_status import UnitMonitor, discover_units
from tests.realserver import wait_healthy
from tests.systemd_box.box import SystemdBox, wait_until
from tests.systemd_box.fixtures import TEST_API_KEY, BoxUnit

pytestmark = [pytest.mark.systemd, pytest.mark.real_server, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parent.parent


def _controller(box: SystemdBox, unit: BoxUnit, **kw: object) -> UnitController:
    return UnitController(
        unit.name, user=True, command_prefix=box.command_prefix, config_home=box.config_home, **kw
    )  # type: ignore[arg-type]


async def _wait(cond, timeout: float = 60.0, what: str = "") -> object:  # type: ignore[no-untyped-def]
    return await asyncio.to_thread(wait_until, cond, timeout, 0.1, what)


async def test_discover_and_attach(systemd_box: SystemdBox, llama_unit: BoxUnit) -> None:
    found = await asyncio.to_thread(
        discover_units, scopes=("user",), command_prefix=systemd_box.command_prefix
    )
    names = [u.name for u in found]
    assert llama_unit.name in names
    unit = next(u for u in found if u.name == llama_unit.name)
    assert unit.user and unit.active_state == "active"
    assert TEST_API_KEY not in " ".join(unit.exec_start)

    monitor = UnitMonitor(llama_unit.name, user=True, command_prefix=systemd_box.command_prefix)
    status = await asyncio.to_thread(monitor.read)
    assert status.active_state == "active" and status.sub_state == "running"
    assert status.main_pid == llama_unit.main_pid()
    assert status.n_restarts == 0
    assert status.fragment_path == str(llama_unit.path)
    assert status.exec_main_start_timestamp is not None
    # ExecStart → the same launch spec as child mode: URL and API key known without flags
    assert monitor.spec is not None
    assert monitor.spec.url == llama_unit.url
    assert monitor.spec.api_key == TEST_API_KEY
    assert TEST_API_KEY not in repr(status)  # redacted everywhere it can be displayed
    assert "***" in status.exec_start
    # the attached llama-server really is the unit's process
    assert systemd_box.cmdline(status.main_pid)[0].endswith("llama-server")
    wait_healthy(monitor.spec.url, timeout=10)

    ctl = _controller(systemd_box, llama_unit, monitor=monitor)
    sup = ctl.status()
    assert sup.mode == "unit" and sup.state == "ready" and sup.can_control
    assert ctl.pid == status.main_pid


async def test_restart_gives_new_main_pid_and_health(
    systemd_box: SystemdBox, llama_unit: BoxUnit
) -> None:
    ctl = _controller(systemd_box, llama_unit)
    before = await asyncio.to_thread(ctl.refresh)
    await ctl.restart()
    after = ctl.unit_status
    assert after is not None and after.main_pid not in (None, before.main_pid)
    assert after.active_state == "active"
    await asyncio.to_thread(wait_healthy, llama_unit.url, 60)
    # stop/start through llmtop as well
    await ctl.stop()
    assert ctl.unit_status is not None and ctl.unit_status.active_state == "inactive"
    assert ctl.status().state == "stopped"
    await ctl.start()
    await asyncio.to_thread(wait_healthy, llama_unit.url, 60)
    assert ctl.status().state == "ready"


async def test_kill9_is_restarted_on_failure(systemd_box: SystemdBox, llama_unit: BoxUnit) -> None:
    monitor = UnitMonitor(llama_unit.name, user=True, command_prefix=systemd_box.command_prefix)
    ctl = _controller(systemd_box, llama_unit, monitor=monitor)
    first = await asyncio.to_thread(monitor.read)
    assert first.main_pid
    systemd_box.run(["kill", "-9", str(first.main_pid)])

    def restarted() -> bool:
        s = monitor.read()
        return bool(s.n_restarts and s.n_restarts >= 1 and s.active_state == "active"
                    and s.main_pid not in (None, first.main_pid))  # fmt: skip

    await _wait(restarted, what="Restart=on-failure after kill -9")
    sup = ctl.status()
    assert sup.restarts >= 1  # shown as the supervisor's restart count
    assert monitor.last is not None and monitor.last.n_restarts >= 1
    await asyncio.to_thread(wait_healthy, llama_unit.url, 60)


def _gpu_layers_in(argv: list[str]) -> str | None:
    for i, a in enumerate(argv):
        if a in ("-ngl", "--gpu-layers", "--n-gpu-layers"):
            return argv[i + 1]
    return None


async def test_drop_in_changes_args_and_revert_restores(
    systemd_box: SystemdBox, llama_unit: BoxUnit
) -> None:
    original_unit_file = llama_unit.path.read_bytes()
    ctl = _controller(systemd_box, llama_unit)
    await asyncio.to_thread(ctl.refresh)
    spec = ctl.spec
    assert spec.gpu_layers == 0
    old_pid = ctl.pid

    # quoting survives the drop-in: spaces, % and $ reach the process unchanged
    alias = "tiny model 100% $HOME"
    new = spec.with_option("gpu_layers", 1)
    await ctl.restart(LaunchSpec.from_argv([*new.argv, "--alias", alias], new.env))
    drop_in = ctl.drop_in_path
    assert drop_in.is_file()
    assert stat.S_IMODE(drop_in.stat().st_mode) == 0o644
    text = drop_in.read_text()
    assert "ExecStart=\n" in text  # reset before replacing
    status = ctl.unit_status
    assert status is not None and str(drop_in) in status.drop_in_paths
    assert status.main_pid not in (None, old_pid)
    argv = systemd_box.cmdline(status.main_pid)
    assert _gpu_layers_in(argv) == "1"
    assert alias in argv
    assert ctl.spec.gpu_layers == 1
    await asyncio.to_thread(wait_healthy, llama_unit.url, 60)

    # a second change keeps the previous drop-in as a backup
    await ctl.restart(ctl.spec.with_option("gpu_layers", 2))
    backup = drop_in.with_name(drop_in.name + ".bak")
    assert backup.is_file() and "-ngl 1" in backup.read_text()
    assert _gpu_layers_in(systemd_box.cmdline(ctl.unit_status.main_pid)) == "2"  # type: ignore[union-attr]
    assert llama_unit.path.read_bytes() == original_unit_file  # the unit file is never edited

    # revert through the real CLI, run inside the box (product path: plain systemctl --user)
    env_args = ["env", f"PYTHONPATH={REPO}"]
    r = systemd_box.run(
        [*env_args, sys.executable, "-m", "llmtop", "unit", "revert", llama_unit.name, "--user"],
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert "removed" in r.stdout
    assert not drop_in.exists()
    status = await asyncio.to_thread(ctl.refresh)
    assert status.drop_in_paths == ()
    assert _gpu_layers_in(systemd_box.cmdline(status.main_pid)) == "0"  # type: ignore[arg-type]
    assert alias not in systemd_box.cmdline(status.main_pid)  # type: ignore[arg-type]
    assert llama_unit.path.read_bytes() == original_unit_file
    await asyncio.to_thread(wait_healthy, llama_unit.url, 60)
    # nothing left to revert
    assert await ctl.revert() is False


async def test_unprivileged_user_gets_permission_message(
    systemd_box: SystemdBox, unit_factory
) -> None:  # type: ignore[no-untyped-def]
    unit = unit_factory(["/bin/sleep", "3600"], prefix="llmtop-perm")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    ctl = UnitController(
        unit.name, user=True, command_prefix=[*systemd_box.command_prefix, *nobody]
    )
    pid = unit.main_pid()
    with pytest.raises(UnitPermissionError) as err:
        await ctl.restart()
    msg = str(err.value)
    assert f"not allowed to restart user unit {unit.name}" in msg
    assert "Permission denied" in msg
    assert "never calls sudo" in msg
    assert ctl.status().can_control is False
    assert unit.main_pid() == pid  # nothing happened to the unit


def test_permission_message_for_system_unit_prints_polkit_rule() -> None:
    from llmtop.control.systemd_unit import permission_message

    msg = permission_message("llm-inference.service", False, "restart", "Access denied")
    assert "root, or a polkit rule" in msg
    assert 'action.lookup("unit") == "llm-inference.service"' in msg
    assert "org.freedesktop.systemd1.manage-units" in msg
    assert "/etc/polkit-1/rules.d/" in msg


async def test_quitting_never_touches_the_unit(
    systemd_box: SystemdBox, llama_unit: BoxUnit
) -> None:
    from llmtop.control.systemd_unit import open_unit_session
    from llmtop.sources.logs import LogStore

    store = LogStore()
    pid = llama_unit.main_pid()
    ctl, monitor, follower = await asyncio.to_thread(
        open_unit_session,
        llama_unit.name,
        True,
        store,
        command_prefix=systemd_box.command_prefix,
        journal_directory=systemd_box.journal_dir,
    )
    await follower.start()
    # backfill from the unit's start: llama-server's own startup lines, with the same
    # event detection as child mode
    await _wait(lambda: any(e.kind == "listening" for e in store.events()), 30, "listening event")
    await follower.stop()
    del ctl, monitor
    assert llama_unit.main_pid() == pid
    assert llama_unit.show("ActiveState")["ActiveState"] == "active"


def test_cli_inside_box_status_json(systemd_box: SystemdBox, llama_unit: BoxUnit) -> None:
    r = systemd_box.run(
        ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "llmtop", "unit", "status",
         llama_unit.name, "--user", "--json"],
        check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    import json

    data = json.loads(r.stdout)
    assert data["name"] == llama_unit.name
    assert data["active_state"] == "active"
    assert data["main_pid"] == llama_unit.main_pid()
    assert TEST_API_KEY not in r.stdout
    assert os.path.basename(data["exec_start"][0]) == "llama-server"


def test_snapshot_unit_json(systemd_box: SystemdBox, llama_unit: BoxUnit) -> None:
    """`llmtop snapshot --unit NAME --user --json`: URL and API key come from ExecStart."""
    r = systemd_box.run(
        ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "llmtop", "snapshot", "--unit",
         llama_unit.name, "--user", "--json", "--interval", "0"],
        check=False, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    import json

    data = json.loads(r.stdout)
    unit = data["unit"]
    assert unit["name"] == llama_unit.name
    assert unit["active_state"] == "active" and unit["sub_state"] == "running"
    assert unit["main_pid"] == llama_unit.main_pid()
    assert unit["n_restarts"] == 0
    assert os.path.basename(unit["exec_start"][0]) == "llama-server"
    assert data["server"]["url"] == llama_unit.url
    assert data["server"]["health"] == "ok"
    assert TEST_API_KEY not in r.stdout


def test_printed_unit_file_runs_as_is(
    systemd_box: SystemdBox, llama_server_bin: Path, tiny_model: Path
) -> None:
    """`llmtop unit print` output, installed unchanged, starts a healthy server with its key."""
    from tests.realserver import free_port

    port = free_port()
    name = "llmtop-printed"
    r = subprocess.run(
        [sys.executable, "-m", "llmtop", "unit", "print", "--name", name, "--user-unit", "--",
         str(llama_server_bin), "-m", str(tiny_model), "--port", str(port), "-c", "512",
         "-np", "1", "-t", "1", "--api-key", TEST_API_KEY],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert TEST_API_KEY not in r.stdout
    env_file = systemd_box.config_home / "llama" / f"{name}.env"
    text = r.stdout.replace(f"%h/.config/llama/{name}.env", str(env_file))
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(f"LLAMA_API_KEY={TEST_API_KEY}\n")
    unit_path = systemd_box.unit_dir / f"{name}.service"
    systemd_box.unit_dir.mkdir(parents=True, exist_ok=True)
    unit_path.write_text(text)
    try:
        systemd_box.systemctl("daemon-reload")
        systemd_box.systemctl("start", f"{name}.service")
        wait_healthy(f"http://127.0.0.1:{port}", timeout=60)
        props = systemd_box.show(f"{name}.service", "Restart", "SyslogIdentifier", "MainPID")
        assert props["Restart"] == "on-failure" and props["SyslogIdentifier"] == name
        argv = systemd_box.cmdline(int(props["MainPID"]))
        assert argv[argv.index("--host") + 1] == "127.0.0.1"
        # the key came from the EnvironmentFile: requests without it are refused
        import httpx

        url = f"http://127.0.0.1:{port}/v1/models"
        assert httpx.get(url, timeout=5).status_code == 401
        ok = httpx.get(url, headers={"Authorization": f"Bearer {TEST_API_KEY}"}, timeout=5)
        assert ok.status_code == 200
    finally:
        systemd_box.systemctl("stop", f"{name}.service", check=False)
        unit_path.unlink(missing_ok=True)
        systemd_box.systemctl("daemon-reload", check=False)


def test_dashboard_session_in_unit_mode(systemd_box: SystemdBox, llama_unit: BoxUnit) -> None:
    """`llmtop --unit NAME --user` as the dashboard builds it (product path, inside the box):
    URL/key from ExecStart, unit state in the snapshot, the journal in the log store, and
    closing the session leaves the unit running."""
    code = (
        "import asyncio, json, sys\n"
        "import argparse\n"
        "from llmtop.commands import dashboard\n"
        "p = argparse.ArgumentParser(); dashboard.add_arguments(p)\n"
        "args = p.parse_args(['--unit', sys.argv[1], '--user']); args.server_argv = []\n"
        "async def run():\n"
        "    s = dashboard.build_session(args)\n"
        "    await s.start()\n"
        "    for _ in range(100):\n"
        "        snap = await s.collector.collect()\n"
        "        if snap.server.health == 'ok' and any(\n"
        "            e.kind == 'listening' for e in s.log_store.events()):\n"
        "            break\n"
        "        await asyncio.sleep(0.2)\n"
        "    await s.close()\n"
        "    print(json.dumps(dict(mode=s.mode, health=snap.server.health, url=s.url,\n"
        "        unit_pid=snap.unit.main_pid if snap.unit else None,\n"
        "        state=snap.supervisor.state if snap.supervisor else None,\n"
        "        journal=sum(1 for ln in s.log_store.lines() if ln.stream == 'journal'),\n"
        "        events=[e.kind for e in s.log_store.events()])))\n"
        "asyncio.run(run())\n"
    )
    r = systemd_box.run(
        ["env", f"PYTHONPATH={REPO}", sys.executable, "-c", code, llama_unit.name],
        check=False,
        timeout=90,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    import json

    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["mode"] == "unit"
    assert out["url"] == llama_unit.url
    assert out["health"] == "ok"
    assert out["unit_pid"] == llama_unit.main_pid()
    assert out["state"] == "ready"
    assert out["journal"] > 5 and "listening" in out["events"]
    assert TEST_API_KEY not in r.stdout
    assert llama_unit.show("ActiveState")["ActiveState"] == "active"  # closing never touches it


async def test_crashing_unit_shows_exit_and_load_failure(
    systemd_box: SystemdBox, unit_factory, llama_server_bin: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """A unit whose model is missing: systemd keeps restarting it; llmtop shows the exit, the
    restart count and the load failure from the journal (same events as child mode)."""
    from llmtop.sources.journal import JournalFollower
    from llmtop.sources.logs import LogStore

    missing = tmp_path / "missing.gguf"
    unit = unit_factory(
        [str(llama_server_bin), "-m", str(missing), "--host", "127.0.0.1", "--port", "9",
         "-t", "1"],
        prefix="llmtop-crash",
    )  # fmt: skip
    store = LogStore()
    ctl = _controller(systemd_box, unit, log_store=store)
    follower = JournalFollower(
        unit.name,
        store,
        user=True,
        directory=systemd_box.journal_dir,
        command_prefix=systemd_box.command_prefix,
    )
    await follower.start()
    try:

        def restarted_after_exit() -> bool:
            # polled like the dashboard's tick: the exit is seen during the RestartSec pause
            return (ctl.refresh().n_restarts or 0) >= 1 and ctl.status().last_exit is not None

        await _wait(restarted_after_exit, 60, "systemd restarting the unit after an exit")
        await _wait(lambda: any(e.kind == "load_failed" for e in store.events()), 30, "load_failed")
    finally:
        await follower.stop()
    sup = ctl.status()
    assert sup.restarts >= 1
    assert sup.last_exit is not None and sup.last_exit.startswith("exit code")
    assert sup.state in ("restarting", "starting", "failed", "ready")
    assert any(str(missing) in line or "failed" in line.lower() for line in sup.last_error_lines)
