"""One restart-heavy operation at a time: an apply and a sweep must never interleave restarts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class OneAtATime:
    """Shared by the apply and sweep operations of one server; `busy` names the one running."""

    def __init__(self) -> None:
        self.busy: str | None = None

    @contextmanager
    def hold(self, operation: str) -> Iterator[None]:
        """Held while *operation* runs (check `busy` first: holding twice is a bug)."""
        if self.busy is not None:
            raise RuntimeError(f"{self.busy} is running")
        self.busy = operation
        try:
            yield
        finally:
            self.busy = None
