"""Tuning input validation, and apply-with-rollback end to end against a real llama-server (child
mode): a good change is applied, failing arguments are rolled back to the last known-good argv."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from llmtop.control.supervisor import ChildSupervisor
from llmtop.control.tuning import (
    ChangeLog,
    TuningValues,
    apply_with_rollback,
    describe_changes,
    spec_with_values,
    validate_tuning_input,
)
from llmtop.model.launch_spec import LaunchSpec
from llmtop.sources.logs import LogStore
from tests.realserver import free_port, server_argv


@pytest.mark.parametrize(
    ("ngl", "ctx", "error"),
    [
        ("ten", "512", "not an integer"),
        ("-3", "512", "negative"),
        ("6", "512", "above 5"),  # 4 blocks + output = 5
        ("4", "0", "positive"),
        ("4", "-1", "positive"),
        ("4", "lots", "not an integer"),
        ("4", "1.5", "not an integer"),
    ],
)
def test_invalid_input_is_an_error(ngl: str, ctx: str, error: str) -> None:
    values, err, warning = validate_tuning_input(ngl, ctx, block_count=4, n_ctx_train=512)
    assert values is None and warning is None
    assert err is not None and error in err


def test_valid_input_and_training_context_warning() -> None:
    assert validate_tuning_input("5", "512", 4, 512) == (TuningValues(5, 512), None, None)
    assert validate_tuning_input("auto", "256", 4, 512)[0] == TuningValues(-1, 256)
    assert validate_tuning_input("-1", "256", 4, 512)[0] == TuningValues(-1, 256)
    assert validate_tuning_input(" all ", "256", 4, 512)[0] == TuningValues(-2, 256)
    values, err, warning = validate_tuning_input("0", "4096", 4, 512)
    assert values == TuningValues(0, 4096) and err is None
    assert warning is not None and "training context 512" in warning and "Confirm" in warning


def test_spec_with_values_and_change_description() -> None:
    spec = LaunchSpec.from_argv(["llama-server", "-m", "m.gguf", "-ngl", "10", "-c", "4096"])
    new = spec_with_values(spec, TuningValues(20, 8192), cache_type_k="q8_0")
    assert new.gpu_layers == 20 and new.ctx_size == 8192 and new.cache_type_k == "q8_0"
    changes = describe_changes(spec, new)
    assert "--gpu-layers 10 → 20" in changes and "--ctx-size 4096 → 8192" in changes
    assert any(c.startswith("-ctk") for c in changes)


@pytest.fixture
async def child(llama_server_bin: Path, tiny_model: Path) -> AsyncIterator[ChildSupervisor]:
    port = free_port()
    spec = LaunchSpec.from_argv(server_argv(llama_server_bin, tiny_model, port, "-ngl", "0"))
    sup = ChildSupervisor(spec, LogStore())
    try:
        await sup.start()
        yield sup
    finally:
        await sup.stop()


async def _n_ctx(url: str) -> int:
    async with httpx.AsyncClient() as c:
        r = await c.get(url + "/props", timeout=5)
        return int(r.json()["default_generation_settings"]["n_ctx"])


@pytest.mark.real_server
async def test_apply_and_rollback_child_mode(child: ChildSupervisor) -> None:
    store = child.log_store
    original = child.spec
    url = original.url
    changes = ChangeLog(known_good=original)
    kw = {"health_url": url + "/health", "timeout_s": 60.0, "log_store": store}

    # 1. A good change: applied, and the server really runs with it.
    good = spec_with_values(original, TuningValues(3, 256))
    rec = await apply_with_rollback(child, good, change_log=changes, **kw)  # type: ignore[arg-type]
    assert rec.result == "applied", rec.reason
    assert "--ctx-size 512 → 256" in rec.changes
    assert child.spec == good and changes.known_good == good
    assert await _n_ctx(url) == 256
    first_pid = child.pid

    # 2. A cache type this model cannot use (head size 16 is not a multiple of q8_0's 32):
    #    llama-server fails to load → rolled back to the last known-good (the applied) argv.
    bad = good.with_option("cache_type_k", "q8_0")
    rec = await apply_with_rollback(child, bad, change_log=changes, **kw)  # type: ignore[arg-type]
    assert rec.result == "rolled_back"
    assert rec.reason and "load failed" in rec.reason and "does not divide" in rec.reason
    assert child.spec == good and child.status().state == "ready"
    assert child.pid is not None and child.pid != first_pid
    assert await _n_ctx(url) == 256

    # 3. An argument llama-server rejects outright.
    bogus = good.with_option("cache_type_k", "bogus")
    rec = await apply_with_rollback(child, bogus, change_log=changes, **kw)  # type: ignore[arg-type]
    assert rec.result == "rolled_back"
    assert rec.reason and "Unsupported cache type: bogus" in rec.reason
    assert child.spec == good
    assert await _n_ctx(url) == 256

    # The change log shows every attempt, old → new, with the result; no secrets.
    summaries = [r.summary() for r in changes.records()]
    print("\n" + "\n".join(summaries))
    assert len(summaries) == 3
    assert "applied" in summaries[0] and "rolled_back" in summaries[1]
    assert "-ctk f16 → bogus" in summaries[2]
    notes = [ln.text for ln in store.lines() if ln.stream == "llmtop"]
    assert any("rolled back" in t for t in notes)


@pytest.mark.real_server
async def test_api_key_never_in_records(llama_server_bin: Path, tiny_model: Path) -> None:
    port = free_port()
    secret = "sk-tuning-secret-123"
    spec = LaunchSpec.from_argv(
        server_argv(llama_server_bin, tiny_model, port, "--api-key", secret)
    )
    sup = ChildSupervisor(spec, LogStore())
    try:
        await sup.start()
        rec = await apply_with_rollback(
            sup,  # type: ignore[arg-type]
            spec.with_option("ctx_size", 256),
            health_url=spec.url + "/health",
            api_key=secret,
            timeout_s=60.0,
            log_store=sup.log_store,
        )
        assert rec.result == "applied"
        assert secret not in repr(rec.to_json_dict()) and secret not in rec.summary()
        assert all(secret not in ln.text for ln in sup.log_store.lines())
    finally:
        await sup.stop()


# -- an impossible context: the KV cache cannot be allocated (a real out-of-memory on the CPU) --

WIDE = {"n_layer": 1, "n_embd": 2048, "n_head": 16, "n_head_kv": 16, "n_ff": 64}
WIDE_KV_BYTES_PER_CELL = 1 * 2 * 2048 * 2  # 1 layer × (K + V) × 2048 × f16


def wide_model(tmp_path: Path) -> Path:
    from llmtop.demo.tiny_model import TinyModelShape, write_tiny_model

    return write_tiny_model(tmp_path / "wide.gguf", TinyModelShape(n_ctx_train=4096, **WIDE))


# The child runs under `prlimit --as` (argv, no shell; prlimit execs llama-server, same pid): an
# address-space limit makes the KV cache's allocation fail at once whatever the machine's RAM or
# vm.overcommit_memory mode, and nothing is ever touched. The tiny server fits well inside it.
CHILD_ADDRESS_SPACE = 4 << 30
IMPOSSIBLE_CTX = (2 * CHILD_ADDRESS_SPACE // WIDE_KV_BYTES_PER_CELL // 256 + 1) * 256  # KV: 8 GiB


def limited_argv(argv: list[str]) -> list[str]:
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        from tests.conftest import missing_component

        missing_component("prlimit (util-linux) not found: it limits the child's address space")
    assert prlimit is not None
    return [prlimit, f"--as={CHILD_ADDRESS_SPACE}", "--", *argv]


@pytest.mark.real_server
async def test_impossible_ctx_is_rolled_back(llama_server_bin: Path, tmp_path: Path) -> None:
    model = wide_model(tmp_path)
    argv = server_argv(llama_server_bin, model, free_port(), "-fit", "off")
    spec = LaunchSpec.from_argv(limited_argv(argv))
    assert spec.ctx_size == 512 and spec.port == int(argv[argv.index("--port") + 1])
    sup = ChildSupervisor(spec, LogStore())
    try:
        await sup.start()
        # the limit leaves the tiny context room to run
        deadline = time.monotonic() + 60
        while sup.status().state != "ready":
            assert sup.status().state != "failed", sup.log_store.tail_errors()
            assert time.monotonic() < deadline, sup.status()
            await asyncio.sleep(0.05)
        bad = spec.with_option("ctx_size", IMPOSSIBLE_CTX)
        assert bad.argv[:3] == spec.argv[:3] and bad.ctx_size == IMPOSSIBLE_CTX
        rec = await apply_with_rollback(
            sup,  # type: ignore[arg-type]
            bad,
            health_url=spec.url + "/health",
            timeout_s=60.0,
            log_store=sup.log_store,
        )
        print("\n" + rec.summary())
        # what the operator is told: rolled back, because of an out-of-memory in the KV cache
        assert rec.result == "rolled_back"
        assert rec.reason and rec.reason.startswith("oom: ")
        assert "failed to allocate buffer for kv cache" in rec.reason
        assert "insufficient memory (attempted to allocate 8194.00 MB)" in rec.reason
        assert f"--ctx-size 512 → {IMPOSSIBLE_CTX}  rolled_back — oom: " in rec.summary()
        ooms = [e for e in sup.log_store.events() if e.kind == "oom"]
        assert ooms and ooms[-1].severity == "critical", sup.log_store.events()
        assert any("failed to allocate" in ln.text for ln in sup.log_store.lines())
        # and the server is back on the known-good arguments
        assert sup.spec == spec and sup.status().state == "ready"
        assert await _n_ctx(spec.url) == 512
    finally:
        await sup.stop()
