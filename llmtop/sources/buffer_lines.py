"""What llama.cpp itself says it allocated: the `-lv 4` buffer-size lines, and llama-fit-params.

With `-lv 4` (`--log-verbosity 4`) llama-server prints at load time:

    load_tensors: offloaded 3/5 layers to GPU
    load_tensors:   CPU_Mapped model buffer size =     0.77 MiB
    llama_context: n_ctx = 512
    llama_kv_cache:        CPU KV buffer size =     0.50 MiB
    llama_kv_cache: size =    0.50 MiB (   512 cells,   4 layers,  1/1 seqs), K (f16):    0.25 MiB, V (f16):    0.25 MiB
    sched_reserve:        CPU compute buffer size =     2.51 MiB

`parse_buffer_lines` turns such lines (plain strings: a log file, LogStore lines, journal text)
into `BufferSizes`; `predicted_vs_actual` sets them beside a `VramPlan`. Values are printed with
two decimals in MiB, so "actual" is exact to ±0.005 MiB.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtop.sources.logs import LogLine

if TYPE_CHECKING:
    from llmtop.model.vram_plan import VramPlan

MiB = 1024 * 1024

# Sizes are printed "%.2f": a run of digits and dots that is not a number ("1.2.3") is no size.
# Counts have at most 18 digits (int() refuses thousands), sizes 15 (float() would give inf).
# A buffer name starts after whitespace: searching from inside a long run of non-space would
# make every search quadratic in the line's length.
_MODEL_RE = re.compile(r"(?<!\S)(\S+) model buffer size\s*=\s*(\d{1,15}(?:\.\d{1,6})?) MiB")
_KV_BUF_RE = re.compile(r"(?<!\S)(\S+) KV buffer size\s*=\s*(\d{1,15}(?:\.\d{1,6})?) MiB")
_COMPUTE_RE = re.compile(r"(?<!\S)(\S+) compute buffer size\s*=\s*(\d{1,15}(?:\.\d{1,6})?) MiB")
_OUTPUT_RE = re.compile(r"(?<!\S)(\S+)\s+output buffer size\s*=\s*(\d{1,15}(?:\.\d{1,6})?) MiB")
_OFFLOAD_RE = re.compile(r"offloaded (\d{1,18})/(\d{1,18}) layers to GPU")
_NCTX_RE = re.compile(r"llama_context: n_ctx\s*=\s*(\d{1,18})")
_KV_SIZE_RE = re.compile(
    r"llama_kv_cache: size\s*=\s*(\d{1,15}(?:\.\d{1,6})?) MiB \(\s*(\d{1,18}) cells,\s*(\d{1,18}) layers,\s*(\d{1,18})/(\d{1,18}) seqs\),"
    r"\s*K \((\w+)\):\s*(\d{1,15}(?:\.\d{1,6})?) MiB,\s*V \((\w+)\):\s*(\d{1,15}(?:\.\d{1,6})?) MiB"
)


def is_host_buffer(name: str) -> bool:
    """CPU, CPU_Mapped, CPU_REPACK, CUDA_Host (pinned host memory) … live in system RAM."""
    return name.upper().startswith("CPU") or name.endswith("_Host")


@dataclass(frozen=True)
class KvCacheLine:
    size_mib: float
    cells: int
    layers: int
    type_k: str
    k_mib: float
    type_v: str
    v_mib: float


@dataclass
class BufferSizes:
    """MiB per buffer name (several KV caches — e.g. SWA + dense — are summed)."""

    model_mib: dict[str, float] = field(default_factory=dict)
    kv_mib: dict[str, float] = field(default_factory=dict)
    compute_mib: dict[str, float] = field(default_factory=dict)
    output_mib: dict[str, float] = field(default_factory=dict)
    kv_caches: list[KvCacheLine] = field(default_factory=list)
    offloaded: tuple[int, int] | None = None
    n_ctx: int | None = None

    @property
    def empty(self) -> bool:
        return not (self.model_mib or self.kv_mib or self.compute_mib or self.kv_caches)

    @staticmethod
    def _sum(d: dict[str, float], device: bool | None) -> float:
        return sum(v for k, v in d.items() if device is None or is_host_buffer(k) != device)

    def model(self, device: bool | None = None) -> float:
        """device=True: GPU buffers only; False: host only; None: all."""
        return self._sum(self.model_mib, device)

    def kv(self, device: bool | None = None) -> float:
        if device is None and self.kv_caches:
            return sum(c.size_mib for c in self.kv_caches)
        return self._sum(self.kv_mib, device)

    def compute(self, device: bool | None = None) -> float:
        return self._sum(self.compute_mib, device)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "model_mib": self.model_mib,
            "kv_mib": self.kv_mib,
            "compute_mib": self.compute_mib,
            "output_mib": self.output_mib,
            "kv_caches": [c.__dict__ for c in self.kv_caches],
            "offloaded": list(self.offloaded) if self.offloaded else None,
            "n_ctx": self.n_ctx,
        }


def parse_buffer_lines(lines: Iterable[str | LogLine] | str) -> BufferSizes:
    """Parse -lv 4 buffer lines. A log holding several loads (restarts) gives the last load."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    cur = BufferSizes()
    for raw in lines:
        text = raw.text if isinstance(raw, LogLine) else raw
        if "buffer size" not in text and "offloaded" not in text and "llama_" not in text:
            continue
        if m := _OFFLOAD_RE.search(text):
            if cur.compute_mib:  # a new load begins
                cur = BufferSizes()
            cur.offloaded = (int(m.group(1)), int(m.group(2)))
        elif m := _MODEL_RE.search(text):
            if cur.compute_mib:
                cur = BufferSizes()
            cur.model_mib[m.group(1)] = cur.model_mib.get(m.group(1), 0.0) + float(m.group(2))
        elif m := _KV_BUF_RE.search(text):
            cur.kv_mib[m.group(1)] = cur.kv_mib.get(m.group(1), 0.0) + float(m.group(2))
        elif m := _KV_SIZE_RE.search(text):
            cur.kv_caches.append(
                KvCacheLine(
                    size_mib=float(m.group(1)),
                    cells=int(m.group(2)),
                    layers=int(m.group(3)),
                    type_k=m.group(6),
                    k_mib=float(m.group(7)),
                    type_v=m.group(8),
                    v_mib=float(m.group(9)),
                )
            )
        elif m := _COMPUTE_RE.search(text):
            cur.compute_mib[m.group(1)] = float(m.group(2))
        elif m := _OUTPUT_RE.search(text):
            cur.output_mib[m.group(1)] = float(m.group(2))
        elif m := _NCTX_RE.search(text):
            cur.n_ctx = int(m.group(1))
    return cur


