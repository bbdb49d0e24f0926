"""Follow a systemd unit's journal into the LogStore (unit mode's log panel).

Preferred: systemd-python's `systemd.journal.Reader`, matched on `_SYSTEMD_UNIT=`/`UNIT=` (and
`_SYSTEMD_USER_UNIT=`/`USER_UNIT=` for --user) or the unit's `SYSLOG_IDENTIFIER=`. The reader's
inotify file descriptor is registered with the event loop (`loop.add_reader`); when it fires,
`reader.process()` tells whether entries were appended and they are drained in bounded batches
(yielding to the loop between batches) — no busy polling, no thread. Backfill starts at the
unit's current start (ExecMainStartTimestamp via `seek_realtime`), else the last 200 lines.

Fallback when systemd-python is missing: a `journalctl -o json -f` subprocess read on the loop.

journald announces new entries through inotify at most every 250 ms (its post-change timer),
though they are readable at once: while lines are flowing (one within the last second) the
follower also looks every 50 ms, which keeps the latency well under 250 ms without polling an
idle journal.

Both backends take an optional `directory` (a journal directory, e.g. a confined test box's) and
`command_prefix` (for journalctl); the product uses neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import inspect
import json
import os
import pwd
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmtop.sources.child_death import die_with_parent

BACKFILL_LINES = 200
BATCH = 500  # entries per loop callback before yielding
FOLLOW_UP_S = 0.05  # while lines flow, look again this soon (journald's inotify lags ≤ 250 ms)
FOLLOW_UP_FOR_S = 1.0  # … for this long after the last line
START_SLACK_S = 0.5  # backfill from this long before the unit's current start

# journald PRIORITY (syslog levels) → LogLine level
PRIORITY_LEVEL = {
    0: "error",
    1: "error",
    2: "error",
    3: "error",
    4: "warning",
    5: "info",
    6: "info",
    7: "debug",
}


def have_systemd_python() -> bool:
    try:
        import systemd.journal  # noqa: F401
    except ImportError:
        return False
    return True


def journal_access_problem(user: bool = False) -> str | None:
    """A clear message when this user cannot read the system journal, else None."""
    if os.geteuid() == 0:
        return None
    groups = set()
    for gid in os.getgroups():
        with contextlib.suppress(KeyError):
            groups.add(grp.getgrgid(gid).gr_name)
    if groups & {"systemd-journal", "adm", "wheel"}:
        return None
    try:
        who = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        who = str(os.geteuid())
    if user:
        return None  # a user can always read their own user journal
    return (
        f"cannot read the unit's journal: {who} is not in the systemd-journal (or adm) group. "
        f"Fix: sudo usermod -aG systemd-journal {who}, then log in again."
    )


def _directory_readable(directory: str) -> bool:
    """False when this process is refused the journal files (or directories) below `directory`."""
    if not os.access(directory, os.R_OK | os.X_OK):
        return not os.path.exists(directory)
    seen = False
    for root, dirs, files in os.walk(directory):
        for d in dirs:
            if not os.access(os.path.join(root, d), os.R_OK | os.X_OK):
                return False
        for name in files:
            if name.endswith((".journal", ".journal~")):
                seen = True
                if os.access(os.path.join(root, name), os.R_OK):
                    return True
    return not seen


def unit_matches(unit: str, user: bool, syslog_identifier: str | None) -> list[tuple[str, str]]:
    """(field, value) pairs, any of which selects a journal entry as the unit's."""
    pairs = [("_SYSTEMD_UNIT", unit), ("UNIT", unit)]
    if user:
        # A user manager's services carry _SYSTEMD_USER_UNIT; a manager confined to its own
        # cgroup namespace (containers, our test box) makes journald tag them _SYSTEMD_UNIT.
        pairs += [("_SYSTEMD_USER_UNIT", unit), ("USER_UNIT", unit)]
    if syslog_identifier:
        pairs.append(("SYSLOG_IDENTIFIER", syslog_identifier))
    return pairs


def _message_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    # journalctl -o json: non-UTF-8 messages are arrays of byte values (ints 0-255; JSON's
    # true/false are bools, which Python would take as 1/0: not bytes)
    if isinstance(value, list) and all(type(b) is int and 0 <= b < 256 for b in value):
        return bytes(value).decode(errors="replace")
    return str(value)


