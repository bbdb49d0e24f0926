"""raw_http against a scripted loopback server: what a broken or hostile HTTP server can send.

The real llama-server (tests/test_llama_http.py, test_probe.py, test_faults.py) only ever sends
well-formed answers; the faults here (bad status lines and chunk sizes, endless headers, bodies
cut short or too big, kept-alive connections dropped) come from a tiny socket server in this
file that answers each request with bytes the test chose. It listens on 127.0.0.1 only and is
torn down by its context manager even when a test fails. Property tests (hypothesis) feed random
and mutated responses both to the parser seam and through that server: the only outcomes allowed
are a valid response or a RawHTTPError with words, never another exception and never a hang.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmtop.sources import raw_http
from llmtop.sources.raw_http import (
    MAX_BODY_BYTES,
    MAX_HEAD_BYTES,
    Abort,
    RawHTTPError,
    ResponseParser,
    get_sequence,
    request,
)
from tests.realserver import free_port

WAIT_S = 10.0  # generous bound for conditions that should hold at once

Then = Literal["keep", "close", "hang", "reset"]
Sender = Callable[[socket.socket, threading.Event], None]


@dataclass
class Reply:
    """What the server answers one request with: bytes (or a function that writes), then what
    it does with the connection: keep it for the next request, close it, hang (hold it open
    and say nothing more) or reset it (RST, no FIN) once the next request has come, unanswered."""

    data: bytes | Sender
    then: Then = "keep"


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


@dataclass
class LoopServer:
    """Answers the n-th request (over all connections) with replies[n], then `default`."""

    replies: list[Reply]
    default: Reply = field(default_factory=lambda: Reply(ok()))
    requests: list[tuple[int, bytes]] = field(default_factory=list)  # (connection no., head)
    connections: int = 0
    got_request: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _next_reply(self, conn_no: int, head: bytes) -> Reply:
        with self._lock:
            n = len(self.requests)
            self.requests.append((conn_no, head))
            self.got_request.set()
        return self.replies[n] if n < len(self.replies) else self.default

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # listener closed: the server stops
            with self._lock:
                self.connections += 1
                conn_no = self.connections
                self._socks.append(sock)
            t = threading.Thread(target=self._serve, args=(sock, conn_no), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, sock: socket.socket, conn_no: int) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                reply = self._next_reply(conn_no, head)
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        need = int(line.split(b":", 1)[1])
                        while len(buf) < need:
                            data = sock.recv(65536)
                            if not data:
                                return
                            buf += data
                        buf = buf[need:]
                if isinstance(reply.data, bytes):
                    sock.sendall(reply.data)
                else:
                    reply.data(sock, self._stop)
                if reply.then == "close":
                    return
                if reply.then == "hang":
                    self._stop.wait()
                    return
                if reply.then == "reset":
                    sock.recv(65536)  # the next request: the answer above was read whole
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                    return
        except OSError:
            return  # the client went away mid-answer (or the test is tearing down)
        finally:
            sock.close()

    @contextmanager
    def running(self) -> Iterator[LoopServer]:
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
            self._listener.close()
            accept.join(WAIT_S)
            with self._lock:
                for sock in self._socks:
                    with suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            for t in self._threads:
                t.join(WAIT_S)
            assert not accept.is_alive() and not any(t.is_alive() for t in self._threads)


@contextmanager
def serve(*replies: Reply, default: Reply | None = None) -> Iterator[LoopServer]:
    srv = LoopServer(list(replies)) if default is None else LoopServer(list(replies), default)
    with srv.running():
        yield srv


def only_error(answers: list[raw_http.Answer | RawHTTPError]) -> str:
    (answer,) = answers
    assert isinstance(answer, RawHTTPError), answer
    return str(answer)


async def probe_body(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """One request() as the probe makes it: status and the whole body."""
    r = await request("POST", url, "/completion", b"{}", {}, timeout_s=timeout_s)
    try:
        return r.status, await r.read_all()
    finally:
        r.close()


async def probe_error(url: str, timeout_s: float = 2.0) -> str:
    with pytest.raises(RawHTTPError) as info:
        await probe_body(url, timeout_s)
    return str(info.value)


# -- malformed answers, one by one -----------------------------------------------------------


@pytest.mark.parametrize(
    "status_line",
    [
        b"HTTP/1.1 abc OK",
        b"HTTP/1.1",
        b"HTTP/9 200 OK",
        b"SSH-2.0-OpenSSH_9.6",
        b"HTTP/1.1 2000 OK",
    ],
)
async def test_bad_status_line_is_malformed_in_words(status_line: bytes) -> None:
    wire = status_line + b"\r\nContent-Length: 0\r\n\r\n"
    with serve(Reply(wire, "close"), Reply(wire, "close")) as srv:
        words = only_error(get_sequence(srv.url, [("/health", {})]))
        assert words.startswith("malformed HTTP response"), words
        assert (await probe_error(srv.url)).startswith("malformed HTTP response")


@pytest.mark.parametrize(
    "chunks",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"-3\r\nabc\r\n0\r\n\r\n", b"1" * 30 + b"\r\nabc\r\n",
     b"3\r\nabcXY0\r\n\r\n", b"3 4\r\nabc\r\n0\r\n\r\n"],
)  # fmt: skip
async def test_bad_chunk_sizes_are_malformed_in_words(chunks: bytes) -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
    with serve(Reply(wire, "close"), Reply(wire, "close")) as srv:
        words = only_error(get_sequence(srv.url, [("/metrics", {})]))
        assert words.startswith("malformed HTTP response"), words
        assert (await probe_error(srv.url)).startswith("malformed HTTP response")


def test_interim_answers_are_skipped_but_not_forever() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    with serve(Reply(interim * 3 + ok(b"real")), Reply(interim * 1000, "hang")) as srv:
        (first,) = get_sequence(srv.url, [("/health", {})])
        (second,) = get_sequence(srv.url, [("/health", {})], timeout_s=60.0)
    assert isinstance(first, tuple) and first[:1] == (200,) and first[2] == b"real"
    assert str(second) == "malformed HTTP response (endless 1xx interim answers)"


def endless_headers(sock: socket.socket, stop: threading.Event) -> None:
    """A head that never ends: header lines until the client gives up (or 64 × the cap)."""
    sock.sendall(b"HTTP/1.1 200 OK\r\n")
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    for _ in range(64 * MAX_HEAD_BYTES // len(line)):
        if stop.is_set():
            return
        sock.sendall(line)


async def test_oversized_headers_are_refused_before_the_timeout() -> None:
    """The head is capped (h11's max_incomplete_event_size): a server that streams header
    lines forever is refused when the cap is passed, not when the timeout ends."""
    huge = b"HTTP/1.1 200 OK\r\nX-Big: " + b"b" * (2 * MAX_HEAD_BYTES) + b"\r\n\r\n"
    with serve(Reply(endless_headers, "hang"), Reply(huge, "close")) as srv:
        started = time.monotonic()
        words = only_error(get_sequence(srv.url, [("/slots", {})], timeout_s=60.0))
        assert words == "response headers too large (over 64 KiB)"
        assert (await probe_error(srv.url, timeout_s=60.0)) == words
        assert time.monotonic() - started < WAIT_S  # nowhere near the 60 s timeouts


@given(st.lists(st.integers(min_value=0), max_size=6), st.booleans())
def test_the_head_cap_holds_however_the_head_arrives(cuts: list[int], over: bool) -> None:
    """A head over MAX_HEAD_BYTES is refused whether it comes in one read or many (h11 caps only
    an incomplete head: one read of the whole head used to pass, so a test of the cap flaked
    with the socket's read sizes); one just under it is taken, with the body after it."""
    value = b"b" * (MAX_HEAD_BYTES + (10 if over else -200))
    wire = b"HTTP/1.1 200 OK\r\nX-Big: " + value + b"\r\nContent-Length: 2\r\n\r\nok"
    if over:
        with pytest.raises(RawHTTPError, match="response headers too large"):
            parse(split(wire, cuts))
    else:
        assert parse(split(wire, cuts)) == (200, b"ok")


def test_oversized_chunk_header_is_refused() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;" + b"e" * (2 * MAX_HEAD_BYTES)
    with serve(Reply(wire, "hang")) as srv:
        words = only_error(get_sequence(srv.url, [("/slots", {})], timeout_s=60.0))
    assert words == "a chunk header too large (over 64 KiB)"


def endless_chunks(sock: socket.socket, stop: threading.Event) -> None:
    """A chunked body that never ends (until the client closes, or 4 × the body cap)."""
    sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"c" * 0x10000 + b"\r\n"
    for _ in range(4 * MAX_BODY_BYTES // 0x10000):
        if stop.is_set():
            return
        sock.sendall(chunk)


def test_poll_body_is_capped_declared_or_streamed() -> None:
    declared = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nxx" % (MAX_BODY_BYTES + 1)
    with serve(Reply(declared, "hang"), Reply(endless_chunks, "hang")) as srv:
        first = only_error(get_sequence(srv.url, [("/metrics", {})], timeout_s=60.0))
        second = only_error(get_sequence(srv.url, [("/metrics", {})], timeout_s=60.0))
    assert first == second == "response body too large (over 8 MiB)"


async def test_probe_error_body_is_capped_but_the_stream_is_not() -> None:
    """read_all (an error answer's body) is capped; iter_body (the token stream) is not: it
    is consumed piece by piece and never held whole."""
    with serve(Reply(endless_chunks, "hang"), Reply(endless_chunks, "hang")) as srv:
        assert await probe_error(srv.url, timeout_s=60.0) == "response body too large (over 8 MiB)"
        r = await request("POST", srv.url, "/completion", b"{}", {}, timeout_s=60.0)
        seen = 0
        try:
            async for _, data in r.iter_body():
                seen += len(data)
                if seen > MAX_BODY_BYTES + 0x10000:
                    break
        finally:
            r.close()
    assert seen > MAX_BODY_BYTES


@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n8\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
    ids=["content-length", "mid-chunk", "no-last-chunk", "mid-head"],
)
async def test_truncated_answer_is_connection_closed(wire: bytes) -> None:
    with serve(Reply(wire, "close"), Reply(wire, "close")) as srv:
        words = only_error(get_sequence(srv.url, [("/props", {})]))
        assert words == "connection closed by the server"
        assert await probe_error(srv.url) == "connection closed by the server"


async def test_answer_running_to_the_close_is_whole() -> None:
    """No length and not chunked (HTTP/1.0 style): the body is whatever comes before the close,
    and the connection is not used again."""
    old = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    with serve(Reply(old, "close"), Reply(ok(b"second")), Reply(old, "close")) as srv:
        answers = get_sequence(srv.url, [("/health", {}), ("/slots", {})])
        assert [a[2] for a in answers if not isinstance(a, RawHTTPError)] == [
            b"until the end",
            b"second",
        ]
        assert srv.connections == 2
        assert await probe_body(srv.url) == (200, b"until the end")


def test_refused_and_timed_out_in_words() -> None:
    (refused,) = get_sequence(f"http://127.0.0.1:{free_port()}", [("/health", {})])
    assert str(refused) == "connection refused"
    with serve(Reply(b"", "hang")) as srv:
        answers = get_sequence(srv.url, [("/health", {}), ("/slots", {})], timeout_s=0.2)
    assert [str(a) for a in answers] == ["timed out after 0.2 s"] * 2  # first fails: all do


def test_header_a_server_could_not_parse_is_refused_without_quoting_it() -> None:
    with serve() as srv:
        (answer,) = get_sequence(srv.url, [("/slots", {"Authorization": "Bearer s3cret\r\nX: 1"})])
        assert isinstance(answer, RawHTTPError) and "s3cret" not in str(answer)
        assert str(answer).startswith("invalid request")
        assert srv.requests == []  # nothing went out


# -- the poll's kept-alive connection ----------------------------------------------------------


def test_keep_alive_one_connection_per_call_across_calls() -> None:
    """Each get_sequence asks everything over one connection, says Connection: close on its
    last request only, and leaves nothing behind for the next call."""
    paths = [("/health", {}), ("/slots", {"Authorization": "Bearer k"}), ("/metrics", {})]
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    script = [Reply(ok(b"h1")), Reply(chunked), Reply(ok(b"m1"), "close")]
    script += [Reply(ok(b"h2")), Reply(chunked), Reply(ok(b"m2"), "close")]
    with serve(*script) as srv:
        first = get_sequence(srv.url, paths)
        second = get_sequence(srv.url, paths)
    bodies = [[a[2] for a in r if not isinstance(a, RawHTTPError)] for r in (first, second)]
    assert bodies == [[b"h1", b"abc", b"m1"], [b"h2", b"abc", b"m2"]]
    assert srv.connections == 2
    assert [conn for conn, _ in srv.requests] == [1, 1, 1, 2, 2, 2]
    closes = [b"\r\nConnection: close" in head for _, head in srv.requests]
    assert closes == [False, False, True] * 2
    assert b"Authorization: Bearer k" in srv.requests[1][1]
    assert srv.requests[0][1].startswith(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1:")


@pytest.mark.parametrize("then", ["close", "reset"])
def test_dropped_kept_alive_connection_is_asked_again_once(then: Then) -> None:
    """A server that drops the kept-alive connection after an answer (FIN or RST, without
    saying Connection: close) has the next request asked again over a new connection."""
    with serve(Reply(ok(b"one"), then), Reply(ok(b"two"))) as srv:
        answers = get_sequence(srv.url, [("/health", {}), ("/slots", {})])
    assert [a[2] for a in answers if not isinstance(a, RawHTTPError)] == [b"one", b"two"]
    assert [conn for conn, _ in srv.requests] == [1, 2]


def test_a_new_connection_closed_at_once_is_not_retried() -> None:
    with serve(Reply(ok(b"one"), "close"), Reply(b"", "close"), Reply(ok(b"three"))) as srv:
        answers = get_sequence(srv.url, [("/health", {}), ("/slots", {}), ("/metrics", {})])
    assert isinstance(answers[0], tuple) and str(answers[1]) == "connection closed by the server"
    assert isinstance(answers[2], tuple) and answers[2][2] == b"three"
    assert [conn for conn, _ in srv.requests] == [1, 2, 3]


def test_abort_ends_a_hung_poll_at_once() -> None:
    abort = Abort()
    out: list[list[raw_http.Answer | RawHTTPError]] = []
    with serve(Reply(b"", "hang")) as srv:
        t = threading.Thread(
            target=lambda: out.append(
                get_sequence(srv.url, [("/health", {})], timeout_s=60.0, abort=abort)
            )
        )
        started = time.monotonic()
        t.start()
        assert srv.got_request.wait(WAIT_S)
        abort.abort()
        t.join(WAIT_S)
        assert not t.is_alive()
    assert [str(a) for a in out[0]] == ["cancelled"]
    assert time.monotonic() - started < WAIT_S


# -- the probe's request: pieces stamped when they arrive --------------------------------------


async def test_probe_pieces_are_stamped_on_arrival() -> None:
    """Each body piece carries the perf_counter_ns of its read: a piece the server holds back
    until the test says so is stamped after that moment, the one before it before."""
    release = threading.Event()

    def slow(sock: socket.socket, stop: threading.Event) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        release.wait(WAIT_S)
        sock.sendall(b"6\r\nsecond\r\n0\r\n\r\n")

    with serve(Reply(slow, "close")) as srv:
        sent: list[int] = []
        r = await request("POST", srv.url, "/completion", b"{}", {}, on_sent=sent)
        before: list[tuple[int, bytes]] = []  # pieces read before the release
        after: list[tuple[int, bytes]] = []
        released_at = 0
        try:
            async for stamp, data in r.iter_body():
                (after if release.is_set() else before).append((stamp, data))
                if b"".join(d for _, d in before) == b"first" and not release.is_set():
                    released_at = time.perf_counter_ns()
                    release.set()
        finally:
            r.close()
    assert b"".join(d for _, d in before) == b"first"
    assert b"".join(d for _, d in after) == b"second"
    assert sent[0] < before[0][0] <= before[-1][0] < released_at < after[0][0]
    assert r.status == 200 and r.headers["transfer-encoding"] == "chunked"


async def test_pieces_keep_their_arrival_while_the_reader_is_busy() -> None:
    """Token events that arrive while the probe is still busy with the previous one keep their
    own arrival times (the event loop stamps each delivery), so the inter-token gaps are the
    server's and not the reader's: the reader blocks 0.3 s after the first piece while the
    server sends the second 0.15 s later; its stamp is the send time, not the reader's."""
    sent_second = threading.Event()
    second_at: list[int] = []

    def paced(sock: socket.socket, stop: threading.Event) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        time.sleep(0.15)
        second_at.append(time.perf_counter_ns())
        sock.sendall(b"6\r\nsecond\r\n")
        sent_second.set()
        time.sleep(0.05)
        sock.sendall(b"0\r\n\r\n")

    with serve(Reply(paced, "close")) as srv:
        r = await request("POST", srv.url, "/completion", b"{}", {})
        pieces: list[tuple[int, bytes]] = []
        try:
            async for stamp, data in r.iter_body():
                pieces.append((stamp, data))
                if data == b"first":
                    # busy, the event loop free: the second piece is delivered meanwhile
                    await asyncio.sleep(0.3)
                    assert sent_second.is_set()
        finally:
            r.close()
    stamps = dict((d, t) for t, d in pieces)
    assert set(stamps) == {b"first", b"second"}
    gap_ms = (stamps[b"second"] - stamps[b"first"]) / 1e6
    assert 100 < gap_ms < 280, gap_ms  # ~150 ms as sent, not the reader's 300 ms
    assert stamps[b"second"] >= second_at[0]


# -- properties: random and mutated answers ----------------------------------------------------

NAME = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"))
SAFE = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E))
STATUSES = st.sampled_from([200, 201, 400, 401, 404, 500, 501, 503])


@st.composite
def responses(draw: st.DrawFn) -> tuple[bytes, int, bytes, str]:
    """(wire bytes, status, body, framing) of a valid response."""
    status = draw(STATUSES)
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    headers = draw(st.lists(st.tuples(NAME.map(lambda s: "X-" + s), SAFE), max_size=4))
    head = [f"HTTP/1.{0 if framing == 'close' else 1} {status} Reason"]
    head += [f"{k}: {v}" for k, v in headers]
    if framing == "length":
        payload = body
        head.append(f"Content-Length: {len(body)}")
    elif framing == "chunked":
        head.append("Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=5)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    else:
        payload = body
    wire = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
    return wire, status, body, framing


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid response with a few bytes flipped, inserted, deleted, or cut off the end."""
    wire = bytearray(draw(responses())[0])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(wire) - 1)))
        if op == "flip" and wire:
            wire[at] = draw(st.integers(0, 255))
        elif op == "insert":
            wire[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del wire[at : at + draw(st.integers(1, 8))]
        else:
            del wire[at:]
    return bytes(wire)


def parse(pieces: list[bytes]) -> tuple[int, bytes]:
    """Feed a response to the parser seam piece by piece, then the end of stream."""
    p = ResponseParser()
    p.start("GET", "/slots", [("Host", "x")])
    body = b""
    head = None
    for piece in [*pieces, b""]:
        p.feed(piece)
        if head is None:
            head = p.read_head()
            if head is None:
                continue
        data, done = p.read_body()
        body += data
        if done:
            break
    assert head is not None and done, "ended without an answer or an error"
    return head.status, body


def split(wire: bytes, cuts: list[int]) -> list[bytes]:
    cuts = sorted({c % (len(wire) + 1) for c in cuts})
    pieces = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    return [p for p in pieces if p]  # an empty piece would say "end of stream"


def assert_answer_or_words(run: Callable[[], object]) -> None:
    try:
        run()
    except RawHTTPError as exc:
        assert str(exc).strip(), "a RawHTTPError without words"


PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(responses(), st.lists(st.integers(0, 10_000), max_size=6))
def test_valid_answers_parse_whole_however_they_are_split(
    case: tuple[bytes, int, bytes, str], cuts: list[int]
) -> None:
    wire, status, body, _ = case
    assert parse(split(wire, cuts)) == (status, body)


@PROPS
@given(st.one_of(mutated(), st.binary(max_size=400)), st.lists(st.integers(0, 10_000), max_size=4))
def test_mutated_or_random_bytes_give_an_answer_or_words(wire: bytes, cuts: list[int]) -> None:
    assert_answer_or_words(lambda: parse(split(wire, cuts)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated(), st.binary(max_size=400)))
def test_served_mutated_answers_give_answers_or_words_never_a_hang(wire: bytes) -> None:
    """Through real sockets, both forms: the server sends the bytes and closes, so every
    outcome must come at once; a timeout would mean the client missed the end of the stream."""
    with serve(default=Reply(wire, "close")) as srv:
        answers = get_sequence(srv.url, [("/health", {}), ("/slots", {})], timeout_s=3.0)
        for a in answers:
            if isinstance(a, RawHTTPError):
                assert str(a).strip() and not str(a).startswith("timed out"), str(a)
            else:
                assert 100 <= a[0] <= 999 and isinstance(a[2], bytes)

        async def probe() -> None:
            try:
                await probe_body(srv.url, timeout_s=3.0)
            except RawHTTPError as exc:
                assert str(exc).strip() and not str(exc).startswith("timed out"), str(exc)

        asyncio.run(asyncio.wait_for(probe(), WAIT_S))
