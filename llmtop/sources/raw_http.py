"""A minimal HTTP/1.1 client for plain http:// (https goes through httpx), in two forms.

- `request()`, on asyncio streams, for the latency probe: it measures milliseconds, and a full
  HTTP client adds about that much of its own per request on a slow CPU. It writes the request in
  one call and hands back the body as it arrives (chunked or Content-Length), each piece stamped
  with `time.perf_counter_ns()` at the moment it was read (Connection: close).
- `get_sequence()`, blocking, for the dashboard's poll: a tick's GETs in a row over one
  connection, run in a worker thread (see its docstring for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit


class RawHTTPError(Exception):
    """A transport failure, in words ("connection refused", "timed out after 2.0 s" …)."""


class RawResponse:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str],
        read_timeout_s: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.status = status
        self.headers = headers  # lower-case names
        self.read_timeout_s = read_timeout_s

    async def _read(self, n: int = 65536) -> bytes:
        try:
            async with asyncio.timeout(self.read_timeout_s):
                return await self._reader.read(n)
        except TimeoutError:
            raise RawHTTPError(f"timed out after {self.read_timeout_s:.1f} s") from None
        except (ConnectionError, OSError):
            raise RawHTTPError("connection closed by the server") from None

    async def iter_body(self) -> AsyncIterator[tuple[int, bytes]]:
        """(arrival perf_counter_ns, body bytes) as they come, de-chunked."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            async for item in self._iter_chunked():
                yield item
            return
        length = self.headers.get("content-length")
        remaining = int(length) if length and length.isdigit() else None
        while remaining is None or remaining > 0:
            data = await self._read(65536 if remaining is None else min(65536, remaining))
            now = time.perf_counter_ns()
            if not data:
                if remaining:
                    raise RawHTTPError("connection closed by the server")
                return
            if remaining is not None:
                remaining -= len(data)
            yield now, data

    async def _iter_chunked(self) -> AsyncIterator[tuple[int, bytes]]:
        buf = bytearray()
        while True:
            data = await self._read()
            now = time.perf_counter_ns()
            if not data:
                raise RawHTTPError("connection closed by the server")
            buf += data
            out = bytearray()
            while True:
                eol = buf.find(b"\r\n")
                if eol < 0:
                    break
                try:
                    size = int(bytes(buf[:eol]).split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    raise RawHTTPError("malformed chunked encoding") from None
                if size == 0:
                    if out:
                        yield now, bytes(out)
                    return
                if len(buf) < eol + 2 + size + 2:
                    break  # wait for the rest of this chunk
                out += buf[eol + 2 : eol + 2 + size]
                del buf[: eol + 2 + size + 2]
            if out:
                yield now, bytes(out)

    async def read_all(self) -> bytes:
        parts = [data async for _, data in self.iter_body()]
        return b"".join(parts)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._writer.close()


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
    """Connect, send one request (Connection: close), read the status line and headers."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    base = parts.path.rstrip("/")
    try:
        async with asyncio.timeout(connect_timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:  # TimeoutError included
        raise _connect_error(exc, connect_timeout_s) from None
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    host_header = f"{host}:{port}" if parts.port else host
    lines = [
        f"{method} {base}{path} HTTP/1.1",
        f"Host: {host_header}",
        "Connection: close",
        *([f"Content-Length: {len(body)}"] if body or method == "POST" else []),
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    try:
        if on_sent is not None:
            on_sent.append(time.perf_counter_ns())
        writer.write(request)
        async with asyncio.timeout(timeout_s):
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
    except TimeoutError:
        writer.close()
        raise RawHTTPError(f"timed out after {timeout_s:.1f} s") from None
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        writer.close()
        raise RawHTTPError("connection closed by the server") from None
    except asyncio.LimitOverrunError:
        writer.close()
        raise RawHTTPError("response headers too large") from None
    except BaseException:
        writer.close()
        raise
    try:
        _version, status, hdrs = _parse_head(head.decode("latin-1"))
    except RawHTTPError:
        writer.close()
        raise
    return RawResponse(reader, writer, status, hdrs, timeout_s)


def _connect_error(exc: OSError, timeout_s: float) -> RawHTTPError:
    """Why a connection could not be made, in words."""
    if isinstance(exc, TimeoutError):
        return RawHTTPError(f"timed out after {timeout_s:.1f} s")
    if isinstance(exc, ConnectionRefusedError):
        return RawHTTPError("connection refused")
    if isinstance(exc, socket.gaierror):
        return RawHTTPError("host name not found")
    return RawHTTPError(f"cannot connect ({exc.strerror or exc})")


def _parse_head(head: str) -> tuple[str, int, dict[str, str]]:
    """(HTTP version, status, lower-case headers) of a response head without its blank line."""
    status_line, *header_lines = head.split("\r\n")
    try:
        version, code = status_line.split()[:2]
        status = int(code)
    except ValueError:
        raise RawHTTPError(f"malformed HTTP status line {status_line[:60]!r}") from None
    hdrs: dict[str, str] = {}
    for line in header_lines:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return version, status, hdrs


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
) -> list[Answer | RawHTTPError]:
    """GET each (path, headers) in turn over one connection; blocking (run it in a thread).

    One connection, kept alive between the requests and closed after the last: a tick asks
    /health, /slots and /metrics, and three connections at once would briefly hold three of
    llama-server's few HTTP workers (n_parallel + 2) that real clients need. Blocking socket code
    in one thread also costs a fraction of the CPU of three asyncio connections, and the idle
    dashboard's budget is 1 % of a core. Each request has `timeout_s` of its own; one that
    fails is reported and the next goes over a new connection. When the first request cannot
    reach the server at all, the others are not tried (they get the same error)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    base = parts.path.rstrip("/")
    host_header = f"{host}:{port}" if parts.port else host
    out: list[Answer | RawHTTPError] = []
    conn: _Conn | None = None
    try:
        for i, (path, headers) in enumerate(requests):
            last = i == len(requests) - 1
            head = [f"GET {base}{path} HTTP/1.1", f"Host: {host_header}"]
            if last:
                head.append("Connection: close")
            head.extend(f"{k}: {v}" for k, v in headers.items())
            wire = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
            answer: Answer | RawHTTPError
            for attempt in (0, 1):
                reused = conn is not None
                try:
                    if conn is None:
                        conn = _Conn(host, port, timeout_s, abort)
                    answer = conn.exchange(wire, timeout_s)
                except _StaleConnection:
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
    finally:
        if conn is not None:
            conn.close()
    return out


class _StaleConnection(Exception):
    """A reused connection closed before any answer came (safe to send again: GET)."""


class _Conn:
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
        self.buf = bytearray()
        self.keep_alive = True

    def close(self) -> None:
        if self.abort is not None:
            self.abort._use(None)
        with contextlib.suppress(OSError):
            self.sock.close()

    def _fill(self, deadline: float, timeout_s: float) -> bool:
        """Read more into the buffer; False at end of stream."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise RawHTTPError(f"timed out after {timeout_s:.1f} s")
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise RawHTTPError(f"timed out after {timeout_s:.1f} s") from None
        except OSError:
            raise RawHTTPError("connection closed by the server") from None
        self.buf += data
        return bool(data)

    def exchange(self, wire: bytes, timeout_s: float) -> Answer:
        deadline = time.monotonic() + timeout_s
        fresh = not self.buf
        try:
            self.sock.settimeout(timeout_s)
            self.sock.sendall(wire)
        except TimeoutError:
            raise RawHTTPError(f"timed out after {timeout_s:.1f} s") from None
        except OSError:
            raise _StaleConnection from None
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            if len(self.buf) > 65536:
                raise RawHTTPError("response headers too large")
            if not self._fill(deadline, timeout_s):
                if fresh and not self.buf:
                    raise _StaleConnection
                raise RawHTTPError("connection closed by the server")
        version, status, hdrs = _parse_head(bytes(self.buf[:end]).decode("latin-1"))
        del self.buf[: end + 4]
        connection = hdrs.get("connection", "").lower()
        self.keep_alive = connection != "close" and (
            version != "HTTP/1.0" or connection == "keep-alive"
        )
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            body = self._chunked(deadline, timeout_s)
        elif (length := hdrs.get("content-length", "")).isdigit():
            n = int(length)
            while len(self.buf) < n:
                if not self._fill(deadline, timeout_s):
                    raise RawHTTPError("connection closed by the server")
            body = bytes(self.buf[:n])
            del self.buf[:n]
        else:  # the body runs to the end of the connection
            while self._fill(deadline, timeout_s):
                pass
            body = bytes(self.buf)
            self.buf.clear()
            self.keep_alive = False
        return status, hdrs, body, time.monotonic()

    def _chunked(self, deadline: float, timeout_s: float) -> bytes:
        out = bytearray()
        while True:
            while (eol := self.buf.find(b"\r\n")) < 0:
                if not self._fill(deadline, timeout_s):
                    raise RawHTTPError("connection closed by the server")
            try:
                size = int(bytes(self.buf[:eol]).split(b";", 1)[0].strip() or b"0", 16)
            except ValueError:
                raise RawHTTPError("malformed chunked encoding") from None
            while len(self.buf) < eol + 2 + size + 2:
                if not self._fill(deadline, timeout_s):
                    raise RawHTTPError("connection closed by the server")
            if size == 0:
                # the last chunk; trailers (none from llama-server) end with an empty line
                del self.buf[: eol + 2]
                while (t := self.buf.find(b"\r\n")) != 0:
                    if t > 0:
                        del self.buf[: t + 2]
                    elif not self._fill(deadline, timeout_s):
                        break
                else:
                    del self.buf[:2]
                return bytes(out)
            out += self.buf[eol + 2 : eol + 2 + size]
            del self.buf[: eol + 2 + size + 2]
