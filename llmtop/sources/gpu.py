"""GPU telemetry through NVML (nvidia-ml-py's `pynvml`): one sampler thread, immutable samples.

`GpuMonitor` initialises NVML once, caches handles and static facts (name, UUID, PCI bus id,
total memory, max clocks, temperature thresholds, power limit, persistence mode), then samples
the dynamic fields on one background thread. `latest()` never blocks: it hands back the last
`GpuReading`. Every field fails on its own to None (NotSupported, NoPermission, FunctionNotFound);
a lost GPU is marked lost and the others carry on; without the library the reading carries one
note ("no NVIDIA driver: libnvidia-ml.so.1 not found") and no samples.

LLMTOP_NVML_LIBRARY=/path/to/libnvidia-ml.so.1 loads that library instead of the system one (the
simulated GPU of the demo and the tests uses it).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import pynvml

from llmtop.model.launch_spec import LaunchSpec
from llmtop.model.timeseries import TimeSeries
from llmtop.snapshot import GpuProcess, GpuSample

log = logging.getLogger(__name__)

LIBRARY_ENV = "LLMTOP_NVML_LIBRARY"
NO_DRIVER_NOTE = "no NVIDIA driver: libnvidia-ml.so.1 not found"
SIMULATED_NOTE = "SIMULATED"
HISTORY_S = 15 * 60
SERVER_REFRESH_S = 5.0  # how often the server's children and environment are re-read

# Clock event (throttle) reason bits, as named in NVML's table.
REASON_BITS: tuple[tuple[int, str], ...] = (
    (0x1, "GpuIdle"),
    (0x2, "ApplicationsClocksSetting"),
    (0x4, "SwPowerCap"),
    (0x8, "HwSlowdown"),
    (0x10, "SyncBoost"),
    (0x20, "SwThermalSlowdown"),
    (0x40, "HwThermalSlowdown"),
    (0x80, "HwPowerBrakeSlowdown"),
    (0x100, "DisplayClockSetting"),
)
_NOT_AVAILABLE_U64 = 0xFFFFFFFFFFFFFFFF


def decode_reasons(mask: int) -> tuple[str, ...]:
    """Names of the set bits, in table order (unknown bits as hex)."""
    names = [name for bit, name in REASON_BITS if mask & bit]
    rest = mask & ~sum(bit for bit, _ in REASON_BITS)
    if rest:
        names.append(hex(rest))
    return tuple(names)


@dataclass(frozen=True)
class GpuReading:
    """What the sampler last saw: one sample per GPU, or a note saying why there are none."""

    samples: tuple[GpuSample, ...] = ()
    note: str | None = None
    time: float | None = None


class _GpuLost(Exception):
    pass


class _ProcessInfoV1(ctypes.Structure):
    _fields_ = [("pid", ctypes.c_uint), ("usedGpuMemory", ctypes.c_ulonglong)]


@dataclass
class _Device:
    index: int
    handle: Any
    static: GpuSample  # static facts only
    lost: bool = False
    last_violation: dict[int, tuple[int, int]] = field(default_factory=dict)


# Which library pynvml currently holds when we loaded it ourselves (None: pynvml's own choice).
_loaded_path: str | None = None
_load_lock = threading.Lock()


def _use_library(path: str | None) -> None:
    """Point pynvml at *path* (or back at the system library when None), before nvmlInit."""
    global _loaded_path
    with _load_lock, pynvml.libLoadLock:
        if path is None:
            if _loaded_path is not None:
                pynvml.nvmlLib = None
                pynvml._nvmlGetFunctionPointer_cache.clear()
                _loaded_path = None
            return
        if _loaded_path == path and pynvml.nvmlLib is not None:
            return
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND) from e
        pynvml.nvmlLib = lib
        pynvml._nvmlGetFunctionPointer_cache.clear()
        _loaded_path = path


def _code(e: pynvml.NVMLError) -> int:
    """The NVML return code of *e* (pynvml sets `value` on every NVMLError it raises)."""
    return int(e.value)


def _visible_devices(value: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as a list of tokens; None when unset (all GPUs)."""
    if value is None:
        return None
    toks = [t.strip() for t in value.split(",")]
    out: list[str] = []
    for t in toks:
        if not t or t.startswith("-"):  # "-1" or an empty entry stops the list (CUDA semantics)
            break
        out.append(t)
    return out


