"""Serving the exporter: where it listens, who may scrape it, TLS — safe by default.

`/metrics` describes a GPU box and its model server; on a network it is reconnaissance for
anyone who can reach the port. So the exporter binds 127.0.0.1 unless told otherwise, and a
non-loopback `--listen` needs either `--web-config FILE` (TLS and/or basic auth, in the
exporter-toolkit format every Prometheus exporter reads) or an explicit `--insecure-listen`.

The web-config file (https://github.com/prometheus/exporter-toolkit, docs/web-configuration.md):

    tls_server_config:
      cert_file: server.crt            # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional (mTLS), with client_ca_file
      client_ca_file: ca.crt
      min_version: TLS12
    basic_auth_users:
      prometheus: $2y$10$...           # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':')

Unknown keys are refused (as exporter-toolkit's strict parser does), so a typo never silently
turns protection off. A checked password is remembered (by its SHA-256) so that bcrypt's
deliberate slowness is paid once per credential, not on every 15 s scrape.

The server is wsgiref's, threaded (one daemon thread per connection), with the TLS handshake
done in that thread so a slow or hostile client cannot stall the accept loop.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import gzip
import hashlib
import hmac
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from types import MappingProxyType
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import bcrypt
import yaml
from prometheus_client.registry import CollectorRegistry

from llmtop.agent.exporter import MetricsExporter, TextRenderer

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:9464"
DEFAULT_PORT = 9464
HANDSHAKE_TIMEOUT_S = 10.0
_AUTH_CACHE_MAX = 64


@functools.cache
def _dummy_hash() -> bytes:
    """Checked against when the user is unknown, so an unknown name costs what a wrong password
    does (made on first use: bcrypt is slow on purpose, and most agents have no basic auth)."""
    return bcrypt.hashpw(b"llmtop-not-a-password", bcrypt.gensalt(rounds=10))


_TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}

WSGIApp = Callable[[dict[str, object], Callable[..., object]], Iterable[bytes]]


class ExporterConfigError(ValueError):
    """A bad --listen, --web-config or listen policy, said in words for the operator."""


# ---------------------------------------------------------------------------- listen address
@dataclass(frozen=True)
class ListenAddress:
    host: str  # "" = every interface
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str) -> ListenAddress:
    """`HOST:PORT`, `[IPv6]:PORT`, `:PORT` (every interface) or `PORT` (loopback)."""
    text = text.strip()
    if text.isdigit():
        return ListenAddress("127.0.0.1", _port(text, text))
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ExporterConfigError(f"--listen {text!r}: expected [IPv6]:PORT")
        return ListenAddress(host, _port(rest[1:], text))
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ExporterConfigError(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    if ":" in host:
        raise ExporterConfigError(f"--listen {text!r}: write an IPv6 address as [ADDR]:PORT")
    return ListenAddress(host, _port(port, text))


def _port(text: str, whole: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ExporterConfigError(f"--listen {whole!r}: {text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ExporterConfigError(f"--listen {whole!r}: port {port} is out of range")
    return port


def is_loopback(host: str) -> bool:
    """True when every address *host* stands for is a loopback address ('' is every interface).

    A name is resolved: `localhost` is loopback, a name that also resolves elsewhere is not."""
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addrs = {str(info[4][0]) for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def listen_refusal(addr: ListenAddress, *, web_config: str | None, insecure: bool) -> str | None:
    """Why this listen address is refused (None: allowed). Loopback is always allowed."""
    if is_loopback(addr.host) or web_config or insecure:
        return None
    where = "every interface" if not addr.host else addr.host
    return (
        f"--listen {addr} would serve /metrics on {where}, beyond this machine. Give"
        " --web-config FILE (TLS cert/key and/or basic_auth_users with bcrypt hashes, the"
        " Prometheus exporter-toolkit web-config format) to protect it, or --insecure-listen to"
        " serve it unprotected on purpose"
    )


# ---------------------------------------------------------------------------- web config
@dataclass(frozen=True)
class TlsConfig:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth_type: str = "NoClientCert"
    min_version: str | None = None
    max_version: str | None = None


@dataclass(frozen=True)
class WebConfig:
    tls: TlsConfig | None = None
    users: Mapping[str, bytes] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def protected(self) -> bool:
        return self.tls is not None or bool(self.users)


_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
}


def load_web_config(path: str | Path) -> WebConfig:
    """Read and check an exporter-toolkit web-config file (ExporterConfigError in words)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ExporterConfigError(f"--web-config {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ExporterConfigError(f"--web-config {p}: not valid YAML ({exc})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ExporterConfigError(f"--web-config {p}: expected a mapping at the top")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ExporterConfigError(
            f"--web-config {p}: unknown key(s) {', '.join(map(str, unknown))}"
            f" (known: {', '.join(sorted(_TOP_KEYS))})"
        )
    if data.get("http_server_config"):
        raise ExporterConfigError(
            f"--web-config {p}: http_server_config (HTTP/2, headers) is not supported by llmtop"
        )
    tls = _tls_config(data.get("tls_server_config"), p)
    users = _users(data.get("basic_auth_users"), p)
    config = WebConfig(tls=tls, users=MappingProxyType(users))
    if not config.protected:
        raise ExporterConfigError(
            f"--web-config {p}: neither tls_server_config nor basic_auth_users is set"
        )
    return config


def _tls_config(raw: object, p: Path) -> TlsConfig | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ExporterConfigError(f"--web-config {p}: tls_server_config must be a mapping")
    unknown = sorted(set(raw) - _TLS_KEYS)
    if unknown:
        raise ExporterConfigError(
            f"--web-config {p}: unknown tls_server_config key(s) {', '.join(map(str, unknown))}"
        )
    base = p.parent

    def file(key: str) -> Path | None:
        v = raw.get(key)
        if v in (None, ""):
            return None
        f = Path(str(v))
        f = f if f.is_absolute() else base / f
        if not f.is_file():
            raise ExporterConfigError(f"--web-config {p}: tls_server_config.{key} {f} not found")
        return f

    cert, key = file("cert_file"), file("key_file")
    if cert is None or key is None:
        raise ExporterConfigError(
            f"--web-config {p}: tls_server_config needs both cert_file and key_file"
        )
    auth = str(raw.get("client_auth_type") or "NoClientCert")
    if auth not in _CLIENT_AUTH:
        raise ExporterConfigError(
            f"--web-config {p}: client_auth_type {auth!r} is not supported"
            f" (supported: {', '.join(_CLIENT_AUTH)})"
        )
    ca = file("client_ca_file")
    if auth != "NoClientCert" and ca is None:
        raise ExporterConfigError(f"--web-config {p}: client_auth_type {auth} needs client_ca_file")
    versions = []
    for k in ("min_version", "max_version"):
        v = raw.get(k)
        if v is not None and str(v) not in _TLS_VERSIONS:
            raise ExporterConfigError(
                f"--web-config {p}: {k} {v!r} (expected one of {', '.join(_TLS_VERSIONS)})"
            )
        versions.append(None if v is None else str(v))
    return TlsConfig(cert, key, ca, auth, versions[0], versions[1])


def _users(raw: object, p: Path) -> dict[str, bytes]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ExporterConfigError(f"--web-config {p}: basic_auth_users must map user → hash")
    users: dict[str, bytes] = {}
    for user, hashed in raw.items():
        h = str(hashed or "").encode()
        if not h.startswith((b"$2a$", b"$2b$", b"$2y$")):
            raise ExporterConfigError(
                f"--web-config {p}: basic_auth_users.{user}: not a bcrypt hash"
                " (make one with: htpasswd -nBC 10 '' | tr -d ':')"
            )
        users[str(user)] = h
    return users


def ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """The server-side TLS context for a web config's tls_server_config."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (ssl.SSLError, OSError) as exc:
        raise ExporterConfigError(
            f"TLS: cannot load {tls.cert_file} / {tls.key_file}: {exc}"
        ) from None
    ctx.minimum_version = _TLS_VERSIONS[tls.min_version or "TLS12"]
    if tls.max_version:
        ctx.maximum_version = _TLS_VERSIONS[tls.max_version]
    ctx.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
    if tls.client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(tls.client_ca_file))
    return ctx


# ---------------------------------------------------------------------------- basic auth
class BasicAuth:
    """Checks `Authorization: Basic` against bcrypt hashes; remembers credentials that passed."""

    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._ok: dict[str, bytes] = {}  # user → sha256(user:password) that passed
        self._lock = threading.Lock()

    def check(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, sep, password = decoded.partition(":")
        if not sep:
            return False
        digest = hashlib.sha256(decoded.encode()).digest()
        with self._lock:
            known = self._ok.get(user)
        if known is not None and hmac.compare_digest(known, digest):
            return True
        hashed = self._users.get(user)
        ok = bcrypt.checkpw(password.encode(), hashed if hashed is not None else _dummy_hash())
        if ok and hashed is not None:
            with self._lock:
                if len(self._ok) >= _AUTH_CACHE_MAX:
                    self._ok.clear()
                self._ok[user] = digest
            return True
        return False


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
GZIP_LEVEL = 1  # 31 KiB of an 8-GPU scrape → ~4 KiB in ~0.1 ms; level 9 costs more for little


def metrics_app(renderer: TextRenderer) -> WSGIApp:
    """The `/metrics` answer: the registry rendered now, gzipped when the scraper accepts it
    (Prometheus does)."""

    def app(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
        body = renderer.render()
        headers = [("Content-Type", CONTENT_TYPE)]
        if "gzip" in (_str(environ.get("HTTP_ACCEPT_ENCODING")) or ""):
            body = gzip.compress(body, compresslevel=GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body]

    return app


def protect(app: WSGIApp, auth: BasicAuth | None) -> WSGIApp:
    """`/metrics` (and a one-line index at `/`), behind basic auth when *auth* is given."""

    def wrapped(
        environ: dict[str, object], start_response: Callable[..., object]
    ) -> Iterable[bytes]:
        if auth is not None and not auth.check(_str(environ.get("HTTP_AUTHORIZATION"))):
            start_response(
                "401 Unauthorized",
                [
                    ("Content-Type", "text/plain; charset=utf-8"),
                    ("WWW-Authenticate", 'Basic realm="llmtop"'),
                ],
            )
            return [b"Unauthorized\n"]
        path = _str(environ.get("PATH_INFO")) or "/"
        if path == "/metrics":
            return app(environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"llmtop agent exporter: metrics at /metrics\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Not Found: metrics are at /metrics\n"]

    return wrapped


def _str(v: object) -> str | None:
    return v if isinstance(v, str) else None


# ---------------------------------------------------------------------------- the server
class _Handler(WSGIRequestHandler):
    timeout = HANDSHAKE_TIMEOUT_S  # StreamRequestHandler: settimeout on the connection

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # in this connection's thread, not the accept loop

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        log.debug("exporter: %s - %s", self.address_string(), format % args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: object, client_address: object) -> None:
        # a failed handshake or a client that hung up: not the agent's problem, not a traceback
        log.debug("exporter: connection from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class ExporterServer:
    """`/metrics` for *registry* on *addr*, in a daemon thread; `stop()` closes the socket."""

    def __init__(
        self,
        registry: CollectorRegistry,
        addr: ListenAddress,
        web_config: WebConfig | None = None,
    ) -> None:
        self.addr = addr
        self.web_config = web_config
        auth = BasicAuth(web_config.users) if web_config and web_config.users else None
        app = protect(metrics_app(TextRenderer(registry)), auth)
        cls = _Server6 if ":" in addr.host else _Server
        host = addr.host if addr.host else ("::" if socket.has_ipv6 else "0.0.0.0")
        if not addr.host and socket.has_ipv6:
            cls = _Server6
        try:
            self._httpd = cls((host, addr.port), _Handler)
        except OSError as exc:
            raise ExporterConfigError(
                f"--listen {addr}: cannot listen there: {exc.strerror or exc}"
            ) from None
        self._httpd.set_app(app)
        if web_config is not None and web_config.tls is not None:
            ctx = ssl_context(web_config.tls)
            self._httpd.socket = ctx.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when *addr* asked for port 0)."""
        return int(self._httpd.server_address[1])

    @property
    def scheme(self) -> str:
        return "https" if self.web_config is not None and self.web_config.tls else "http"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="llmtop-exporter", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(5)
            self._thread = None
        self._httpd.server_close()


# ---------------------------------------------------------------------------- the agent's flags
@dataclass(frozen=True)
class ExporterOptions:
    listen: str
    web_config: str | None = None
    insecure_listen: bool = False
    dcgm_names: bool = False


def add_exporter_arguments(parser: argparse.ArgumentParser) -> None:
    """`llmtop agent` flags for the Prometheus exporter."""
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default=None,
        help=f"serve Prometheus metrics at http://HOST:PORT/metrics (e.g. {DEFAULT_LISTEN});"
        " a non-loopback address needs --web-config or --insecure-listen",
    )
    parser.add_argument(
        "--web-config",
        metavar="FILE",
        default=None,
        help="TLS and/or basic auth for --listen (Prometheus exporter-toolkit web-config YAML)",
    )
    parser.add_argument(
        "--insecure-listen",
        action="store_true",
        help="allow a non-loopback --listen without TLS or authentication",
    )
    parser.add_argument(
        "--dcgm-names",
        action="store_true",
        help="also serve the GPU fields under dcgm-exporter's DCGM_FI_* names",
    )


