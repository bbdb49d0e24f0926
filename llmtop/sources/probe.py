"""Latency probe: one streaming POST /completion, timed from the client side.

- TTFT: request sent → first streamed chunk that carries a token (client clock, perf_counter_ns).
- queue_ms: request sent → response headers; llama-server releases the headers when a slot
  starts processing the request, so this is about the queue wait.
- ITL: arrival gaps between token-carrying chunks, per token (a chunk can carry several tokens
  when the server held back an incomplete UTF-8 character), p50/p95.
- gen tokens/s (client): tokens after the first over the time from first to last token chunk.
- prompt tokens/s: the server's own `timings.prompt_per_second` (cache_prompt is off, so the
  whole prompt is processed); `prompt_tokens_per_s_client` estimates it from TTFT.

The stream is read raw and split on newlines; per chunk only a timestamp is taken and the JSON
parsed, so client overhead stays in the microseconds. Cancelling the task closes the stream and
returns a result with `cancelled=True` and the partial statistics.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from llmtop.sources.llama_http import describe_transport_error
from llmtop.sources.raw_http import RawHTTPError, request

MAX_N_PREDICT = 100_000
MAX_TEMPERATURE = 10.0


@dataclass(frozen=True)
class ProbeRequest:
    prompt: str
    n_predict: int = 128
    temperature: float = 0.0


@dataclass(frozen=True)
class ProbeResult:
    started_at: float  # unix time the request was sent
    prompt: str
    n_predict: int
    tokens: int  # tokens generated (the server's count when it told us)
    ttft_ms: float | None
    itl_ms_p50: float | None
    itl_ms_p95: float | None
    gen_tokens_per_s: float | None
    prompt_tokens_per_s: float | None
    server_timings: dict[str, Any] | None
    text: str
    error: str | None = None
    cancelled: bool = False
    temperature: float = 0.0
    queue_ms: float | None = None
    total_ms: float | None = None
    prompt_tokens: int | None = None
    prompt_tokens_per_s_client: float | None = None
    itl_ms_mean: float | None = None
    stop_type: str | None = None
    # The server was asleep (--sleep-idle-seconds) when the probe was sent: its TTFT includes
    # loading the model again, so it is no measure of the awake server's first-token latency.
    includes_model_load: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)


async def server_sleeping(
    client: httpx.AsyncClient, url: str, api_key: str | None = None, timeout_s: float = 2.0
) -> bool:
    """True when /props says the server is asleep (`is_sleeping`). /props does not wake it, so
    a probe can ask first and warn that its TTFT will include the model load. Any failure is
    False: the probe itself then says what is wrong."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        r = await client.get(url.rstrip("/") + "/props", headers=headers, timeout=timeout_s)
        body = r.json() if r.status_code == 200 else None
    except Exception:  # noqa: BLE001 - transport or JSON trouble: not known to be asleep
        return False
    return isinstance(body, dict) and body.get("is_sleeping") is True


def validate_probe_input(
    prompt: str, n_predict_text: str, temperature_text: str
) -> tuple[ProbeRequest | None, str | None]:
    """Check the prompt panel's fields. Returns (request, None) or (None, error in words)."""
    if not prompt.strip():
        return None, "prompt is empty — type something to send"
    text = n_predict_text.strip()
    if not text:
        return None, "n_predict is empty — enter a whole number of tokens, e.g. 128"
    try:
        n_predict = int(text)
    except ValueError:
        return None, f"n_predict must be a whole number, not {text!r}"
    if n_predict < 0:
        return None, f"n_predict must not be negative (got {n_predict})"
    if n_predict == 0:
        return None, "n_predict must be at least 1"
    if n_predict > MAX_N_PREDICT:
        return None, f"n_predict is too large (at most {MAX_N_PREDICT})"
    t_text = temperature_text.strip()
    temperature = 0.0
    if t_text:
        try:
            temperature = float(t_text)
        except ValueError:
            return None, f"temperature must be a number, not {t_text!r}"
        if math.isnan(temperature) or temperature < 0 or temperature > MAX_TEMPERATURE:
            return None, f"temperature must be between 0 and {MAX_TEMPERATURE:g}"
    return ProbeRequest(prompt, n_predict, temperature), None


