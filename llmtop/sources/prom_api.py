"""A small client of Prometheus' HTTP API: instant queries, range queries and the target list.

`llmtop fleet` reads every box from the Prometheus that already scrapes their agents, so this is
outside input: Prometheus may be down, slow, behind a proxy that answers HTML, or return
partial data with warnings. Every call returns a typed result or a `PromError` value saying what
went wrong in words — never an exception — so the fleet view can say "Prometheus unreachable"
and keep showing the last good data. The JSON parsers are separate pure functions
(`parse_vector`, `parse_matrix`, `parse_targets`) so they can be property-tested on arbitrary
bytes.

API (prometheus.io/docs/prometheus/latest/querying/api/): `GET /api/v1/query?query=&time=`,
`GET /api/v1/query_range?query=&start=&end=&step=`, `GET /api/v1/targets?state=active`.
Answers are `{"status": "success"|"error", "data": …, "errorType", "error", "warnings": […]}`;
sample values are strings (`"1.5"`, `"NaN"`, `"+Inf"`).
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import httpx

from llmtop.model.redaction import REDACTED, redact_text

ErrorKind = Literal["unreachable", "timeout", "http", "bad_response", "query"]
DEFAULT_TIMEOUT_S = 3.0
# A Prometheus answer larger than this is not parsed (a misdirected URL serving a big file).
MAX_BODY_BYTES = 64 << 20


@dataclass(frozen=True)
class PromError:
    """Why a call gave no data, in words an operator can act on."""

    kind: ErrorKind
    message: str

    def __str__(self) -> str:
        return self.message


class Sample(NamedTuple):
    """One series of an instant vector: its labels and value (NaN where Prometheus says so).
    A tuple, not a dataclass: 500 hosts × ten queries make 5 000 of them per refresh."""

    labels: Mapping[str, str]
    value: float
    time: float


@dataclass(frozen=True)
class Vector:
    samples: tuple[Sample, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RangeSeries:
    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]  # (unix s, value), ascending time


@dataclass(frozen=True)
class Matrix:
    series: tuple[RangeSeries, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """One active scrape target: its labels after relabelling, health and last scrape error."""

    labels: Mapping[str, str]
    health: str  # up | down | unknown
    last_error: str
    scrape_url: str


@dataclass(frozen=True)
class Targets:
    targets: tuple[Target, ...] = ()
    warnings: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------ parsing
def _envelope(body: bytes) -> tuple[Mapping[str, object], tuple[str, ...]] | PromError:
    """The `data` and `warnings` of a success answer, or what is wrong with the answer."""
    if len(body) > MAX_BODY_BYTES:
        return PromError("bad_response", f"answer too large ({len(body)} bytes)")
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        head = body[:60].decode("utf-8", "replace").strip()
        return PromError("bad_response", f"not a Prometheus API answer (not JSON: {head!r})")
    if not isinstance(doc, dict):
        return PromError("bad_response", "not a Prometheus API answer (no JSON object)")
    status = doc.get("status")
    if status == "error":
        kind = doc.get("errorType")
        msg = doc.get("error")
        text = f"{kind}: {msg}" if isinstance(kind, str) and isinstance(msg, str) else str(msg)
        return PromError("query", redact_text(text)[:500])
    if status != "success":
        return PromError("bad_response", "not a Prometheus API answer (no status)")
    data = doc.get("data")
    if not isinstance(data, dict):
        return PromError("bad_response", "Prometheus answer without data")
    raw = doc.get("warnings")
    warnings = (
        tuple(redact_text(w)[:300] for w in raw if isinstance(w, str))
        if isinstance(raw, list)
        else ()
    )
    return data, warnings


def _labels(obj: object) -> dict[str, str] | None:
    """A label set as parsed (JSON object keys are always strings; the values must be too).
    The parsed dict itself is kept: it is fresh from json.loads and nobody else holds it."""
    if type(obj) is not dict:
        return None
    for v in obj.values():
        if type(v) is not str:
            return None
    return obj


def _point(obj: object) -> tuple[float, float] | None:
    """`[1712.5, "3.2"]` → (1712.5, 3.2); None for anything else (a bool is not a time)."""
    if type(obj) is not list or len(obj) != 2:
        return None
    t, v = obj
    if type(t) not in (float, int) or type(v) is not str:  # a bool is not a time
        return None
    try:
        value = float(v)
    except ValueError:
        return None
    t = float(t)
    if not math.isfinite(t):
        return None
    return t, value


def parse_vector(body: bytes) -> Vector | PromError:
    """An instant query's answer; a scalar/matrix/string or a malformed series is an error."""
    env = _envelope(body)
    if isinstance(env, PromError):
        return env
    data, warnings = env
    if data.get("resultType") != "vector":
        return PromError("bad_response", f"expected a vector, got {data.get('resultType')!r}")
    result = data.get("result")
    if not isinstance(result, list):
        return PromError("bad_response", "vector answer without a result list")
    samples = []
    for item in result:
        if not isinstance(item, dict):
            return PromError("bad_response", "malformed series in the vector")
        labels = _labels(item.get("metric"))
        point = _point(item.get("value"))
        if labels is None or point is None:
            return PromError("bad_response", "malformed series in the vector")
        samples.append(Sample(labels, point[1], point[0]))
    return Vector(tuple(samples), warnings)


