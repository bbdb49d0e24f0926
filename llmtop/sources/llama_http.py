"""Async client for one llama-server: /health, /props, /slots, /metrics (and /v1/models).

A server asleep (`--sleep-idle-seconds`, /props `is_sleeping`) is asked only /health and /props,
which do not wake it; its health is "sleeping".

One `poll()` asks every endpoint concurrently with short timeouts and folds the answers into a
`ServerStatus` with the health in one word and the reason in words. It never raises for server
faults. Endpoints that fail (501 disabled, 401 wrong key, 503 loading) are never switched off for
good: disabled ones are re-asked every `disabled_retry_s`, everything else on every poll, so the
client recovers by itself when the server is restarted with the flag or the key is fixed.

The API key goes out as `Authorization: Bearer …` on every call except /health and is never
part of any status, problem text or repr.

Connections are not kept alive: llama-server serves HTTP from a small worker pool (n_parallel + 2
threads by default) and an idle keep-alive connection pins a worker, so a monitor holding them
would starve real clients (and its own /slots requests while a completion streams). Plain
http:// requests go through the small asyncio client in `raw_http` (a fraction of a millisecond
of CPU each, against ~2 ms for httpx on a slow core); https through the httpx.AsyncClient.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmtop.snapshot import Health, ServerStatus, SlotStatus
from llmtop.sources import raw_http
from llmtop.sources.prometheus import parse_metrics

if TYPE_CHECKING:  # pragma: no cover - typing only
    import httpx

UNAUTHORIZED_DETAIL = "401 Invalid API Key — check --api-key / LLAMA_API_KEY"
ENDPOINT_FLAGS = {"/metrics": "--metrics", "/slots": "--slots (it was started with --no-slots)"}


class ProbeError(Exception):
    """One endpoint's failure, in words (internal: poll() turns it into a status)."""

    def __init__(self, kind: str, detail: str, status_code: int | None = None) -> None:
        super().__init__(detail)
        self.kind = kind  # unreachable | timeout | unauthorized | loading | disabled | error
        self.detail = detail
        self.status_code = status_code


@dataclass
class _Reply:
    status_code: int
    headers: dict[str, str]  # lower-case names
    text: str
    at: float  # monotonic time the answer arrived


def describe_transport_error(exc: Exception, timeout_s: float) -> tuple[str, str]:
    """(kind, words) for an httpx transport failure."""
    import httpx  # imported lazily: plain http:// polling never needs it (start-up time)

    if isinstance(exc, httpx.TimeoutException):
        return "timeout", f"timed out after {timeout_s:.1f} s"
    if isinstance(exc, httpx.ConnectError):
        msg = " ".join(str(e) for e in _chain(exc)).lower()
        if any(isinstance(e, ConnectionRefusedError) for e in _chain(exc)):
            return "unreachable", "connection refused"
        if "refused" in msg:
            return "unreachable", "connection refused"
        if "name or service" in msg or "nodename" in msg or "resolution" in msg:
            return "unreachable", "host name not found"
        if "unreachable" in msg:
            return "unreachable", "network unreachable"
        return "unreachable", f"cannot connect ({exc or type(exc).__name__})"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "unreachable", "connection closed by the server"
    if isinstance(exc, httpx.HTTPError):
        return "unreachable", f"{type(exc).__name__}: {exc}"
    return "error", f"{type(exc).__name__}: {exc}"


def _is_transport_error(exc: BaseException) -> bool:
    """OSError, or httpx.HTTPError (httpx is only imported once something has used it)."""
    if isinstance(exc, OSError):
        return True
    httpx_mod = sys.modules.get("httpx")
    return httpx_mod is not None and isinstance(exc, httpx_mod.HTTPError)


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and its causes (httpx wraps the OSError that says what happened)."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(out) < 10:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def error_message(text: str) -> str | None:
    """The `message` of an OpenAI-shaped error body, if any."""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than json allows
        return None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"]
        if isinstance(err, str):
            return err
    return None