def _whole(value: Any) -> int | None:
    """A journal field as an int ("1234", 1234): None for anything else (lists, NaN, junk)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str | bytes | int):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def parse_journalctl_line(line: bytes | str) -> tuple[str, int | None, int | None] | None:
    """One `journalctl -o json` line → (message, realtime µs, priority); None when it holds no
    message (or is not a JSON object). Never raises."""
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(entry, dict):
        return None
    msg = entry.get("MESSAGE")
    if msg is None:
        return None
    return (
        _message_text(msg),
        _whole(entry.get("__REALTIME_TIMESTAMP")) or None,
        _whole(entry.get("PRIORITY")),
    )


class JournalFollower:
    """Feed a unit's journal lines into a LogStore (`store.append(text, stream="journal", …)`)."""

    def __init__(
        self,
        unit: str,
        store: Any,
        *,
        user: bool = False,
        syslog_identifier: str | None = None,
        since: float | None = None,
        directory: str | Path | None = None,
        command_prefix: Sequence[str] = (),
        backend: str = "auto",  # "auto" | "python" | "journalctl"
        backfill_lines: int = BACKFILL_LINES,
        resolve_unit: bool = True,
    ) -> None:
        self.unit = unit if "." in unit else f"{unit}.service"
        self.store = store
        self.user = user
        self.syslog_identifier = syslog_identifier
        self.since = since
        self.directory = str(directory) if directory is not None else None
        self.command_prefix = list(command_prefix)
        if backend == "auto":
            backend = "python" if have_systemd_python() else "journalctl"
        if backend not in ("python", "journalctl"):
            raise ValueError(f"unknown journal backend {backend!r}")
        self.backend = backend
        self.backfill_lines = backfill_lines
        # without syslog_identifier and since, start() reads both from `systemctl show`
        self.resolve_unit = resolve_unit
        self.lines_read = 0
        self.error: str | None = None
        self.on_error: list[Callable[[str], None]] = []
        self._reader: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd: int | None = None
        self._drain_scheduled = False
        self._followup: asyncio.TimerHandle | None = None
        self._last_line_at = float("-inf")
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stderr_task: asyncio.Task[None] | None = None
        self._stopped = False
        try:
            self._store_takes_level = "level" in inspect.signature(store.append).parameters
        except (TypeError, ValueError):
            self._store_takes_level = False

    # -- common -------------------------------------------------------------------------------
    def _emit(self, text: str, realtime_us: int | None, priority: int | None) -> None:
        t = realtime_us / 1e6 if realtime_us else None
        if self._store_takes_level and priority is not None:
            self.store.append(
                text, stream="journal", time=t, level=PRIORITY_LEVEL.get(priority, "info")
            )
        else:
            self.store.append(text, stream="journal", time=t)
        self.lines_read += 1

    def _fail(self, message: str) -> None:
        self.error = message
        with contextlib.suppress(Exception):
            if hasattr(self.store, "note"):  # LogStore: an event for the strip + an llmtop line
                self.store.note("journal_unavailable", message, "warning")
            else:
                self.store.append(message, stream="llmtop")
        for cb in list(self.on_error):
            cb(message)

    def _since_effective(self) -> float:
        """Backfill start: the unit's start minus START_SLACK_S (the new process's first line
        can reach journald a hair before systemd stamps ExecMainStartTimestamp; the previous
        process's last words just before the restart are worth seeing too)."""
        return (self.since or 0.0) - START_SLACK_S

    async def _resolve_unit(self) -> None:
        """Neither a SyslogIdentifier nor a start time given: ask systemd (best effort)."""
        from llmtop.sources.unit_status import Systemctl, parse_timestamp

        ctl = Systemctl(user=self.user, command_prefix=tuple(self.command_prefix))
        try:
            props = (
                await asyncio.to_thread(
                    ctl.show, [self.unit], ("SyslogIdentifier", "ExecMainStartTimestamp")
                )
            )[0]
        except Exception:  # noqa: BLE001 - follow by unit name alone
            return
        self.syslog_identifier = props.get("SyslogIdentifier") or None
        self.since = parse_timestamp(props.get("ExecMainStartTimestamp", ""))

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.resolve_unit and self.syslog_identifier is None and self.since is None:
            await self._resolve_unit()
        if self.directory is None:
            problem = journal_access_problem(self.user)
            if problem:
                self._fail(problem)
        if self.backend == "python":
            await self._start_python()
        else:
            await self._start_journalctl()

    async def stop(self) -> None:
        self._stopped = True
        if self._followup is not None:
            self._followup.cancel()
            self._followup = None
        if self._loop is not None and self._fd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)
            self._fd = None
        if self._reader is not None:
            with contextlib.suppress(Exception):
                self._reader.close()
            self._reader = None
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self._proc.kill()
                await self._proc.wait()
        for task in (self._task, self._stderr_task):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    # -- systemd-python ---------------------------------------------------------------------------
    async def _start_python(self) -> None:
        from systemd import journal

        if self.directory is not None and not _directory_readable(self.directory):
            self._fail(
                f"cannot read the journal in {self.directory}: permission denied "
                "(needs root or membership of the systemd-journal/adm group)"
            )
            return
        try:
            if self.directory is not None:
                reader = journal.Reader(path=self.directory)
            else:
                reader = journal.Reader()
        except OSError as e:
            self._fail(f"cannot open the journal: {e}")
            return
        first = True
        for field, value in unit_matches(self.unit, self.user, self.syslog_identifier):
            if not first:
                reader.add_disjunction()
            reader.add_match(**{field: value})
            first = False
        if self.since:
            reader.seek_realtime(self._since_effective())
        else:
            reader.seek_tail()
            reader._previous(self.backfill_lines + 1)  # noqa: SLF001 — step back, then read on
        self._reader = reader
        self._fd = reader.fileno()
        assert self._loop is not None
        self._loop.add_reader(self._fd, self._on_readable)
        with contextlib.suppress(Exception):
            if not reader.reliable_fd():  # e.g. journal on a network file system: no inotify
                self._unreliable_tick()
        self._drain()  # backfill now

    def _unreliable_tick(self) -> None:
        """sd_journal_reliable_fd() said the fd may miss changes: also look once a second."""
        if self._stopped or self._loop is None:
            return
        if not self._drain_scheduled:
            self._drain()
        self._loop.call_later(1.0, self._unreliable_tick)

    def _on_readable(self) -> None:
        reader = self._reader
        if reader is None:
            return
        try:
            reader.process()  # consumes the inotify events; NOP/APPEND/INVALIDATE
        except OSError as e:
            self._fail(f"journal read failed: {e}")
            return
        if not self._drain_scheduled:
            self._drain()

    def _follow_up(self) -> None:
        self._followup = None
        if not self._drain_scheduled:
            self._drain()

    def _drain(self) -> None:
        """Read up to BATCH entries; if more remain, continue on the next loop iteration."""
        self._drain_scheduled = False
        reader = self._reader
        if reader is None or self._stopped:
            return
        n = 0
        nxt = reader._next  # noqa: SLF001 — the low-level calls are ~10x faster than get_next()
        get = reader._get  # noqa: SLF001
        realtime = reader._get_realtime  # noqa: SLF001
        since_us = self._since_effective() * 1e6 if self.since is not None else 0.0
        try:
            while n < BATCH and nxt():
                n += 1
                try:
                    raw = get("MESSAGE")
                except KeyError:
                    continue
                rt = realtime()
                if rt < since_us:
                    continue
                try:
                    prio: int | None = int(get("PRIORITY"))
                except (KeyError, ValueError):
                    prio = None
                text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
                self._emit(text, rt, prio)
        except OSError as e:
            self._fail(f"journal read failed: {e}")
            return
        if self._loop is None:
            return
        if n >= BATCH:
            self._drain_scheduled = True
            self._loop.call_soon(self._drain)
            return
        now = self._loop.time()
        if n > 0:
            self._last_line_at = now
        if self._followup is None and now - self._last_line_at < FOLLOW_UP_FOR_S:
            # journald announces appends through inotify at most every 250 ms; while the unit
            # is writing (a line within the last FOLLOW_UP_FOR_S), look again after
            # FOLLOW_UP_S. An idle unit costs nothing: wake-ups then come from the fd alone.
            self._followup = self._loop.call_later(FOLLOW_UP_S, self._follow_up)

    # -- journalctl fallback -----------------------------------------------------------------------
    def journalctl_argv(self) -> list[str]:
        argv = [*self.command_prefix, "journalctl", "-o", "json", "-f", "--no-pager"]
        # only the fields we use: JSON-formatting every field costs journalctl ~5x the CPU
        argv.append("--output-fields=MESSAGE,PRIORITY")
        if self.directory is not None:
            argv.append(f"--directory={self.directory}")
        if self.since:
            argv.append(f"--since=@{int(self._since_effective())}")
        else:
            argv.append(f"--lines={self.backfill_lines}")
        first = True
        for field, value in unit_matches(self.unit, self.user, self.syslog_identifier):
            if not first:
                argv.append("+")
            argv.append(f"{field}={value}")
            first = False
        return argv

    async def _start_journalctl(self) -> None:
        argv = self.journalctl_argv()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=4 * 1024 * 1024,
                preexec_fn=die_with_parent(),  # no orphan follower when llmtop is killed
            )
        except FileNotFoundError:
            self._fail("cannot follow the journal: journalctl not found (install systemd-python)")
            return
        self._task = asyncio.create_task(self._read_journalctl())
        self._stderr_task = asyncio.create_task(self._read_journalctl_stderr())

    async def _read_journalctl(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        since_us = self._since_effective() * 1e6 if self.since else None
        while True:
            line = await self._proc.stdout.readline()
            if not line:
                break
            parsed = parse_journalctl_line(line)
            if parsed is None:
                continue
            text, rt, prio = parsed
            if since_us is not None and rt is not None and rt < since_us:
                continue
            self._emit(text, rt, prio)
        if not self._stopped and self._proc.returncode not in (None, 0, -15):
            await self._proc.wait()

    async def _read_journalctl_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        data = await self._proc.stderr.read()
        text = data.decode(errors="replace").strip()
        if self._stopped or not text:
            return
        low = text.lower()
        if "insufficient permissions" in low or "not seeing messages" in low:
            self._fail(
                "cannot read the unit's journal: not in the systemd-journal (or adm) group. "
                "Fix: sudo usermod -aG systemd-journal $USER, then log in again."
            )
        else:
            self._fail(f"journalctl: {text.splitlines()[-1]}")
