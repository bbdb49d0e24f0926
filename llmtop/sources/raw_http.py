"""A small HTTP/1.1 client for plain http:// (https goes through httpx), in two forms.

llmtop keeps its own sockets (for timing and for CPU) but not its own HTTP framing: requests are
written and responses parsed by h11, the sans-I/O HTTP/1.1 state machine httpx is built on, so a
malformed, truncated or hostile answer ends in a `RawHTTPError` in words rather than in a
parsing bug of ours. Every size a server controls is bounded: the response head (and each chunk
header) by `MAX_HEAD_BYTES`, a poll answer's body by `MAX_BODY_BYTES`.

- `request()`, on asyncio streams, for the latency probe: it measures milliseconds, and a full
  HTTP client adds about that much of its own per request on a slow CPU. It writes the request in
  one call and hands back the body as it arrives (chunked or Content-Length), each piece stamped
  with `time.perf_counter_ns()` at the moment it was read, before any parsing (Connection: close).
- `get_sequence()`, blocking, for the dashboard's poll: a tick's GETs in a row over one
  connection, run in a worker thread (see its docstring for why).
- `ResponseParser`, the seam both share: bytes in, a response head and body pieces out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

MAX_HEAD_BYTES = 64 * 1024
"""The most a response head (status line + headers), or one chunk header, may take."""
MAX_BODY_BYTES = 8 * 1024 * 1024
"""The most a poll answer's body (or an error body the probe reads whole) may take: llama-server's
/props, /slots and /metrics are kilobytes; this only stops a hostile server filling memory."""
MAX_INTERIM = 16
"""The most 1xx interim responses skipped before the real one (each is bounded by the head cap,
but a server could send them forever within the timeout)."""
_RECV = 65536
_HIGH_WATER = 1 << 20
"""Unread bytes at which the probe's connection stops reading until the parser catches up."""


class RawHTTPError(Exception):
    """A transport failure, in words ("connection refused", "timed out after 2.0 s" …)."""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A response's status and headers (lower-case names; a repeated header keeps its last)."""

    status: int
    headers: dict[str, str]


class ResponseParser:
    """One client side of an HTTP/1.1 connection over h11, without I/O.

    `start()` gives the bytes of a request; `feed()` takes what the socket read (b"" at end of
    stream); `read_head()` and `read_body()` give what is complete so far. Every protocol fault
    of the server's comes out as a `RawHTTPError` with a message, never an h11 exception, so the
    two I/O forms below (and the property tests) share one definition of "malformed".
    """

    def __init__(self, max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head_bytes)
        self._max_head = max_head_bytes
        self._fed = 0  # bytes fed while no head was complete (the head's size is known from it)
        self._eof = False
        self._head: ResponseHead | None = None
        self._done = False
        self._interim = 0

    def start(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes = b""
    ) -> bytes:
        """The bytes of one request (`headers` include Host; Content-Length is the caller's)."""
        try:
            wire = self._h11.send(h11.Request(method=method, target=target, headers=headers))
            if body:
                wire += self._h11.send(h11.Data(data=body))
            return wire + self._h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            # h11's message quotes the value: it may be an API key, so say it without it
            raise RawHTTPError(
                "invalid request: a header or the path has characters HTTP does not allow"
            ) from None

    def feed(self, data: bytes) -> None:
        """What the socket read; b"" when the server closed its end."""
        if self._eof:
            return  # nothing follows the end of a stream (h11 would raise RuntimeError)
        self._eof = not data
        if self._head is None:
            self._fed += len(data)
        self._h11.receive_data(data)

    @property
    def buffered(self) -> bool:
        """Bytes received and not yet parsed (a fresh exchange that has some is not stale)."""
        return bool(self._h11.trailing_data[0])

    def _next(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            return self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise self._error(exc) from None

    def _error(self, exc: h11.RemoteProtocolError) -> RawHTTPError:
        if self._eof:  # h11 says "peer closed connection without sending complete …"
            return RawHTTPError("connection closed by the server")
        if exc.error_status_hint == 431:
            where = "response headers" if self._head is None else "a chunk header"
            return RawHTTPError(f"{where} too large (over {MAX_HEAD_BYTES // 1024} KiB)")
        words = str(exc)
        if len(words) > 80:
            words = words[:77] + "…"
        return RawHTTPError(f"malformed HTTP response ({words})")

    def read_head(self) -> ResponseHead | None:
        """The response head once it is complete (1xx interim answers skipped), else None."""
        while self._head is None:
            event = self._next()
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.InformationalResponse):
                self._interim += 1
                if self._interim > MAX_INTERIM:
                    raise RawHTTPError("malformed HTTP response (endless 1xx interim answers)")
                continue
            if isinstance(event, h11.Response):
                # h11 caps only a head still incomplete: one that arrived whole in one read
                # (however large) would pass, so whether the cap held depended on the reads
                if self._fed - len(self._h11.trailing_data[0]) > self._max_head:
                    raise RawHTTPError(
                        f"response headers too large (over {MAX_HEAD_BYTES // 1024} KiB)"
                    )
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in event.headers}
                self._head = ResponseHead(event.status_code, headers)
                break
            if isinstance(event, h11.ConnectionClosed):  # end of stream before any answer
                raise RawHTTPError("connection closed by the server")
            raise RawHTTPError(f"malformed HTTP response (unexpected {type(event).__name__})")
        return self._head

    def read_body(self) -> tuple[bytes, bool]:
        """(the body bytes parsed since the last call, whether the body is complete)."""
        if self._done:
            return b"", True
        parts: list[bytes] = []
        while True:
            event = self._next()
            if isinstance(event, h11.Data):
                parts.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
                break
            elif event is h11.NEED_DATA:
                break
            else:  # ConnectionClosed / PAUSED mid-body: h11 raises first, but be sure
                raise RawHTTPError("connection closed by the server")
        return b"".join(parts), self._done

    @property
    def reusable(self) -> bool:
        """After a complete body: both sides may go on to another request on this connection."""
        return (
            self._done
            and not self._eof
            and self._h11.our_state is h11.DONE
            and self._h11.their_state is h11.DONE
        )

    def next_cycle(self) -> None:
        """Get ready for the next request on a kept-alive connection (after `reusable`)."""
        self._h11.start_next_cycle()
        self._head = None
        self._done = False
        self._interim = 0


