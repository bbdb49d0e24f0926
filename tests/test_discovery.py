"""Discovery of local llama-server processes: real servers, their argv and /proc environ."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from llmtop.sources.discovery import DiscoveredServer, discover_servers
from tests.realserver import RunningServer

pytestmark = pytest.mark.real_server


def find(pid: int) -> DiscoveredServer | None:
    return next((s for s in discover_servers() if s.pid == pid), None)


def test_finds_a_running_server_with_its_settings(
    server_factory: Callable[..., RunningServer], tiny_model: Path
) -> None:
    srv = server_factory(
        "--n-gpu-layers",
        "0",
        api_key="sk-discovery-secret",
        # env forms: metrics on through the environment; -np from the CLI beats the env's 3
        env={"LLAMA_ARG_ENDPOINT_METRICS": "1", "LLAMA_ARG_N_PARALLEL": "3"},
    )
    found = find(srv.pid)
    assert found is not None, [s.label for s in discover_servers()]
    assert found.url == srv.url
    assert found.model == str(tiny_model)
    assert found.ctx_size == 512
    assert found.gpu_layers == 0
    assert found.started_at is not None and found.started_at <= time.time()
    assert srv.port in found.listen_ports
    # /proc/PID/environ was read: the env form counts, and the CLI beats it
    assert found.spec.metrics_enabled is True
    assert found.spec.parallel == 1
    # the key is there for connecting but never in what is displayed
    assert found.spec.api_key == "sk-discovery-secret"
    shown = " ".join(found.cmdline_redacted) + repr(found) + found.label
    assert "sk-discovery-secret" not in shown
    assert "***" in found.cmdline_redacted
    assert str(srv.port) in found.label


def test_several_servers_oldest_first_and_stopped_ones_vanish(
    server_factory: Callable[..., RunningServer],
) -> None:
    a = server_factory()
    b = server_factory()
    pids = [s.pid for s in discover_servers() if s.pid in (a.pid, b.pid)]
    assert pids == [a.pid, b.pid]
    a.stop()
    assert find(a.pid) is None
    assert find(b.pid) is not None


def test_zombies_and_lookalikes_are_skipped(llama_server_bin: Path, tiny_model: Path) -> None:
    # a process that merely mentions llama-server in its arguments is not one
    lookalike = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()", "llama-server"],
        stdin=subprocess.PIPE,
    )
    # a llama-server that died but was not reaped yet (zombie)
    dead = subprocess.Popen(
        [str(llama_server_bin), "-m", str(tiny_model), "--port", "1", "--host", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        dead.kill()
        deadline = time.monotonic() + 20
        while psutil.Process(dead.pid).status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "no zombie"
            time.sleep(0.01)
        pids = {s.pid for s in discover_servers()}
        assert lookalike.pid not in pids
        assert dead.pid not in pids
    finally:
        lookalike.kill()
        lookalike.wait(10)
        dead.wait(10)
