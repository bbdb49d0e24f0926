"""`llmtop unit print`, unit checks and the systemd text formats (no systemd needed).

The quoting of drop-ins is verified against the real systemd in test_systemd_unit.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmtop.control.systemd_unit import atomic_write, polkit_rule, supervisor_state
from llmtop.model.launch_spec import LaunchSpec
from llmtop.sources.unit_status import (
    exec_start_from_unit_text,
    parse_environment,
    parse_exec_start,
    parse_timestamp,
    status_from_properties,
    unit_checks,
)

REPO = Path(__file__).resolve().parent.parent


def _llmtop(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmtop", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_unit_print_playbook_form() -> None:
    r = _llmtop(
        "unit", "print", "--name", "llm-inference", "--",
        "/opt/ai/llama.cpp/build/bin/llama-server", "--model", "/opt/m.gguf", "--ctx-size",
        "2048", "--gpu-layers", "35", "--port", "9090", "--api-key", "sk-very-secret",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    text = r.stdout
    assert text.startswith("# /etc/systemd/system/llm-inference.service")
    assert "ExecStart=/opt/ai/llama.cpp/build/bin/llama-server \\\n" in text
    assert "    --gpu-layers 35 \\\n" in text
    assert "--host 127.0.0.1" in text  # loopback unless told otherwise
    for line in (
        "Restart=on-failure",
        "RestartSec=15",
        "SyslogIdentifier=llm-inference",
        'Environment="CUDA_VISIBLE_DEVICES=',
        'Environment="LD_LIBRARY_PATH=',
        "StandardOutput=journal",
        "WantedBy=multi-user.target",
    ):
        assert line in text
    # the key is never printed: it goes to an EnvironmentFile the operator writes
    assert "sk-very-secret" not in text and "--api-key" not in text
    assert "EnvironmentFile=/etc/llama/llm-inference.env" in text
    # the printed ExecStart parses back to the same arguments
    argv = exec_start_from_unit_text(text)
    assert argv is not None and argv[:3] == [
        "/opt/ai/llama.cpp/build/bin/llama-server",
        "--model",
        "/opt/m.gguf",
    ]


def test_unit_print_keeps_an_explicit_host_and_cpu_only_env() -> None:
    r = _llmtop("unit", "print", "--", "/usr/bin/llama-server", "-m", "/m.gguf", "--host",
                "0.0.0.0", "-ngl", "0")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "--host 0.0.0.0" in r.stdout and "127.0.0.1" not in r.stdout
    assert "CUDA_VISIBLE_DEVICES" not in r.stdout  # a CPU-only server needs no CUDA env


def test_unit_print_without_server_args_explains() -> None:
    r = _llmtop("unit", "print")
    assert r.returncode == 2
    assert "llmtop unit print -- llama-server" in r.stderr


def test_parse_show_values() -> None:
    value = (
        "{ path=/usr/bin/llama-server ; argv[]=/usr/bin/llama-server -m /m.gguf --port 9090 ; "
        "ignore_errors=no ; start_time=[n/a] ; stop_time=[n/a] ; pid=0 ; code=(null) ; "
        "status=0/0 }"
    )
    assert parse_exec_start(value) == [["/usr/bin/llama-server", "-m", "/m.gguf", "--port", "9090"]]
    assert parse_environment('"A=1 2" B=3 CUDA_VISIBLE_DEVICES=0') == {
        "A": "1 2",
        "B": "3",
        "CUDA_VISIBLE_DEVICES": "0",
    }
    assert parse_timestamp("Wed 2026-11-25 17:22:40.500000 UTC") == pytest.approx(1795627360.5)
    assert parse_timestamp("@1795627360") == 1795627360.0
    assert parse_timestamp("n/a") is None and parse_timestamp("") is None


def test_exec_start_from_unit_text_with_drop_in_reset() -> None:
    text = (
        "# /etc/systemd/system/x.service\n[Service]\n"
        'ExecStart=/bin/llama-server \\\n    -m /a.gguf \\\n    --alias "two words"\n'
        "\n# /etc/systemd/system/x.service.d/50-llmtop.conf\n[Service]\nExecStart=\n"
        'ExecStart=/bin/llama-server -m /b.gguf --alias "100%% sure"\n'
    )
    assert exec_start_from_unit_text(text) == [
        "/bin/llama-server", "-m", "/b.gguf", "--alias", "100% sure",
    ]  # fmt: skip
    assert exec_start_from_unit_text("[Service]\nExecStart=/bin/x %h/m.gguf\n") is None


def _props(argv: str, env: str = "", restart: str = "on-failure") -> dict[str, str]:
    return {
        "Id": "llm-inference.service",
        "LoadState": "loaded",
        "ActiveState": "active",
        "SubState": "running",
        "MainPID": "4242",
        "NRestarts": "3",
        "ExecStart": f"{{ path=x ; argv[]={argv} ; ignore_errors=no ; start_time=[n/a] }}",
        "Environment": env,
        "Restart": restart,
        "DropInPaths": "/etc/systemd/system/llm-inference.service.d/50-llmtop.conf",
    }


def test_unit_checks_from_the_playbook(tiny_model: Path) -> None:
    # GPU server without CUDA env, no Restart=, exposed without a key, ctx above training (512)
    props = _props(
        f"/usr/bin/llama-server -m {tiny_model} --ctx-size 4096 -ngl 35 --host 0.0.0.0",
        restart="no",
    )
    status = status_from_properties("llm-inference.service", False, props)
    text = "\n".join(status.warnings)
    assert "CUDA_VISIBLE_DEVICES and LD_LIBRARY_PATH missing" in text
    assert "no Restart=" in text
    assert "--host 0.0.0.0 without an API key" in text
    assert "ctx-size 4096 is above the model's training context 512" in text
    assert status.main_pid == 4242 and status.n_restarts == 3
    assert status.drop_in_paths == ("/etc/systemd/system/llm-inference.service.d/50-llmtop.conf",)

    # the playbook's unit, done right: no warnings
    good = _props(
        f"/usr/bin/llama-server -m {tiny_model} --ctx-size 512 -ngl 35 --host 127.0.0.1",
        env="CUDA_VISIBLE_DEVICES=0 LD_LIBRARY_PATH=/usr/local/cuda/lib64",
    )
    assert status_from_properties("llm-inference.service", False, good).warnings == ()


def test_api_key_from_environment_counts_and_is_redacted() -> None:
    props = _props(
        "/usr/bin/llama-server -m /m.gguf --host 0.0.0.0 -ngl 0",
        env="LLAMA_API_KEY=sk-abc123",
    )
    status = status_from_properties("x.service", False, props)
    assert not any("API key" in w for w in status.warnings)
    assert "LLAMA_API_KEY=***" in status.environment
    assert "sk-abc123" not in repr(status)
    spec = LaunchSpec.from_argv(["/usr/bin/llama-server", "--api-key", "k"], {})
    assert unit_checks(spec, {}, "on-failure") == []


def test_atomic_write_mode_and_backup(tmp_path: Path) -> None:
    path = tmp_path / "x.service.d" / "50-llmtop.conf"
    old_umask = os.umask(0o077)
    try:
        assert atomic_write(path, "one\n") is None
        backup = atomic_write(path, "two\n")
    finally:
        os.umask(old_umask)
    assert path.read_text() == "two\n"
    assert backup is not None and backup.read_text() == "one\n"
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in path.parent.iterdir()) == ["50-llmtop.conf", "50-llmtop.conf.bak"]


def test_states_and_polkit_rule() -> None:
    assert supervisor_state("active", "running") == "ready"
    assert supervisor_state("activating", "auto-restart") == "restarting"
    assert supervisor_state("failed", "failed") == "failed"
    assert supervisor_state("inactive", "dead") == "stopped"
    rule = polkit_rule("llm-inference.service", "ops")
    assert 'subject.user == "ops"' in rule
    assert rule.count("{") == rule.count("}")
