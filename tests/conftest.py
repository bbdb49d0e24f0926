"""Shared fixtures: real llama-server, tiny GGUF model, and the real-component policy.

LLMTOP_REQUIRE_REAL=1 (set by .ci/run) makes every skip a failure: `missing_component()` fails
at once, and the report hooks below turn any other skip (pytest.skip, skipif markers,
importorskip, xfail, a skipped module) into a failure too, unless its reason is listed in
ALLOWED_SKIPS with why it may stay a skip. A green CI run then means every test really ran.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.nvml_sim.harness import nvml_sim, nvml_sim_build  # noqa: F401
from tests.realserver import RunningServer, find_llama_server, start_llama_server
from tests.systemd_box.fixtures import llama_unit, systemd_box, unit_factory  # noqa: F401

# The one allow-list: skip reason (exactly as the test gives it) → why it may stay a skip in CI.
ALLOWED_SKIPS: dict[str, str] = {
    "a real NVIDIA driver is present: the demo uses it": (
        "tests/test_gpu.py: the demo's simulated-GPU fallback only runs where no real driver "
        "loads; on a GPU machine the real driver is what the demo uses, and the simulator is "
        "tested by every other nvml_sim test"
    ),
}


def require_real() -> bool:
    """LLMTOP_REQUIRE_REAL=1: read when asked, so a test can set it for an inner pytest run."""
    return os.environ.get("LLMTOP_REQUIRE_REAL") == "1"


def missing_component(reason: str) -> None:
    """Skip on a laptop; fail under CI (LLMTOP_REQUIRE_REAL=1)."""
    if require_real():
        pytest.fail(f"real component missing under LLMTOP_REQUIRE_REAL=1: {reason}")
    pytest.skip(reason)


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    if getattr(report, "wasxfail", None) is not None:
        return f"xfail: {report.wasxfail}"  # type: ignore[attr-defined]
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, lineno, "Skipped: why")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_disallowed_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not (report.skipped and require_real()):
        return
    reason = _skip_reason(report)
    if reason in ALLOWED_SKIPS:
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped under LLMTOP_REQUIRE_REAL=1: {reason!r}\n"
        "Every test must run in CI: provide the component, or add the reason to ALLOWED_SKIPS "
        "in tests/conftest.py with why it may stay a skip."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """Skips in setup (skipif markers, fixtures), call (pytest.skip, importorskip) or teardown."""
    outcome = yield
    _fail_disallowed_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, None]:
    """A whole module skipped at import (module-level importorskip / skip)."""
    outcome = yield
    _fail_disallowed_skip(outcome.get_result())


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
