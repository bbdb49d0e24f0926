"""Log lines of the server (child stdout/stderr, journald) in a bounded store, with events.

`LogStore` is thread-safe and bounded (default 10 000 lines); `total_written` counts every line
ever appended and `since(seq)` gives the lines after a sequence number, so the UI appends in
batches. Each line gets a level (llama.cpp's `MM.SS.mmm.uuu I|W|E ` prefix, a journald priority,
or words such as "error" / "out of memory") and may raise an event: milestones (loading model,
model loaded, listening) and failures (out of memory, failed to load, couldn't bind …).

Classification is cheap: plain substring tests, no regular expressions.

What the server writes is not trusted: a line longer than `MAX_LINE_CHARS` keeps its head and
ends in "… [truncated N bytes]", control characters become visible stand-ins (an ESC sequence
in a log line must not reach the operator's terminal), and the store is bounded by characters
(`max_chars`) as well as by lines, so a flood of huge lines cannot take the memory.
"""

from __future__ import annotations

import itertools
import threading
import time as _time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from llmtop.model.redaction import Redactor

LEVELS = ("debug", "info", "warning", "error")

# The longest line kept, in characters. llama-server's own lines are far shorter; a prompt dump
# (-v logs request bodies) or binary garbage on stdout can be megabytes without a newline.
MAX_LINE_CHARS = 8192
# What a cut line keeps, leaving room for the marker within MAX_LINE_CHARS (so cutting twice
# changes nothing: the supervisor cuts bytes in its pipe reader, the store cuts characters).
KEEP_CHARS = MAX_LINE_CHARS - 64
# Redaction reads this far past the cut so a key straddling it is hidden whole, not half shown.
_REDACT_SLACK = 512
# Characters kept over all lines (~16 MiB of text per 8 M ASCII characters): with 10 000 lines
# of MAX_LINE_CHARS each the line bound alone would allow ~80 M characters.
MAX_STORE_CHARS = 8_000_000

# C0 controls (tab excepted), DEL and C1 controls → visible stand-ins (␛ ␇ ␍ …, U+FFFD for C1).
_CONTROL_PICTURES = {c: 0x2400 + c for c in range(32) if c != 9} | {0x7F: 0x2421}
_CONTROL_PICTURES |= {c: 0xFFFD for c in range(0x80, 0xA0)}


def truncation_marker(dropped_bytes: int) -> str:
    """What ends a cut line: says that, and how much, is missing."""
    return f" … [truncated {dropped_bytes} bytes]"


def clean_line(text: str) -> str:
    """A line as the store keeps it: at most MAX_LINE_CHARS, no control characters."""
    if len(text) > MAX_LINE_CHARS:
        dropped = len(text[KEEP_CHARS:].encode("utf-8", "replace"))
        text = text[:KEEP_CHARS] + truncation_marker(dropped)
    if not text.isprintable():  # fast C check; the translate runs only for odd lines
        text = text.translate(_CONTROL_PICTURES)
    return text


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int
    time: float
    text: str
    stream: str  # "stdout" | "stderr" | "journal" | "llmtop"
    level: str  # "debug" | "info" | "warning" | "error"


@dataclass(frozen=True, slots=True)
class LogEvent:
    time: float
    kind: str
    message: str
    severity: str  # "info" | "warning" | "critical"


# llama.cpp's log prefix: "MM.SS.mmm.uuu L " with L one of D I W E (common/log.cpp).
_PREFIX_LEVEL = {"D": "debug", "I": "info", "W": "warning", "E": "error"}

# Words that make an unprefixed line an error / a warning (lowercase).
_ERROR_WORDS = (
    "error",
    "failed",
    "failure",
    "out of memory",
    "fatal",
    "abort",
    "unable to",
    "couldn't",
    "could not",
    "cannot",
    "segmentation fault",
    "core dumped",
    "exception",
    "invalid argument",
    "unknown argument",
)
_WARNING_WORDS = ("warning", "warn:", "deprecated")


def _prefix_end(text: str) -> int:
    """Index just past llama.cpp's "MM.SS.mmm.uuu L " prefix, or 0 when there is none."""
    if not text[:1].isdigit():
        return 0
    p = text.find(" ", 0, 24)
    if p < 7 or text[p + 2 : p + 3] != " " or text[p + 1] not in "DIWE":
        return 0
    stamp = text[:p]
    if stamp.count(".") != 3 or not stamp.replace(".", "").isdigit():
        return 0
    return p + 3