def _target(url: str) -> tuple[str, int, str, str]:
    """(host, port, path prefix, Host header) of a base URL."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    host_header = f"{host}:{port}" if parts.port else host
    return host, port, parts.path.rstrip("/"), host_header


def _connect_error(exc: OSError, timeout_s: float) -> RawHTTPError:
    """Why a connection could not be made, in words."""
    if isinstance(exc, TimeoutError):
        return RawHTTPError(f"timed out after {timeout_s:.1f} s")
    if isinstance(exc, ConnectionRefusedError):
        return RawHTTPError("connection refused")
    if isinstance(exc, socket.gaierror):
        return RawHTTPError("host name not found")
    return RawHTTPError(f"cannot connect ({exc.strerror or exc})")


def _too_big() -> RawHTTPError:
    return RawHTTPError(f"response body too large (over {MAX_BODY_BYTES // 2**20} MiB)")


def _check_length(head: ResponseHead) -> None:
    """Refuse a declared body over the cap before reading any of it."""
    length = head.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _too_big()


# -- the probe's request: asyncio streams, every piece stamped on arrival ----------------------


class _Arrivals(asyncio.Protocol):
    """The probe's socket as (arrival perf_counter_ns, bytes) pieces, stamped by the event loop
    the moment each one is delivered, not when the reading coroutine next runs: tokens that
    arrive while the probe is parsing the previous one keep their own arrival times, so the
    inter-token gaps are the server's and not llmtop's parsing. Reading pauses past
    `_HIGH_WATER` unread bytes (a server cannot fill memory faster than it is read)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._pieces: collections.deque[tuple[int, bytes]] = collections.deque()
        self._queued = 0
        self._paused = False
        self._eof = False
        self._lost: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._pieces.append((time.perf_counter_ns(), data))
        self._queued += len(data)
        if self._queued > _HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._lost = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> tuple[int, bytes]:
        """The next piece and its arrival time; b"" once the server closed its end."""
        while not self._pieces:
            if self._eof:
                if self._lost is not None:
                    raise ConnectionError(str(self._lost))
                return time.perf_counter_ns(), b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        stamp, data = self._pieces.popleft()
        self._queued -= len(data)
        if self._paused and self._queued <= _HIGH_WATER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return stamp, data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class RawResponse:
    """A response whose head has been read; the body is read on demand (`iter_body`)."""

    def __init__(
        self,
        conn: _Arrivals,
        parser: ResponseParser,
        head: ResponseHead,
        read_timeout_s: float,
        head_arrived_ns: int,
    ) -> None:
        self._conn = conn
        self._parser = parser
        self.status = head.status
        self.headers = head.headers  # lower-case names
        self.read_timeout_s = read_timeout_s
        self._arrived_ns = head_arrived_ns  # when the bytes h11 holds now were read

    async def _read(self) -> tuple[int, bytes]:
        try:
            async with asyncio.timeout(self.read_timeout_s):
                return await self._conn.read()
        except TimeoutError:
            raise RawHTTPError(f"timed out after {self.read_timeout_s:.1f} s") from None
        except (ConnectionError, OSError):
            raise RawHTTPError("connection closed by the server") from None

    async def iter_body(self) -> AsyncIterator[tuple[int, bytes]]:
        """(arrival perf_counter_ns, body bytes) as they come, de-chunked.

        The stamp is the event loop's delivery time of the piece, before h11 parses it: the
        probe's TTFT and ITL are these stamps, so parsing cost must not be in them."""
        now = self._arrived_ns  # body bytes that came in the same read as the head
        while True:
            data, done = self._parser.read_body()
            if data:
                yield now, data
            if done:
                return
            now, chunk = await self._read()
            self._parser.feed(chunk)

    async def read_all(self) -> bytes:
        """The whole body (an error answer's, say), refused past `MAX_BODY_BYTES`."""
        parts: list[bytes] = []
        size = 0
        async for _, data in self.iter_body():
            size += len(data)
            if size > MAX_BODY_BYTES:
                raise _too_big()
            parts.append(data)
        return b"".join(parts)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()