def parse_slots(body: Any) -> tuple[SlotStatus, ...]:
    """/slots body → slots. `next_token` may be a one-element array (source) or an object (README)."""
    if not isinstance(body, list):
        raise ValueError("not a list")
    slots: list[SlotStatus] = []
    for i, raw in enumerate(body):
        if not isinstance(raw, dict):
            continue
        nt = raw.get("next_token")
        if isinstance(nt, list):
            nt = nt[0] if nt and isinstance(nt[0], dict) else {}
        if not isinstance(nt, dict):
            nt = {}
        slots.append(
            SlotStatus(
                id=_int(raw.get("id"), i) or 0,
                n_ctx=_int(raw.get("n_ctx")),
                is_processing=bool(raw.get("is_processing", False)),
                n_prompt_tokens=_int(raw.get("n_prompt_tokens")),
                n_decoded=_int(nt.get("n_decoded")),
                n_remain=_int(nt.get("n_remain")),
            )
        )
    return tuple(slots)


def _int(v: Any, default: int | None = None) -> int | None:
    if isinstance(v, bool):
        return default
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v):  # JSON 1e999 is inf: int() would raise
        return int(v)
    return default


@dataclass(frozen=True)
class _Props:
    model_path: str | None
    model_alias: str | None
    n_ctx: int | None
    total_slots: int | None
    build_info: str | None
    endpoint_slots: bool | None
    endpoint_metrics: bool | None
    is_sleeping: bool = False


def props_say_sleeping(body: Any) -> bool:
    """True when a /props body says the server unloaded its model (`--sleep-idle-seconds`)."""
    return isinstance(body, dict) and body.get("is_sleeping") is True


def sleeping_words(since: float) -> str:
    """The one line every view shows for a sleeping server (panel, title bar, snapshot)."""
    clock = time.strftime("%H:%M:%S", time.localtime(since))
    return f"sleeping since {clock} — the next request loads the model"


def parse_props(body: Any) -> _Props:
    if not isinstance(body, dict):
        raise ValueError("not an object")
    dgs = body.get("default_generation_settings")
    n_ctx = _int(dgs.get("n_ctx")) if isinstance(dgs, dict) else None
    if n_ctx is None:
        n_ctx = _int(body.get("n_ctx"))

    def s(key: str) -> str | None:
        v = body.get(key)
        return v if isinstance(v, str) and v else None

    def b(key: str) -> bool | None:
        v = body.get(key)
        return v if isinstance(v, bool) else None

    return _Props(
        model_path=s("model_path"),
        model_alias=s("model_alias"),
        n_ctx=n_ctx,
        total_slots=_int(body.get("total_slots")),
        build_info=s("build_info"),
        endpoint_slots=b("endpoint_slots"),
        endpoint_metrics=b("endpoint_metrics"),
        is_sleeping=props_say_sleeping(body),
    )


