"""Running a Textual app in the operator's terminal, the same way for every command.

A terminal that vanishes (SSH drop) must end in the app's clean shutdown, not a hung writer:
the Linux driver is swapped for `ui.terminal`'s surviving one where it exists (POSIX)."""

from __future__ import annotations

import contextlib
import gc
from typing import Any

from textual.app import App

# After the first data frame the hidden tabs are mounted; this much later the heap is settled.
HEAP_SETTLE_S = 2.0


def settle_heap() -> None:
    """Once, after start-up: what exists now (Textual's DOM and styles, the modules, a replay's
    week of sample times) lives as long as the app, so it is moved out of the cyclic
    collector's sight (`gc.freeze`). Every full collection walked all of it: 21 of them in 200
    replay keys on a 7-day DB, up to 60 ms each, were the slowest key presses (p95 50-80 ms;
    with them gone ≤ 44 ms). What is made later is collected as before."""
    gc.collect()
    gc.freeze()


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
