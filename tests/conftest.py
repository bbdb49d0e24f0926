"""Shared fixtures: real llama-server, tiny GGUF model, and the real-component policy.

LLMTOP_REQUIRE_REAL=1 (set by .ci/run) turns every "real component missing" skip into a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.nvml_sim.harness import nvml_sim, nvml_sim_build  # noqa: F401
from tests.realserver import RunningServer, find_llama_server, start_llama_server
from tests.systemd_box.fixtures import llama_unit, systemd_box, unit_factory  # noqa: F401

REQUIRE_REAL = os.environ.get("LLMTOP_REQUIRE_REAL") == "1"


def missing_component(reason: str) -> None:
    """Skip on a laptop; fail under CI (LLMTOP_REQUIRE_REAL=1)."""
    if REQUIRE_REAL:
        pytest.fail(f"real component missing under LLMTOP_REQUIRE_REAL=1: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    path = find_llama_server()
    if path is None:
        missing_component(
            "no llama-server: run scripts/get-llama-server.sh or set LLMTOP_LLAMA_SERVER"
        )
    assert path is not None
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llmtop.demo.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny.gguf")


@pytest.fixture
def server_factory(
    llama_server_bin: Path, tiny_model: Path, tmp_path: Path
) -> Iterator[Callable[..., RunningServer]]:
    """Start real llama-servers; every one is stopped at teardown, even when the test fails."""
    started: list[RunningServer] = []

    def start(*extra: str, model: Path | None = None, **kw: object) -> RunningServer:
        srv = start_llama_server(
            llama_server_bin, model or tiny_model, list(extra), log_dir=tmp_path, **kw
        )
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def llama_server(server_factory: Callable[..., RunningServer]) -> RunningServer:
    """One real llama-server with the tiny model, /metrics on, ready."""
    return server_factory("--metrics")
