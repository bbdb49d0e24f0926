"""What this box is, for `llmtop check` (the playbook's step 1): driver and GPUs, RAM, CPU
topology, the llama-server binary and whether it was built with CUDA, who may open /dev/nvidia*.

Read once, on demand (not per tick): every call here may block for a moment (NVML init, running
the binary with `--version` / `--list-devices`), so the dashboard runs it in a thread.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from llmtop.snapshot import GpuSample
from llmtop.sources.gpu import GpuMonitor


@dataclass(frozen=True)
class HostFacts:
    driver_version: str | None
    nvml_version: str | None
    gpus: tuple[GpuSample, ...]
    gpu_note: str | None  # why there are no GPUs ("no NVIDIA driver …")
    ram_total_bytes: int
    ram_available_bytes: int
    cpu_physical: int | None
    cpu_logical: int


@dataclass(frozen=True)
class BinaryFacts:
    path: str | None  # None: not found
    runs: bool = False
    version_text: str = ""
    devices_text: str = ""
    cuda: bool | None = None  # None: cannot tell
    error: str | None = None


@dataclass(frozen=True)
class DeviceAccess:
    path: str
    user: str
    allowed: bool


def read_host_facts(library_path: str | None = None) -> HostFacts:
    """GPUs through the same NVML sampler the dashboard uses, plus psutil's RAM and CPUs."""
    monitor = GpuMonitor(library_path=library_path)
    monitor.open()
    reading = monitor.sample_once()
    nvml_version = None
    if monitor.driver_version is not None:
        import pynvml

        try:
            v = pynvml.nvmlSystemGetNVMLVersion()
            nvml_version = v.decode() if isinstance(v, bytes) else str(v)
        except pynvml.NVMLError:
            nvml_version = None
    monitor.stop()
    vm = psutil.virtual_memory()
    return HostFacts(
        driver_version=monitor.driver_version,
        nvml_version=nvml_version,
        gpus=reading.samples,
        gpu_note=reading.note,
        ram_total_bytes=int(vm.total),
        ram_available_bytes=int(vm.available),
        cpu_physical=psutil.cpu_count(logical=False),
        cpu_logical=psutil.cpu_count(logical=True) or 1,
    )


def find_binary(hint: str | None) -> str | None:
    """The llama-server to check: the launch spec's argv[0], else `llama-server` on PATH."""
    for cand in (hint, "llama-server"):
        if not cand:
            continue
        if os.sep in cand:
            if os.access(cand, os.X_OK) and os.path.isfile(cand):
                return cand
            continue
        found = shutil.which(cand)
        if found:
            return found
    return None


def _run(argv: list[str], timeout_s: float) -> tuple[int | None, str]:
    try:
        r = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"no answer within {timeout_s:.0f} s"
    except OSError as e:
        return None, e.strerror or str(e)
    return r.returncode, (r.stdout + r.stderr).strip()


def read_binary_facts(path: str | None, timeout_s: float = 20.0) -> BinaryFacts:
    """Run the binary with --version and --list-devices (argv lists, no shell).

    CUDA: a `CUDA0: …` device line, or ggml's CUDA backend library beside the binary (a CUDA
    build on a box whose driver is broken lists no device but still ships the backend)."""
    if path is None:
        return BinaryFacts(path=None)
    code, version = _run([path, "--version"], timeout_s)
    if code is None:
        return BinaryFacts(path=path, error=version)
    _, devices = _run([path, "--list-devices"], timeout_s)
    lines = [ln.strip() for ln in devices.splitlines()]
    cuda_device = any(ln.upper().startswith("CUDA") for ln in lines)
    dirs = {Path(path).parent, Path(path).resolve().parent}  # an install symlink, or the build
    cuda_lib = any(glob.glob(str(d / "libggml-cuda*")) for d in dirs) or "cuda" in version.lower()
    return BinaryFacts(
        path=path,
        runs=code == 0,
        version_text=version,
        devices_text=devices,
        cuda=cuda_device or cuda_lib,
        error=None if code == 0 else f"exit status {code}",
    )


def nvidia_device_access(user: str | None) -> tuple[DeviceAccess, ...]:
    """Can `user` (default: us) open each /dev/nvidia* node for reading and writing?

    Worked out from the node's owner, group and mode and the user's groups, because llmtop
    usually runs as someone else than the service's User=."""
    nodes = sorted(p for p in glob.glob("/dev/nvidia*") if not os.path.isdir(p))
    if not nodes:
        return ()
    if user is None:
        return tuple(
            DeviceAccess(p, pwd.getpwuid(os.getuid()).pw_name, os.access(p, os.R_OK | os.W_OK))
            for p in nodes
        )
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return tuple(DeviceAccess(p, user, False) for p in nodes)
    gids = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    out = []
    for p in nodes:
        st = os.stat(p)
        mode = stat.S_IMODE(st.st_mode)
        if pw.pw_uid == 0:
            ok = True
        elif st.st_uid == pw.pw_uid:
            ok = mode & 0o600 == 0o600
        elif st.st_gid in gids:
            ok = mode & 0o060 == 0o060
        else:
            ok = mode & 0o006 == 0o006
        out.append(DeviceAccess(p, user, ok))
    return tuple(out)
