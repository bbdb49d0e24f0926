"""Key → frame timing for the UI benchmarks, measured the one honest way.

A wrapper round the app's `_display` checks, at the end of every frame handed to the driver,
whether the press's condition holds (the cursor moved, the tab switched …): the first such frame
ends the measurement. Two ways this went wrong before, in these benchmarks:

- waiting for "the condition holds and some frame came after the key" takes a frame that was
  painted *before* the key was handled whenever frames keep coming (a log flood, a live tick),
  or when the condition already held before the key (replay's "the cursor's snapshot is the
  app's": true until the key moves the cursor) — figures far too good;
- a waiter polling every millisecond takes the GIL from the app's worker threads (replay reads
  the DB in one) and measures itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any


class FrameWaiter:
    """Wraps *app*'s `_display`; `press()` posts a key and waits for its frame."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._display = app._display  # noqa: SLF001
        self._waiting: tuple[Callable[[], bool], asyncio.Event, list[float]] | None = None
        self.frames = 0
        app._display = self._timed_display  # noqa: SLF001

    def _timed_display(self, screen: Any, renderable: Any) -> Any:
        result = self._display(screen, renderable)
        self.frames += 1
        waiting = self._waiting
        if waiting is not None and waiting[0]():
            self._waiting = None
            waiting[2].append(time.perf_counter())
            waiting[1].set()
        return result

    async def press(self, key: str, done: Callable[[], bool], timeout: float = 30.0) -> float:
        """Post *key*; milliseconds until the end of the first frame for which *done()* holds
        (checked only on frames painted after the key was posted)."""
        from textual import events

        event, at = asyncio.Event(), []
        self._waiting = (done, event, at)
        t0 = time.perf_counter()
        self.app.post_message(events.Key(key, key if len(key) == 1 else None))
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            self._waiting = None
            raise TimeoutError(f"no frame after key {key!r} met its condition") from None
        return (at[0] - t0) * 1000.0
