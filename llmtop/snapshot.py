"""The one snapshot model: everything llmtop knows at one instant.

A `Collector` (llmtop/collector.py) assembles a `Snapshot` on a schedule; the TUI renders it and
the headless commands (`snapshot`, `probe`, `plan`, `tune`) print it. All types are frozen
dataclasses of plain values so a snapshot can be handed between threads and serialised as is.
JSON keys are snake_case with units in the names; "not available" is null.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Literal

# "sleeping": up, but `--sleep-idle-seconds` unloaded the model (/props `is_sleeping`); the next
# request that needs the model loads it again, so llmtop asks only /health and /props.
Health = Literal["ok", "loading", "unreachable", "unauthorized", "error", "sleeping"]
Severity = Literal["info", "warning", "critical"]


@dataclass(frozen=True)
class SlotStatus:
    id: int
    n_ctx: int | None
    is_processing: bool
    n_prompt_tokens: int | None = None
    n_decoded: int | None = None
    n_remain: int | None = None

    @property
    def context_used(self) -> int | None:
        if self.n_prompt_tokens is None and self.n_decoded is None:
            return None
        return (self.n_prompt_tokens or 0) + (self.n_decoded or 0)


@dataclass(frozen=True)
class ModelStatus:
    """One model of a router-mode llama-server (`--models-dir` / `--models-preset`): each loaded
    model runs as its own llama-server child, so state, slots, rate and VRAM are per model."""

    id: str
    # loaded | loading | unloaded | sleeping | failed (the router's word; others passed through)
    status: str
    pid: int | None = None  # the model's child llama-server (found by its --port)
    port: int | None = None  # the child's --port: its log lines start "[ PORT] "
    exit_code: int | None = None  # failed: the child's exit code
    n_ctx: int | None = None
    slots_total: int | None = None
    slots_busy: int | None = None
    gen_tokens_per_s: float | None = None
    gpu_memory_bytes: int | None = None  # NVML, by the child's pid (None: no process readings)
    aliases: tuple[str, ...] = ()
    argv: tuple[str, ...] = ()  # the child's argv from /models, redacted
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerStatus:
    url: str
    health: Health = "unreachable"
    # Words for the operator: why health is what it is ("connection refused", "Loading model" …).
    detail: str = ""
    model_path: str | None = None
    model_alias: str | None = None
    n_ctx: int | None = None
    n_ctx_train: int | None = None
    total_slots: int | None = None
    build_info: str | None = None
    # Which optional endpoints answer: True on, False disabled (501), None unknown/unreachable.
    endpoint_slots: bool | None = None
    endpoint_metrics: bool | None = None
    slots: tuple[SlotStatus, ...] = ()
    pid: int | None = None
    gen_tokens_per_s: float | None = None
    prompt_tokens_per_s: float | None = None
    requests_processing: int | None = None
    requests_deferred: int | None = None
    prompt_tokens_total: int | None = None
    tokens_predicted_total: int | None = None
    # `Process-Start-Time-Unix` header of /metrics: changes when the server restarts.
    process_start_time: float | None = None
    # Per-endpoint problems, in words ("/metrics disabled (start with --metrics)").
    problems: tuple[str, ...] = ()
    # Unix time llmtop first saw /props say `is_sleeping` (the server does not say when it fell
    # asleep); None while awake.
    sleeping_since: float | None = None
    # Router mode: one llama-server routing to one child per model (`server.models`).
    router: bool = False
    models: tuple[ModelStatus, ...] = ()


@dataclass(frozen=True)
class ProcessStats:
    pid: int
    cpu_percent: float | None = None
    rss_bytes: int | None = None
    threads: int | None = None
    uptime_s: float | None = None
    create_time: float | None = None
    # psutil's word for the process state: running, sleeping, disk-sleep, stopped (SIGSTOP),
    # tracing-stop, zombie … — how a hung server is told from a busy or a dead one.
    status: str | None = None


@dataclass(frozen=True)
class HostStats:
    cpu_percent: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    load_avg: tuple[float, float, float] | None = None
    process: ProcessStats | None = None


@dataclass(frozen=True)
class SupervisorStatus:
    """What the supervisor (child process or systemd unit) says about the server's life."""

    mode: Literal["child", "unit", "attach"]
    state: str  # starting | loading | ready | stopping | exited | restarting | failed | stopped
    restarts: int = 0
    last_exit: str | None = None  # "exit code 1", "killed by SIGKILL"
    last_error_lines: tuple[str, ...] = ()
    argv: tuple[str, ...] = ()  # redacted: secrets are replaced by "***"
    next_restart_in_s: float | None = None
    can_control: bool = False
    # Failures within the restart policy's burst window: 2 or more is a crash loop.
    recent_failures: int = 0


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory_bytes: int | None


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str | None = None
    uuid: str | None = None
    pci_bus_id: str | None = None
    lost: bool = False
    memory_used_bytes: int | None = None
    memory_free_bytes: int | None = None
    memory_total_bytes: int | None = None
    utilization_percent: float | None = None
    memory_utilization_percent: float | None = None
    temperature_c: float | None = None
    temp_slowdown_c: float | None = None
    temp_shutdown_c: float | None = None
    temp_gpu_max_c: float | None = None
    sm_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    graphics_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    fan_percent: float | None = None
    pstate: int | None = None
    persistence_mode: bool | None = None
    throttle_reasons: tuple[str, ...] | None = None
    throttled_thermal_percent: float | None = None
    throttled_power_percent: float | None = None
    processes: tuple[GpuProcess, ...] | None = None
    # True when the server may use this GPU (CUDA_VISIBLE_DEVICES of the server, where known).
    used_by_server: bool | None = None
    server_memory_bytes: int | None = None
    # Several servers (`llmtop --url A --url B`): the memory each one holds on this GPU, by the
    # server's PID in the process list (only servers holding some; empty with one server).
    server_memory_by_url: tuple[ServerMemory, ...] = ()


