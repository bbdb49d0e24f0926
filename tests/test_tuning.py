"""Tuning input validation, and apply-with-rollback end to end against a real llama-server (child
mode): a good change is applied, failing arguments are rolled back to the last known-good argv."""

from __future__ import annotations

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


def impossible_ctx() -> int:
    """A ctx whose KV cache is twice RAM + swap: malloc refuses it at once under the kernel's
    heuristic overcommit (mode 0). Other modes might hand the memory out and let the OOM killer
    loose, so the test does not run there."""
    mode = Path("/proc/sys/vm/overcommit_memory").read_text().strip()
    if mode != "0":
        pytest.skip(f"vm.overcommit_memory = {mode}: an impossible allocation is not refused")
    info = dict(
        line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
    )
    total = sum(int(info[k].split()[0]) * 1024 for k in ("MemTotal", "SwapTotal") if k in info)
    return (2 * total // WIDE_KV_BYTES_PER_CELL // 256 + 1) * 256


@pytest.mark.real_server
async def test_impossible_ctx_is_rolled_back(llama_server_bin: Path, tmp_path: Path) -> None:
    ctx = impossible_ctx()
    model = wide_model(tmp_path)
    spec = LaunchSpec.from_argv(server_argv(llama_server_bin, model, free_port(), "-fit", "off"))
    sup = ChildSupervisor(spec, LogStore())
    try:
        await sup.start()
        rec = await apply_with_rollback(
            sup,  # type: ignore[arg-type]
            spec.with_option("ctx_size", ctx),
            health_url=spec.url + "/health",
            timeout_s=60.0,
            log_store=sup.log_store,
        )
        assert rec.result == "rolled_back"
        print("\n" + rec.summary())
        assert rec.reason and rec.reason.startswith("oom") and "kv cache" in rec.reason
        assert sup.spec == spec and sup.status().state == "ready"
        assert await _n_ctx(spec.url) == 512
    finally:
        await sup.stop()