def strip_prefix(text: str) -> str:
    """The line without llama.cpp's timestamp/level prefix."""
    end = _prefix_end(text)
    return text[end:] if end else text


def level_from_priority(priority: int | str | None) -> str | None:
    """journald/syslog PRIORITY (0 emerg … 7 debug) → level; None when unknown."""
    if priority is None:
        return None
    try:
        p = int(priority)
    except (TypeError, ValueError):
        return None
    if p <= 3:
        return "error"
    if p == 4:
        return "warning"
    if p <= 6:
        return "info"
    return "debug"


def classify_level(text: str) -> str:
    """debug | info | warning | error, from llama.cpp's prefix, else from words in the line."""
    line = text
    if text[:1] == "[":  # a router-mode server forwards each child's line as "[PORT] line"
        close = text.find("] ", 1, 8)
        if close > 1 and text[1:close].strip().isdigit():
            line = text[close + 2 :]
    end = _prefix_end(line)
    if end:
        return _PREFIX_LEVEL[line[end - 2]]
    low = text.lower()
    for w in _ERROR_WORDS:
        if w in low:
            return "error"
    for w in _WARNING_WORDS:
        if w in low:
            return "warning"
    return "info"


_OOM = "oom", "critical"
_LOAD = "load_failed", "critical"
_CTX = "context_exceeded", "warning"
_SIZES = "buffer_sizes", "info"

# (gate, ((needle, kind, severity), …)): a cheap gate substring first, then its needles, in
# order; the first hit wins (out of memory beats the "failed to load" that follows it).
# Needles are case-sensitive, as llama.cpp writes them.
_EVENT_GATES: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    (
        "alloc",
        (
            ("cudaMalloc failed", *_OOM),
            ("failed to allocate CUDA", *_OOM),
            ("unable to allocate", *_OOM),
            ("failed to allocate buffer for kv cache", *_OOM),
            ("failed to allocate compute pp buffers", *_OOM),
            ("failed to allocate compute buffers", *_OOM),
            ("Device memory allocation of size", *_OOM),  # ggml_vulkan
        ),
    ),
    (
        "emory",
        (
            ("out of memory", *_OOM),  # also "CUDA error: out of memory" (decode)
            ("ErrorOutOfDeviceMemory", *_OOM),
            ("failed to find a memory slot", *_CTX),
        ),
    ),
    (
        "model",
        (
            ("exiting due to model loading error", *_LOAD),
            ("failed to load model", *_LOAD),
            ("error loading model", *_LOAD),
            ("loading model '", "loading_model", "info"),
            ("model loaded", "model_loaded", "info"),
        ),
    ),
    ("couldn't bind", (("couldn't bind", "bind_failed", "critical"),)),
    ("Context size has been exceeded", (("Context size has been exceeded", *_CTX),)),
    ("decode() failed", (("decode() failed", "decode_error", "warning"),)),
    ("listening on ", (("listening on ", "listening", "info"),)),
    # -lv 4 load-time sizes (the tuning work parses the message)
    ("buffer size =", (("buffer size =", *_SIZES),)),
    ("layers to GPU", (("layers to GPU", *_SIZES),)),
    ("llama_kv_cache: size =", (("llama_kv_cache: size =", *_SIZES),)),
)


def detect_event(text: str, time: float) -> LogEvent | None:
    """An event for a milestone or failure line, else None. Message = the line sans prefix."""
    for gate, needles in _EVENT_GATES:
        if gate in text:
            for needle, kind, severity in needles:
                if needle in text:
                    return LogEvent(time, kind, strip_prefix(text).strip(), severity)
    return None


