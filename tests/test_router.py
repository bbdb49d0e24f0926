"""Router mode against a real router-mode llama-server over two tiny models: what `snapshot
--json` lists, load/unload through the operation, per-model pid, context, rate and VRAM
(simulated NVML told the child's pid), and that watching never loads a model.

Every router is stopped at teardown by its PID, and each child it ever had is checked gone
(killed by PID and reported when one outlived the router)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtop.collector import Collector
from llmtop.control.router import RouterControl
from llmtop.operations.events import Done, Event, Progress, Rejected
from llmtop.operations.models import ModelActions
from llmtop.snapshot import ModelStatus, Snapshot, to_json_dict
from llmtop.sources.llama_http import LlamaClient
from llmtop.sources.logs import classify_level
from llmtop.sources.router import is_router_listing, model_log_prefix, parse_models
from tests.realserver import free_port, wait_healthy

ROOT = Path(__file__).resolve().parent.parent
GiB = 1 << 30
MODELS = ("tiny-a", "tiny-b")


@dataclass
class Router:
    """One real router-mode llama-server (own session; stopped by PID)."""

    url: str
    port: int
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    seen_children: set[int] = field(default_factory=set)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        """The router's child processes now (each loaded model's llama-server)."""
        try:
            kids = [p.pid for p in psutil.Process(self.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        self.seen_children.update(kids)
        return kids

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def router_argv(binary: Path, models_dir: Path, port: int) -> list[str]:
    """A router over *models_dir*: loopback, tiny context, one slot and thread per child."""
    return [str(binary), "--models-dir", str(models_dir), "--host", "127.0.0.1",
            "--port", str(port), "-c", "512", "-np", "1", "-t", "1", "--metrics",
            "--models-max", "2"]  # fmt: skip


def stop_router(router: Router) -> list[int]:
    """Stop the router by its PID, then make sure every child it had is gone; returns the pids
    of children that outlived it (killed here by PID)."""
    router.children()
    if router.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(router.pid, signal.SIGTERM)
        try:
            router.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(router.pid, signal.SIGKILL)
            router.proc.wait(5)
    orphans: list[int] = []
    for pid in sorted(router.seen_children):
        try:
            proc = psutil.Process(pid)
            proc.wait(5)
        except psutil.NoSuchProcess:
            continue
        except psutil.TimeoutExpired:
            orphans.append(pid)
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
                proc.wait(5)
    return orphans


@pytest.fixture(scope="session")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --models-dir with two tiny GGUFs (model ids tiny-a, tiny-b)."""
    from llmtop.demo.tiny_model import write_tiny_model

    d = tmp_path_factory.mktemp("models")
    write_tiny_model(d / "tiny-a.gguf")
    write_tiny_model(d / "tiny-b.gguf", seed=1)
    return d


def start_router(binary: Path, models_dir: Path, log_dir: Path) -> Router:
    port = free_port()
    argv = router_argv(binary, models_dir, port)
    log_path = log_dir / f"router-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    router = Router(f"http://127.0.0.1:{port}", port, argv, proc, log_path)
    try:
        wait_healthy(router.url, proc=proc)
    except Exception:
        stop_router(router)
        raise
    return router


@pytest.fixture
def router(llama_server_bin: Path, two_models: Path, tmp_path: Path) -> Iterator[Router]:
    r = start_router(llama_server_bin, two_models, tmp_path)
    try:
        yield r
    finally:
        orphans = stop_router(r)
    assert not orphans, f"children outlived the router: {orphans}"


def by_id(snap: Snapshot) -> dict[str, ModelStatus]:
    return {m.id: m for m in snap.server.models}


# -- the parser (outside input) -----------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
status_objects = st.fixed_dictionaries(
    {"value": st.sampled_from(["loaded", "loading", "unloaded", "sleeping"]) | json_values},
    optional={
        "args": st.lists(st.text(max_size=12) | json_values, max_size=6) | json_values,
        "failed": st.booleans() | json_values,
        "exit_code": st.integers(-300, 300) | json_values,
    },
)
entries = st.fixed_dictionaries(
    {"id": st.text(min_size=1, max_size=10) | json_values, "status": status_objects | json_values},
    optional={"aliases": json_values, "meta": json_values},
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries({"data": st.lists(entries, max_size=5)})))
def test_parse_models_never_raises_and_keeps_only_what_it_understands(body: object) -> None:
    models = parse_models(body)
    ids = [m.id for m in models]
    assert len(ids) == len(set(ids))
    for m in models:
        assert isinstance(m.id, str) and m.id
        assert isinstance(m.status, str) and m.status
        assert m.port is None or 0 < m.port < 65536
        assert all(isinstance(a, str) for a in m.argv)
    if models:
        assert is_router_listing(body)


@given(st.integers(1, 65535), st.integers(0, 255), st.booleans())
def test_a_failed_model_reads_failed_with_its_exit_code(port: int, code: int, secret: bool) -> None:
    args = ["llama-server", "--port", str(port)] + (
        ["--api-key", "sk-hidden-123"] if secret else []
    )
    body = {"data": [{"id": "m", "status": {"value": "unloaded", "args": args, "failed": True,
                                            "exit_code": code}}]}  # fmt: skip
    (m,) = parse_models(body)
    assert (m.status, m.exit_code, m.port) == ("failed", code, port)
    assert "sk-hidden-123" not in " ".join(m.argv)
    assert model_log_prefix(port) == f"[{port:5d}] "


