"""`llmtop snapshot` as an operator runs it: a subprocess against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realserver import free_port

ROOT = Path(__file__).resolve().parent.parent


def llmtop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("LLAMA_API_KEY", "LLMTOP_API_KEY")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "llmtop", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=full_env)  # fmt: skip


@pytest.mark.real_server
def test_snapshot_json_against_real_server(server_factory) -> None:
    srv = server_factory("--metrics", api_key="snap-secret-key")
    p = llmtop("snapshot", "--url", srv.url, "--json", "--interval", "0.3",
               env={"LLAMA_API_KEY": "snap-secret-key"})  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "snap-secret-key" not in p.stdout + p.stderr
    d = json.loads(p.stdout)
    assert {"time", "server", "host", "gpus", "alerts"} <= d.keys()
    s = d["server"]
    for key in ("url", "health", "model_path", "n_ctx", "total_slots", "build_info", "pid",
                "gen_tokens_per_s", "prompt_tokens_per_s", "requests_processing"):  # fmt: skip
        assert key in s, key
    assert s["health"] == "ok" and s["url"] == srv.url
    assert s["model_path"].endswith("tiny.gguf") and s["n_ctx"] == 512 and s["total_slots"] == 1
    assert s["pid"] == srv.pid
    assert s["gen_tokens_per_s"] == 0.0  # two scrapes of an idle server: a rate, and it is 0
    assert d["host"]["process"]["pid"] == srv.pid
    assert d["gpus"] == [] or isinstance(d["gpus"], list)


def test_snapshot_unreachable_prints_json_and_exits_1() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    p = llmtop("snapshot", "--url", url, "--json")
    assert p.returncode == 1
    d = json.loads(p.stdout)
    assert d["server"]["health"] == "unreachable"
    assert d["server"]["detail"] == "connection refused"
    assert d["server"]["url"] == url


@pytest.mark.real_server
def test_snapshot_human_summary(llama_server) -> None:
    p = llmtop("snapshot", "--url", llama_server.url, "--interval", "0.2")
    assert p.returncode == 0, p.stderr
    assert f"server  {llama_server.url}  ok" in p.stdout
    assert "tiny.gguf" in p.stdout and "ctx     512" in p.stdout
    assert f"pid {llama_server.pid}" in p.stdout
