"""`llmtop check`: the playbook's step 1 and static pitfalls, as an operator runs it.

Real pieces: the simulated libnvidia-ml (GPUs, driver 550.54.15, persistence off on the
consumer card), the real CPU-only llama-server binary (--version / --list-devices), the tiny GGUF
model (training context 512), the confined systemd box for a unit's environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from llmtop.diagnosis.checks import (
    Check,
    estimated_params,
    exit_code,
    launch_checks,
    quantisation_check,
)
from llmtop.model.gguf import GgufInfo
from llmtop.model.launch_spec import LaunchSpec
from llmtop.sources.gpu import LIBRARY_ENV
from llmtop.sources.gpu_sim import SCENARIO_ENV
from tests.nvml_sim.scenarios import consumer_gpu, datacenter_gpu, scenario
from tests.systemd_box.box import SystemdBox
from tests.systemd_box.fixtures import BoxUnit

REPO = Path(__file__).resolve().parent.parent


def _check(
    args: list[str], env: dict[str, str], *, prefix: Iterable[str] = ()
) -> tuple[int, dict[str, Check]]:
    r = subprocess.run(
        [*prefix, "env", f"PYTHONPATH={REPO}", *(f"{k}={v}" for k, v in env.items()),
         sys.executable, "-m", "llmtop", "check", "--json", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
    )  # fmt: skip
    assert r.returncode in (0, 1, 2), r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert set(data) == {"checks"}
    checks = {}
    for c in data["checks"]:
        assert set(c) == {"name", "status", "message", "fix"}
        assert c["status"] in ("ok", "warning", "error")
        checks[c["name"]] = Check(**c)
    return r.returncode, checks


@pytest.fixture
def sim_env(nvml_sim_build: Callable[[Iterable[str]], Path], tmp_path: Path) -> dict[str, str]:
    scen = tmp_path / "scenario.json"
    scen.write_text(json.dumps(scenario(datacenter_gpu(), consumer_gpu())))
    return {LIBRARY_ENV: str(nvml_sim_build(())), SCENARIO_ENV: str(scen)}


def test_gpu_box_with_a_cpu_only_build_is_an_error(
    sim_env: dict[str, str], llama_server_bin: Path, tiny_model: Path
) -> None:
    code, checks = _check(
        ["--", str(llama_server_bin), "-m", str(tiny_model), "-ngl", "99", "--ctx-size", "4096",
         "--host", "0.0.0.0", "--threads", "64"],
        sim_env,
    )  # fmt: skip
    assert code == 2
    drv = checks["nvidia_driver"]
    assert drv.status == "ok" and "550.54.15" in drv.message and "2 GPU(s)" in drv.message
    assert checks["gpu0"].status == "ok" and "H100" in checks["gpu0"].message
    assert "SM clock 1980/1980 MHz" in checks["gpu0"].message
    assert checks["gpu1"].status == "warning" and "persistence mode off" in checks["gpu1"].message
    assert "nvidia-smi -pm 1" in checks["gpu1"].fix
    binary = checks["llama_server_binary"]
    assert binary.status == "error" and "without CUDA" in binary.message
    assert "GGML_CUDA=ON" in binary.fix
    assert (
        checks["ctx_size"].status == "warning"
        and "training context 512" in checks["ctx_size"].message
    )
    assert checks["exposed_without_key"].status == "warning"
    cpu = checks["cpu_topology"]
    phys = os.cpu_count()  # this machine: no SMT, so physical == logical
    assert cpu.status == "warning" and "--threads 64" in cpu.message
    assert f"--threads {psutil_physical() or phys}" in cpu.fix


def psutil_physical() -> int | None:
    import psutil

    return psutil.cpu_count(logical=False)


def test_cpu_box_with_a_sane_launch_only_warns_about_the_missing_driver(
    llama_server_bin: Path, tiny_model: Path, tmp_path: Path
) -> None:
    env = {LIBRARY_ENV: str(tmp_path / "missing-libnvidia-ml.so.1")}
    code, checks = _check(
        ["--", str(llama_server_bin), "-m", str(tiny_model), "-ngl", "0", "-c", "512"], env
    )
    assert code == 1
    assert checks["nvidia_driver"].status == "warning"
    assert "runs on the CPU" in checks["nvidia_driver"].message
    others = {n: c.status for n, c in checks.items() if n != "nvidia_driver"}
    assert set(others.values()) == {"ok"}, others
    assert "CPU-only build" in checks["llama_server_binary"].message
    assert checks["quantisation"].message.startswith("F32")


def test_all_ok_exits_0_and_a_missing_binary_exits_2(
    sim_env: dict[str, str], llama_server_bin: Path, tiny_model: Path, tmp_path: Path
) -> None:
    # A CUDA build as llama.cpp ships one: ggml's CUDA backend beside the binary.
    cuda_dir = tmp_path / "cuda-build"
    cuda_dir.mkdir()
    for f in llama_server_bin.parent.iterdir():
        (cuda_dir / f.name).symlink_to(f)
    (cuda_dir / "libggml-cuda.so").write_bytes(b"")
    scen = Path(sim_env[SCENARIO_ENV])
    scen.write_text(json.dumps(scenario(datacenter_gpu())))
    argv = [str(cuda_dir / "llama-server"), "-m", str(tiny_model), "-ngl", "99", "-c", "512"]
    code, checks = _check(["--", *argv], sim_env)
    assert code == 0, {n: c for n, c in checks.items() if c.status != "ok"}
    assert "CUDA build" in checks["llama_server_binary"].message

    code, checks = _check(["--binary", str(tmp_path / "nope"), "--", *argv[1:]], sim_env)
    assert code == 2 and checks["llama_server_binary"].status == "error"
    assert "no llama-server found" in checks["llama_server_binary"].message


def test_text_output_is_a_table_with_fixes(
    llama_server_bin: Path, tiny_model: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), LIBRARY_ENV: str(tmp_path / "missing.so")}
    r = subprocess.run(
        [sys.executable, "-m", "llmtop", "check", "--", str(llama_server_bin), "-m",
         str(tiny_model), "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    row = next(ln for ln in lines if "exposed_without_key" in ln)
    assert row.startswith("!") and "warning" in row and "--host 0.0.0.0 without an API key" in row
    assert any(ln.strip().startswith("fix:") and "--api-key-file" in ln for ln in lines)
    assert lines[-1].endswith("0 error(s), 2 warning(s)")


@pytest.mark.systemd
def test_unit_environment_gaps(
    systemd_box: SystemdBox,
    unit_factory: Callable[..., BoxUnit],
    sim_env: dict[str, str],
    llama_server_bin: Path,
    tiny_model: Path,
) -> None:
    """Pitfall 5: the unit names a GPU that does not exist and a library path that is not there."""
    from tests.realserver import free_port, server_argv

    argv = server_argv(llama_server_bin, tiny_model, free_port(), "-ngl", "99")
    unit = unit_factory(
        argv, start=False,
        extra='Environment="CUDA_VISIBLE_DEVICES=5" "LD_LIBRARY_PATH=/nonexistent/cuda/lib64"\n',
    )  # fmt: skip
    code, checks = _check(
        ["--unit", unit.name, "--user"], sim_env, prefix=systemd_box.command_prefix
    )
    assert code == 2
    cvd = checks["cuda_visible_devices"]
    assert cvd.status == "error" and "GPU 5 does not exist (2 GPU(s))" in cvd.message
    ld = checks["ld_library_path"]
    assert ld.status == "warning" and "/nonexistent/cuda/lib64" in ld.message


@pytest.mark.systemd
def test_unit_without_cuda_environment_warns(
    systemd_box: SystemdBox,
    unit_factory: Callable[..., BoxUnit],
    sim_env: dict[str, str],
    llama_server_bin: Path,
    tiny_model: Path,
) -> None:
    from tests.realserver import free_port, server_argv

    argv = server_argv(llama_server_bin, tiny_model, free_port(), "-ngl", "99")
    unit = unit_factory(argv, start=False)
    _, checks = _check(["--unit", unit.name, "--user"], sim_env, prefix=systemd_box.command_prefix)
    for name in ("cuda_visible_devices", "ld_library_path"):
        assert checks[name].status == "warning" and "not set in the unit's Environment=" in (
            checks[name].message
        )


def _gguf(file_type: int, layers: int, d: int, ff: int, vocab: int) -> GgufInfo:
    return GgufInfo(
        path="m.gguf", architecture="llama", name=None, block_count=layers, context_length=4096,
        embedding_length=d, feed_forward_length=ff, head_count=32, head_count_kv=(32,) * layers,
        key_length=d // 32, value_length=d // 32, sliding_window=None, swa_layers=(False,) * layers,
        file_type=file_type, vocab_size=vocab, layer_bytes=(1,) * layers, token_embd_bytes=1,
        output_bytes=1, output_norm_bytes=1, other_bytes=0, file_bytes=1,
    )  # fmt: skip


def test_low_bit_quantisation_of_a_large_model_warns() -> None:
    llama7b = dict(layers=32, d=4096, ff=11008, vocab=32000)
    assert 6.5e9 < estimated_params(_gguf(15, **llama7b)) < 7.0e9
    q2 = quantisation_check(_gguf(10, **llama7b))  # Q2_K
    assert q2 is not None and q2.status == "warning" and "Q2_K" in q2.message
    assert "Q4_K_M" in q2.fix
    q3_small = quantisation_check(_gguf(12, layers=16, d=2048, ff=8192, vocab=32000))  # ~1B
    assert q3_small is not None and q3_small.status == "ok"
    q4 = quantisation_check(_gguf(15, **llama7b))
    assert q4 is not None and q4.status == "ok" and "Q4_K_M" in q4.message


def test_launch_checks_and_exit_codes() -> None:
    spec = LaunchSpec.from_argv(["llama-server", "--host", "0.0.0.0", "--api-key", "k" * 8])
    assert [c.status for c in launch_checks(spec, None)] == ["ok"]  # keyed: fine
    assert exit_code([Check("a", "ok", "")]) == 0
    assert exit_code([Check("a", "ok", ""), Check("b", "warning", "")]) == 1
    assert exit_code([Check("b", "warning", ""), Check("c", "error", "")]) == 2