# -- a real router ----------------------------------------------------------------------------
def _llmtop(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLAMA_API_KEY", "LLMTOP_API_KEY")}
    return subprocess.run([sys.executable, "-m", "llmtop", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=env)  # fmt: skip


@pytest.mark.real_server
def test_snapshot_json_lists_both_models_with_their_status(router: Router) -> None:
    p = _llmtop("snapshot", "--url", router.url, "--json", "--interval", "0.2")
    assert p.returncode == 0, p.stderr
    server = json.loads(p.stdout)["server"]
    assert server["router"] is True and server["health"] == "ok"
    models = {m["id"]: m for m in server["models"]}
    assert set(models) == set(MODELS)
    for m in models.values():
        assert {"id", "status", "pid", "gpu_memory_bytes", "n_ctx", "gen_tokens_per_s"} <= set(m)
        assert m["status"] == "unloaded" and m["pid"] is None
    assert router.children() == []  # the snapshot loaded nothing


@pytest.mark.real_server
async def test_watching_never_loads_a_model(router: Router) -> None:
    collector = Collector(LlamaClient(router.url))  # router mode found out, not told
    try:
        for _ in range(6):
            snap = await collector.collect()
            assert snap.server.router
            assert {m.status for m in snap.server.models} == {"unloaded"}
        assert collector.router.requests > 0
        assert not any("?model=" in p for p in collector.router.asked)
    finally:
        await collector.aclose()
    assert router.children() == []
    assert "loading model" not in router.log().lower()


@pytest.mark.real_server
@pytest.mark.nvml_sim
async def test_load_and_unload_through_the_operation(router: Router, nvml_sim) -> None:
    from tests.nvml_sim.scenarios import datacenter_gpu

    actions = ModelActions(RouterControl(router.url), wait_s=60, poll_s=0.1)
    events: list[Event] = []
    done = await actions.load("tiny-a", events.append)
    assert isinstance(done, Done), done
    assert isinstance(events[0], Progress) and "loading tiny-a" in events[0].message
    again = await actions.load("tiny-a")
    assert isinstance(again, Rejected) and "already loaded" in again.reason

    (child,) = router.children()
    # the GPU says what the child uses (and something else uses the rest)
    sim = nvml_sim({"gpus": [datacenter_gpu(processes=[
        {"pid": child, "used_memory_bytes": 3 * GiB}, {"pid": 1, "used_memory_bytes": GiB}])]})  # fmt: skip
    sim.at(0)
    collector = Collector(LlamaClient(router.url), gpu_monitor=sim.monitor, router=True)
    try:
        await collector.collect()
        httpx.post(router.url + "/completion", timeout=60,
                   json={"model": "tiny-a", "prompt": "hi", "n_predict": 32})  # fmt: skip
        await asyncio.sleep(0.1)  # rates need an interval between scrapes (the model is quick)
        snap = await collector.collect()
        a, b = by_id(snap)["tiny-a"], by_id(snap)["tiny-b"]
        assert a.status == "loaded" and a.pid == child
        assert a.n_ctx == 512 and a.slots_total == 1
        assert a.gen_tokens_per_s is not None and a.gen_tokens_per_s > 0
        assert a.gpu_memory_bytes == 3 * GiB
        assert b.status == "unloaded" and b.pid is None and b.gpu_memory_bytes is None
        assert snap.server.gen_tokens_per_s == a.gen_tokens_per_s
        json_a = next(m for m in to_json_dict(snap)["server"]["models"] if m["id"] == "tiny-a")
        assert json_a["gpu_memory_bytes"] == 3 * GiB and json_a["pid"] == child

        gone = await actions.unload("tiny-a", events.append)
        assert isinstance(gone, Done), gone
        snap = await collector.collect()
        a = by_id(snap)["tiny-a"]
        assert a.status == "unloaded" and a.pid is None
        assert not psutil.pid_exists(child) or psutil.Process(child).status() == "zombie"
    finally:
        await collector.aclose()


@pytest.mark.real_server
async def test_child_log_lines_carry_the_port_prefix(router: Router) -> None:
    """The fact the Logs tab's per-model filter rests on (the router's own output)."""
    actions = ModelActions(RouterControl(router.url), poll_s=0.1)
    assert isinstance(await actions.load("tiny-b"), Done)
    collector = Collector(LlamaClient(router.url))
    try:
        b = by_id(await collector.collect())["tiny-b"]
    finally:
        await collector.aclose()
    assert b.port is not None
    prefix = model_log_prefix(b.port)
    deadline = time.monotonic() + 10
    while prefix not in router.log() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert prefix in router.log()
    # a child's llama.cpp level letter still counts behind the router's prefix
    warned = [ln for ln in router.log().splitlines() if ln.startswith(prefix) and " W " in ln]
    assert warned and all(classify_level(ln) == "warning" for ln in warned)
