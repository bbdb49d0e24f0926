"""Alerts with hysteresis over snapshots: the server's life (down, not responding, crash loop,
unauthorized), VRAM, temperature, throttling, CPU fallback, persistence.

A server that is down, hung or crash-looping is the worst thing the dashboard can show, so it is
an alert (critical) like any other: the alerts strip, `llmtop snapshot --json` and every other
reader of `snapshot.alerts` see it, never "no alerts" under an "unreachable" header. The rules
read only the snapshot: health and its detail (llama_http), the supervisor's state and recent
failures, and the server process's state from psutil (`host.process.status`).

`AlertEngine.evaluate(snapshot)` is pure apart from the engine's own state (when each condition
started, which alerts are raised): same snapshots in, same alerts out. The collector calls it at
every tick, then `thermal(snapshot)` for `snapshot.thermal`.
"""

from __future__ import annotations

from collections.abc import Iterable

from llmtop.diagnosis.thermal import (
    BRAKES,
    EVENT_WORDS,
    ThermalPoint,
    ThermalTracker,
    fmt_span,
    limiting_reasons,
)
from llmtop.diagnosis.thresholds import Thresholds
from llmtop.model.launch_spec import LaunchSpec
from llmtop.snapshot import Alert, GpuSample, Snapshot, ThermalReport

GiB = float(1 << 30)
ALL_GPU_LAYERS = -2


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


def server_pids(snapshot: Snapshot) -> set[int]:
    pids = set()
    if snapshot.server.pid is not None:
        pids.add(snapshot.server.pid)
    if snapshot.host.process is not None:
        pids.add(snapshot.host.process.pid)
    if snapshot.unit is not None and snapshot.unit.main_pid:
        pids.add(snapshot.unit.main_pid)
    return pids


def server_gpu_memory(snapshot: Snapshot) -> dict[int, int | None]:
    """GPU index → bytes the llama-server holds there (None: unknown).

    Uses the monitor's `server_memory_bytes` (server PID and children) and otherwise the GPU's
    process list matched against the server PID the snapshot knows.
    """
    pids = server_pids(snapshot)
    out: dict[int, int | None] = {}
    for g in snapshot.gpus:
        if g.lost:
            out[g.index] = None
        elif g.server_memory_bytes is not None:
            out[g.index] = g.server_memory_bytes
        elif g.processes is not None and pids:
            out[g.index] = sum(p.used_memory_bytes or 0 for p in g.processes if p.pid in pids)
        else:
            out[g.index] = None
    return out


def spec_from_snapshot(snapshot: Snapshot) -> LaunchSpec | None:
    """A LaunchSpec from what the snapshot carries (supervisor argv, or the unit's ExecStart)."""
    if snapshot.supervisor is not None and snapshot.supervisor.argv:
        return LaunchSpec.from_argv(snapshot.supervisor.argv)
    if snapshot.unit is not None and snapshot.unit.exec_start:
        env = dict(e.split("=", 1) for e in snapshot.unit.environment if "=" in e)
        return LaunchSpec.from_argv(snapshot.unit.exec_start, env)
    return None


THERMAL_REPORT_S = 5.0  # a "not throttled" verdict is at most this old

# Failures within the restart policy's window that make a crash loop (one crash is a crash).
CRASH_LOOP_FAILURES = 2
# Supervisor states in which the server is down because it died (the operator did not stop it).
_DIED_STATES = ("exited", "restarting", "failed")
# Supervisor states of a server the operator stopped, or that is not started yet: no alert.
_QUIET_STATES = ("stopped", "stopping")
# Supervisor states of a server on its way up: a refused connection is expected, not an alert.
_COMING_UP = ("starting", "loading")
# psutil's process states, in the words the alert uses.
PROCESS_STATE_WORDS = {
    "stopped": "stopped (SIGSTOP)",
    "tracing-stop": "stopped by a debugger (tracing stop)",
    "disk-sleep": "in uninterruptible sleep (D state: waiting on disk or a driver)",
    "zombie": "a zombie (it exited; nobody reaped it)",
    "dead": "dead",
}
_STOPPED = ("stopped", "tracing-stop")


