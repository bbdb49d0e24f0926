"""The playbook's step 1 and its static pitfalls as checks: pure functions over facts.

`llmtop check` gathers the facts (llmtop.sources.host_facts, the launch spec, the unit's
environment, the GGUF header) and prints these; the dashboard turns the launch-time ones
(`launch_checks`) into alerts. Each check says what it saw and, when it is not ok, the fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from llmtop.model.gguf import GgufInfo
from llmtop.model.launch_spec import LaunchSpec
from llmtop.model.units import fmt_bytes
from llmtop.snapshot import Alert, Severity
from llmtop.sources.host_facts import BinaryFacts, DeviceAccess, HostFacts

Status = Literal["ok", "warning", "error"]
EXPOSED_HOSTS = ("0.0.0.0", "::", "[::]")
# Quantisations the playbook calls destructive on 7B+ models (pitfall 3).
LOW_BIT_TYPES = ("Q2", "Q3", "IQ1", "IQ2", "IQ3", "TQ1", "TQ2")
LARGE_MODEL_PARAMS = 6.5e9  # "7B" models land a little under 7e9


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str
    fix: str = ""

    def to_json_dict(self) -> dict[str, str]:
        return asdict(self)


def exit_code(checks: Sequence[Check]) -> int:
    """0 all ok, 1 warnings, 2 errors."""
    if any(c.status == "error" for c in checks):
        return 2
    return 1 if any(c.status == "warning" for c in checks) else 0


def wants_gpu(spec: LaunchSpec | None) -> bool:
    """An explicit --gpu-layers above 0 (or all/auto spelled out) asks for a GPU."""
    if spec is None or not spec.is_set("gpu_layers"):
        return False
    return spec.gpu_layers not in (None, 0)


# -- the box -----------------------------------------------------------------------------------


def driver_check(host: HostFacts, spec: LaunchSpec | None) -> Check:
    if host.driver_version is None:
        note = host.gpu_note or "no NVIDIA driver"
        if wants_gpu(spec):
            return Check("nvidia_driver", "error", f"{note}, but the server asks for GPU layers",
                         "install the NVIDIA driver (nvidia-smi must work), then restart")  # fmt: skip
        return Check("nvidia_driver", "warning", f"{note}: llama-server runs on the CPU",
                     "install the NVIDIA driver if this box has a GPU")  # fmt: skip
    nvml = f", NVML {host.nvml_version}" if host.nvml_version else ""
    n = len(host.gpus)
    return Check("nvidia_driver", "ok", f"driver {host.driver_version}{nvml}, {n} GPU(s)")


def gpu_checks(host: HostFacts) -> list[Check]:
    out = []
    for g in host.gpus:
        name = f"gpu{g.index}"
        if g.lost:
            out.append(Check(name, "error", "GPU is lost (fell off the bus)",
                             "reset or reboot; check dmesg for Xid errors"))  # fmt: skip
            continue
        clocks = ""
        if g.sm_clock_mhz is not None and g.sm_clock_max_mhz:
            clocks = f", SM clock {g.sm_clock_mhz}/{g.sm_clock_max_mhz} MHz"
        msg = f"{g.name or 'GPU'}, {fmt_bytes(g.memory_total_bytes)}{clocks}"
        if g.persistence_mode is False:
            out.append(Check(name, "warning", f"{msg}, persistence mode off",
                             "nvidia-smi -pm 1 (keeps the driver loaded: no init delay, "
                             "stable clocks)"))  # fmt: skip
        else:
            pm = ", persistence mode on" if g.persistence_mode else ""
            out.append(Check(name, "ok", msg + pm))
    return out


def ram_check(host: HostFacts, gguf: GgufInfo | None) -> Check:
    msg = f"{fmt_bytes(host.ram_total_bytes)} RAM, {fmt_bytes(host.ram_available_bytes)} available"
    if gguf is not None and gguf.file_bytes > host.ram_available_bytes:
        return Check("ram", "warning", f"{msg}; the model file is {fmt_bytes(gguf.file_bytes)}",
                     "offload more layers to the GPU, use a smaller quantisation, or free RAM")  # fmt: skip
    return Check("ram", "ok", msg)


def cpu_check(host: HostFacts, spec: LaunchSpec | None) -> Check:
    phys = host.cpu_physical or host.cpu_logical
    msg = f"{phys} physical cores, {host.cpu_logical} threads; suggested --threads {phys}"
    threads = spec.get("threads") if spec is not None else None
    try:
        n = int(threads) if threads is not None else None
    except ValueError:
        n = None
    if n is not None and n > phys:
        return Check("cpu_topology", "warning", f"{msg} (the server uses --threads {n})",
                     f"--threads {phys}: more threads than physical cores slows decoding")  # fmt: skip
    return Check("cpu_topology", "ok", msg)


def binary_check(binary: BinaryFacts, host: HostFacts) -> Check:
    if binary.path is None:
        return Check("llama_server_binary", "error", "no llama-server found (not on PATH)",
                     "build llama.cpp (cmake -B build -DGGML_CUDA=ON) or pass its path")  # fmt: skip
    if not binary.runs:
        return Check("llama_server_binary", "error",
                     f"{binary.path} does not run: {binary.error or binary.version_text[:200]}",
                     "rebuild it for this machine; check its shared libraries with ldd")  # fmt: skip
    version = binary.version_text.splitlines()[0] if binary.version_text else "unknown version"
    if host.gpus and binary.cuda is False:
        return Check("llama_server_binary", "error",
                     f"{binary.path} ({version}) is built without CUDA: it cannot use the GPU",
                     "rebuild with cmake -B build -DGGML_CUDA=ON")  # fmt: skip
    cuda = {True: "CUDA build", False: "CPU-only build", None: "backend unknown"}[binary.cuda]
    return Check("llama_server_binary", "ok", f"{binary.path} ({version}, {cuda})")


# -- the launch ------------------------------------------------------------------------------------


def _visible_ok(value: str, host: HostFacts) -> str | None:
    """None when CUDA_VISIBLE_DEVICES names GPUs that exist, else what is wrong."""
    uuids = {g.uuid for g in host.gpus if g.uuid}
    for tok in (t.strip() for t in value.split(",")):
        if not tok or tok.startswith("-"):
            break
        if tok.isdigit():
            if int(tok) >= len(host.gpus):
                return f"GPU {tok} does not exist ({len(host.gpus)} GPU(s))"
        elif tok.startswith(("GPU-", "MIG-")):
            if host.gpus and not any(u.startswith(tok) for u in uuids):
                return f"no GPU has UUID {tok}"
        else:
            return f"{tok!r} is neither an index nor a GPU UUID"
    return None


def environment_checks(
    env: Mapping[str, str], host: HostFacts, spec: LaunchSpec | None, *, unit: bool
) -> list[Check]:
    """CUDA_VISIBLE_DEVICES and LD_LIBRARY_PATH of the server (pitfall 5: systemd's gaps)."""
    out = []
    gpu_server = bool(host.gpus) and (wants_gpu(spec) or spec is None or spec.gpu_layers != 0)
    where = "the unit's Environment=" if unit else "the server's environment"
    cvd = env.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        wrong = _visible_ok(cvd, host)
        if wrong:
            out.append(Check("cuda_visible_devices", "error", f"CUDA_VISIBLE_DEVICES={cvd}: {wrong}",
                             "name GPUs by index or UUID as nvidia-smi -L lists them"))  # fmt: skip
        else:
            out.append(Check("cuda_visible_devices", "ok", f"CUDA_VISIBLE_DEVICES={cvd}"))
    elif unit and gpu_server:
        out.append(Check("cuda_visible_devices", "warning", f"not set in {where}",
                         'Environment="CUDA_VISIBLE_DEVICES=0" (systemd starts services with a '
                         "minimal environment: silent CPU fallback)"))  # fmt: skip
    ld = env.get("LD_LIBRARY_PATH")
    if ld is not None:
        missing = [d for d in ld.split(":") if d and not _is_dir(d)]
        if missing:
            out.append(Check("ld_library_path", "warning",
                             f"LD_LIBRARY_PATH names missing directories: {', '.join(missing)}",
                             "point it at the CUDA libraries, e.g. /usr/local/cuda/lib64"))  # fmt: skip
        else:
            out.append(Check("ld_library_path", "ok", f"LD_LIBRARY_PATH={ld}"))
    elif unit and gpu_server:
        out.append(Check("ld_library_path", "warning", f"not set in {where}",
                         'Environment="LD_LIBRARY_PATH=/usr/local/cuda/lib64"'))  # fmt: skip
    return out


def _is_dir(path: str) -> bool:
    return os.path.isdir(path)


def device_access_check(access: Sequence[DeviceAccess]) -> Check | None:
    if not access:
        return None
    denied = [a.path for a in access if not a.allowed]
    user = access[0].user
    if denied:
        return Check("nvidia_device_access", "error",
                     f"user {user} cannot open {', '.join(denied)}",
                     f"add {user} to the group that owns them (usually video or render)")  # fmt: skip
    return Check("nvidia_device_access", "ok", f"user {user} can open /dev/nvidia*")


def ctx_check(spec: LaunchSpec, training_context: int | None) -> Check | None:
    """Pitfall 2: --ctx-size above the model's training context."""
    if not training_context:
        return None
    ctx = spec.ctx_size
    if ctx and ctx > training_context:
        return Check("ctx_size", "warning",
                     f"ctx-size {ctx} is above the model's training context {training_context} "
                     "(quality degrades beyond it)",
                     f"--ctx-size {training_context} (or 0 = the training context)")  # fmt: skip
    shown = ctx or training_context
    return Check(
        "ctx_size", "ok", f"ctx-size {shown} within the training context {training_context}"
    )


def estimated_params(gguf: GgufInfo) -> float:
    """Parameters from the shapes: attention 4·d² and feed-forward 3·d·ff per layer, plus the
    embeddings. Good to ~10 %, enough to tell a 7B model from a 1B one."""
    d, ff = gguf.embedding_length, gguf.feed_forward_length or 4 * gguf.embedding_length
    per_layer = 4 * d * d + 3 * d * ff
    return float(gguf.block_count * per_layer + 2 * (gguf.vocab_size or 0) * d)


def quantisation_check(gguf: GgufInfo) -> Check | None:
    """Pitfall 3: Q2/Q3 quantisation of a 7B+ model."""
    name = gguf.file_type_name
    if name is None:
        return None
    params = estimated_params(gguf)
    size = (
        f"~{params / 1e9:.1f}B parameters" if params >= 1e8 else f"~{params / 1e6:.0f}M parameters"
    )
    if name.upper().startswith(LOW_BIT_TYPES) and params >= LARGE_MODEL_PARAMS:
        return Check("quantisation", "warning",
                     f"{name} on a {size} model: 2–3-bit quantisation degrades its answers",
                     "use Q4_K_M or Q5_K_M for production")  # fmt: skip
    return Check("quantisation", "ok", f"{name}, {size}")


def exposure_check(spec: LaunchSpec) -> Check:
    host = spec.host
    if host in EXPOSED_HOSTS and not spec.api_key:
        return Check("exposed_without_key", "warning",
                     f"--host {host} without an API key: anyone on the network can use the server",
                     "add --api-key-file FILE (0600), or bind --host 127.0.0.1")  # fmt: skip
    keyed = ", API key set" if spec.api_key else ""
    return Check("exposed_without_key", "ok", f"listens on {host}{keyed}")


def launch_checks(
    spec: LaunchSpec, gguf: GgufInfo | None, training_context: int | None = None
) -> list[Check]:
    """The checks that depend only on the launch arguments and the model: the dashboard shows
    the ones that are not ok as alerts."""
    out: list[Check] = []
    ctx = ctx_check(spec, training_context or (gguf.context_length if gguf else None))
    if ctx is not None:
        out.append(ctx)
    if gguf is not None:
        q = quantisation_check(gguf)
        if q is not None:
            out.append(q)
    out.append(exposure_check(spec))
    return out


def check_alerts(checks: Sequence[Check], first_seen: Mapping[str, float]) -> tuple[Alert, ...]:
    """The checks that are not ok as alerts (kind `check_<name>`, an error is critical), each
    since the time it was first seen: the dashboard shows `llmtop check`'s findings about the
    server's launch in its alerts strip, in the same words and with the same fix."""
    out = []
    for c in checks:
        if c.status == "ok":
            continue
        severity: Severity = "critical" if c.status == "error" else "warning"
        words = f"{c.message} — fix: {c.fix}" if c.fix else c.message
        out.append(Alert(f"check_{c.name}", severity, words, first_seen.get(c.name, 0.0)))
    return tuple(out)