class LogStore:
    """Bounded, thread-safe store of log lines and the events picked out of them."""

    def __init__(
        self,
        maxlen: int = 10_000,
        max_events: int = 200,
        redactor: Redactor | None = None,
        max_chars: int = MAX_STORE_CHARS,
    ) -> None:
        self._lock = threading.Lock()
        self.max_chars = max_chars
        self._chars = 0  # characters in the kept lines
        # Every line is redacted on its way in (child output, journal, llmtop's own notes), so
        # no reader — panel, search, snapshot, history — can ever see a key. The supervisor and
        # the unit session tell it the keys they know (`redactor.add`).
        self.redactor = redactor or Redactor()
        self._lines: deque[LogLine] = deque(maxlen=maxlen)
        self._events: deque[LogEvent] = deque(maxlen=max_events)
        self._seq = 0
        self.maxlen = maxlen

    # -- writing -------------------------------------------------------------------------------

    def _make(
        self, text: str, stream: str, t: float, level: str | None
    ) -> tuple[LogLine, LogEvent | None]:
        # caller holds the lock
        if len(text) > MAX_LINE_CHARS:  # redact a bounded head (the rest is cut), not megabytes
            head = MAX_LINE_CHARS + _REDACT_SLACK
            text = clean_line(self.redactor(text[:head]) + text[head:])
        else:
            text = clean_line(self.redactor(text))
        self._seq += 1
        if level is None:
            level = classify_level(text)
        line = LogLine(self._seq, t, text, stream, level)
        lines = self._lines
        if len(lines) == lines.maxlen:
            self._chars -= len(lines[0].text)  # the append below drops it
        lines.append(line)
        self._chars += len(text)
        while self._chars > self.max_chars and len(lines) > 1:
            self._chars -= len(lines.popleft().text)
        ev = None
        if stream != "llmtop":
            ev = detect_event(text, t)
            if ev is not None:
                self._events.append(ev)
        return line, ev

    def append(
        self,
        text: str,
        stream: str = "stdout",
        time: float | None = None,
        *,
        level: str | None = None,
        priority: int | None = None,
    ) -> LogLine:
        """Add one line. `level` or a journald `priority` override the guess from the text."""
        t = _time.time() if time is None else time
        if level is None and priority is not None:
            level = level_from_priority(priority)
        with self._lock:
            return self._make(text, stream, t, level)[0]

    def extend(self, items: Iterable[tuple[str, str]] | Iterable[LogLine]) -> list[LogEvent]:
        """Add many lines under one lock: (text, stream) pairs or LogLines (renumbered).

        Returns the events these lines raised."""
        now = _time.time()
        events: list[LogEvent] = []
        with self._lock:
            for item in items:
                if isinstance(item, LogLine):
                    _, ev = self._make(item.text, item.stream, item.time, item.level)
                else:
                    text, stream = item
                    _, ev = self._make(text, stream, now, None)
                if ev is not None:
                    events.append(ev)
        return events

    def add_event(self, event: LogEvent) -> None:
        with self._lock:
            self._events.append(event)

    def note(
        self, kind: str, message: str, severity: str = "info", time: float | None = None
    ) -> LogEvent:
        """llmtop's own event (exited, restarting, crash_loop …): an event and an "llmtop" line."""
        t = _time.time() if time is None else time
        message = self.redactor(message)
        ev = LogEvent(t, kind, message, severity)
        level = {"critical": "error", "warning": "warning"}.get(severity, "info")
        with self._lock:
            self._make(message, "llmtop", t, level)
            self._events.append(ev)
        return ev

    def clear(self) -> None:
        """Forget the lines and events (sequence numbers and total_written keep counting)."""
        with self._lock:
            self._lines.clear()
            self._events.clear()
            self._chars = 0

    # -- reading -------------------------------------------------------------------------------

    @property
    def total_written(self) -> int:
        """Every line ever appended, including those the bound has dropped."""
        return self._seq

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def stored_chars(self) -> int:
        """Characters in the kept lines (bounded by max_chars)."""
        return self._chars

    def __len__(self) -> int:
        return len(self._lines)

    def lines(self) -> list[LogLine]:
        with self._lock:
            return list(self._lines)

    def since(self, seq: int) -> list[LogLine]:
        """Lines with a sequence number above seq (the oldest kept ones if seq fell off)."""
        with self._lock:
            if not self._lines or seq >= self._seq:
                return []
            first = self._lines[0].seq
            skip = max(0, seq - first + 1)
            return list(itertools.islice(self._lines, skip, None))

    def events(self) -> list[LogEvent]:
        with self._lock:
            return list(self._events)

    def search(self, needle: str) -> list[LogLine]:
        """Lines containing needle, ignoring case."""
        n = needle.lower()
        with self._lock:
            return [ln for ln in self._lines if n in ln.text.lower()]

    def tail_errors(self, n: int = 5, since_seq: int = 0) -> list[str]:
        """The last n error-looking server lines (not llmtop's own), oldest first, sans prefix."""
        out: list[str] = []
        with self._lock:
            for ln in reversed(self._lines):
                if ln.seq <= since_seq or len(out) >= n:
                    break
                if ln.stream == "llmtop":
                    continue
                if ln.level == "error" or _is_failure_kind(ln.text):
                    out.append(strip_prefix(ln.text).strip())
        out.reverse()
        return out


def _is_failure_kind(text: str) -> bool:
    ev = detect_event(text, 0.0)
    return ev is not None and ev.severity != "info"