def percentile(values: Iterable[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    data = sorted(values)
    if not data:
        return None
    if len(data) == 1:
        return data[0]
    pos = (len(data) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def _error_words(status: int, body: bytes) -> str:
    msg = None
    try:
        obj = json.loads(body)
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            msg = err.get("message")
        elif isinstance(err, str):
            msg = err
    except (ValueError, RecursionError):
        pass
    if status == 401:
        return "HTTP 401: Invalid API Key — check --api-key / LLAMA_API_KEY"
    if status == 503:
        return f"HTTP 503: {msg or 'server is loading the model'}"
    text = msg or body[:200].decode(errors="replace").strip()
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


def _count(value: Any) -> int | None:
    """A token count from the server's JSON: a whole number a float can hold, else None."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**53:
        return value
    return None


def _rate(value: Any) -> float | None:
    """A positive, finite rate from the server's JSON, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int) and value > 2**53:
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


class _Stream:
    """Splits the SSE body into events; per event only a timestamp and a JSON parse."""

    def __init__(self, on_chunk: Callable[[str], None] | None) -> None:
        self.on_chunk = on_chunk
        # (arrival ns, tokens_predicted so far, tokens since the previous mark)
        self.marks: list[tuple[int, int, int]] = []
        self.parts: list[str] = []
        self.final: dict[str, Any] | None = None
        self.error: str | None = None
        self._buf = b""
        self._n_seen = 0

    def feed(self, now: int, data: bytes) -> None:
        buf = self._buf + data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl]
            start = nl + 1
            if line.startswith(b"data:"):
                self._event(now, line[5:])
            # blank separators and ":" keep-alive comments are skipped
        self._buf = buf[start:]

    def _event(self, now: int, payload: bytes) -> None:
        try:
            obj = json.loads(payload)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than json allows
            self.error = "malformed JSON in the stream"
            return
        if not isinstance(obj, dict):
            return
        if "error" in obj:
            err = obj["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            self.error = f"server error: {msg}"
            return
        toks = obj.get("tokens")
        n_tok = len(toks) if isinstance(toks, list) else 0
        content = obj.get("content")
        content = content if isinstance(content, str) else ""
        if n_tok or content:
            n_pred = _count(obj.get("tokens_predicted"))
            if n_pred is None or n_pred <= self._n_seen:
                n_pred = self._n_seen + max(n_tok, 1)
            k = n_pred - self._n_seen
            if self.marks and self.marks[-1][0] == now:
                # several events in one read: one arrival carrying all their tokens
                k += self.marks[-1][2]
                self.marks[-1] = (now, n_pred, k)
            else:
                self.marks.append((now, n_pred, k))
            self._n_seen = n_pred
        if content:
            self.parts.append(content)
            if self.on_chunk is not None:
                self.on_chunk(content)
        if obj.get("stop") is True:
            self.final = obj


async def run_probe(
    client: httpx.AsyncClient | None,
    url: str,
    prompt: str,
    n_predict: int,
    temperature: float = 0.0,
    api_key: str | None = None,
    on_chunk: Callable[[str], None] | None = None,
    *,
    ignore_eos: bool = True,
    timeout_s: float = 60.0,
    via_httpx: bool = False,
) -> ProbeResult:
    """Fire one streamed completion at `url` (the server's base URL) and time it.

    Never raises for server or network faults: they come back as `error` in words. With
    `ignore_eos` (default) the server generates exactly `n_predict` tokens, so probes compare.
    Plain http:// is read with a minimal asyncio HTTP client (llmtop.sources.raw_http) so the
    client adds microseconds, not milliseconds, to what it measures; https goes through `client`.
    """
    body = {
        "prompt": prompt,
        "n_predict": n_predict,
        "temperature": temperature,
        "stream": True,
        "cache_prompt": False,
        "timings_per_token": False,
        "ignore_eos": ignore_eos,
    }
    payload = json.dumps(body).encode()
    headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    stream = _Stream(on_chunk)
    cancelled = False
    error: str | None = None
    sent: list[int] = []
    t_headers: int | None = None
    started_at = time.time()
    t_start = time.perf_counter_ns()
    try:
        if client is not None and (via_httpx or not url.startswith("http://")):
            t_headers = await _via_httpx(client, url, payload, headers, timeout_s, stream, sent)
        elif not url.startswith("http://"):
            async with httpx.AsyncClient(trust_env=False) as own:
                t_headers = await _via_httpx(own, url, payload, headers, timeout_s, stream, sent)
        else:
            t_headers = await _via_raw(url, payload, headers, timeout_s, stream, sent)
    except asyncio.CancelledError:
        cancelled = True
    except RawHTTPError as exc:
        error = str(exc)
    except httpx.HTTPError as exc:
        error = describe_transport_error(exc, timeout_s)[1]
    except _HTTPStatus as exc:
        error = str(exc)
    t_end = time.perf_counter_ns()
    error = error or stream.error
    if stream.final is None and error is None and not cancelled:
        error = "stream ended without a final chunk"
    t0 = sent[0] if sent else t_start
    return _result(
        started_at,
        body,
        t0,
        t_headers,
        t_end,
        stream.marks,
        stream.parts,
        stream.final,
        error,
        cancelled,
        temperature,
    )


class _HTTPStatus(Exception):
    """A non-200 answer, in words."""


async def _via_raw(
    url: str,
    payload: bytes,
    headers: dict[str, str],
    timeout_s: float,
    stream: _Stream,
    sent: list[int],
) -> int:
    response = await request(
        "POST",
        url,
        "/completion",
        payload,
        headers,
        timeout_s=timeout_s,
        connect_timeout_s=min(timeout_s, 5.0),
        on_sent=sent,
    )
    t_headers = time.perf_counter_ns()
    try:
        if response.status != 200:
            raise _HTTPStatus(_error_words(response.status, await response.read_all()))
        async for now, data in response.iter_body():
            stream.feed(now, data)
            if stream.final is not None:
                break
    finally:
        response.close()
    return t_headers


async def _via_httpx(
    client: httpx.AsyncClient,
    url: str,
    payload: bytes,
    headers: dict[str, str],
    timeout_s: float,
    stream: _Stream,
    sent: list[int],
) -> int:
    request = client.build_request(
        "POST",
        url.rstrip("/") + "/completion",
        content=payload,
        headers=headers,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 5.0)),
    )
    sent.append(time.perf_counter_ns())
    response = await client.send(request, stream=True)
    t_headers = time.perf_counter_ns()
    try:
        if response.status_code != 200:
            raise _HTTPStatus(_error_words(response.status_code, await response.aread()))
        async for raw in response.aiter_raw():
            stream.feed(time.perf_counter_ns(), raw)
            if stream.final is not None:
                break
    finally:
        await asyncio.shield(response.aclose())
    return t_headers


def _result(
    started_at: float,
    body: dict[str, Any],
    t0: int,
    t_headers: int | None,
    t_end: int,
    marks: list[tuple[int, int, int]],
    parts: list[str],
    final: dict[str, Any] | None,
    error: str | None,
    cancelled: bool,
    temperature: float,
) -> ProbeResult:
    timings = final.get("timings") if final else None
    timings = timings if isinstance(timings, dict) else None
    tokens = marks[-1][1] if marks else 0
    if final and _count(final.get("tokens_predicted")) is not None:
        tokens = final["tokens_predicted"]
    prompt_tokens = _count(final.get("tokens_evaluated")) if final else None
    ttft_ms = (marks[0][0] - t0) / 1e6 if marks else None
    itl: list[float] = []
    for (ta, _, _), (tb, _, k) in zip(marks, marks[1:], strict=False):
        gap = (tb - ta) / 1e6
        if k > 1:
            itl.extend([gap / k] * k)
        else:
            itl.append(gap)
    gen_tps = None
    if len(marks) >= 2 and marks[-1][0] > marks[0][0]:
        gen_tps = (marks[-1][1] - marks[0][1]) / ((marks[-1][0] - marks[0][0]) / 1e9)
    prompt_tps_client = None
    if ttft_ms and prompt_tokens:
        prompt_tps_client = prompt_tokens / (ttft_ms / 1e3)
    prompt_tps = _rate(timings.get("prompt_per_second")) if timings else None
    if prompt_tps is None:
        prompt_tps = prompt_tps_client
    stop_type = final.get("stop_type") if final else None
    return ProbeResult(
        started_at=started_at,
        prompt=body["prompt"],
        n_predict=body["n_predict"],
        tokens=tokens,
        ttft_ms=ttft_ms,
        itl_ms_p50=percentile(itl, 50),
        itl_ms_p95=percentile(itl, 95),
        gen_tokens_per_s=gen_tps,
        prompt_tokens_per_s=float(prompt_tps) if prompt_tps is not None else None,
        server_timings=timings,
        text="".join(parts),
        error=error,
        cancelled=cancelled,
        temperature=temperature,
        queue_ms=(t_headers - t0) / 1e6 if t_headers is not None else None,
        total_ms=(t_end - t0) / 1e6,
        prompt_tokens=prompt_tokens,
        prompt_tokens_per_s_client=prompt_tps_client,
        itl_ms_mean=statistics.fmean(itl) if itl else None,
        stop_type=stop_type if isinstance(stop_type, str) else None,
    )


def _median(values: Iterable[float | None]) -> float | None:
    data = [v for v in values if v is not None]
    return statistics.median(data) if data else None


@dataclass(frozen=True)
class ProbeSummary:
    count: int
    failed: int
    ttft_ms_median: float | None
    ttft_ms_p95: float | None
    itl_ms_p50_median: float | None
    itl_ms_p95_median: float | None
    gen_tokens_per_s_median: float | None
    prompt_tokens_per_s_median: float | None


def summarize(results: Iterable[ProbeResult]) -> ProbeSummary:
    all_results = list(results)
    ok = [r for r in all_results if r.ok]
    return ProbeSummary(
        count=len(all_results),
        failed=len(all_results) - len(ok),
        ttft_ms_median=_median(r.ttft_ms for r in ok),
        ttft_ms_p95=percentile([r.ttft_ms for r in ok if r.ttft_ms is not None], 95),
        itl_ms_p50_median=_median(r.itl_ms_p50 for r in ok),
        itl_ms_p95_median=_median(r.itl_ms_p95 for r in ok),
        gen_tokens_per_s_median=_median(r.gen_tokens_per_s for r in ok),
        prompt_tokens_per_s_median=_median(r.prompt_tokens_per_s for r in ok),
    )


class ProbeHistory:
    """The last `maxlen` probe results (newest last) for the latency table and plot."""

    def __init__(self, maxlen: int = 200) -> None:
        self._results: deque[ProbeResult] = deque(maxlen=maxlen)

    def add(self, result: ProbeResult) -> None:
        self._results.append(result)

    def __len__(self) -> int:
        return len(self._results)

    def results(self) -> list[ProbeResult]:
        return list(self._results)

    def recent(self, n: int) -> list[ProbeResult]:
        """The newest `n`, newest first (table order)."""
        return list(reversed(self._results))[:n]

    def latest(self) -> ProbeResult | None:
        return self._results[-1] if self._results else None

    def summary(self) -> ProbeSummary:
        return summarize(self._results)

    def series(self, field: str = "ttft_ms") -> tuple[list[float], list[float | None]]:
        """(started_at, value) of every probe for one numeric field, for plots."""
        return (
            [r.started_at for r in self._results],
            [getattr(r, field) if r.ok else None for r in self._results],
        )