async def request(
    method: str,
    url: str,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout_s: float = 60.0,
    connect_timeout_s: float = 5.0,
    on_sent: list[int] | None = None,
) -> RawResponse:
    """Connect, send one request (Connection: close), read the status line and headers.

    `on_sent` gets the perf_counter_ns just before the request is written: the probe's t0."""
    host, port, base, host_header = _target(url)
    parser = ResponseParser()
    wire = parser.start(
        method,
        f"{base}{path}",
        [
            ("Host", host_header),
            ("Connection", "close"),
            *([("Content-Length", str(len(body)))] if body or method == "POST" else []),
            *headers.items(),
        ],
        body,
    )
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(connect_timeout_s):
            transport, conn = await loop.create_connection(_Arrivals, host, port)
    except OSError as exc:  # TimeoutError included
        raise _connect_error(exc, connect_timeout_s) from None
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if on_sent is not None:
            on_sent.append(time.perf_counter_ns())
        transport.write(wire)  # a request is a few hundred bytes: the kernel takes it at once
        async with asyncio.timeout(timeout_s):
            while True:
                arrived, data = await conn.read()
                parser.feed(data)
                if (head := parser.read_head()) is not None:
                    break
    except TimeoutError:
        conn.close()
        raise RawHTTPError(f"timed out after {timeout_s:.1f} s") from None
    except (ConnectionError, OSError):
        conn.close()
        raise RawHTTPError("connection closed by the server") from None
    except BaseException:  # RawHTTPError from the parser, cancellation
        conn.close()
        raise
    return RawResponse(conn, parser, head, timeout_s, arrived)


# -- the dashboard's poll: a few GETs in a row, blocking, in a thread --------------------------

Answer = tuple[int, dict[str, str], bytes, float]  # status, headers, body, monotonic arrival


