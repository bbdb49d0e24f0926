"""A fault-injecting HTTP proxy in front of a real llama-server — ONLY for the faults a real
llama-server cannot produce on demand: a server that accepts the connection and never answers
(hang), a 200 whose body is malformed JSON, an HTTP 500, and a kept-alive connection closed
right after an answer (drop: cpp-httplib does that only after its keep-alive count or idle
timeout, never on demand). Everything else (unreachable,
SIGKILL, 503 while loading, 401 wrong key, 501 for --no-slots or /metrics without --metrics,
restart) is tested against the real llama-server itself.

With `fault=None` every request is forwarded to the upstream (real) server unchanged, so the same
URL shows recovery when the fault is cleared. Listens on 127.0.0.1, ephemeral port, in a thread.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

import httpx

Fault = Literal["hang", "malformed", "500", "drop"]

HOP_HEADERS = {
    "connection",
    "transfer-encoding",
    "content-length",
    "keep-alive",
    "content-encoding",
}


class FaultServer:
    def __init__(
        self,
        upstream: str | None = None,
        fault: Fault | None = None,
        paths: set[str] | None = None,
    ) -> None:
        """`paths`: only these paths get the fault (None = every path)."""
        self.upstream = upstream.rstrip("/") if upstream else None
        self.fault: Fault | None = fault
        self.paths = paths
        self.requests: list[str] = []  # "GET /path", in arrival order
        self.request_times: list[float] = []  # time.monotonic() of each, same order
        self._release = threading.Event()
        self._http = httpx.Client(timeout=30.0, trust_env=False)  # shared by handler threads
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                outer._handle(self, "POST")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = int(self._httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # let hanging handlers go
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
        self._http.close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_fault(self, fault: Fault | None, paths: set[str] | None = None) -> None:
        self.fault, self.paths = fault, paths

    # -- request handling ------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?", 1)[0]
        self.request_times.append(time.monotonic())
        self.requests.append(f"{method} {path}")
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        fault = self.fault if self.paths is None or path in self.paths else None
        if fault == "hang":
            self._release.wait(120)  # accepted, never answered
            h.close_connection = True
            return
        if fault == "malformed":
            self._send(h, 200, b'{"status": "ok", "model_path": ', "application/json")
            return
        if fault == "500":
            self._send(
                h,
                500,
                b'{"error":{"code":500,"message":"injected internal error","type":"server_error"}}',
                "application/json",
            )
            return
        if self.upstream is None:
            self._send(h, 502, b"no upstream", "text/plain")
            return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_HEADERS | {"host"}}
        try:
            r = self._http.request(method, self.upstream + h.path, headers=headers, content=body)
        except httpx.HTTPError:
            h.close_connection = True
            return  # upstream down: drop the connection like a dead server would
        extra = {k: v for k, v in r.headers.items() if k.lower() not in HOP_HEADERS}
        self._send(h, r.status_code, r.content, r.headers.get("content-type"), extra)
        if fault == "drop":
            h.close_connection = True  # no "Connection: close" said: the client finds out

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str | None,
        extra: dict[str, str] | None = None,
    ) -> None:
        try:
            h.send_response(status)
            for k, v in (extra or {}).items():
                if k.lower() not in ("content-type", "server", "date"):
                    h.send_header(k, v)
            if content_type:
                h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)
        except OSError:
            h.close_connection = True
