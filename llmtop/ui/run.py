"""Running a Textual app in the operator's terminal, the same way for every command.

A terminal that vanishes (SSH drop) must end in the app's clean shutdown, not a hung writer:
the Linux driver is swapped for `ui.terminal`'s surviving one where it exists (POSIX)."""

from __future__ import annotations

import contextlib
from typing import Any

from textual.app import App


def use_surviving_driver(app: App[Any]) -> None:
    """Let *app* notice a dead terminal (SIGHUP, EIO) and shut down cleanly."""
    with contextlib.suppress(ImportError):  # POSIX only (termios)
        from llmtop.ui.terminal import driver_for

        app.driver_class = driver_for(app.driver_class)


def run_tui(app: App[Any]) -> int:
    """Run *app* until it exits (Ctrl-C included); its return code, 0 when it set none."""
    use_surviving_driver(app)
    with contextlib.suppress(KeyboardInterrupt):
        app.run()
    return int(app.return_code or 0)