@dataclass(frozen=True)
class ComparisonRow:
    name: str
    predicted_bytes: int | None
    actual_bytes: int | None
    # (predicted − actual) / actual × 100; None when either side is unknown or actual is 0.
    error_percent: float | None

    @property
    def predicted_mib(self) -> float | None:
        return None if self.predicted_bytes is None else self.predicted_bytes / MiB

    @property
    def actual_mib(self) -> float | None:
        return None if self.actual_bytes is None else self.actual_bytes / MiB


def _row(name: str, predicted: int | None, actual_mib: float | None) -> ComparisonRow:
    actual = None if actual_mib is None else round(actual_mib * MiB)
    err = None
    if predicted is not None and actual:
        err = round(100.0 * (predicted - actual) / actual, 2)
    return ComparisonRow(name, predicted, actual, err)


def predicted_vs_actual(plan: VramPlan, parsed: BufferSizes) -> list[ComparisonRow]:
    """Rows of plan (llmtop.model.vram_plan.VramPlan) vs what llama-server reported.

    'all' rows compare every device (exact on a CPU-only server); 'GPU' rows only the device
    buffers and appear when the log has any."""
    rows = [
        _row(
            "weights (all devices)", plan.model_bytes, parsed.model() if parsed.model_mib else None
        ),
        _row(
            "KV cache (all layers)",
            plan.kv_cache_total_bytes,
            parsed.kv() if (parsed.kv_caches or parsed.kv_mib) else None,
        ),
        _row(
            "compute (all devices, est.)",
            plan.compute_total_bytes,
            parsed.compute() if parsed.compute_mib else None,
        ),
    ]
    has_gpu = any(
        not is_host_buffer(k) for k in (*parsed.model_mib, *parsed.kv_mib, *parsed.compute_mib)
    )
    if has_gpu:
        rows += [
            _row("weights (GPU)", plan.weights_bytes, parsed.model(device=True)),
            _row("KV cache (GPU)", plan.kv_cache_bytes, parsed.kv(device=True)),
            _row("compute (GPU, est.)", plan.compute_bytes, parsed.compute(device=True)),
        ]
    return rows


def offload_agrees(plan: VramPlan, parsed: BufferSizes) -> bool | None:
    """Does the 'offloaded N/M layers' line match the plan? None when the line is absent
    (no GPU backend in the build)."""
    if parsed.offloaded is None:
        return None
    return parsed.offloaded == (plan.gpu_layers, plan.n_layer + 1)


def format_comparison(rows: list[ComparisonRow]) -> str:
    out = [f"{'':30} {'predicted':>12} {'llama.cpp':>12} {'error':>8}"]
    for r in rows:
        p = "—" if r.predicted_mib is None else f"{r.predicted_mib:.2f} MiB"
        a = "—" if r.actual_mib is None else f"{r.actual_mib:.2f} MiB"
        e = "—" if r.error_percent is None else f"{r.error_percent:+.1f} %"
        out.append(f"{r.name:30} {p:>12} {a:>12} {e:>8}")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# llama-fit-params: llama.cpp's own fitter, printed as CLI arguments ("-c 4096 -ngl 48 …").


@dataclass(frozen=True)
class FitSuggestion:
    ctx: int | None
    gpu_layers: int | None
    extra: str  # anything after -c/-ngl (-ts …, -ot …)
    error: str | None = None


_FIT_RE = re.compile(r"^-c (\d{1,18}) -ngl (-?\d{1,18})(.*)$")


def parse_fit_params_output(stdout: str) -> FitSuggestion | None:
    for line in reversed(stdout.splitlines()):
        if m := _FIT_RE.match(line.strip()):
            return FitSuggestion(int(m.group(1)), int(m.group(2)), m.group(3).strip())
    return None


def find_fit_params(llama_server: str | Path) -> Path | None:
    """llama-fit-params next to a llama-server binary, if built."""
    p = Path(llama_server).with_name("llama-fit-params")
    return p if p.is_file() else None


def run_fit_params(
    binary: str | Path, model: str | Path, extra: list[str] | None = None, timeout_s: float = 60.0
) -> FitSuggestion:
    """Run llama-fit-params (blocking: call it in a thread). argv list, no shell."""
    argv = [str(binary), "-m", str(model), *(extra or [])]
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return FitSuggestion(None, None, "", error=str(e))
    s = parse_fit_params_output(cp.stdout)
    if s is None:
        tail = (cp.stderr.strip().splitlines() or [f"exit {cp.returncode}"])[-1]
        return FitSuggestion(None, None, "", error=f"llama-fit-params: {tail}")
    return s
