"""Router-mode llama-server (`--models-dir` / `--models-preset`): the models, their state, slots,
rate and the pid of each model's child llama-server.

A router loads no model itself: each loaded model runs as its own llama-server child on a port of
its own, and the router answers `GET /models` with every model and its status object
(`{"value": loaded|loading|unloaded|sleeping, "args": [child argv], "failed"?, "exit_code"?}`).
`/props`, `/slots` and `/metrics` without `?model=` answer 400 "model name is missing from the
request", so the plain poll (sources/llama_http.py) sees an "error" there: `RouterWatch` wraps the
plain client, notices that (or is told `--router`), confirms it (`/props` says `"role":
"router"`, or `/models` carries status objects) and from then on asks `/health` and `/models`,
plus `/props`, `/slots` and `/metrics` with `?model=ID&autoload=false` for the models that are
loaded — never for unloaded or sleeping ones: with the router's default `--models-autoload` any
request naming an unloaded model loads it, and `autoload=false` makes the router refuse instead
(400 "model is not loaded") should the model go away between the two requests. A child started
with `--sleep-idle-seconds` is asked /slots and /metrics only every timeout + a margin while idle
(they count as activity), as the plain client does, so watching it lets it fall asleep.

Facts from the pinned build (11434): a failed model is `"value": "unloaded"` with `"failed":
true` and its `exit_code` (shown as status "failed"); the router prefixes each child's log line
with `[PORT] ` (port right-aligned in 5 columns), the way the Logs tab tells models apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

from llmtop.model.redaction import redact_argv
from llmtop.snapshot import GpuSample, Health, ModelStatus, ServerStatus
from llmtop.sources import raw_http
from llmtop.sources.llama_http import error_message, parse_props, parse_slots
from llmtop.sources.prometheus import CounterRates, parse_metrics

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.sources.llama_http import LlamaClient

# Words of the plain poll that say "this is a router" (its /slots, /metrics answer 400 so).
ROUTER_HINT = "model name is missing from the request"
# A router's own /props carries the dummy model path "none".
ROUTER_DUMMY_MODEL_PATH = "none"
PID_RECHECK_S = 5.0  # a model whose child pid is not found yet is looked up again this often


@dataclass(frozen=True)
class Fetched:
    """One GET's outcome: the body text of a 200, else `error` in words."""

    path: str
    status: int | None
    text: str = ""
    error: str | None = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    at: float = 0.0  # monotonic arrival

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None

    def json(self) -> object:
        """The parsed body, or None when it is not JSON (a hostile or truncated answer)."""
        try:
            return json.loads(self.text)
        except (ValueError, RecursionError):
            return None


