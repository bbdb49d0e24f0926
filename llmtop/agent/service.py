"""`llmtop agent` as a systemd service: the unit `--print-unit` prints, and the notify protocol.

The unit is Type=notify: the agent says READY=1 only once its first sample is written, so
`systemctl start` returns (and the unit shows active (running)) when recording really works,
and a database it cannot open fails the start instead of looking healthy. WatchdogSec= with a
WATCHDOG=1 ping per tick restarts an agent whose loop hangs; Restart=on-failure brings back one
that was killed. The sandbox keeps the agent read-only on the system (ProtectSystem=strict)
except its StateDirectory=llmtop (where the database lives: $STATE_DIRECTORY), without new
privileges, and with the devices left visible (no PrivateDevices=): NVML needs /dev/nvidia*.
The API key never goes into the unit: it is read from an EnvironmentFile.

Notifications go through systemd-python's `systemd.daemon.notify` when installed, else straight
to $NOTIFY_SOCKET (one datagram; the protocol is that small).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from llmtop.control.systemd_unit import exec_start_line

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.snapshot import Snapshot

WATCHDOG_SEC = 30
ENV_FILE = "/etc/llmtop/agent.env"


def _secs(value: float) -> str:
    return f"{value:.0f}s" if value == int(value) else f"{value:g}"


def agent_argv(args: argparse.Namespace) -> list[str]:
    """The agent's own command line for the unit (no secrets: the key comes from ENV_FILE)."""
    argv = [sys.executable, "-m", "llmtop", "agent"]
    if args.url:
        argv += ["--url", args.url]
    if args.unit:
        argv += ["--unit", args.unit] + (["--user"] if args.user else [])
    argv += ["--interval", _secs(args.interval)]
    if args.db:
        argv += ["--db", os.path.abspath(args.db)]
    argv += ["--keep", _secs(args.keep), "--keep-aggregates", _secs(args.keep_aggregates)]
    argv += ["--max-size", str(args.max_size)]
    if args.probe_every:
        argv += ["--probe-every", _secs(args.probe_every)]
    if getattr(args, "listen", None):  # the Prometheus exporter (agent/exporter_http.py)
        argv += ["--listen", args.listen]
        if args.web_config:
            argv += ["--web-config", os.path.abspath(args.web_config)]
        if args.insecure_listen:
            argv.append("--insecure-listen")
        if args.dcgm_names:
            argv.append("--dcgm-names")
    return argv


def agent_unit_text(args: argparse.Namespace) -> str:
    return f"""\
# llmtop agent: records llama-server, host and GPU samples (llmtop report, llmtop replay).
# Install: llmtop agent --print-unit [FLAGS] > /etc/systemd/system/llmtop-agent.service
#          systemctl daemon-reload && systemctl enable --now llmtop-agent
# API key: LLMTOP_API_KEY=... in {ENV_FILE} (mode 0600), never in this file.
[Unit]
Description=llmtop agent (llama-server history)
After=network.target

[Service]
Type=notify
NotifyAccess=main
{exec_start_line(agent_argv(args))}
EnvironmentFile=-{ENV_FILE}
WatchdogSec={WATCHDOG_SEC}
Restart=on-failure
RestartSec=2
StateDirectory=llmtop
StateDirectoryMode=0700
UMask=0077
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
NoNewPrivileges=yes
# NVML opens /dev/nvidiactl, /dev/nvidia0… and /dev/nvidia-uvm: keep the devices visible.
PrivateDevices=no

[Install]
WantedBy=multi-user.target
"""


def notify(message: str) -> bool:
    """Send one sd_notify message; False when not run by systemd (no $NOTIFY_SOCKET)."""
    try:
        from systemd import daemon  # systemd-python
    except ImportError:
        return _notify_socket(message)
    return bool(daemon.notify(message))


def _notify_socket(message: str) -> bool:
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(message.encode())
    return True


def service_hooks(clock: Callable[[], float] = time.monotonic) -> list[Callable[[Snapshot], None]]:
    """Tick hooks for a service: READY=1 after the first recorded tick, then watchdog pings at
    half the watchdog period (none when systemd did not start us)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return []
    usec = os.environ.get("WATCHDOG_USEC")
    period = int(usec) / 1e6 / 2 if usec and usec.isdigit() else None
    state = {"ready": False, "pinged": float("-inf")}

    def hook(snap: Snapshot) -> None:
        if not state["ready"]:
            notify(f"READY=1\nSTATUS=recording {snap.server.url}")
            state["ready"] = True
        now = clock()
        if period is not None and now - state["pinged"] >= period:
            notify("WATCHDOG=1")
            state["pinged"] = now

    return [hook]