@dataclass(frozen=True)
class ServerMemory:
    """One server's share of one GPU's memory (the GPU tab's attribution line)."""

    url: str
    used_memory_bytes: int


@dataclass(frozen=True)
class Alert:
    # vram_high, temp_near_slowdown, throttled, cpu_fallback, persistence_off, unit_check,
    # server_down, server_not_responding, crash_loop, server_unauthorized …
    kind: str
    severity: Severity
    message: str
    since: float  # unix time the condition started


@dataclass(frozen=True)
class ThermalEvent:
    time: float
    gpu_index: int
    kind: str  # throttle_start | throttle_end | …
    message: (
        str  # "14:02:11 HW thermal slowdown started — 87 °C, SM 1980→1410 MHz; gen 52→38 tok/s"
    )


@dataclass(frozen=True)
class ThermalReport:
    """Verdict over a window: what limited the GPU, for how long, and what it cost."""

    window_s: float
    verdict: str | None = (
        None  # "thermal (HW slowdown) 31 % of the last 5 min; decode −24 % while throttled"
    )
    throttled_percent: float | None = None
    decode_change_percent: float | None = None
    events: tuple[ThermalEvent, ...] = ()


@dataclass(frozen=True)
class UnitStatus:
    name: str
    user: bool = False
    active_state: str | None = None
    sub_state: str | None = None
    main_pid: int | None = None
    n_restarts: int | None = None
    result: str | None = None
    exec_main_start_timestamp: float | None = None
    exec_start: tuple[str, ...] = ()  # redacted argv
    environment: tuple[str, ...] = ()  # redacted KEY=VALUE
    fragment_path: str | None = None
    drop_in_paths: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    time: float
    server: ServerStatus
    host: HostStats = field(default_factory=HostStats)
    supervisor: SupervisorStatus | None = None
    gpus: tuple[GpuSample, ...] = ()
    # One line about the GPU source: "no NVIDIA driver: libnvidia-ml.so.1 not found", "SIMULATED".
    gpu_note: str | None = None
    alerts: tuple[Alert, ...] = ()
    thermal: ThermalReport | None = None
    unit: UnitStatus | None = None
    # Several servers: every watched server, in the server bar's order (`server` is the focused
    # one, so one-server consumers read it as before). Empty with one server.
    servers: tuple[ServerStatus, ...] = ()


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:  # NaN → null
        return None
    return value


def to_json_dict(snapshot: Snapshot) -> dict[str, Any]:
    """The documented JSON form of a snapshot (see README, "Snapshot schema")."""
    d = _plain(snapshot)
    # one server: the schema stays exactly as before the multi-server fields
    if not snapshot.servers:
        d.pop("servers", None)
    for gpu in d["gpus"]:
        if not gpu.get("server_memory_by_url"):
            gpu.pop("server_memory_by_url", None)
    for slot, obj in zip(d["server"]["slots"], snapshot.server.slots, strict=True):
        slot["context_used"] = obj.context_used
    return d