class LlamaClient:
    """Polls one llama-server. Use one instance per server; `aclose()` when done."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        timeout_s: float = 2.0,
        *,
        disabled_retry_s: float = 10.0,
        props_refresh_s: float = 30.0,
        use_httpx: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self._api_key = api_key or None
        self.timeout_s = timeout_s
        self.disabled_retry_s = disabled_retry_s
        self.props_refresh_s = props_refresh_s
        # Plain http:// goes through llmtop.sources.raw_http (an httpx GET costs ~2 ms of CPU
        # here, a raw one a fraction: the dashboard must stay near 0 % of a core); https and
        # anything unusual through httpx.
        self._raw = self.url.startswith("http://") and not use_httpx
        # No keep-alive: llama-server's HTTP worker pool is small (n_parallel + 2 threads by
        # default) and each idle keep-alive connection pins one worker, so a dashboard holding
        # connections open would starve real clients and its own concurrent requests.
        # The httpx client is built on first use (`http`): importing httpx and building its TLS
        # context costs ~0.15 s of start-up that plain http:// polling never needs.
        self._http: httpx.AsyncClient | None = None
        self._props: _Props | None = None
        self._props_at = 0.0
        self._n_ctx_train: int | None = None
        self._last_health: Health | None = None
        self._start_time: float | None = None
        # endpoint → monotonic time of the next try while it answers 501; absent = ask every poll
        self._disabled_until: dict[str, float] = {}
        self._endpoint_state: dict[str, bool | None] = {"/slots": None, "/metrics": None}
        self._slots: tuple[SlotStatus, ...] = ()
        # The last /metrics scrape (names without the llamacpp: prefix) and its monotonic time.
        self.last_metrics: dict[str, float] | None = None
        self.last_metrics_time: float | None = None
        self.polls = 0
        # Unix time a poll first saw /props say `is_sleeping`; None while the server is awake.
        self.sleeping_since: float | None = None
        # The server's --sleep-idle-seconds, where known (the collector sets it from the launch
        # spec or the process's argv): /slots and /metrics count as activity, so while the
        # server is idle they are asked only every sleep_idle_s + a margin, letting it fall
        # asleep while watched. None: asked every poll.
        self.sleep_idle_s: float | None = None
        self._activity_polled_at = float("-inf")  # monotonic: last /slots or /metrics asked
        # False when the server is known to have no --sleep-idle-seconds (the collector sets it
        # from the launch spec): /props is then asked every props_refresh_s, not every poll.
        self.may_sleep = True
        self._in_flight: set[raw_http.Abort] = set()  # polls running in a thread now
        # Several servers in one dashboard: a server without the focus shows only its line of
        # the server bar (health, model, tok/s from /metrics, VRAM), so while /metrics
        # answers, /slots is not asked of it (a third of its poll).
        self.background = False

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=0),
                headers={"Connection": "close"},
                trust_env=False,
            )
        return self._http

    def __repr__(self) -> str:  # never shows the key
        return f"LlamaClient({self.url!r}, api_key={'***' if self._api_key else None})"

    @property
    def api_key(self) -> str | None:
        return self._api_key

    def set_api_key(self, api_key: str | None) -> None:
        """Use another key from the next poll on (re-asks every endpoint at once)."""
        self._api_key = api_key or None
        self._disabled_until.clear()
        self._props = None

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    async def aclose(self) -> None:
        for abort in list(self._in_flight):
            abort.abort()  # a poll stuck on a hung server ends now, not after its timeout
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> LlamaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- one request ------------------------------------------------------------------------
    async def _get(self, path: str, *, auth: bool = True) -> _Reply:
        """One GET through httpx (https, or `use_httpx`); the poll's plain-http GETs go through
        `raw_http.get_sequence` (`_get_sequence`)."""
        headers = self.auth_headers() if auth else {}
        try:
            r = await self.http.get(self.url + path, headers=headers)
        except Exception as exc:
            if not _is_transport_error(exc):
                raise
            kind, words = describe_transport_error(exc, self.timeout_s)
            raise ProbeError(kind, f"{path}: {words}" if path != "/health" else words) from None
        reply = _Reply(
            r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.text, time.monotonic()
        )
        return self._check(path, reply)

    def _check(self, path: str, r: _Reply) -> _Reply:
        """The reply if it is a 200, else the ProbeError that says what is wrong, in words."""
        if r.status_code == 200:
            return r
        msg = error_message(r.text)
        if r.status_code == 401:
            raise ProbeError("unauthorized", UNAUTHORIZED_DETAIL, 401)
        if r.status_code == 503:
            raise ProbeError("loading", msg or "Loading model", 503)
        if r.status_code in (501, 404) and path in ENDPOINT_FLAGS:
            raise ProbeError(
                "disabled", f"{path} disabled — start llama-server with {ENDPOINT_FLAGS[path]}", 501
            )
        words = f"HTTP {r.status_code} from {path}"
        if msg:
            words += f": {msg}"
        elif r.status_code == 404 and path == "/health":
            words += " — is this a llama-server?"
        raise ProbeError("error", words, r.status_code)

    @staticmethod
    def _json(path: str, reply: _Reply) -> Any:
        try:
            return json.loads(reply.text)
        except (ValueError, RecursionError):
            raise ProbeError("error", f"malformed JSON from {path}", reply.status_code) from None

    async def _get_json(self, path: str, *, auth: bool = True) -> Any:
        return self._json(path, await self._get(path, auth=auth))

    async def raw_sequence(
        self,
        paths: list[str],
        *,
        proceed: Callable[[str, raw_http.Answer], bool] | None = None,
    ) -> list[raw_http.Answer | raw_http.RawHTTPError | None]:
        """GET *paths* (plain http) in a row over one connection in a worker thread, /health
        without the API key: one answer per path, None for those not asked (`proceed` said
        stop). `aclose()` or a cancellation ends a poll stuck on a hung server at once. The
        one route to raw_http for the poll and the router watcher alike."""
        key = self.auth_headers()
        asks = [(p, {} if p == "/health" else key) for p in paths]
        abort = raw_http.Abort()
        self._in_flight.add(abort)
        try:
            answers = await asyncio.to_thread(
                raw_http.get_sequence,
                self.url,
                asks,
                timeout_s=self.timeout_s,
                abort=abort,
                proceed=proceed,
            )
        except asyncio.CancelledError:
            abort.abort()  # the thread gives up at once instead of waiting out its timeout
            raise
        finally:
            self._in_flight.discard(abort)
        padded: list[raw_http.Answer | raw_http.RawHTTPError | None] = [*answers]
        padded += [None] * (len(paths) - len(answers))
        return padded

    async def _get_sequence(self, paths: list[str], *, stop_if_asleep: bool = False) -> list[Any]:
        """GET *paths* in a row over one connection in a thread (raw_http.get_sequence); each
        result is the parsed JSON (the text for /metrics) or the ProbeError for that path.

        `stop_if_asleep`: when /props answers `is_sleeping`, the paths after it are not asked
        (their results are None): /slots, /metrics and /v1/models would wake the server."""
        padded = await self.raw_sequence(paths, proceed=_awake_so_far if stop_if_asleep else None)
        out: list[Any] = []
        for path, answer in zip(paths, padded, strict=True):
            if answer is None:
                out.append(None)  # not asked: the server is asleep
                continue
            if isinstance(answer, raw_http.RawHTTPError):
                words = str(answer)
                kind = "timeout" if words.startswith("timed out") else "unreachable"
                where = f"{path}: {words}" if path != "/health" else words
                out.append(ProbeError(kind, where))
                continue
            status, hdrs, body, at = answer
            reply = _Reply(status, hdrs, body.decode("utf-8", errors="replace"), at)
            try:
                checked = self._check(path, reply)
                out.append(checked if path == "/metrics" else self._json(path, checked))
            except ProbeError as exc:
                out.append(exc)
        return out

    # -- the poll ---------------------------------------------------------------------------
    def _due(self, path: str, now: float) -> bool:
        return now >= self._disabled_until.get(path, 0.0)

    async def poll(self) -> ServerStatus:
        """Ask the server everything once and say what state it is in.

        /props is asked on every poll of a server that may sleep (`may_sleep`: its argv is
        unknown or has --sleep-idle-seconds), right after /health: its `is_sleeping` says
        whether the server unloaded its model. While it sleeps nothing else is
        asked — /slots, /metrics and /v1/models count as activity and wake it (measured on the
        pinned build), and a monitor must not defeat the feature it shows."""
        self.polls += 1
        now = time.monotonic()
        want_props = self._props is None or now - self._props_at >= self.props_refresh_s
        want_slots = self._due("/slots", now)
        if self.background and self._endpoint_state["/metrics"] is True:
            want_slots, self._slots = False, ()  # its activity: requests_processing
        want_metrics = self._due("/metrics", now)
        if self._let_it_sleep(now):
            want_props = want_slots = want_metrics = False
        elif want_slots or want_metrics:
            self._activity_polled_at = now

        wanted = ["/health", "/props", "/v1/models", "/slots", "/metrics"]
        asked = [True, want_props or self.may_sleep, want_props, want_slots, want_metrics]
        results: list[Any]
        if self._raw:
            paths = [p for p, want in zip(wanted, asked, strict=True) if want]
            got = iter(await self._get_sequence(paths, stop_if_asleep=True))
            results = [next(got) if want else None for want in asked]
        else:

            async def skip() -> None:
                return None

            first = await asyncio.gather(
                self._get_json("/health", auth=False),
                self._get_json("/props") if asked[1] else skip(),
                return_exceptions=True,
            )
            rest: list[Any] = [None, None, None]
            if not props_say_sleeping(first[1]):
                rest[:] = await asyncio.gather(
                    self._get_json("/v1/models") if want_props else skip(),
                    self._get_json("/slots") if want_slots else skip(),
                    self._get("/metrics") if want_metrics else skip(),
                    return_exceptions=True,
                )
            results = [*first, *rest]
        for r in results:
            if isinstance(r, asyncio.CancelledError):
                raise r
        results = [
            ProbeError("error", f"{type(r).__name__}: {r}")
            if isinstance(r, BaseException) and not isinstance(r, ProbeError)
            else r
            for r in results
        ]
        health_r, props_r, models_r, slots_r, metrics_r = results
        return self._fold(now, health_r, props_r, models_r, slots_r, metrics_r, True)

    def _let_it_sleep(self, now: float) -> bool:
        """True when this poll must not ask /slots, /metrics or /v1/models so that an idle
        server with --sleep-idle-seconds can reach its timeout (each of them resets it).

        Only while the last look showed nothing running; a request that arrives meanwhile is
        seen at the next spaced look (at most sleep_idle_s + margin later)."""
        idle_s = self.sleep_idle_s
        if idle_s is None or idle_s <= 0 or self._last_health != "ok":
            return False
        if any(sl.is_processing for sl in self._slots):
            return False
        running = (self.last_metrics or {}).get("requests_processing")
        if running:
            return False
        return now - self._activity_polled_at < idle_s + max(1.0, 0.25 * idle_s)

    def _fold(
        self,
        now: float,
        health_r: Any,
        props_r: Any,
        models_r: Any,
        slots_r: Any,
        metrics_r: Any,
        asked_props: bool,
    ) -> ServerStatus:
        problems: list[str] = []
        health: Health
        detail: str
        if isinstance(health_r, ProbeError):
            if health_r.kind in ("unreachable", "timeout"):
                health = "unreachable"
            elif health_r.kind == "loading":
                health = "loading"
            else:
                health = "error"
            detail = health_r.detail
        elif isinstance(health_r, BaseException):
            health, detail = "error", f"{type(health_r).__name__}: {health_r}"
        elif isinstance(health_r, dict) and health_r.get("status") in ("ok", "no slot available"):
            health, detail = "ok", "ok"
        else:
            health, detail = "error", "malformed JSON from /health"

        if health != "ok":
            self.sleeping_since = None
        if health != self._last_health:
            # the server came (back) up, went down or started loading: ask everything again
            # on the next poll (the cached /props stays on show until then)
            self._disabled_until.clear()
            self._props_at = float("-inf")
        self._last_health = health

        if health in ("unreachable", "loading"):
            self._slots = ()
            self.last_metrics = None
            self._endpoint_state = {"/slots": None, "/metrics": None}
            return self._status(health, detail, problems)

        keyed_errors = [
            r for r in (props_r, models_r, slots_r, metrics_r) if isinstance(r, ProbeError)
        ]
        if health == "ok" and any(e.kind == "unauthorized" for e in keyed_errors):
            health, detail = "unauthorized", UNAUTHORIZED_DETAIL
            self._props_at = float("-inf")
            self._slots = ()
            self.last_metrics = None
            return self._status(health, detail, problems)

        # /props and /v1/models
        if asked_props:
            if isinstance(props_r, ProbeError):
                problems.append(props_r.detail)
                if health == "ok" and props_r.kind == "error":
                    health, detail = "error", props_r.detail
            elif props_r is not None:
                try:
                    self._props = parse_props(props_r)
                    self._props_at = now
                except ValueError:
                    problems.append("malformed JSON from /props")
                    if health == "ok":
                        health, detail = "error", "malformed JSON from /props"
            if isinstance(models_r, dict):
                self._n_ctx_train = _n_ctx_train(models_r)

        # asleep (--sleep-idle-seconds): nothing but /health and /props was asked
        if health == "ok" and props_say_sleeping(props_r):
            if self.sleeping_since is None:
                self.sleeping_since = time.time()
            self._slots = ()
            self.last_metrics = None
            return self._status("sleeping", sleeping_words(self.sleeping_since), problems)
        self.sleeping_since = None

        # /slots
        if slots_r is not None:
            if isinstance(slots_r, ProbeError):
                self._slots = ()
                if slots_r.kind == "disabled":
                    self._endpoint_state["/slots"] = False
                    self._disabled_until["/slots"] = now + self.disabled_retry_s
                else:
                    self._endpoint_state["/slots"] = None
                    problems.append(slots_r.detail)
                    if health == "ok" and slots_r.kind == "error":
                        health, detail = "error", slots_r.detail
            else:
                try:
                    self._slots = parse_slots(slots_r)
                    self._endpoint_state["/slots"] = True
                    self._disabled_until.pop("/slots", None)
                except ValueError:
                    self._slots = ()
                    problems.append("malformed JSON from /slots")
                    if health == "ok":
                        health, detail = "error", "malformed JSON from /slots"
        if self._endpoint_state["/slots"] is False:
            problems.append("/slots disabled — start llama-server without --no-slots")

        # /metrics
        counters: dict[str, float] | None = None
        if metrics_r is not None:
            if isinstance(metrics_r, ProbeError):
                self.last_metrics = None
                if metrics_r.kind == "disabled":
                    self._endpoint_state["/metrics"] = False
                    self._disabled_until["/metrics"] = now + self.disabled_retry_s
                else:
                    self._endpoint_state["/metrics"] = None
                    problems.append(metrics_r.detail)
            else:
                counters = parse_metrics(metrics_r.text)
                self._endpoint_state["/metrics"] = True
                self._disabled_until.pop("/metrics", None)
                start = metrics_r.headers.get("process-start-time-unix")
                try:
                    start_time = float(start) if start else None
                except ValueError:
                    start_time = None
                if start_time is not None and start_time != self._start_time:
                    if self._start_time is not None:
                        self._props_at = float("-inf")  # restarted: model or flags may differ
                    self._start_time = start_time
                self.last_metrics = counters
                self.last_metrics_time = metrics_r.at
        if self._endpoint_state["/metrics"] is False:
            problems.append("/metrics disabled — start llama-server with --metrics")

        return self._status(health, detail, problems, counters)

    def _status(
        self,
        health: Health,
        detail: str,
        problems: list[str],
        counters: dict[str, float] | None = None,
    ) -> ServerStatus:
        p = self._props if health in ("ok", "error", "sleeping") else None
        live = health in ("ok", "error")

        def c(key: str) -> float | None:
            return counters.get(key) if counters else None

        def ci(key: str) -> int | None:
            v = c(key)
            return int(v) if v is not None else None

        endpoint_slots = self._endpoint_state["/slots"] if live else None
        endpoint_metrics = self._endpoint_state["/metrics"] if live else None
        if p is not None:
            if endpoint_slots is None and p.endpoint_slots is not None:
                endpoint_slots = p.endpoint_slots
            if endpoint_metrics is None and p.endpoint_metrics is not None:
                endpoint_metrics = p.endpoint_metrics
        return ServerStatus(
            url=self.url,
            health=health,
            detail=detail,
            model_path=p.model_path if p else None,
            model_alias=p.model_alias if p else None,
            n_ctx=p.n_ctx if p else None,
            n_ctx_train=self._n_ctx_train if p else None,
            total_slots=p.total_slots if p else None,
            build_info=p.build_info if p else None,
            endpoint_slots=endpoint_slots,
            endpoint_metrics=endpoint_metrics,
            slots=self._slots if live else (),
            requests_processing=ci("requests_processing"),
            requests_deferred=ci("requests_deferred"),
            prompt_tokens_total=ci("prompt_tokens_total"),
            tokens_predicted_total=ci("tokens_predicted_total"),
            process_start_time=self._start_time if counters else None,
            problems=tuple(dict.fromkeys(problems)),
            sleeping_since=self.sleeping_since if health == "sleeping" else None,
        )


_ASLEEP = re.compile(rb'"is_sleeping"\s*:\s*true')


def _awake_so_far(path: str, answer: raw_http.Answer) -> bool:
    """get_sequence's `proceed`: stop after a /props that says the server is asleep."""
    if path != "/props" or answer[0] != 200:
        return True
    # A byte search, not a parse (the poll parses /props once, later): in JSON the token
    # `"is_sleeping"` followed by `:` is only ever a key, since quotes inside strings are escaped.
    return _ASLEEP.search(answer[2]) is None


def _n_ctx_train(models: dict[str, Any]) -> int | None:
    data = models.get("data")
    if isinstance(data, list) and data and isinstance(data[0], dict):
        meta = data[0].get("meta")
        if isinstance(meta, dict):
            return _int(meta.get("n_ctx_train"))
    return None