class GpuMonitor:
    """NVML sampler. `start()` opens NVML and starts the thread; `latest()` is non-blocking."""

    def __init__(
        self,
        *,
        library_path: str | os.PathLike[str] | None = None,
        refresh_s: float = 1.0,
        history_s: float = HISTORY_S,
        clock: Callable[[], float] = time.time,
        simulated: bool = False,
    ) -> None:
        env = os.environ.get(LIBRARY_ENV)
        self.library_path = str(library_path) if library_path else (env or None)
        self.refresh_s = refresh_s
        self.simulated = simulated
        self._clock = clock
        self._devices: list[_Device] = []
        self._opened = False
        self._opened_ok = False
        self._open_note: str | None = None
        self._missing: set[str] = set()  # NVML symbols this library lacks (fallbacks taken)
        self._latest = GpuReading(note=None)
        self._lock = threading.Lock()
        self._sample_lock = threading.Lock()
        self._open_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server_pids: tuple[int, ...] = ()
        self._server_env: Mapping[str, str] | None = None
        self._view: tuple[_ServerProcesses, list[str] | None | bool] = (_ServerProcesses(()), False)
        self._view_key: tuple[int, ...] | None = None
        self._view_at = float("-inf")
        # Readings with GPUs, oldest first (recent()); a scenario clock may repeat an instant,
        # so every reading is kept (append, not append_newer).
        self._readings: TimeSeries[GpuReading] = TimeSeries(
            max(1, int(history_s / max(refresh_s, 0.1)))
        )
        self.driver_version: str | None = None

    # ------------------------------------------------------------------ life cycle
    def open(self) -> bool:
        """Initialise NVML and cache static facts. False (with a note) when there is no GPU."""
        with self._open_lock:
            if self._opened:
                return bool(self._devices)
            self._opened = True
            return self._open_locked()

    def _open_locked(self) -> bool:
        try:
            _use_library(self.library_path)
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            if _code(e) == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
                self._open_note = NO_DRIVER_NOTE
            else:
                self._open_note = f"NVIDIA driver not usable: {e}"
            self._opened_ok = False
            self._publish(GpuReading(note=self._note(self._open_note), time=self._clock()))
            return False
        self._opened_ok = True
        try:
            self.driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
        except pynvml.NVMLError:
            self.driver_version = None
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as e:
            count = 0
            self._open_note = f"NVML: {e}"
        for i in range(count):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            except pynvml.NVMLError as e:  # lost, or not accessible (then every field is N/A)
                lost = _code(e) == pynvml.NVML_ERROR_GPU_IS_LOST
                self._devices.append(_Device(i, None, GpuSample(index=i, lost=lost), lost=lost))
                continue
            self._devices.append(_Device(i, handle, self._read_static(i, handle)))
        if count == 0 and self._open_note is None:
            self._open_note = "no NVIDIA GPU found"
        self._publish(GpuReading(note=self._note(self._open_note), time=self._clock()))
        return bool(self._devices)

    def start(self) -> None:
        """Start the sampler thread: it opens NVML (init can take a second without persistence
        mode, so never on the caller's thread) and samples every `refresh_s`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="llmtop-gpu", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout=5)
        if self._opened and self._opened_ok:
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()
        self._opened = False
        self._opened_ok = False
        self._devices = []

    close = stop

    def _run(self) -> None:
        if not self.open():
            return  # the note ("no NVIDIA driver …") is published; nothing to sample
        while not self._stop.is_set():
            try:
                self.sample_once()
            except Exception:  # noqa: BLE001 - the sampler must keep going
                log.exception("GPU sampling failed")
            if self._stop.wait(self.refresh_s):
                break

    # ------------------------------------------------------------------ public API
    def latest(self) -> GpuReading:
        with self._lock:
            return self._latest

    def recent(self) -> list[GpuReading]:
        """The bounded history of readings (15 min at 1 s by default), oldest first."""
        with self._lock:
            return self._readings.values()

    def set_server(
        self,
        pids: int | Iterable[int] | None,
        spec: LaunchSpec | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Which process(es) are the llama-server (children are added at each sample).

        *spec* (a LaunchSpec) or *env* give CUDA_VISIBLE_DEVICES when /proc/PID/environ is not
        readable. Cheap: call it at every tick.
        """
        if pids is None:
            new: tuple[int, ...] = ()
        elif isinstance(pids, int):
            new = (pids,)
        else:
            new = tuple(pids)
        spec_env = spec.env if spec is not None else None
        self._server_env = env if env is not None else spec_env
        if new != self._server_pids:
            self._server_pids = new
            self._view_at = float("-inf")

    def sample_once(self) -> GpuReading:
        """Read every GPU now (blocking; the sampler thread calls it) and publish the reading."""
        self.open()  # no-op once open (waits while another thread is opening)
        with self._sample_lock:
            now = self._clock()
            if not self._devices:
                reading = GpuReading(note=self._note(self._open_note), time=now)
                self._publish(reading)
                return reading
            server, visible = self._server_view()
            samples = []
            for dev in self._devices:
                samples.append(self._read_device(dev, server, visible))
            reading = GpuReading(tuple(samples), self._note(None), now)
            self._publish(reading)
            return reading

    # ------------------------------------------------------------------ internals
    def _note(self, note: str | None) -> str | None:
        if self.simulated:
            return SIMULATED_NOTE if note is None else f"{SIMULATED_NOTE}: {note}"
        return note

    def _publish(self, reading: GpuReading) -> None:
        with self._lock:
            self._latest = reading
            if reading.samples:
                self._readings.append(
                    reading.time if reading.time is not None else self._clock(), reading
                )

    def _q(self, fn: Callable[..., Any], *args: Any) -> Any:
        """One NVML read: the value, or None for N/A; raises _GpuLost when the GPU fell off."""
        try:
            return fn(*args)
        except pynvml.NVMLError as e:
            code = _code(e)
            if code == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise _GpuLost from e
            if code == pynvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                self._missing.add(getattr(fn, "__name__", str(fn)))
            return None

    def _read_static(self, index: int, h: Any) -> GpuSample:
        q = self._q
        try:
            pci = q(pynvml.nvmlDeviceGetPciInfo, h)
            mem = self._memory(h)
            thr = pynvml
            persistence = q(pynvml.nvmlDeviceGetPersistenceMode, h)
            limit = q(pynvml.nvmlDeviceGetEnforcedPowerLimit, h)
            return GpuSample(
                index=index,
                name=_text(q(pynvml.nvmlDeviceGetName, h)),
                uuid=_text(q(pynvml.nvmlDeviceGetUUID, h)),
                pci_bus_id=_text(pci.busId) if pci is not None else None,
                memory_total_bytes=mem[2] if mem else None,
                temp_slowdown_c=_f(
                    q(
                        thr.nvmlDeviceGetTemperatureThreshold,
                        h,
                        thr.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN,
                    )
                ),
                temp_shutdown_c=_f(
                    q(
                        thr.nvmlDeviceGetTemperatureThreshold,
                        h,
                        thr.NVML_TEMPERATURE_THRESHOLD_SHUTDOWN,
                    )
                ),
                temp_gpu_max_c=_f(
                    q(
                        thr.nvmlDeviceGetTemperatureThreshold,
                        h,
                        thr.NVML_TEMPERATURE_THRESHOLD_GPU_MAX,
                    )
                ),
                sm_clock_max_mhz=q(pynvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_SM),
                mem_clock_max_mhz=q(pynvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_MEM),
                power_limit_w=limit / 1000.0 if limit is not None else None,
                persistence_mode=None if persistence is None else bool(persistence),
            )
        except _GpuLost:
            return GpuSample(index=index, lost=True)

    def _memory(self, h: Any) -> tuple[int, int, int] | None:
        """(used, free, total): v2 where present (used excludes reserved), else v1."""
        if "nvmlDeviceGetMemoryInfo_v2" not in self._missing:
            try:
                m = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
                return int(m.used), int(m.free), int(m.total)
            except pynvml.NVMLError as e:
                code = _code(e)
                if code == pynvml.NVML_ERROR_GPU_IS_LOST:
                    raise _GpuLost from e
                if code not in (
                    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
                    pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
                ):
                    return None
                self._missing.add("nvmlDeviceGetMemoryInfo_v2")
        m = self._q(pynvml.nvmlDeviceGetMemoryInfo, h)
        return (int(m.used), int(m.free), int(m.total)) if m is not None else None

    def _temperature(self, h: Any) -> float | None:
        if "nvmlDeviceGetTemperatureV" not in self._missing:
            try:
                return float(pynvml.nvmlDeviceGetTemperatureV(h, pynvml.NVML_TEMPERATURE_GPU))
            except pynvml.NVMLError as e:
                code = _code(e)
                if code == pynvml.NVML_ERROR_GPU_IS_LOST:
                    raise _GpuLost from e
                if code != pynvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                    return None
                self._missing.add("nvmlDeviceGetTemperatureV")
        return _f(self._q(pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU))

    def _reasons(self, h: Any) -> tuple[str, ...] | None:
        mask = None
        if "nvmlDeviceGetCurrentClocksEventReasons" not in self._missing:
            mask = self._q(pynvml.nvmlDeviceGetCurrentClocksEventReasons, h)
        if mask is None and "nvmlDeviceGetCurrentClocksEventReasons" in self._missing:
            mask = self._q(pynvml.nvmlDeviceGetCurrentClocksThrottleReasons, h)
        return None if mask is None else decode_reasons(int(mask))

    def _violation_percent(self, dev: _Device, policy: int) -> float | None:
        v = self._q(pynvml.nvmlDeviceGetViolationStatus, dev.handle, policy)
        if v is None:
            return None
        ref_us, viol_ns = int(v.referenceTime), int(v.violationTime)
        prev = dev.last_violation.get(policy)
        dev.last_violation[policy] = (ref_us, viol_ns)
        if prev is None or ref_us <= prev[0]:
            return None
        pct = 100.0 * (viol_ns - prev[1]) / ((ref_us - prev[0]) * 1000.0)
        return max(0.0, min(100.0, pct))

    def _processes(self, h: Any) -> tuple[GpuProcess, ...] | None:
        for name in (
            "nvmlDeviceGetComputeRunningProcesses_v3",
            "nvmlDeviceGetComputeRunningProcesses_v2",
        ):
            if name in self._missing:
                continue
            try:
                procs = getattr(pynvml, name)(h)
            except pynvml.NVMLError as e:
                code = _code(e)
                if code == pynvml.NVML_ERROR_GPU_IS_LOST:
                    raise _GpuLost from e
                if code == pynvml.NVML_ERROR_FUNCTION_NOT_FOUND:
                    self._missing.add(name)
                    continue
                return None
            return tuple(GpuProcess(int(p.pid), _mem(p.usedGpuMemory)) for p in procs)
        return self._processes_v1(h)

    def _processes_v1(self, h: Any) -> tuple[GpuProcess, ...] | None:
        """The unversioned (v1 struct) call; pynvml has no wrapper for it any more."""
        try:
            fn = pynvml._nvmlGetFunctionPointer("nvmlDeviceGetComputeRunningProcesses")
        except pynvml.NVMLError:
            return None
        count = ctypes.c_uint(0)
        ret = fn(h, ctypes.byref(count), None)
        if ret == pynvml.NVML_SUCCESS:
            return ()
        if ret == pynvml.NVML_ERROR_GPU_IS_LOST:
            raise _GpuLost
        if ret != pynvml.NVML_ERROR_INSUFFICIENT_SIZE:
            return None
        count.value = count.value * 2 + 5
        arr = (_ProcessInfoV1 * count.value)()
        ret = fn(h, ctypes.byref(count), arr)
        if ret == pynvml.NVML_ERROR_GPU_IS_LOST:
            raise _GpuLost
        if ret != pynvml.NVML_SUCCESS:
            return None
        return tuple(
            GpuProcess(int(arr[i].pid), _mem(arr[i].usedGpuMemory)) for i in range(count.value)
        )

    def _read_device(
        self, dev: _Device, server: _ServerProcesses, visible: list[str] | None | bool
    ) -> GpuSample:
        st = dev.static
        used_by_server = _used_by_server(dev.index, st.uuid, visible)
        if dev.lost or dev.handle is None:
            return replace(st, lost=dev.lost, used_by_server=used_by_server)
        h, q = dev.handle, self._q
        try:
            mem = self._memory(h)
            util = q(pynvml.nvmlDeviceGetUtilizationRates, h)
            power = q(pynvml.nvmlDeviceGetPowerUsage, h)
            procs = self._processes(h)
            sample = replace(
                st,
                memory_used_bytes=mem[0] if mem else None,
                memory_free_bytes=mem[1] if mem else None,
                memory_total_bytes=mem[2] if mem else st.memory_total_bytes,
                utilization_percent=_f(util.gpu) if util is not None else None,
                memory_utilization_percent=_f(util.memory) if util is not None else None,
                temperature_c=self._temperature(h),
                sm_clock_mhz=q(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_SM),
                graphics_clock_mhz=q(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_GRAPHICS),
                mem_clock_mhz=q(pynvml.nvmlDeviceGetClockInfo, h, pynvml.NVML_CLOCK_MEM),
                power_w=power / 1000.0 if power is not None else None,
                fan_percent=_f(q(pynvml.nvmlDeviceGetFanSpeed, h)),
                pstate=q(pynvml.nvmlDeviceGetPerformanceState, h),
                throttle_reasons=self._reasons(h),
                throttled_thermal_percent=self._violation_percent(
                    dev, pynvml.NVML_PERF_POLICY_THERMAL
                ),
                throttled_power_percent=self._violation_percent(dev, pynvml.NVML_PERF_POLICY_POWER),
                processes=procs,
                used_by_server=used_by_server,
                server_memory_bytes=_server_memory(procs, server),
            )
        except _GpuLost:
            dev.lost = True
            return replace(st, lost=True, used_by_server=used_by_server)
        if sample.pstate is not None and sample.pstate >= 32:  # NVML_PSTATE_UNKNOWN
            sample = replace(sample, pstate=None)
        return sample

    def _server_view(self) -> tuple[_ServerProcesses, list[str] | None | bool]:
        """(the server's processes, its CUDA_VISIBLE_DEVICES), re-read every few seconds."""
        now = time.monotonic()
        key = self._server_pids
        if key == self._view_key and now - self._view_at < SERVER_REFRESH_S:
            return self._view
        self._view = (_ServerProcesses(key), self._server_visible())
        self._view_key, self._view_at = key, now
        return self._view

    def _server_visible(self) -> list[str] | None | bool:
        """CUDA_VISIBLE_DEVICES of the server: list, None (unset: all GPUs), False (unknown)."""
        if not self._server_pids:
            return False
        pid = self._server_pids[0]
        env: Mapping[str, str] | None = None
        try:
            env = psutil.Process(pid).environ()
        except (psutil.Error, OSError):
            env = self._server_env
        if env is None:
            return False
        return _visible_devices(env.get("CUDA_VISIBLE_DEVICES"))


