"""`llmtop plan` as an operator runs it: a real subprocess, text and JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmtop.demo.tiny_model import TinyModelShape, write_tiny_model

JSON_KEYS = {
    "weights_bytes",
    "kv_cache_bytes",
    "compute_bytes",
    "total_bytes",
    "vram_bytes",
    "headroom_percent",
    "fits",
    "max_gpu_layers",
    "max_ctx",
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(
        tmp_path_factory.mktemp("m") / "m.gguf", TinyModelShape(n_head_kv=2, n_ctx_train=4096)
    )


def llmtop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmtop", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_plan_json_with_vram(model: Path) -> None:
    r = llmtop("plan", str(model), "--ctx", "1024", "--gpu-layers", "3", "--vram", "32M", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d.keys() >= JSON_KEYS
    # 2 blocks (147968 B each) + output layer (66304 + 256) on the GPU
    assert d["weights_bytes"] == 2 * 147968 + 66304 + 256
    # 1024 cells × 2 layers on GPU × (64 + 64) B
    assert d["kv_cache_bytes"] == 2 * 1024 * 128
    assert d["vram_bytes"] == 32 * 1024 * 1024
    assert d["fits"] is True and d["headroom_percent"] > 10
    assert d["offloaded"] == "3/5"
    assert d["max_gpu_layers"] == 5 and d["max_ctx"] % 256 == 0


def test_plan_text_says_when_it_does_not_fit(model: Path) -> None:
    r = llmtop("plan", str(model), "--ctx", "4096", "--vram", "2M", "-ctk", "q8_0")
    assert r.returncode == 1  # does not fit
    assert "DOES NOT FIT" in r.stdout
    assert "KV cache" in r.stdout and "largest" in r.stdout
    assert "--fit" in r.stdout  # the explanation of llama-server's --fit


def test_plan_without_gpu_says_so(model: Path) -> None:
    r = llmtop("plan", str(model), "--json")
    assert r.returncode == 0
    d = json.loads(r.stdout)
    assert d["vram_bytes"] is None and d["fits"] is None and "--vram" in d["note"]
    r = llmtop("plan", str(model))
    assert "no GPU size" in r.stdout


def test_plan_gpu_index_without_nvidia(model: Path, tmp_path: Path) -> None:
    env = {"LLMTOP_NVML_LIBRARY": str(tmp_path / "missing-libnvidia-ml.so")}
    r = llmtop("plan", str(model), "--gpu", "0", "--json", env=env)
    assert r.returncode == 0
    d = json.loads(r.stdout)
    assert d["vram_bytes"] is None
    assert "no GPU 0" in d["note"] and "--vram" in d["note"]


def test_plan_bad_model(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_text("nope")
    r = llmtop("plan", str(bad))
    assert r.returncode == 2 and "GGUF" in r.stderr
