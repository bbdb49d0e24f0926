"""The model table of a router-mode llama-server: shown in the Server panel's place.

A router runs one llama-server child per loaded model, so what an operator needs is per model:
its state (loaded, loading, unloaded, sleeping, failed with the exit code), its slots, its
generation rate, its VRAM (NVML, by the child's pid) — one line each, the selected one marked,
with its pid, context and port below. Keys (ui/model_keys.py): m selects the next model, L loads
and U unloads it (each asks first), l shows its log lines.
"""

from __future__ import annotations

from rich.markup import escape

from llmtop.model.units import DASH, fmt_bytes, fmt_rate
from llmtop.snapshot import ModelStatus, Snapshot

STATUS_STYLE = {
    "loaded": "green",
    "loading": "yellow",
    "unloaded": "dim",
    "sleeping": "blue",
    "failed": "bold red",
}
ID_WIDTH = 12


def selected_model(models: tuple[ModelStatus, ...], selected: str | None) -> ModelStatus | None:
    """The selected model, else the first one (None when the router lists none)."""
    for m in models:
        if m.id == selected:
            return m
    return models[0] if models else None


def next_model(models: tuple[ModelStatus, ...], selected: str | None) -> str | None:
    """The id after *selected* (wrapping round)."""
    if not models:
        return None
    ids = [m.id for m in models]
    if selected not in ids:
        return ids[0]
    return ids[(ids.index(selected) + 1) % len(ids)]


def status_words(m: ModelStatus) -> str:
    style = STATUS_STYLE.get(m.status, "bold")
    words = m.status
    if m.status == "failed" and m.exit_code is not None:
        words += f" ({m.exit_code})"
    return f"[{style}]{escape(words)}[/]"


def model_row(m: ModelStatus, is_selected: bool) -> str:
    """One table line: marker, id, status, busy/total slots, gen tok/s, VRAM."""
    mark = "[reverse]▸[/]" if is_selected else " "
    name = m.id if len(m.id) <= ID_WIDTH else m.id[: ID_WIDTH - 1] + "…"
    running = m.status in ("loaded", "sleeping")
    slots = DASH
    if running and m.slots_total is not None:
        slots = f"{m.slots_busy if m.slots_busy is not None else DASH}/{m.slots_total}"
    rate = fmt_rate(m.gen_tokens_per_s, "") if running else DASH
    vram = fmt_bytes(m.gpu_memory_bytes) if running else DASH
    # the status column is padded by its words, markup aside
    shown = m.status + (
        f" ({m.exit_code})" if m.status == "failed" and m.exit_code is not None else ""
    )
    pad = " " * max(1, 11 - len(shown))
    return f"{mark} {escape(name):<{ID_WIDTH}} {status_words(m)}{pad}{slots:>5} {rate:>5} {vram:>8}"


def model_table_lines(snapshot: Snapshot, selected: str | None) -> list[str]:
    """The router's lines: a header, one row per model, the selected model's details, keys."""
    s = snapshot.server
    models = s.models
    if not models:
        return ["[dim]the router lists no models (--models-dir / --models-preset)[/]"]
    lines = [f"[dim]  {'model':<{ID_WIDTH}} {'state':<11}{'slots':>5} {'tok/s':>5} {'VRAM':>8}[/]"]
    chosen = selected_model(models, selected)
    for m in models:
        lines.append(model_row(m, chosen is not None and m.id == chosen.id))
    if chosen is not None:
        bits = [f"pid {chosen.pid}" if chosen.pid is not None else "no process"]
        if chosen.n_ctx is not None:
            bits.append(f"ctx {chosen.n_ctx}")
        if chosen.port is not None:
            bits.append(f"port {chosen.port}")
        lines.append(f"[bold]{escape(chosen.id)}[/]  [dim]{escape(' · '.join(bits))}[/]")
    lines.append("[dim]m next · L load · U unload · l its logs[/]")
    return lines