def _used_by_server(index: int, uuid: str | None, visible: list[str] | None | bool) -> bool | None:
    if visible is False:
        return None
    if visible is None or visible is True:
        return True
    for tok in visible:
        if tok.isdigit() and int(tok) == index:
            return True
        if uuid and tok.startswith(("GPU-", "MIG-")) and uuid.startswith(tok):
            return True
    return False


class _ServerProcesses:
    """The server's PIDs and their descendants, for matching the GPUs' process lists.

    Descent is checked upwards from the few PIDs NVML lists (their parent chain), cached until
    the next re-read: listing every child of the server walks all of /proc, ~2 ms with 60
    processes and far more on a busy box, which was most of the GPU sampler's cost."""

    def __init__(self, pids: tuple[int, ...]) -> None:
        self.pids = set(pids)
        self._known: dict[int, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.pids)

    def owns(self, pid: int) -> bool:
        if pid in self.pids:
            return True
        known = self._known.get(pid)
        if known is None:
            known = self._known[pid] = self._descends(pid)
        return known

    def _descends(self, pid: int) -> bool:
        try:
            return any(p.pid in self.pids for p in psutil.Process(pid).parents())
        except (psutil.Error, OSError):
            return False  # gone, or not visible from here (another PID namespace)


def _server_memory(procs: tuple[GpuProcess, ...] | None, server: _ServerProcesses) -> int | None:
    if procs is None or not server:
        return None
    total = 0
    for p in procs:
        if p.used_memory_bytes is not None and server.owns(p.pid):
            total += p.used_memory_bytes
    return total


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    return str(v)


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