def process_state_words(status: str | None) -> str | None:
    """psutil's state in words ("stopped (SIGSTOP)"); None when unknown."""
    if not status:
        return None
    return PROCESS_STATE_WORDS.get(status, status)


def _timed_out(detail: str) -> bool:
    return "timed out" in detail or "not responding" in detail


class AlertEngine:
    """Keeps per-condition state between ticks so alerts rise and clear with hysteresis."""

    def __init__(
        self,
        thresholds: Thresholds | None = None,
        spec: LaunchSpec | None = None,
        history_len: int = 3600,
    ) -> None:
        self.thresholds = thresholds or Thresholds()
        self.spec = spec
        self.tracker = ThermalTracker(maxlen=history_len)
        self._active: dict[tuple[str, int], Alert] = {}
        self._pending: dict[tuple[str, int], float] = {}
        self._fed_time: float | None = None
        self._report: ThermalReport | None = None
        self._report_key: tuple[object, ...] | None = None
        self._report_at = float("-inf")

    def set_spec(self, spec: LaunchSpec | None) -> None:
        """The server's LaunchSpec (child or unit), for the CPU-fallback check."""
        self.spec = spec

    # ------------------------------------------------------------------ public
    def evaluate(self, snapshot: Snapshot) -> tuple[Alert, ...]:
        self._feed(snapshot)
        now = snapshot.time
        seen: set[tuple[str, int]] = set()
        for g in snapshot.gpus:
            if g.lost:
                self._raise(
                    seen,
                    ("gpu_lost", g.index),
                    now,
                    "critical",
                    f"GPU{g.index} is lost (fell off the bus): check `dmesg` for Xid "
                    "errors; a GPU reset or reboot is usually needed",
                )
                continue
            self._vram(seen, g, now)
            self._temperature(seen, g, now)
            self._throttle(seen, g, now)
            if self.thresholds.persistence_hint and g.persistence_mode is False:
                self._raise(
                    seen,
                    ("persistence_off", g.index),
                    now,
                    "info",
                    f"GPU{g.index} persistence mode is off: the driver re-initialises "
                    "when idle (slow first request, slow NVML) — run `sudo nvidia-smi -pm 1`",
                )
        self._server_life(seen, snapshot, now)
        self._cpu_fallback(seen, snapshot, now)
        for key in list(self._active):
            if key not in seen:
                del self._active[key]
        order = {"critical": 0, "warning": 1, "info": 2}
        return tuple(
            sorted(self._active.values(), key=lambda a: (order[a.severity], a.since, a.kind))
        )

    def thermal(self, snapshot: Snapshot) -> ThermalReport | None:
        """The thermal verdict over the window (default 5 min) and the event list."""
        self._feed(snapshot)
        if not snapshot.gpus:
            return None
        used = [g.index for g in snapshot.gpus if g.used_by_server and not g.lost]
        # The window is minutes long and each report reads all of it (8 GPUs × 300 points).
        # With no throttling anywhere in the window the verdict only says so ("not throttled
        # in the last 4m10s"): then it is made again every few seconds; else on every tick.
        window = self.thresholds.thermal_window_s
        key = (tuple(used), self.tracker.events_seen)
        now = snapshot.time
        quiet = now - self.tracker.last_limited_at > window
        if (
            not quiet
            or key != self._report_key
            or not 0 <= now - self._report_at < THERMAL_REPORT_S
        ):
            self._report = self.tracker.report(now, window, used or None)
            self._report_key, self._report_at = key, now
        return self._report

    # ------------------------------------------------------------------ checks
    def feed_history(self, snapshots: Iterable[Snapshot]) -> None:
        """Recorded snapshots (oldest first) into the thermal window, without raising alerts:
        the dashboard opened on a history DB gives its verdict over the recorded minutes at
        once instead of "not enough data" for the first five."""
        for snap in snapshots:
            self._feed(snap)

    def feed_points(self, points: Iterable[ThermalPoint]) -> None:
        """Recorded thermal points (oldest first, a time's GPUs together) into the thermal
        window, without raising alerts: what `feed_history` does with whole snapshots, from
        the narrow rows replay reads after a jump (`history_plot.thermal_points`)."""
        for p in points:
            if self._fed_time is not None and p.time < self._fed_time:
                continue
            self.tracker.add(p)
            self._fed_time = p.time

    def refeed_history(self, past: Iterable[Snapshot], live: Iterable[Snapshot]) -> None:
        """The thermal window rebuilt from the recorded *past* and the *live* snapshots it has
        already seen (both oldest first): the dashboard shows the present before the past
        arrives, and the past is older than what the window holds. Alerts are untouched."""
        self.tracker = ThermalTracker(maxlen=self.tracker.maxlen)
        self._fed_time = None
        self._report_key, self._report_at = None, float("-inf")
        self.feed_history(past)
        self.feed_history(live)

    def _feed(self, snapshot: Snapshot) -> None:
        if self._fed_time is not None and snapshot.time <= self._fed_time:
            return
        self._fed_time = snapshot.time
        gen = snapshot.server.gen_tokens_per_s
        for g in snapshot.gpus:
            if not g.lost:
                self.tracker.add(ThermalPoint.of(snapshot.time, g, gen))

    def _raise(
        self,
        seen: set[tuple[str, int]],
        key: tuple[str, int],
        since: float,
        severity: str,
        message: str,
    ) -> None:
        seen.add(key)
        old = self._active.get(key)
        start = old.since if old is not None else since
        self._active[key] = Alert(kind=key[0], severity=severity, message=message, since=start)  # type: ignore[arg-type]

    def _keep(self, seen: set[tuple[str, int]], key: tuple[str, int]) -> bool:
        """Keep an active alert up (hysteresis band); False when it was not active."""
        if key in self._active:
            seen.add(key)
            return True
        return False

    def _vram(self, seen: set[tuple[str, int]], g: GpuSample, now: float) -> None:
        t = self.thresholds
        used, total = g.memory_used_bytes, g.memory_total_bytes
        if used is None or not total:
            return
        free = g.memory_free_bytes if g.memory_free_bytes is not None else total - used
        pct = 100.0 * used / total
        free_pct = 100.0 * free / total
        key = ("vram_high", g.index)
        if pct > t.vram_percent or free_pct < t.vram_headroom_percent:
            if free_pct < t.vram_headroom_percent:
                sev, msg = (
                    "critical",
                    (
                        f"GPU{g.index} VRAM headroom {free_pct:.0f} % ({_gib(free)} free of "
                        f"{_gib(total)}) — below {t.vram_headroom_percent:.0f} %: a longer context "
                        "can run out of memory; lower --ctx-size/--parallel, quantise the KV cache "
                        "(-ctk q8_0 -ctv q8_0) or offload fewer layers"
                    ),
                )
            else:
                sev, msg = (
                    "warning",
                    (
                        f"GPU{g.index} VRAM {pct:.0f} % used ({_gib(used)} of {_gib(total)}) — "
                        f"above the {t.vram_percent:.0f} % line; keep 10–15 % headroom for the KV "
                        "cache and compute buffers"
                    ),
                )
            self._raise(seen, key, now, sev, msg)
        elif pct > t.vram_percent - t.vram_clear_points:
            self._keep(seen, key)

    def _temperature(self, seen: set[tuple[str, int]], g: GpuSample, now: float) -> None:
        t = self.thresholds
        if g.temperature_c is None or g.temp_slowdown_c is None:
            return
        margin = g.temp_slowdown_c - g.temperature_c
        key = ("temp_near_slowdown", g.index)
        if margin <= t.temp_margin_c:
            if margin <= 0:
                sev, msg = (
                    "critical",
                    (
                        f"GPU{g.index} at {g.temperature_c:.0f} °C, at or above its slowdown "
                        f"threshold ({g.temp_slowdown_c:.0f} °C): clocks are being cut — improve "
                        "airflow, raise the fan curve or lower the power limit"
                    ),
                )
            else:
                sev, msg = (
                    "warning",
                    (
                        f"GPU{g.index} at {g.temperature_c:.0f} °C, {margin:.0f} °C below its "
                        f"slowdown threshold ({g.temp_slowdown_c:.0f} °C) — check airflow and fans"
                    ),
                )
            self._raise(seen, key, now, sev, msg)
        elif margin <= t.temp_margin_c + t.temp_clear_c:
            self._keep(seen, key)

    def _throttle(self, seen: set[tuple[str, int]], g: GpuSample, now: float) -> None:
        key = ("throttled", g.index)
        brakes = sorted(limiting_reasons(g.throttle_reasons) & BRAKES, key=list(EVENT_WORDS).index)
        if not brakes:
            self._pending.pop(key, None)
            return
        since_by_reason = self.tracker.active_since(g.index)
        start = min((since_by_reason.get(r, now) for r in brakes), default=now)
        start = min(start, self._pending.setdefault(key, now))
        if now - start < self.thresholds.throttle_s:
            return
        words = ", ".join(EVENT_WORDS.get(r, r) for r in brakes)
        hw = any(r.startswith("Hw") for r in brakes)
        clocks = ""
        if g.sm_clock_mhz is not None and g.sm_clock_max_mhz:
            clocks = (
                f": SM {g.sm_clock_mhz}/{g.sm_clock_max_mhz} MHz "
                f"({100.0 * g.sm_clock_mhz / g.sm_clock_max_mhz:.0f} %)"
            )
        msg = (
            f"GPU{g.index} clocks held back by {words} for {fmt_span(now - start)}{clocks}"
            " — decode slows; see the thermal panel"
        )
        self._raise(seen, key, start, "critical" if hw else "warning", msg)

    def _server_life(self, seen: set[tuple[str, int]], snapshot: Snapshot, now: float) -> None:
        """server_down, server_not_responding, crash_loop (critical), server_unauthorized.

        At most one of them at a time, the most specific: a crash loop over a plain exit, a
        stopped or hung process over "unreachable". A server the operator stopped is no alert;
        one on its way up is none either, unless it was already down (the alert stays up until
        /health answers, so a crash → restart → load cycle is one alert, not a flicker)."""
        s = snapshot.server
        sup = snapshot.supervisor
        state = sup.state if sup is not None and sup.mode != "attach" else None
        if state in _QUIET_STATES:
            return
        if sup is not None and sup.recent_failures >= CRASH_LOOP_FAILURES:
            # Up again for now or not: crashing every few seconds is the alert until the
            # failures age out of the restart policy's window.
            last = f" (last: {sup.last_exit})" if sup.last_exit else ""
            if state == "failed":
                then = "llmtop stopped restarting it — fix the cause, then press r"
            elif state == "ready":
                then = "it runs again for now"
            elif sup.next_restart_in_s is not None:
                then = f"next restart in {sup.next_restart_in_s:.0f} s"
            else:
                then = "restarting it"
            err = f"; its last error: {sup.last_error_lines[-1]}" if sup.last_error_lines else ""
            msg = (
                f"llama-server is crash-looping: it failed {sup.recent_failures} times in a "
                f"short while{last}; {then}{err}"
            )
            self._raise(seen, ("crash_loop", -1), now, "critical", msg)
            return
        if s.health in ("ok", "sleeping"):  # asleep (--sleep-idle-seconds) is up, not down
            return
        proc = snapshot.host.process
        pid = proc.pid if proc is not None else s.pid
        pstate = proc.status if proc is not None else None
        words = process_state_words(pstate)
        down = ("server_down", -1)

        if pstate in _STOPPED or (s.health == "unreachable" and _timed_out(s.detail)):
            where = f"process {pid} is {words}" if pid is not None and words else ""
            if pstate in _STOPPED:
                hint = f" — `kill -CONT {pid}` resumes it" if pid is not None else ""
                msg = f"llama-server is not responding: {where}{hint}"
            else:
                alive = f"; {where}" if where else ""
                msg = (
                    f"llama-server is not responding: {s.detail or 'no answer'}{alive} — "
                    "busy beyond its HTTP threads, deadlocked or swapping"
                )
            self._raise(seen, ("server_not_responding", -1), now, "critical", msg)
            return

        if state in _DIED_STATES:
            how = "it did not start"
            if sup is not None and sup.last_exit:
                how = f"it exited ({sup.last_exit})"
            if state == "failed":
                then = "not restarting it — fix the cause, then press r"
            elif sup is not None and sup.next_restart_in_s is not None:
                then = f"restarting in {sup.next_restart_in_s:.0f} s"
            else:
                then = "restarting" if state == "restarting" else "not restarting it"
            err = ""
            if sup is not None and sup.last_error_lines:
                err = f"; its last error: {sup.last_error_lines[-1]}"
            self._raise(seen, down, now, "critical", f"llama-server is down: {how}, {then}{err}")
            return

        if s.health == "unreachable":
            if state in _COMING_UP:
                self._keep(seen, down)  # still down from before; not an alert while it starts
                return
            gone = f"; process {pid} is {words}" if pid is not None and words else ""
            msg = f"llama-server is down: {s.detail or 'unreachable'} at {s.url}{gone}"
            self._raise(seen, down, now, "critical", msg)
            return

        if s.health == "unauthorized":
            self._raise(
                seen,
                ("server_unauthorized", -1),
                now,
                "warning",
                f"llama-server refuses llmtop's API key: {s.detail} — nothing but /health can "
                "be read",
            )
            return
        if state in _COMING_UP or s.health == "loading":
            self._keep(seen, down)

    def _cpu_fallback(self, seen: set[tuple[str, int]], snapshot: Snapshot, now: float) -> None:
        key = ("cpu_fallback", -1)
        spec = self.spec if self.spec is not None else spec_from_snapshot(snapshot)
        layers = spec.gpu_layers if spec is not None else None
        wants_gpu = layers is not None and (layers > 0 or layers == ALL_GPU_LAYERS)
        live = [g for g in snapshot.gpus if not g.lost]
        known = [v for v in server_gpu_memory(snapshot).values() if v is not None]
        condition = (
            wants_gpu
            and snapshot.server.health == "ok"
            and bool(server_pids(snapshot))
            and bool(live)
            and bool(known)
            and sum(known) == 0
        )
        if not condition:
            self._pending.pop(key, None)
            return
        start = self._pending.setdefault(key, now)
        if now - start < self.thresholds.cpu_fallback_s and key not in self._active:
            return
        shown = "all" if layers == ALL_GPU_LAYERS else str(layers)
        msg = (
            f"silent CPU fallback: llama-server was started with --gpu-layers {shown} but "
            "holds no memory on any GPU — it is running on the CPU. Check CUDA_VISIBLE_DEVICES "
            "and LD_LIBRARY_PATH in its environment (systemd units start with a minimal one) "
            "and that the binary was built with CUDA"
        )
        self._raise(seen, key, start, "critical", msg)


def default_alert_engine(thresholds: Thresholds | None = None) -> AlertEngine:
    return AlertEngine(thresholds)


def alert_kinds(alerts: Iterable[Alert]) -> list[str]:
    return [a.kind for a in alerts]
