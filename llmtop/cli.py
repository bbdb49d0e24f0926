"""Command line entry point.

`llmtop [OPTIONS] [-- llama-server ARGS…]` opens the dashboard; the first word may instead name a
headless command. Each command lives in `llmtop/commands/<name>.py` with `add_arguments(parser)`
and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from llmtop import __version__

# name → one-line help; the module is llmtop.commands.<name>
COMMANDS: dict[str, str] = {
    "snapshot": "print one snapshot (server, host, GPUs, alerts) and exit",
    "probe": "fire test prompts at a server and report TTFT, inter-token latency, tokens/s",
    "plan": "VRAM plan for a GGUF model: weights, KV cache, compute, headroom",
    "tune": "sweep --gpu-layers, measure each setting, recommend one",
    "unit": "systemd unit helpers: print a unit file, revert llmtop's drop-in",
    "check": "check the box and the server's launch against the playbook (driver, GPUs, CUDA, env)",
    "agent": "record server, host and GPU samples to a history database, with no UI",
    "report": "what happened in the recorded history: throttling, alerts, restarts, VRAM, latency",
    "replay": "the dashboard over the recorded history, with a time cursor and event jumps",
    "load": "load test a server: streaming requests at rising concurrency, TTFT/ITL, the knee",
    "fleet": "every box a Prometheus knows, worst first: temperature, throttling, VRAM, tok/s",
    "demo": "set up and open the dashboard on a demo llama-server with a tiny model",
}


def _split_server_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, server_argv = _split_server_argv(argv)
    if own and own[0] in COMMANDS:
        name = own[0]
        module = importlib.import_module(f"llmtop.commands.{name.replace('-', '_')}")
        parser = argparse.ArgumentParser(prog=f"llmtop {name}", description=COMMANDS[name])
        module.add_arguments(parser)
        args = parser.parse_args(own[1:])
        args.server_argv = server_argv
        return int(module.run(args) or 0)

    from llmtop.commands import dashboard

    parser = argparse.ArgumentParser(
        prog="llmtop",
        description="Terminal dashboard for a local llama.cpp llama-server.",
        epilog="commands: "
        + "; ".join(f"{k} — {v}" for k, v in COMMANDS.items())
        + ".  Child mode: llmtop [OPTIONS] -- /path/to/llama-server -m model.gguf …",
    )
    parser.add_argument("--version", action="version", version=f"llmtop {__version__}")
    dashboard.add_arguments(parser)
    args = parser.parse_args(own)
    args.server_argv = server_argv
    return int(dashboard.run(args) or 0)
