"""A minimal HTTP/1.1 client on asyncio streams, for timing streamed responses precisely.

The latency probe measures milliseconds; a full HTTP client adds about that much of its own per
request on a slow CPU. This one writes the request in one call and hands back the body as it
arrives (chunked or Content-Length), each piece stamped with `time.perf_counter_ns()` at the
moment it was read. Plain http:// only (https goes through httpx). Used by the probe (POST,
streamed) and by LlamaClient (GET, Connection: close).
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


async def get(
    url: str, path: str, headers: dict[str, str], *, timeout_s: float = 2.0
) -> tuple[int, dict[str, str], bytes, float]:
    """GET the whole answer within `timeout_s`: (status, headers, body, monotonic arrival)."""
    try:
        async with asyncio.timeout(timeout_s):
            r = await request(
                "GET", url, path, b"", headers, timeout_s=timeout_s, connect_timeout_s=timeout_s
            )
            try:
                body = await r.read_all()
            finally:
                r.close()
    except TimeoutError:
        raise RawHTTPError(f"timed out after {timeout_s:.1f} s") from None
    return r.status, r.headers, body, time.monotonic()


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
    except TimeoutError:
        raise RawHTTPError(f"timed out after {connect_timeout_s:.1f} s") from None
    except ConnectionRefusedError:
        raise RawHTTPError("connection refused") from None
    except socket.gaierror:
        raise RawHTTPError("host name not found") from None
    except OSError as exc:
        raise RawHTTPError(f"cannot connect ({exc.strerror or exc})") from None
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
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        writer.close()
        raise RawHTTPError(f"malformed HTTP status line {status_line[:60]!r}") from None
    hdrs: dict[str, str] = {}
    for line in header_lines:
        if ":" in line:
            k, v = line.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
    return RawResponse(reader, writer, status, hdrs, timeout_s)
