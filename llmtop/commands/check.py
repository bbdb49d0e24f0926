"""`llmtop check` — the playbook's step 1 and static pitfalls as one command.

Which server to check: `--unit NAME [--user]` (its ExecStart, Environment= and User=),
`--url URL` (the local llama-server process listening there), `-- llama-server ARGS…` (a command
line you are about to run), or, with none of them, the one llama-server running on this box.
Without any server the box itself is still checked (driver, GPUs, RAM, CPUs, binary on PATH).

Exit status: 0 all ok, 1 warnings, 2 errors. `--json` prints `{"checks": [...]}`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from llmtop.diagnosis.checks import (
    Check,
    binary_check,
    cpu_check,
    device_access_check,
    driver_check,
    environment_checks,
    exit_code,
    gpu_checks,
    launch_checks,
    ram_check,
)
from llmtop.model.gguf import GgufInfo
from llmtop.model.launch_spec import LaunchSpec
from llmtop.sources.host_facts import (
    find_binary,
    nvidia_device_access,
    read_binary_facts,
    read_host_facts,
)

STATUS_MARK = {"ok": "✓", "warning": "!", "error": "✗"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--url", help="check the local llama-server listening at this URL")
    g.add_argument("--unit", metavar="NAME", help="check a systemd unit running llama-server")
    p.add_argument(
        "--user", action="store_true", help="with --unit: a user unit (systemctl --user)"
    )
    p.add_argument("--binary", help="the llama-server binary (default: the server's, or PATH)")
    p.add_argument("--model", help="the GGUF model (default: the server's -m)")
    p.add_argument("--json", action="store_true", help='print {"checks": [...]}')


@dataclass
class Target:
    """What the launch checks look at."""

    spec: LaunchSpec | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    unit: bool = False
    unit_user: str | None = None
    note: Check | None = None  # why no server was found, when one was asked for


def _port_of(url: str) -> int | None:
    try:
        return urlsplit(url).port
    except ValueError:
        return None


def _process_env(pid: int) -> dict[str, str]:
    import psutil

    try:
        return dict(psutil.Process(pid).environ())
    except (psutil.Error, OSError):
        return {}


def find_target(args: argparse.Namespace) -> Target:
    if args.server_argv:
        return Target(LaunchSpec.from_argv(list(args.server_argv)), dict(os.environ))
    if args.unit:
        from llmtop.sources.unit_status import UnitMonitor

        monitor = UnitMonitor(args.unit, user=args.user)
        monitor.read()
        if monitor.spec is None:
            why = monitor.error or "no ExecStart"
            return Target(note=Check("server", "error", f"unit {args.unit}: {why}",
                                     "check the unit name (systemctl list-units)"))  # fmt: skip
        user = monitor.last_properties.get("User") or None
        return Target(monitor.spec, dict(monitor.spec.env), unit=True, unit_user=user)
    from llmtop.sources.discovery import discover_servers

    servers = discover_servers()
    if args.url:
        port = _port_of(args.url)
        servers = [s for s in servers if port in s.listen_ports or _port_of(s.url) == port]
        if not servers:
            return Target(note=Check("server", "warning",
                                     f"no local llama-server process listens at {args.url}",
                                     "run llmtop check on the box that runs it"))  # fmt: skip
    if not servers:
        return Target()
    s = servers[0]
    return Target(s.spec, _process_env(s.pid))


def _gguf(path: str | None) -> GgufInfo | None:
    if not path:
        return None
    from llmtop.sources.gguf_info import read_gguf_info

    try:
        return read_gguf_info(path)
    except (OSError, ValueError):
        return None


def gather(args: argparse.Namespace) -> list[Check]:
    target = find_target(args)
    spec = target.spec
    host = read_host_facts()
    binary_path = find_binary(args.binary or (spec.argv[0] if spec is not None else None))
    checks: list[Check] = [] if target.note is None else [target.note]
    checks.append(driver_check(host, spec))
    checks.extend(gpu_checks(host))
    model_path = args.model or (spec.model if spec is not None else None)
    gguf = _gguf(model_path)
    if model_path and gguf is None:
        checks.append(Check("model", "error", f"cannot read the GGUF header of {model_path}",
                            "check the path and that the file is a complete .gguf"))  # fmt: skip
    checks.append(ram_check(host, gguf))
    checks.append(cpu_check(host, spec))
    checks.append(binary_check(read_binary_facts(binary_path), host))
    if spec is not None or target.unit:
        checks.extend(environment_checks(target.env, host, spec, unit=target.unit))
    if host.gpus:
        access = device_access_check(nvidia_device_access(target.unit_user))
        if access is not None:
            checks.append(access)
    if spec is not None:
        checks.extend(launch_checks(spec, gguf))
    return checks


def render_text(checks: list[Check]) -> str:
    width = max((len(c.name) for c in checks), default=4)
    lines = []
    for c in checks:
        lines.append(f"{STATUS_MARK[c.status]} {c.name:<{width}}  {c.status:<7}  {c.message}")
        if c.fix and c.status != "ok":
            lines.append(f"  {'':<{width}}  fix:     {c.fix}")
    errors = sum(c.status == "error" for c in checks)
    warnings = sum(c.status == "warning" for c in checks)
    lines.append(f"{len(checks)} checks: {errors} error(s), {warnings} warning(s)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    checks = gather(args)
    if args.json:
        json.dump({"checks": [c.to_json_dict() for c in checks]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_text(checks))
    return exit_code(checks)
