"""`llmtop agent --print-unit` run as a real service in the confined systemd box.

The unit is the printed one, changed only where the box needs it (its own StateDirectory name,
the API key's EnvironmentFile, no [Install]). It must reach active (running) only after READY=1
(when its first sample is written), survive kill -9 through Restart=, and its database grows.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llmtop.agent.service import ENV_FILE
from tests.systemd_box.box import SystemdBox, wait_until
from tests.systemd_box.fixtures import TEST_API_KEY, BoxUnit

pytestmark = [pytest.mark.systemd, pytest.mark.real_server]
ROOT = Path(__file__).resolve().parent.parent


def samples(db: Path) -> int:
    if not db.exists():
        return 0
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
    try:
        return int(c.execute("SELECT count(*) FROM server_samples").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        c.close()


def test_agent_unit_ready_after_first_sample_restarts_after_kill_9(
    systemd_box: SystemdBox, llama_unit: BoxUnit, tmp_path: Path
) -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "llmtop", "agent", "--print-unit", "--url", llama_unit.url,
         "--interval", "0.5"], capture_output=True, text=True, cwd=ROOT, check=True, timeout=60,
    ).stdout  # fmt: skip
    for line in ("Type=notify", "WatchdogSec=", "StateDirectory=llmtop", "ProtectSystem=strict",
                 "NoNewPrivileges=yes", "Restart=on-failure", "PrivateDevices=no"):  # fmt: skip
        assert line in printed
    assert TEST_API_KEY not in printed
    state_name = f"llmtop-test-{tmp_path.name}"
    env_file = tmp_path / "agent.env"
    env_file.write_text(f"LLMTOP_API_KEY={TEST_API_KEY}\n")
    env_file.chmod(0o600)
    text = printed.split("[Install]")[0]
    text = text.replace("StateDirectory=llmtop\n", f"StateDirectory={state_name}\n")
    text = text.replace(f"EnvironmentFile=-{ENV_FILE}", f"EnvironmentFile={env_file}")
    # PrivateTmp=yes hides /tmp: a checkout (and its venv) under /tmp must stay visible to it.
    text = text.replace("PrivateTmp=yes\n", f"PrivateTmp=yes\nBindReadOnlyPaths={ROOT}\n")
    name = f"{state_name}.service"
    systemd_box.write_unit(name, text)
    state_dir: Path | None = None
    try:
        systemd_box.systemctl("start", "--no-block", name)
        seen: list[str] = []

        def active_with_samples() -> bool:
            st = systemd_box.show(name, "ActiveState", "SubState", "MainPID")
            seen.append(st["ActiveState"])
            assert st["ActiveState"] in ("activating", "active"), (st, systemd_box.log()[-2000:])
            return st["ActiveState"] == "active"

        wait_until(active_with_samples, timeout=60, what="the agent unit active")
        assert seen[0] == "activating"  # python starting, first sample not yet written
        pid = int(systemd_box.show(name, "MainPID")["MainPID"])
        env = systemd_box.proc_path(pid, "environ").read_bytes().split(b"\0")
        state = next(e for e in env if e.startswith(b"STATE_DIRECTORY=")).split(b"=", 1)[1]
        state_dir = Path(f"/proc/{systemd_box.pid}/root") / state.decode().lstrip("/")
        db = state_dir / "history.sqlite"
        # READY came after the first sample was committed
        assert samples(db) >= 1
        assert "recording" in systemd_box.show(name, "StatusText")["StatusText"]

        before = samples(db)
        systemd_box.run(["kill", "-9", str(pid)])
        wait_until(
            lambda: (
                systemd_box.show(name, "NRestarts")["NRestarts"] not in ("", "0")
                and systemd_box.show(name, "ActiveState")["ActiveState"] == "active"
            ),
            timeout=60,
            what="a restart after kill -9",
        )
        assert int(systemd_box.show(name, "MainPID")["MainPID"]) != pid
        wait_until(lambda: samples(db) >= before + 4, timeout=30, what="the database to grow")
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        health = {h for (h,) in c.execute("SELECT DISTINCT health FROM server_samples")}
        c.close()
        assert health == {"ok"}  # the key from the EnvironmentFile reached the agent
        assert TEST_API_KEY.encode() not in db.read_bytes()
    finally:
        systemd_box.systemctl("stop", name, check=False)
        systemd_box.systemctl("reset-failed", name, check=False)
        with contextlib.suppress(FileNotFoundError):
            (systemd_box.unit_dir / name).unlink()
        systemd_box.systemctl("daemon-reload", check=False)
        if state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)
