"""Start and stop a real llama-server for tests (argv list, own process group, killed by PID)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PINNED_VERSION = "11434.0.0"


def find_llama_server() -> Path | None:
    env = os.environ.get("LLMTOP_LLAMA_SERVER")
    if env:
        p = Path(env)
        return p if p.is_file() and os.access(p, os.X_OK) else None
    cache = Path(os.environ.get("LLMTOP_CACHE", Path.home() / ".cache" / "llmtop"))
    p = cache / f"llama-server-{PINNED_VERSION}" / "bin" / "llama-server"
    if p.is_file() and (p.parent.parent / ".complete").exists():
        return p
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    port: int
    argv: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    api_key: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def wait_healthy(
    url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"llama-server exited with {proc.returncode}")
        try:
            r = httpx.get(url + "/health", timeout=1.0)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as e:
            last = str(e)
        time.sleep(0.05)
    raise TimeoutError(f"llama-server at {url} not healthy after {timeout}s: {last}")


def server_argv(
    binary: Path, model: Path, port: int, *extra: str, host: str = "127.0.0.1"
) -> list[str]:
    """The tests' llama-server argv: tiny context, one slot, one thread, loopback by default."""
    return [str(binary), "-m", str(model), "--host", host, "--port", str(port),
            "-c", "512", "-np", "1", "-t", "1", *extra]  # fmt: skip


def start_llama_server(
    binary: Path,
    model: Path,
    extra: list[str],
    *,
    log_dir: Path,
    api_key: str | None = None,
    wait: bool = True,
    port: int | None = None,
    env: dict[str, str] | None = None,
) -> RunningServer:
    port = port or free_port()
    argv = server_argv(binary, model, port, *extra)
    if api_key:
        argv += ["--api-key", api_key]
    log_path = log_dir / f"llama-server-{port}.log"
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=full_env
        )
    srv = RunningServer(f"http://127.0.0.1:{port}", port, argv, proc, log_path, api_key, env or {})
    if wait:
        try:
            wait_healthy(srv.url, proc=proc)
        except Exception:
            srv.stop()
            raise
    return srv
