"""Find llama-server processes on this machine (for `llmtop` with no arguments).

A process counts when its name or the basename of argv[0] contains "llama-server". Its argv, plus
the `LLAMA_ARG_*` variables of /proc/PID/environ where readable, give a LaunchSpec: host, port,
model, gpu-layers, ctx. Zombies and processes we may not read are skipped. Blocking (psutil):
run it in a thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import psutil

from llmtop.model.launch_spec import LaunchSpec, llama_env

NAME = "llama-server"


@dataclass(frozen=True)
class DiscoveredServer:
    pid: int
    spec: LaunchSpec = field(repr=False)  # may hold the API key: never display it as is
    url: str
    model: str | None
    gpu_layers: int | None
    ctx_size: int | None
    started_at: float | None
    cmdline_redacted: tuple[str, ...]
    # Ports the process listens on, where the OS lets us see them (empty: unknown).
    listen_ports: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        """One line for a pick list: "pid 1234  http://127.0.0.1:8080  model.gguf"."""
        model = os.path.basename(self.model) if self.model else "?"
        return f"pid {self.pid}  {self.url}  {model}"


def is_llama_server(name: str | None, cmdline: list[str] | None) -> bool:
    if name and NAME in name:
        return True
    return bool(cmdline) and cmdline is not None and NAME in os.path.basename(cmdline[0])


def _listen_ports(proc: psutil.Process) -> tuple[int, ...]:
    try:
        conns = proc.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return ()
    ports = {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr}
    return tuple(sorted(ports))


def server_from_process(proc: psutil.Process) -> DiscoveredServer | None:
    """A DiscoveredServer for one process, or None when it is not a readable llama-server."""
    try:
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            name = proc.name()
            cmdline = proc.cmdline()
            if not is_llama_server(name, cmdline):
                return None
            started_at: float | None = proc.create_time()
            try:
                env = llama_env(proc.environ())
            except (psutil.AccessDenied, OSError):
                env = {}
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, OSError):
        return None
    spec = LaunchSpec.from_argv(cmdline or [name], env)
    ports = _listen_ports(proc)
    url = spec.url
    if ports and spec.port not in ports and len(ports) == 1:
        # The argv says one port but the process listens on another (a config we cannot
        # read): trust the socket.
        url = f"http://{spec.connect_host}:{ports[0]}"
    return DiscoveredServer(
        pid=proc.pid,
        spec=spec,
        url=url,
        model=spec.model,
        gpu_layers=spec.gpu_layers,
        ctx_size=spec.ctx_size,
        started_at=started_at,
        cmdline_redacted=tuple(spec.redacted()),
        listen_ports=ports,
    )


def discover_servers() -> list[DiscoveredServer]:
    """Every local llama-server process we can read, oldest first. Blocking."""
    found: list[DiscoveredServer] = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        info = proc.info  # set by process_iter (the attributes asked for above)
        if not is_llama_server(info.get("name"), info.get("cmdline")):
            continue
        srv = server_from_process(proc)
        if srv is not None:
            found.append(srv)
    found.sort(key=lambda s: (s.started_at or 0.0, s.pid))
    return found