def _mem(v: Any) -> int | None:
    if v is None or int(v) == _NOT_AVAILABLE_U64:
        return None
    return int(v)


# ---------------------------------------------------------------------- factories


def default_gpu_monitor(refresh_s: float = 1.0) -> GpuMonitor:
    """The monitor for the real driver (or LLMTOP_NVML_LIBRARY)."""
    return GpuMonitor(refresh_s=refresh_s)


def demo_scenario_path() -> Path | None:
    """The demo's scenario (a GPU warming up into thermal slowdown), next to the C source."""
    from llmtop.sources.gpu_sim import sim_source

    src = sim_source()
    path = src.parent / "scenarios" / "demo.json" if src else None
    return path if path and path.is_file() else None


def demo_gpu_monitor(refresh_s: float = 1.0, build_dir: Path | None = None) -> GpuMonitor | None:
    """For `llmtop demo`: the real driver when present, else the simulated GPU (SIMULATED).

    The simulator is compiled with gcc against nvml.h (pip install nvidia-nvml-dev); when either
    is missing there is no simulated GPU and the demo runs without GPU panels (returns None).
    """
    real = GpuMonitor(refresh_s=refresh_s)
    if real.library_path is None:
        try:
            ctypes.CDLL("libnvidia-ml.so.1")
            return real
        except OSError:
            pass
    from llmtop.sources.gpu_sim import SCENARIO_ENV, SimBuildError, build_sim_library

    cache = (
        build_dir
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llmtop" / "nvml-sim"
    )
    try:
        lib = build_sim_library(cache)
    except (SimBuildError, OSError) as e:
        log.info("no simulated GPU for the demo: %s", e)
        return None
    scenario = demo_scenario_path()
    if scenario is None and SCENARIO_ENV not in os.environ:
        return None
    os.environ.setdefault(SCENARIO_ENV, str(scenario))
    return GpuMonitor(library_path=str(lib), refresh_s=refresh_s, simulated=True)
