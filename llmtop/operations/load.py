"""Load test a llama-server: streaming requests at rising concurrency, and where latency climbs.

`LoadRun.run` asks the server what it is first (/props: slot count, whether /metrics is on; a
refused connection or a 401 ends it there with a `Failed` in words), sends one warm-up request,
then for each concurrency level keeps exactly that many streamed requests in flight until the
level's request count is done. Every request is the probe's own (`sources.probe.run_probe`:
raw sockets, TTFT and inter-token gaps stamped on arrival), so a load test's figures and a
probe's compare. While a level runs, /metrics is sampled for `requests_deferred` (the queue of
requests waiting for a free slot; the most seen is kept). Each measured level is told as a
`LoadStep`, the end as `LoadFinished` with the knee (diagnosis/load_knee.py).

Bounded: a request count per level and one overall time limit; past it in-flight requests are
cut off, the remaining levels are not run, and the result says why it stopped.

Sampling /metrics has one side effect on the server: each scrape resets llama-server's averaged
gauges (`prompt_tokens_seconds`, `predicted_tokens_seconds`) for every other scraper. The
counters, which llmtop itself and the shipped Prometheus rules use, are untouched.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from llmtop.diagnosis.load_knee import LevelPoint, find_knee
from llmtop.model.redaction import redact_text
from llmtop.operations.events import (
    Failed,
    Listener,
    LoadFinished,
    LoadStep,
    Progress,
    Rejected,
    emitter,
)
from llmtop.sources.llama_http import (
    UNAUTHORIZED_DETAIL,
    describe_transport_error,
    error_message,
    parse_props,
    parse_slots,
)
from llmtop.sources.probe import MAX_N_PREDICT, ProbeResult, run_probe, summarize
from llmtop.sources.prometheus import parse_metrics
from llmtop.sources.raw_http import RawHTTPError, request

DEFAULT_PROMPT = "Write a short paragraph about the sea."
DEFAULT_CONCURRENCY = "1,2,4,8"
MAX_CONCURRENCY = 512
MAX_LEVELS = 32
MAX_REQUESTS_PER_LEVEL = 100_000
METRICS_INTERVAL_S = 0.02
"""How often /metrics is asked during a level. A deferred request waits about one request's
generation time, so the queue is visible for tens of milliseconds even on a tiny CPU model;
a scrape costs the server microseconds in its main loop."""
GET_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class LoadRequest:
    """One load test, as validated numbers. The key is kept out of every repr."""

    url: str
    concurrency: tuple[int, ...]
    requests_per_level: int | None = None  # None: 2 × concurrency at each level
    n_predict: int = 32
    prompt: str = DEFAULT_PROMPT
    max_seconds: float = 120.0
    timeout_s: float = 60.0  # per request
    api_key: str | None = field(default=None, repr=False)
    metrics_interval_s: float = METRICS_INTERVAL_S

    def requests_at(self, concurrency: int) -> int:
        return self.requests_per_level or 2 * concurrency


def parse_concurrency(text: str) -> tuple[int, ...] | str:
    """`--concurrency 1,2,4,8` → (1, 2, 4, 8), ascending without repeats; or the error in words."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        return (
            f"--concurrency must be whole numbers separated by commas, e.g. 1,2,4,8 (got {text!r})"
        )
    levels: set[int] = set()
    for p in parts:
        try:
            value = int(p)
        except ValueError:
            return f"--concurrency: {p!r} is not a whole number (e.g. 1,2,4,8)"
        if value < 1:
            return f"--concurrency: every level must be at least 1 (got {value})"
        if value > MAX_CONCURRENCY:
            return f"--concurrency: at most {MAX_CONCURRENCY} requests at once (got {value})"
        levels.add(value)
    if len(levels) > MAX_LEVELS:
        return f"--concurrency: at most {MAX_LEVELS} levels (got {len(levels)})"
    return tuple(sorted(levels))