class Abort:
    """Lets the event loop cut short a `get_sequence` running in a thread (closes its socket)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self.aborted = False

    def _use(self, sock: socket.socket | None) -> None:
        self._sock = sock
        if self.aborted and sock is not None:
            _shut(sock)

    def abort(self) -> None:
        self.aborted = True
        if self._sock is not None:
            _shut(self._sock)


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def get_sequence(
    url: str,
    requests: list[tuple[str, dict[str, str]]],
    *,
    timeout_s: float = 2.0,
    abort: Abort | None = None,
    proceed: Callable[[str, Answer], bool] | None = None,
) -> list[Answer | RawHTTPError]:
    """GET each (path, headers) in turn over one connection; blocking (run it in a thread).

    `proceed(path, answer)`, when given, is asked after each answer: False stops the sequence
    there (the list is then shorter than `requests`). The poll uses it so that a server whose
    /props says it is asleep is asked nothing that would wake it, on the same connection.

    One connection, kept alive between the requests and closed after the last: a tick asks
    /health, /slots and /metrics, and three connections at once would briefly hold three of
    llama-server's few HTTP workers (n_parallel + 2) that real clients need. Blocking socket code
    in one thread also costs a fraction of the CPU of three asyncio connections, and the idle
    dashboard's budget is 1 % of a core. Each request has `timeout_s` of its own; one that
    fails is reported and the next goes over a new connection. A kept-alive connection the
    server dropped before answering is asked once more over a new one (GET is safe to repeat).
    When the first request cannot reach the server at all, the others are not tried (they get
    the same error)."""
    host, port, base, host_header = _target(url)
    out: list[Answer | RawHTTPError] = []
    conn: _Conn | None = None
    try:
        for i, (path, headers) in enumerate(requests):
            last = i == len(requests) - 1
            fields = [("Host", host_header)]
            if last:
                fields.append(("Connection", "close"))
            fields.extend(headers.items())
            answer: Answer | RawHTTPError
            for attempt in (0, 1):
                reused = conn is not None
                try:
                    if conn is None:
                        conn = _Conn(host, port, timeout_s, abort)
                    answer = conn.exchange(f"{base}{path}", fields, timeout_s)
                except _StaleConnection:
                    if conn is not None:
                        conn.close()
                    conn = None
                    if attempt == 0 and reused:
                        continue  # the server closed an idle kept-alive connection: once more
                    answer = RawHTTPError("connection closed by the server")
                except RawHTTPError as exc:
                    answer = exc
                break
            if isinstance(answer, RawHTTPError):
                if conn is not None:
                    conn.close()
                    conn = None
                if abort is not None and abort.aborted:
                    answer = RawHTTPError("cancelled")
                out.append(answer)
                if i == 0:
                    out.extend(answer for _ in requests[1:])
                    return out
                continue
            out.append(answer)
            if conn is not None and not conn.keep_alive:
                conn.close()
                conn = None
            if proceed is not None and not last and not proceed(path, answer):
                break
    finally:
        if conn is not None:
            conn.close()
    return out


class _StaleConnection(Exception):
    """A reused connection closed before any answer came (safe to send again: GET)."""


class _Conn:
    """One blocking socket and the h11 state of the HTTP connection over it."""

    def __init__(self, host: str, port: int, timeout_s: float, abort: Abort | None) -> None:
        self.abort = abort
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as exc:  # TimeoutError included
            raise _connect_error(exc, timeout_s) from None
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if abort is not None:
            abort._use(self.sock)
        self.parser = ResponseParser()
        self.keep_alive = True
        self._used = False

    def close(self) -> None:
        if self.abort is not None:
            self.abort._use(None)
        with contextlib.suppress(OSError):
            self.sock.close()

    def _fill(self, deadline: float, timeout_s: float, fresh: bool) -> None:
        """Read more into the parser (b"" at end of stream); `fresh`: nothing of this answer
        has come yet, so a close now means a stale kept-alive connection."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise RawHTTPError(f"timed out after {timeout_s:.1f} s")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(_RECV)
        except TimeoutError:
            raise RawHTTPError(f"timed out after {timeout_s:.1f} s") from None
        except ConnectionResetError:
            if fresh:
                raise _StaleConnection from None
            raise RawHTTPError("connection closed by the server") from None
        except OSError:
            raise RawHTTPError("connection closed by the server") from None
        if not data and fresh:
            raise _StaleConnection
        self.parser.feed(data)

    def exchange(self, target: str, fields: list[tuple[str, str]], timeout_s: float) -> Answer:
        """One GET and its whole answer, within `timeout_s`; the body at most MAX_BODY_BYTES."""
        deadline = time.monotonic() + timeout_s
        if self._used:
            self.parser.next_cycle()
        reused, self._used = self._used, True
        wire = self.parser.start("GET", target, fields)
        try:
            self.sock.settimeout(timeout_s)
            self.sock.sendall(wire)
        except TimeoutError:
            raise RawHTTPError(f"timed out after {timeout_s:.1f} s") from None
        except OSError:
            if reused:
                raise _StaleConnection from None
            raise RawHTTPError("connection closed by the server") from None
        if not self.parser.buffered:  # read first: asking h11 now would only say NEED_DATA
            self._fill(deadline, timeout_s, fresh=reused)
        while (head := self.parser.read_head()) is None:
            self._fill(deadline, timeout_s, fresh=False)
        _check_length(head)
        parts: list[bytes] = []
        size = 0
        while True:
            data, done = self.parser.read_body()
            if data:
                size += len(data)
                if size > MAX_BODY_BYTES:
                    raise _too_big()
                parts.append(data)
            if done:
                break
            self._fill(deadline, timeout_s, fresh=False)
        self.keep_alive = self.parser.reusable
        return head.status, head.headers, b"".join(parts), time.monotonic()
