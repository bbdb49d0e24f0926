"""`llmtop demo`: the dashboard on a real llama-server with a tiny generated model.

Finds llama-server (LLMTOP_LLAMA_SERVER, else the cached build under ~/.cache/llmtop, else builds
it with the repository's scripts/get-llama-server.sh — about 11 minutes on 2 cores, once), writes
the tiny model into ~/.cache/llmtop/demo/ and opens the dashboard supervising
`llama-server -m tiny.gguf --port <free> --metrics -c 512 -lv 4` in child mode. Without an NVIDIA
driver the GPU panels show a simulated GPU, labelled SIMULATED, when one can be built. A light
periodic load (a short prompt every 5 s, `--no-load` for none) makes tok/s and latency move.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

PINNED_VERSION = "11434.0.0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    parser.add_argument("--refresh", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument("--log-lines", type=int, default=10_000, metavar="N")
    parser.add_argument(
        "--print-argv", action="store_true", help="print the llama-server command and exit"
    )
    parser.add_argument(
        "--no-load",
        action="store_true",
        help="no light periodic load (by default a short prompt every 5 s moves tok/s and latency)",
    )


def cache_dir() -> Path:
    return Path(os.environ.get("LLMTOP_CACHE", Path.home() / ".cache" / "llmtop"))


def build_script() -> Path | None:
    """scripts/get-llama-server.sh of the checkout this package runs from (None if installed)."""
    path = Path(__file__).resolve().parents[2] / "scripts" / "get-llama-server.sh"
    return path if path.is_file() else None


def find_llama_server() -> Path | None:
    env = os.environ.get("LLMTOP_LLAMA_SERVER")
    if env:
        p = Path(env)
        return p if p.is_file() and os.access(p, os.X_OK) else None
    p = cache_dir() / f"llama-server-{PINNED_VERSION}" / "bin" / "llama-server"
    if p.is_file() and (p.parent.parent / ".complete").exists():
        return p
    return None


def get_llama_server() -> Path:
    """Find llama-server or build it; raises SystemExit with a message saying what to do."""
    env = os.environ.get("LLMTOP_LLAMA_SERVER")
    found = find_llama_server()
    if found is not None:
        return found
    if env:
        raise SystemExit(f"llmtop demo: LLMTOP_LLAMA_SERVER={env} is not an executable file")
    script = build_script()
    if script is None:
        raise SystemExit(
            "llmtop demo: no llama-server found and no build script here. Run it from a clone of "
            "the llmtop repository (scripts/get-llama-server.sh builds one), or set "
            "LLMTOP_LLAMA_SERVER=/path/to/llama-server."
        )
    print(
        "llmtop demo: building llama-server from source (once; about 11 minutes on 2 cores)…",
        file=sys.stderr,
    )
    proc = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"llmtop demo: {script} failed (exit {proc.returncode}); see above")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    path = Path(lines[-1]) if lines else None
    if path is None or not path.is_file():
        raise SystemExit(f"llmtop demo: {script} did not print a llama-server path")
    return path


def demo_model() -> Path:
    from llmtop.demo.tiny_model import write_tiny_model

    path = cache_dir() / "demo" / "tiny.gguf"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_tiny_model(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_argv(binary: Path, model: Path, port: int) -> list[str]:
    return [
        str(binary),
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics",
        "-c",
        "512",
        "-lv",
        "4",
    ]


def run(args: argparse.Namespace) -> int:
    binary = get_llama_server()
    model = demo_model()
    argv = demo_argv(binary, model, args.port or free_port())
    if args.print_argv:
        print(" ".join(argv))
        return 0
    from llmtop.commands import dashboard

    ns = argparse.Namespace(
        url=None,
        api_key=None,
        refresh=args.refresh,
        restart_sec=2.0,
        max_restart_sec=30.0,
        no_restart=False,
        log_lines=args.log_lines,
        unit=None,
        user=False,
        server_argv=argv,
    )
    session = dashboard.build_session(ns, demo=True)
    if isinstance(session, str):
        print(f"llmtop demo: {session}", file=sys.stderr)
        return 2
    from llmtop.ui.demo_load import DEMO_LOAD_S

    load = None if args.no_load else DEMO_LOAD_S
    return dashboard.run_dashboard(session, log_lines=args.log_lines, demo_load_s=load)