def validate_load_input(
    url: str,
    concurrency_text: str,
    requests: int | None,
    n_predict: int,
    max_seconds: float,
    timeout_s: float,
    *,
    prompt: str = DEFAULT_PROMPT,
    api_key: str | None = None,
) -> LoadRequest | str:
    """The command's flags → a request, or the first problem in words (nothing is sent)."""
    if not url.startswith(("http://", "https://")):
        return f"--url must start with http:// or https:// (got {url!r})"
    levels = parse_concurrency(concurrency_text)
    if isinstance(levels, str):
        return levels
    if requests is not None and not 1 <= requests <= MAX_REQUESTS_PER_LEVEL:
        return f"--requests must be between 1 and {MAX_REQUESTS_PER_LEVEL} (got {requests})"
    if not 1 <= n_predict <= MAX_N_PREDICT:
        return f"--n-predict must be between 1 and {MAX_N_PREDICT} (got {n_predict})"
    if not max_seconds > 0 or max_seconds == float("inf"):
        return f"--max-seconds must be a positive number of seconds (got {max_seconds})"
    if not timeout_s > 0 or timeout_s == float("inf"):
        return f"--timeout must be a positive number of seconds (got {timeout_s})"
    if not prompt.strip():
        return "--prompt is empty"
    return LoadRequest(
        url=url.rstrip("/"),
        concurrency=levels,
        requests_per_level=requests,
        n_predict=n_predict,
        prompt=prompt,
        max_seconds=max_seconds,
        timeout_s=timeout_s,
        api_key=api_key or None,
    )


@dataclass(frozen=True)
class LoadLevel:
    """One concurrency level's figures. ITL p50/p95 are the medians over the level's requests
    of each request's own p50/p95 (as `llmtop probe --repeat` summarises)."""

    concurrency: int
    requests: int  # sent (ok + errors + cut_off)
    ok: int
    errors: int
    cut_off: int  # in flight when the time limit came
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    itl_p50_ms: float | None
    itl_p95_ms: float | None
    gen_tokens_per_s: float | None  # all requests' tokens over the level's wall time
    requests_deferred: int | None  # most seen on /metrics during the level; None: unknown
    duration_s: float
    first_error: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "requests": self.requests,
            "ok": self.ok,
            "errors": self.errors,
            "cut_off": self.cut_off,
            "ttft_p50_ms": self.ttft_p50_ms,
            "ttft_p95_ms": self.ttft_p95_ms,
            "itl_p50_ms": self.itl_p50_ms,
            "itl_p95_ms": self.itl_p95_ms,
            "gen_tokens_per_s": self.gen_tokens_per_s,
            "requests_deferred": self.requests_deferred,
            "duration_s": self.duration_s,
            "first_error": self.first_error,
        }


@dataclass(frozen=True)
class LoadResult:
    """The whole test: levels in concurrency order, what the server said of itself, the knee."""

    url: str
    n_predict: int
    total_slots: int | None
    metrics_enabled: bool
    levels: tuple[LoadLevel, ...]
    knee_concurrency: int | None
    best_concurrency: int | None
    parallel_limited: bool | None
    recommendation: str
    duration_s: float
    stopped_early: str | None = None  # why levels were left out (the time limit)
    was_sleeping: bool = False  # the warm-up request loaded the model first

    @property
    def ok(self) -> bool:
        """Every request that finished succeeded (a time limit reached is not a failure)."""
        return all(lv.errors == 0 for lv in self.levels)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "n_predict": self.n_predict,
            "total_slots": self.total_slots,
            "metrics_enabled": self.metrics_enabled,
            "levels": [lv.to_json_dict() for lv in self.levels],
            "knee_concurrency": self.knee_concurrency,
            "best_concurrency": self.best_concurrency,
            "parallel_limited": self.parallel_limited,
            "recommendation": self.recommendation,
            "duration_s": self.duration_s,
            "stopped_early": self.stopped_early,
            "was_sleeping": self.was_sleeping,
        }


@dataclass(frozen=True)
class ServerFacts:
    """What /props (and /slots, /metrics) said before the test."""

    total_slots: int | None
    metrics_enabled: bool
    sleeping: bool


class LoadError(Exception):
    """The server cannot be load tested as asked; the message is for the operator."""


def level_of(
    concurrency: int,
    results: list[ProbeResult],
    deferred: int | None,
    duration_s: float,
    secrets: tuple[str, ...] = (),
) -> LoadLevel:
    """A level's figures from its requests (pure: the tests and the benchmark use it too)."""
    finished = [r for r in results if not r.cancelled]
    s = summarize(finished)
    ok = [r for r in finished if r.ok]
    tokens = sum(r.tokens for r in ok)
    first_error = next((r.error for r in finished if r.error), None)
    return LoadLevel(
        concurrency=concurrency,
        requests=len(results),
        ok=len(ok),
        errors=s.failed,
        cut_off=len(results) - len(finished),
        ttft_p50_ms=s.ttft_ms_median,
        ttft_p95_ms=s.ttft_ms_p95,
        itl_p50_ms=s.itl_ms_p50_median,
        itl_p95_ms=s.itl_ms_p95_median,
        gen_tokens_per_s=tokens / duration_s if ok and duration_s > 0 else None,
        requests_deferred=deferred,
        duration_s=duration_s,
        first_error=redact_text(first_error, secrets) if first_error else None,
    )


