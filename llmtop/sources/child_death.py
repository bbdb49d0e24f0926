"""What llmtop starts ends when llmtop dies, however it dies: a supervised llama-server, and
the `journalctl -f` a journal follower reads (here, below control, so both may use it).

Quitting, Ctrl-C, SIGTERM and SIGHUP stop the child cleanly (the supervisor's own stop). A
`kill -9` of llmtop, or the kernel's OOM killer choosing it, leaves no chance for that: the child
— in its own session, so no terminal hangup reaches it either — would live on as an orphan that
keeps the port and the (GPU) memory with nobody watching it, and the next llmtop could not start
a server on that port. Linux can send the child a signal when its parent dies
(`PR_SET_PDEATHSIG`); it is set in the forked child just before exec, and survives the exec.

The "parent" is the thread that forked: the supervisor spawns on the event loop's thread, which
lives as long as llmtop does (so does the follower's). Elsewhere than Linux nothing is set.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
# SIGTERM: llama-server shuts down cleanly on it (and a router server stops its own children).
DEATH_SIGNAL = signal.SIGTERM


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` for the child: SIGTERM when this process dies; None where unsupported.

    Built here, in the parent: the forked child only makes one prepared foreign call (no
    imports, no allocation worth the name), which is what makes a `preexec_fn` safe enough
    beside the app's other threads."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    sig = int(DEATH_SIGNAL)

    def set_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # llmtop died between the fork and the call above
            os._exit(1)

    return set_death_signal