# -- parsing /models ------------------------------------------------------------------------------
def _int(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and math.isfinite(v):
        return int(v)
    return None


def arg_value(argv: Sequence[str], flag: str) -> str | None:
    """The value of `flag` (`--flag V` or `--flag=V`; the last one wins) in an argv."""
    value: str | None = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.partition("=")[2]
    return value


def _port(argv: Sequence[str]) -> int | None:
    raw = arg_value(argv, "--port")
    try:
        port = int(raw) if raw is not None else None
    except ValueError:
        return None
    return port if port is not None and 0 < port < 65536 else None


def _entries(body: object) -> list[dict[str, object]]:
    data = body.get("data") if isinstance(body, dict) else None
    return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []


def is_router_listing(body: object) -> bool:
    """True when a /models body lists models with router status objects (`status.value`)."""
    return any(
        isinstance(st := e.get("status"), dict) and isinstance(st.get("value"), str)
        for e in _entries(body)
    )


def parse_models(body: object) -> tuple[ModelStatus, ...]:
    """A router's /models body → one ModelStatus per model (malformed entries are skipped).

    Never raises: the body is whatever the server sent. Argv values that are secrets (an
    `--api-key` the router hands its children) are redacted here, before anything keeps them."""
    out: list[ModelStatus] = []
    seen: set[str] = set()
    for e in _entries(body):
        mid = e.get("id")
        st = e.get("status")
        if not isinstance(mid, str) or not mid or mid in seen or not isinstance(st, dict):
            continue
        value = st.get("value")
        if not isinstance(value, str) or not value:
            continue
        raw_args = st.get("args")
        args = [a for a in raw_args if isinstance(a, str)] if isinstance(raw_args, list) else []
        failed = st.get("failed") is True
        exit_code = _int(st.get("exit_code"))
        raw_aliases = e.get("aliases")
        aliases = (
            tuple(a for a in raw_aliases if isinstance(a, str))
            if isinstance(raw_aliases, list)
            else ()
        )
        meta = e.get("meta")
        n_ctx = _int(meta.get("n_ctx")) if isinstance(meta, dict) else None
        seen.add(mid)
        out.append(
            ModelStatus(
                id=mid,
                status="failed" if failed and value == "unloaded" else value,
                port=_port(args),
                exit_code=exit_code if failed or exit_code else None,
                n_ctx=n_ctx,
                aliases=aliases,
                argv=tuple(redact_argv(args)),
            )
        )
    return tuple(out)


def model_log_prefix(port: int) -> str:
    """How the router starts each line it forwards from the child on *port*: "[ 8081] "."""
    return f"[{port:5d}] "


def with_model_vram(server: ServerStatus, gpus: Iterable[GpuSample]) -> ServerStatus:
    """The server with each model's GPU memory: what NVML lists for the model child's pid,
    summed over the GPUs. None where no GPU has process readings (or the pid is unknown); 0
    when the readings are there and the child is not in them (it runs on the CPU)."""
    if not server.models:
        return server
    used: dict[int, int] = {}
    have_readings = False
    for gpu in gpus:
        if gpu.processes is None:
            continue
        have_readings = True
        for proc in gpu.processes:
            used[proc.pid] = used.get(proc.pid, 0) + (proc.used_memory_bytes or 0)
    if not have_readings:
        return server
    models = tuple(
        dataclasses.replace(m, gpu_memory_bytes=used.get(m.pid, 0)) if m.pid is not None else m
        for m in server.models
    )
    return dataclasses.replace(server, models=models)


# -- the child's pid ------------------------------------------------------------------------------
class ChildPids:
    """The pid of the process listening on each child's port (blocking: call from a thread).

    Cached per port; a cached pid is dropped when its process is gone, and a port with no pid
    found yet is looked up again at most every PID_RECHECK_S (net_connections walks every
    socket of the host)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pids: dict[int, int] = {}
        self._tried_at: dict[int, float] = {}

    def lookup(self, ports: Iterable[int]) -> dict[int, int]:
        import psutil

        from llmtop.sources.process import pid_listening_on

        wanted = set(ports)
        for port in list(self._pids):
            if port not in wanted or not psutil.pid_exists(self._pids[port]):
                del self._pids[port]
        now = time.monotonic()
        parts = urlsplit(self.url)
        for port in wanted - set(self._pids):
            if now - self._tried_at.get(port, float("-inf")) < PID_RECHECK_S:
                continue
            self._tried_at[port] = now
            child_url = urlunsplit(("http", f"{parts.hostname or '127.0.0.1'}:{port}", "", "", ""))
            pid = pid_listening_on(child_url)
            if pid is not None:
                self._pids[port] = pid
                self._tried_at.pop(port, None)
        return dict(self._pids)


# -- the poll -----------------------------------------------------------------------------------
@dataclass
class _ModelTrack:
    """What the watch remembers of one model between polls."""

    rates: CounterRates = dataclasses.field(default_factory=CounterRates)
    n_ctx: int | None = None
    slots_total: int | None = None
    slots_busy: int | None = None
    gen_tokens_per_s: float | None = None
    activity_at: float = float("-inf")  # monotonic: /slots or /metrics last asked
    asleep: bool = False


class RouterWatch:
    """Polls through the plain client until the server turns out to be a router, then polls the
    router: one `poll()` per tick, a `ServerStatus` with `router=True` and `models`.

    `forced` (`--router`): router mode from the first poll, whatever /models says."""

    def __init__(self, client: LlamaClient, *, forced: bool = False) -> None:
        self.client = client
        self.forced = forced
        self.router = forced
        self._build_info: str | None = None
        self._tracks: dict[str, _ModelTrack] = {}
        self._pids = ChildPids(client.url)
        self.requests = 0  # GETs asked in router mode (tests: nothing asked of unloaded models)
        self.asked: list[str] = []  # the paths of the last router poll

    async def poll(self) -> ServerStatus:
        if not self.router:
            status = await self.client.poll()
            if not looks_like_router(status):
                return status
            routed = await self._poll_router(detecting=True)
            return routed if routed is not None else status
        routed = await self._poll_router(detecting=False)
        if routed is None:  # /models lists no model status any more: a plain server again
            return await self.client.poll()
        return routed

    # -- one router poll -----------------------------------------------------------------------
    async def _poll_router(self, *, detecting: bool) -> ServerStatus | None:
        first = ["/health", "/models"]
        if detecting or self._build_info is None:
            first.insert(1, "/props")
        got = {f.path: f for f in await self._fetch(first)}
        health_f, models_f = got["/health"], got["/models"]
        props_f = got.get("/props")
        props = props_f.json() if props_f is not None and props_f.ok else None
        if isinstance(props, dict):
            build = props.get("build_info")
            self._build_info = build if isinstance(build, str) and build else None
        said_router = isinstance(props, dict) and props.get("role") == "router"
        body = models_f.json() if models_f.ok else None
        listing = is_router_listing(body)
        if models_f.ok and not listing and not said_router and not self.forced:
            self.router = False  # not (or no longer) a router
            return None
        if detecting and not (listing or said_router):
            return None  # could not confirm (unreachable …): ask the plain way again
        self.router = True
        health, detail = _router_health(health_f, models_f)
        problems: list[str] = []
        if health != "ok":
            self._tracks.clear()
            return ServerStatus(
                url=self.client.url, health=health, detail=detail, router=True,
                build_info=self._build_info,
            )  # fmt: skip
        if not listing and body is not None and _entries(body):
            problems.append("--router: /models lists no model status (not a router?)")
        models = parse_models(body)
        models = await self._poll_models(models, problems)
        return self._status(models, problems)

    async def _poll_models(
        self, models: tuple[ModelStatus, ...], problems: list[str]
    ) -> tuple[ModelStatus, ...]:
        """Ask each loaded model's child (through the router, `autoload=false`) its /props,
        /slots and /metrics; fold in the child pids (found by port, in a thread)."""
        self._tracks = {m.id: self._tracks.get(m.id, _ModelTrack()) for m in models}
        now = time.monotonic()
        paths: list[str] = []
        for m in models:
            if m.status != "loaded":
                self._tracks[m.id] = _ModelTrack()  # a reload starts counting afresh
                continue
            q = f"?model={quote(m.id, safe='')}&autoload=false"
            paths.append(f"/props{q}")
            if not self._let_it_sleep(m, self._tracks[m.id], now):
                paths += [f"/slots{q}", f"/metrics{q}"]
                self._tracks[m.id].activity_at = now
        ports = [m.port for m in models if m.port is not None and m.status in _RUNNING]
        fetched, pids = await asyncio.gather(
            self._fetch(paths) if paths else _none(),
            asyncio.to_thread(self._pids.lookup, ports),
        )
        by_path = {f.path: f for f in fetched}
        out: list[ModelStatus] = []
        for m in models:
            track = self._tracks[m.id]
            pid = pids.get(m.port) if m.port is not None and m.status in _RUNNING else None
            if m.status == "loaded":
                q = f"?model={quote(m.id, safe='')}&autoload=false"
                self._read_child(m, track, by_path, q, problems)
                status = "sleeping" if track.asleep else m.status
                m = dataclasses.replace(
                    m,
                    status=status,
                    n_ctx=track.n_ctx if track.n_ctx is not None else m.n_ctx,
                    slots_total=track.slots_total,
                    slots_busy=None if track.asleep else track.slots_busy,
                    gen_tokens_per_s=None if track.asleep else track.gen_tokens_per_s,
                )
            out.append(dataclasses.replace(m, pid=pid))
        return tuple(out)

    def _read_child(
        self,
        m: ModelStatus,
        track: _ModelTrack,
        by_path: dict[str, Fetched],
        q: str,
        problems: list[str],
    ) -> None:
        props_f = by_path.get(f"/props{q}")
        if props_f is not None and props_f.ok:
            try:
                props = parse_props(props_f.json())
            except ValueError:
                problems.append(f"{m.id}: malformed JSON from /props")
            else:
                track.n_ctx = props.n_ctx or track.n_ctx
                track.slots_total = props.total_slots
                track.asleep = props.is_sleeping
        elif props_f is not None:
            problems.append(f"{m.id}: {props_f.error}")
        slots_f = by_path.get(f"/slots{q}")
        if slots_f is not None and slots_f.ok:
            try:
                slots = parse_slots(slots_f.json())
            except ValueError:
                problems.append(f"{m.id}: malformed JSON from /slots")
            else:
                track.slots_busy = sum(1 for s in slots if s.is_processing)
                track.slots_total = track.slots_total or len(slots)
        metrics_f = by_path.get(f"/metrics{q}")
        if metrics_f is not None and metrics_f.ok:
            counters = parse_metrics(metrics_f.text)
            start = _float(metrics_f.headers.get("process-start-time-unix"))
            rates = track.rates.update(counters, metrics_f.at, start)
            track.gen_tokens_per_s = rates.gen_tokens_per_s if rates else None
        elif metrics_f is not None and metrics_f.status == 501:
            track.gen_tokens_per_s = None  # the child runs without --metrics

    def _let_it_sleep(self, m: ModelStatus, track: _ModelTrack, now: float) -> bool:
        """True when this poll must not ask the child /slots or /metrics: it has
        --sleep-idle-seconds, nothing ran at the last look, and that look is recent."""
        raw = arg_value(m.argv, "--sleep-idle-seconds")
        idle_s = _float(raw)
        if idle_s is None or idle_s <= 0 or track.slots_busy:
            return False
        return now - track.activity_at < idle_s + max(1.0, 0.25 * idle_s)

    def _status(self, models: tuple[ModelStatus, ...], problems: list[str]) -> ServerStatus:
        loaded = [m for m in models if m.status in ("loaded", "sleeping")]
        rates = [m.gen_tokens_per_s for m in loaded if m.gen_tokens_per_s is not None]
        totals = [m.slots_total for m in loaded if m.slots_total is not None]
        n = len(models)
        detail = f"router — {n} model{'s' if n != 1 else ''}, {len(loaded)} loaded"
        for m in models:
            if m.status == "failed":
                code = f" (exit code {m.exit_code})" if m.exit_code is not None else ""
                problems.append(f"{m.id} failed{code}")
        return ServerStatus(
            url=self.client.url,
            health="ok",
            detail=detail,
            build_info=self._build_info,
            total_slots=sum(totals) if totals else None,
            gen_tokens_per_s=sum(rates) if rates else None,
            problems=tuple(dict.fromkeys(problems)),
            router=True,
            models=models,
        )

    # -- HTTP ------------------------------------------------------------------------------------
    async def _fetch(self, paths: list[str]) -> list[Fetched]:
        """GET *paths* in a row: plain http over one connection in a thread (raw_http), https
        through the client's httpx pool. /health goes without the API key, like the poll's."""
        self.requests += len(paths)
        self.asked = list(paths)
        client = self.client
        if not client.url.startswith("http://"):
            key = client.auth_headers()
            asks = [(p, {} if p == "/health" else key) for p in paths]
            return list(await asyncio.gather(*(self._fetch_httpx(p, h) for p, h in asks)))
        padded = await client.raw_sequence(paths)
        out: list[Fetched] = []
        for path, answer in zip(paths, padded, strict=True):
            if answer is None or isinstance(answer, raw_http.RawHTTPError):
                out.append(Fetched(path, None, error=f"{path}: {answer or 'not asked'}"))
                continue
            status, headers, body, at = answer
            out.append(_fetched(path, status, body.decode("utf-8", "replace"), headers, at))
        return out

    async def _fetch_httpx(self, path: str, headers: dict[str, str]) -> Fetched:
        import httpx

        try:
            r = await self.client.http.get(self.client.url + path, headers=headers)
        except httpx.HTTPError as exc:
            return Fetched(path, None, error=f"{path}: {type(exc).__name__}: {exc}")
        hdrs = {k.lower(): v for k, v in r.headers.items()}
        return _fetched(path, r.status_code, r.text, hdrs, time.monotonic())


_RUNNING = ("loaded", "loading", "sleeping")


async def _none() -> list[Fetched]:
    return []


def _fetched(path: str, status: int, text: str, headers: dict[str, str], at: float) -> Fetched:
    if status == 200:
        return Fetched(path, status, text, headers=headers, at=at)
    msg = error_message(text)
    words = f"HTTP {status} from {path.partition('?')[0]}" + (f": {msg}" if msg else "")
    return Fetched(path, status, text, error=words, headers=headers, at=at)


def _float(raw: str | None) -> float | None:
    try:
        v = float(raw) if raw is not None else None
    except ValueError:
        return None
    return v if v is not None and math.isfinite(v) else None


def _router_health(health_f: Fetched, models_f: Fetched) -> tuple[Health, str]:
    if health_f.status is None:
        words = health_f.error or "unreachable"
        return "unreachable", words.removeprefix("/health: ")
    if health_f.status == 503:
        return "loading", error_message(health_f.text) or "starting"
    if models_f.status == 401:
        return "unauthorized", "401 Invalid API Key — check --api-key / LLAMA_API_KEY"
    if not health_f.ok:
        return "error", health_f.error or "error"
    if not models_f.ok:
        return "error", models_f.error or "/models failed"
    return "ok", "ok"


def looks_like_router(status: ServerStatus) -> bool:
    """The plain poll's status of a router: its /props carry the dummy model path "none", its
    /slots and /metrics answer "model name is missing from the request"."""
    if status.model_path == ROUTER_DUMMY_MODEL_PATH:
        return True
    return any(ROUTER_HINT in text for text in (status.detail, *status.problems))
