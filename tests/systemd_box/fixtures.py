"""pytest fixtures for the confined systemd box (registered in tests/conftest.py).

- `systemd_box` (session): one box for all systemd tests; torn down at session end even when
  tests fail.
- `unit_factory`: writes a user unit into the box's private XDG_CONFIG_HOME and starts it;
  every unit it made is stopped and its files removed at teardown.
- `llama_unit`: a real llama-server unit (the tiny model, loopback port), healthy.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.realserver import free_port, server_argv, wait_healthy
from tests.systemd_box.box import SystemdBox, start_box, why_no_box

_counter = itertools.count(1)
TEST_API_KEY = "sk-llmtop-test-9f3c"  # must never show up in status/snapshots


@pytest.fixture(scope="session")
def systemd_box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SystemdBox]:
    from tests.conftest import missing_component

    reason = why_no_box()
    if reason:
        missing_component(reason)
    box = start_box(tmp_path_factory.mktemp("systemd-box"))
    try:
        yield box
    finally:
        box.close()


@dataclass
class BoxUnit:
    name: str
    path: Path
    box: SystemdBox
    port: int | None = None
    argv: list[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def show(self, *props: str) -> dict[str, str]:
        return self.box.show(self.name, *props)

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])


def unit_text(argv: list[str], *, ident: str, restart: str = "on-failure", extra: str = "") -> str:
    from llmtop.control.systemd_unit import exec_start_line

    return (
        "[Unit]\nDescription=llmtop test unit\n\n[Service]\nType=simple\n"
        f"{exec_start_line(argv)}\n"
        f"Restart={restart}\nRestartSec=1\nSyslogIdentifier={ident}\n{extra}"
    )


@pytest.fixture
def unit_factory(systemd_box: SystemdBox) -> Iterator[Callable[..., BoxUnit]]:
    made: list[BoxUnit] = []

    def make(
        argv: list[str], *, prefix: str = "llmtop-test", start: bool = True, **kw: str
    ) -> BoxUnit:
        name = f"{prefix}-{next(_counter)}.service"
        path = systemd_box.unit_dir / name
        systemd_box.unit_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(unit_text(argv, ident=name.removesuffix(".service"), **kw))
        unit = BoxUnit(name, path, systemd_box, argv=argv)
        made.append(unit)
        systemd_box.systemctl("daemon-reload")
        if start:
            systemd_box.systemctl("start", name)
        return unit

    yield make
    for unit in made:
        if systemd_box.closed:
            break
        systemd_box.systemctl("stop", unit.name, check=False)
        systemd_box.systemctl("reset-failed", unit.name, check=False)
        with contextlib.suppress(FileNotFoundError):
            unit.path.unlink()
        shutil.rmtree(systemd_box.unit_dir / f"{unit.name}.d", ignore_errors=True)
    if not systemd_box.closed:
        systemd_box.systemctl("daemon-reload", check=False)


@pytest.fixture
def llama_unit(
    unit_factory: Callable[..., BoxUnit], llama_server_bin: Path, tiny_model: Path
) -> BoxUnit:
    """A real llama-server running as a user unit in the box, with an API key, healthy."""
    port = free_port()
    argv = server_argv(llama_server_bin, tiny_model, port, "-ngl", "0", "--api-key", TEST_API_KEY)
    unit = unit_factory(argv, prefix="llmtop-llama")
    unit.port = port
    try:
        wait_healthy(unit.url, timeout=60)
    except TimeoutError as e:
        state = unit.show("ActiveState", "SubState", "Result", "NRestarts")
        journal = unit.box.run(
            ["journalctl", "--no-pager", "-n", "30", f"SYSLOG_IDENTIFIER={unit.name[:-8]}"],
            check=False,
        ).stdout
        raise TimeoutError(f"{e}; unit {state}; journal:\n{journal}") from e
    return unit
