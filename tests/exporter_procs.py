"""Real processes for the exporter tests: `llmtop agent --listen` and Debian's `prometheus`.

Each is started with an argv list in its own session, waited on by condition (the port answers,
the API says ready) with a deadline that fails in words, and stopped by its PID (SIGTERM, then
SIGKILL) — the fixtures call `stop()` in their teardown, so a failing test leaves nothing
running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.realserver import free_port

REPO = Path(__file__).resolve().parents[1]


def wait_for(what: str, check: Any, timeout_s: float, proc: subprocess.Popen[bytes] | None = None,
             log: Path | None = None, every_s: float = 0.1) -> Any:  # fmt: skip
    """Call *check* until it returns something truthy (returned); fail in words at the deadline
    or when *proc* exits first (with the tail of its log)."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            got = check()
            if got:
                return got
            last = got
        except Exception as exc:  # noqa: BLE001 - the condition is not met yet
            last = exc
        tail = log.read_text(errors="replace")[-2000:] if log is not None and log.exists() else ""
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode}\n{tail}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s (last: {last!r})\n{tail}")
        time.sleep(every_s)


def stop_pid(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int | None:
    """SIGTERM to the process itself, SIGKILL after *timeout_s*; its exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return proc.returncode


@dataclass
class Agent:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/metrics"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        return stop_pid(self.proc)


def agent_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmtop", "agent", *args]


def start_agent(
    args: Sequence[str],
    *,
    log_dir: Path,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    wait: bool = True,
    listen: str | None = None,
    **get_kw: Any,
) -> Agent:
    """`llmtop agent ARGS --listen 127.0.0.1:PORT`; waits until /metrics answers (any status)."""
    port = port or free_port()
    listen = listen or f"127.0.0.1:{port}"
    argv = agent_argv(*args, "--listen", listen)
    log_path = log_dir / f"agent-{port}.log"
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=full_env,
            cwd=REPO,
        )  # fmt: skip
    agent = Agent(proc, port, log_path, "https" if get_kw.get("verify") else "http")
    if wait:
        try:
            wait_for(
                f"agent on :{port} serving /metrics",
                lambda: httpx.get(agent.url, timeout=2.0, **get_kw).status_code > 0,
                60,
                proc,
                log_path,
            )
        except BaseException:
            agent.stop()
            raise
    return agent


def sim_env(
    library: Path | None, scenario: dict[str, Any] | None, tmp: Path, name: str
) -> dict[str, str]:
    """Environment for an agent on the simulated NVML library (or on none: no driver)."""
    if library is None or scenario is None:
        return {"LLMTOP_NVML_LIBRARY": str(tmp / "no-such-libnvidia-ml.so.1")}
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(scenario))
    return {"LLMTOP_NVML_LIBRARY": str(library), "LLMTOP_NVML_SIM_SCENARIO": str(path)}


# ---------------------------------------------------------------------------------- prometheus
def prometheus_binaries() -> tuple[str, str] | None:
    prom, tool = shutil.which("prometheus"), shutil.which("promtool")
    return (prom, tool) if prom and tool else None


@dataclass
class Prometheus:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    config_path: Path
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        r = self.client.get(self.url + path, params=params)
        body = r.json()
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the result vector (a matrix/scalar answer fails the test)."""
        data = self.api("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        return list(data["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/targets")["activeTargets"])

    def alerts(self) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/alerts")["alerts"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        self.client.close()
        return stop_pid(self.proc)


def start_prometheus(config: dict[str, Any], tmp: Path, prom_bin: str) -> Prometheus:
    """Prometheus on 127.0.0.1:<free port> with *config*, its TSDB under *tmp*; ready."""
    import yaml

    port = free_port()
    cfg = tmp / "prometheus.yml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    log_path = tmp / "prometheus.log"
    argv = [
        prom_bin,
        f"--config.file={cfg}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
        "--log.level=warn",
    ]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    prom = Prometheus(proc, port, log_path, cfg)
    try:
        wait_for(
            "prometheus ready",
            lambda: httpx.get(f"{prom.url}/-/ready", timeout=1.0).status_code == 200,
            60,
            proc,
            log_path,
        )
    except BaseException:
        prom.stop()
        raise
    return prom


def quote(expr: str) -> str:
    return urllib.parse.quote(expr)