class LoadRun:
    """Runs one load test against a server's URL (no controller: nothing is restarted)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock

    async def run(
        self, req: LoadRequest, listener: Listener | None = None
    ) -> LoadFinished | Failed | Rejected:
        emit = emitter(listener)
        event: LoadFinished | Failed | Rejected
        if not req.concurrency:
            event = Rejected("load", "load: no concurrency levels to run")
            emit(event)
            return event
        secrets = (req.api_key,) if req.api_key else ()
        client = httpx.AsyncClient(trust_env=False) if req.url.startswith("https://") else None
        try:
            event = LoadFinished(await self._run(req, client, emit))
        except LoadError as exc:
            event = Failed("load", redact_text(str(exc), secrets))
        finally:
            if client is not None:
                await client.aclose()
        emit(event)
        return event

    async def _run(
        self, req: LoadRequest, client: httpx.AsyncClient | None, emit: Listener
    ) -> LoadResult:
        started = self._clock()
        deadline = started + req.max_seconds
        facts = await server_facts(req.url, req.api_key, client)
        slots = "unknown" if facts.total_slots is None else str(facts.total_slots)
        emit(
            Progress(
                "load",
                f"{req.url}: {slots} slots, /metrics "
                + ("on" if facts.metrics_enabled else "off (requests deferred unknown)")
                + (
                    " — the server is asleep: the warm-up loads the model" if facts.sleeping else ""
                ),
            )
        )
        warm = await run_probe(
            client,
            req.url,
            req.prompt,
            min(req.n_predict, 4),
            api_key=req.api_key,
            timeout_s=max(req.timeout_s, 120.0) if facts.sleeping else req.timeout_s,
        )
        if not warm.ok:
            raise LoadError(f"the warm-up request failed: {warm.error or 'cancelled'}")
        if facts.sleeping:  # awake now: ask again for what asking would have woken it for
            awake = await server_facts(req.url, req.api_key, client)
            facts = ServerFacts(awake.total_slots, awake.metrics_enabled, sleeping=True)
        levels: list[LoadLevel] = []
        stopped: str | None = None
        for c in req.concurrency:
            if self._clock() >= deadline:
                stopped = f"time limit of {req.max_seconds:g} s reached before concurrency {c}"
                break
            n = req.requests_at(c)
            emit(Progress("load", f"concurrency {c}: {n} requests of {req.n_predict} tokens…"))
            level, cut = await self._level(req, client, c, n, deadline, facts.metrics_enabled)
            levels.append(level)
            emit(LoadStep(level))
            if cut:
                stopped = f"time limit of {req.max_seconds:g} s reached during concurrency {c}"
                break
        knee = find_knee(
            [LevelPoint(lv.concurrency, lv.ttft_p95_ms, lv.requests_deferred) for lv in levels],
            facts.total_slots,
        )
        return LoadResult(
            url=req.url,
            n_predict=req.n_predict,
            total_slots=facts.total_slots,
            metrics_enabled=facts.metrics_enabled,
            levels=tuple(levels),
            knee_concurrency=knee.knee_concurrency,
            best_concurrency=knee.best_concurrency,
            parallel_limited=knee.parallel_limited,
            recommendation=knee.recommendation,
            duration_s=self._clock() - started,
            stopped_early=stopped,
            was_sleeping=facts.sleeping,
        )

    async def _level(
        self,
        req: LoadRequest,
        client: httpx.AsyncClient | None,
        concurrency: int,
        count: int,
        deadline: float,
        sample_metrics: bool,
    ) -> tuple[LoadLevel, bool]:
        """Keep *concurrency* requests in flight until *count* are sent; (level, cut off?)."""
        results: list[ProbeResult] = []
        todo = count
        stop = False

        async def worker() -> None:
            nonlocal todo
            while todo > 0 and not stop:
                todo -= 1
                results.append(
                    await run_probe(
                        client,
                        req.url,
                        req.prompt,
                        req.n_predict,
                        api_key=req.api_key,
                        timeout_s=req.timeout_s,
                    )
                )

        t0 = time.perf_counter()
        workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, count))]
        sampler = DeferredSampler(req, client) if sample_metrics else None
        if sampler is not None:
            sampler.start()
        _, pending = await asyncio.wait(workers, timeout=max(0.0, deadline - self._clock()))
        cut = bool(pending)
        if pending:
            stop = True
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        duration = time.perf_counter() - t0
        deferred = await sampler.stop() if sampler is not None else None
        secrets = (req.api_key,) if req.api_key else ()
        return level_of(concurrency, results, deferred, duration, secrets), cut


class DeferredSampler:
    """Asks /metrics for `requests_deferred` while a level runs, one scrape in flight at a
    time, `metrics_interval_s` apart; the level's figure is the most seen.

    The first scrape waits one interval (the level's requests must reach the server's queue
    first). A scrape sent during the level but answered after it still counts when it is the
    only one: the server read the gauge when the scrape reached its queue, during the level.
    A failed scrape is skipped; none answered at all is None (unknown)."""

    def __init__(self, req: LoadRequest, client: httpx.AsyncClient | None) -> None:
        self._req = req
        self._client = client
        self.seen: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._in_flight = False
        self._answered = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> int | None:
        """End sampling; the most deferred requests seen, or None when no scrape answered."""
        if self._task is None:
            return None
        if not self.seen and self._in_flight:
            try:
                async with asyncio.timeout(GET_TIMEOUT_S):
                    await self._answered.wait()
            except TimeoutError:
                pass
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return max(self.seen) if self.seen else None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._req.metrics_interval_s)
            self._in_flight = True
            try:
                status, body = await http_get(
                    self._req.url, "/metrics", self._req.api_key, self._client
                )
            except LoadError:
                status, body = 0, ""
            finally:
                self._in_flight = False
            if status == 200:
                value = parse_metrics(body).get("requests_deferred")
                if value is not None and value >= 0:
                    self.seen.append(int(value))
            self._answered.set()


async def http_get(
    url: str, path: str, api_key: str | None, client: httpx.AsyncClient | None
) -> tuple[int, str]:
    """One GET (status, body text) by llmtop's own clients: raw sockets for http://, httpx for
    https. A transport failure is a `LoadError` in words."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if client is None:
        try:
            response = await request(
                "GET", url, path, b"", headers, timeout_s=GET_TIMEOUT_S, connect_timeout_s=2.0
            )
            try:
                body = await response.read_all()
            finally:
                response.close()
        except RawHTTPError as exc:
            raise LoadError(str(exc)) from None
        return response.status, body.decode(errors="replace")
    try:
        r = await client.get(url + path, headers=headers, timeout=GET_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise LoadError(describe_transport_error(exc, GET_TIMEOUT_S)[1]) from None
    return r.status_code, r.text


async def server_facts(
    url: str, api_key: str | None, client: httpx.AsyncClient | None = None
) -> ServerFacts:
    """Slot count (/props `total_slots`, else the length of /slots), whether /metrics answers,
    whether the server is asleep. Raises `LoadError` when the server cannot be used at all."""
    try:
        status, text = await http_get(url, "/props", api_key, client)
    except LoadError as exc:
        raise LoadError(f"cannot reach llama-server at {url}: {exc}") from None
    if status == 401:
        raise LoadError(f"{url}: HTTP {UNAUTHORIZED_DETAIL}")
    if status == 503:
        raise LoadError(
            f"{url}: HTTP 503 {error_message(text) or 'loading the model'} — try again when "
            "/health says ok"
        )
    if status != 200:
        msg = error_message(text)
        raise LoadError(
            f"{url}: HTTP {status} from /props{f': {msg}' if msg else ''} — is it a llama-server "
            "(in router mode, give the URL of one model's server)?"
        )
    try:
        props = parse_props(json.loads(text))
    except (ValueError, RecursionError):
        raise LoadError(f"{url}: /props is not a llama-server's answer") from None
    total_slots = props.total_slots if props.total_slots and props.total_slots > 0 else None
    if total_slots is None and not props.is_sleeping:
        total_slots = await _slots_count(url, api_key, client)
    metrics_enabled = False
    if props.endpoint_metrics is not False and not props.is_sleeping:
        try:
            m_status, m_text = await http_get(url, "/metrics", api_key, client)
        except LoadError:
            m_status, m_text = 0, ""
        metrics_enabled = m_status == 200 and "requests_deferred" in parse_metrics(m_text)
    elif props.endpoint_metrics is True:
        metrics_enabled = True  # asleep: asking would wake it; /props says it is on
    return ServerFacts(total_slots, metrics_enabled, props.is_sleeping)


async def _slots_count(
    url: str, api_key: str | None, client: httpx.AsyncClient | None
) -> int | None:
    try:
        status, text = await http_get(url, "/slots", api_key, client)
        if status != 200:
            return None
        return len(parse_slots(json.loads(text))) or None
    except (LoadError, ValueError, RecursionError):
        return None
