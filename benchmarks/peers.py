"""Peer tools installed for comparison, each in its own cached virtualenv (never in llmtop's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("LLMTOP_CACHE", Path.home() / ".cache" / "llmtop"))
LLAMASTAT_VERSION = "0.3.0"


def llamastat() -> Path | None:
    """Path of a llamastat executable (installed from PyPI on first use), or None."""
    venv = CACHE / f"peer-llamastat-{LLAMASTAT_VERSION}"
    exe = venv / "bin" / "llamastat"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"llamastat=={LLAMASTAT_VERSION}"],
            check=True,
        )
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"peer llamastat unavailable: {e}", file=sys.stderr)
        return None
    return exe if exe.exists() else None