def exporter_options(args: argparse.Namespace) -> ExporterOptions | None:
    """The exporter options the flags give (None: no --listen, no exporter)."""
    if not args.listen:
        for flag, value in (("--web-config", args.web_config), ("--dcgm-names", args.dcgm_names),
                            ("--insecure-listen", args.insecure_listen)):  # fmt: skip
            if value:
                raise ExporterConfigError(f"{flag} needs --listen HOST:PORT")
        return None
    return ExporterOptions(args.listen, args.web_config, args.insecure_listen, args.dcgm_names)


def open_exporter(
    options: ExporterOptions, *, mode: str, secrets: Iterable[str] = (), probes: bool = False
) -> MetricsExporter:
    """Check the listen policy, bind, and start serving; the sink stops the server on close.

    Raises ExporterConfigError (in words) for a refused or unusable address or web config."""
    addr = parse_listen(options.listen)
    refusal = listen_refusal(addr, web_config=options.web_config, insecure=options.insecure_listen)
    if refusal is not None:
        raise ExporterConfigError(refusal)
    web = load_web_config(options.web_config) if options.web_config else None
    exporter = MetricsExporter(
        mode=mode, secrets=tuple(secrets), dcgm_names=options.dcgm_names, probes=probes
    )
    server = ExporterServer(exporter.registry(), addr, web)
    server.start()
    exporter.server = server
    log.info("exporter: serving %s://%s/metrics", server.scheme, addr)
    return exporter