def parse_matrix(body: bytes) -> Matrix | PromError:
    """A range query's answer: series of (time, value) points in ascending time."""
    env = _envelope(body)
    if isinstance(env, PromError):
        return env
    data, warnings = env
    if data.get("resultType") != "matrix":
        return PromError("bad_response", f"expected a matrix, got {data.get('resultType')!r}")
    result = data.get("result")
    if not isinstance(result, list):
        return PromError("bad_response", "matrix answer without a result list")
    series = []
    for item in result:
        if not isinstance(item, dict):
            return PromError("bad_response", "malformed series in the matrix")
        labels = _labels(item.get("metric"))
        values = item.get("values")
        if labels is None or not isinstance(values, list):
            return PromError("bad_response", "malformed series in the matrix")
        points = []
        for raw in values:
            p = _point(raw)
            if p is None:
                return PromError("bad_response", "malformed point in the matrix")
            points.append(p)
        points.sort()
        series.append(RangeSeries(labels, tuple(points)))
    return Matrix(tuple(series), warnings)


def parse_targets(body: bytes) -> Targets | PromError:
    """`/api/v1/targets`: the active targets (dropped ones are not the fleet's)."""
    env = _envelope(body)
    if isinstance(env, PromError):
        return env
    data, warnings = env
    active = data.get("activeTargets")
    if not isinstance(active, list):
        return PromError("bad_response", "targets answer without activeTargets")
    out = []
    for item in active:
        if not isinstance(item, dict):
            return PromError("bad_response", "malformed target")
        labels = _labels(item.get("labels"))
        health = item.get("health")
        err = item.get("lastError", "")
        url = item.get("scrapeUrl", "")
        if labels is None or not isinstance(health, str):
            return PromError("bad_response", "malformed target")
        out.append(
            Target(
                labels,
                health,
                redact_text(err)[:300] if isinstance(err, str) else "",
                display_url(url) if isinstance(url, str) else "",
            )
        )
    return Targets(tuple(out), warnings)


# ------------------------------------------------------------------------------------ URLs
def check_base_url(url: str) -> str:
    """The Prometheus base URL without a trailing slash; ValueError in words if it is not one."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {display_url(url)!r} (e.g. http://127.0.0.1:9090)")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"bad port in {display_url(url)!r}") from None
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def display_url(url: str) -> str:
    """*url* as it may be shown: a password in it (`http://user:pw@host`) becomes ***."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.password is None:
        return redact_text(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{parts.username}:{REDACTED}@{host}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# ------------------------------------------------------------------------------------ client
class PromClient:
    """Blocking calls over one kept-alive connection pool (thread-safe: httpx.Client is).

    Call it from a worker thread, never the event loop. Each call is bounded by *timeout_s*.
    Basic-auth credentials in the URL are used and never shown (`display_url`).
    """

    def __init__(self, base_url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url = check_base_url(base_url)
        self.url_shown = display_url(self.base_url)
        self.timeout_s = timeout_s
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            headers={"Accept": "application/json"},
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PromClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: Mapping[str, str]) -> bytes | PromError:
        try:
            r = self._client.get(self.base_url + path, params=dict(params))
        except httpx.TimeoutException:
            return PromError("timeout", f"no answer within {self.timeout_s:g} s")
        except httpx.ConnectError as exc:
            return PromError("unreachable", _why(exc))
        except httpx.HTTPError as exc:
            return PromError("unreachable", _why(exc))
        body = r.content
        # Prometheus answers query errors as 400/422/503 with a JSON error body: use its words.
        if r.status_code != 200:
            parsed = _envelope(body)
            if isinstance(parsed, PromError) and parsed.kind == "query":
                return parsed
            return PromError("http", f"HTTP {r.status_code} from {self.url_shown}{path}")
        return body

    def query(self, expr: str, at: float | None = None) -> Vector | PromError:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        body = self._get("/api/v1/query", params)
        return body if isinstance(body, PromError) else parse_vector(body)

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> Matrix | PromError:
        params = {
            "query": expr,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step_s:g}",
        }
        body = self._get("/api/v1/query_range", params)
        return body if isinstance(body, PromError) else parse_matrix(body)

    def targets(self) -> Targets | PromError:
        body = self._get("/api/v1/targets", {"state": "active"})
        return body if isinstance(body, PromError) else parse_targets(body)


def _why(exc: httpx.HTTPError) -> str:
    """A connection error in words (httpx's text, which may name the URL: redacted)."""
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text or "[Errno 111]" in text:
        text = "connection refused"
    elif "Name or service not known" in text or "nodename nor servname" in text:
        text = "host name not known"
    return redact_text(text)[:200]
