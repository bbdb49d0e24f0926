"""A terminal that may vanish: the SSH connection drops, the terminal window is closed.

Textual's Linux driver writes the screen from a writer thread through a small queue. When the
terminal is gone a write fails (EIO on a hung-up pty, EPIPE), the writer thread dies of it and
the next writes block forever on the full queue: the app hangs in its own shutdown (while
restoring the terminal) and, if the hang comes first, never gets to stop the supervised child.
`TerminalFile` drops output once the terminal is gone and raises SIGHUP once, the signal the
kernel uses for "your terminal hung up", so the usual clean shutdown (child stopped, llmtop
exits) runs whatever noticed the loss first. `driver_for(cls)` swaps the Linux driver for one
that writes through it; any other driver (headless tests, Windows, web) is kept as it is.
"""

from __future__ import annotations

import os
import signal
from typing import IO

from textual.app import App
from textual.driver import Driver
from textual.drivers.linux_driver import LinuxDriver


class TerminalFile:
    """A text stream for the screen whose writes never fail: a lost terminal drops them."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self.lost = False

    def _gone(self) -> None:
        if not self.lost:
            self.lost = True
            os.kill(os.getpid(), signal.SIGHUP)  # handled as a hangup: clean shutdown

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                return self._file.write(text)
            except (OSError, ValueError):  # EIO / EPIPE; ValueError: the file was closed
                self._gone()
        return len(text)

    def flush(self) -> None:
        if not self.lost:
            try:
                self._file.flush()
            except (OSError, ValueError):
                self._gone()

    def fileno(self) -> int:
        return self._file.fileno()

    def isatty(self) -> bool:
        return True


class SurvivingLinuxDriver(LinuxDriver):
    """The Linux driver, writing through a `TerminalFile`."""

    def __init__(
        self,
        app: App[object],
        *,
        debug: bool = False,
        mouse: bool = True,
        size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(app, debug=debug, mouse=mouse, size=size)
        assert self._file is not None  # the driver opens its terminal in __init__
        self._file = TerminalFile(self._file)  # type: ignore[assignment]


def driver_for(driver_class: type[Driver]) -> type[Driver]:
    """The driver to run with: the surviving Linux driver in place of the plain one."""
    return SurvivingLinuxDriver if driver_class is LinuxDriver else driver_class
