"""GPU panel: one card per GPU — VRAM bar and the server's share, utilisation, temperature against
the slowdown threshold, clocks against max, power against the limit, clock event reasons."""

from __future__ import annotations

from rich.markup import escape

from llmtop.diagnosis.alerts import server_gpu_memory
from llmtop.model.units import DASH, fmt_bytes
from llmtop.snapshot import GpuSample, Snapshot
from llmtop.ui.panels.base import SnapshotPanel

# Reasons that cost speed (red/yellow); the rest are informational (dim).
HARD_REASONS = frozenset({"HwThermalSlowdown", "HwPowerBrakeSlowdown", "HwSlowdown"})
SOFT_REASONS = frozenset({"SwThermalSlowdown", "SwPowerCap"})


def bar(fraction: float | None, width: int = 20) -> str:
    if fraction is None:
        return "[dim]" + "·" * width + "[/]"
    f = max(0.0, min(1.0, fraction))
    full = round(f * width)
    style = "red" if f >= 0.9 else "yellow" if f >= 0.85 else "green"
    return f"[{style}]{'█' * full}[/][dim]{'░' * (width - full)}[/]"


def temp_words(g: GpuSample) -> str:
    if g.temperature_c is None:
        return f"temp  {DASH}"
    t = g.temperature_c
    if g.temp_slowdown_c is None:
        return f"temp  {t:.0f} °C  [dim]slowdown threshold n/a[/]"
    margin = g.temp_slowdown_c - t
    style = "bold red" if margin <= 0 else "yellow" if margin <= 5 else "green"
    words = (
        f"temp  [{style}]{t:.0f} °C[/]  slowdown {g.temp_slowdown_c:.0f} °C "
        f"([{style}]margin {margin:.0f} °C[/])"
    )
    if g.temp_shutdown_c is not None:
        words += f"  shutdown {g.temp_shutdown_c:.0f} °C"
    return words


def clock_words(g: GpuSample) -> str:
    if g.sm_clock_mhz is None:
        sm = DASH
    elif g.sm_clock_max_mhz:
        pct = 100.0 * g.sm_clock_mhz / g.sm_clock_max_mhz
        style = "yellow" if pct < 85 else ""
        sm = f"{g.sm_clock_mhz}/{g.sm_clock_max_mhz} MHz ({pct:.0f} %)"
        sm = f"[{style}]{sm}[/]" if style else sm
    else:
        sm = f"{g.sm_clock_mhz} MHz"
    mem = DASH if g.mem_clock_mhz is None else f"{g.mem_clock_mhz} MHz"
    return f"clock SM {sm}  mem {mem}"


def power_words(g: GpuSample) -> str:
    if g.power_w is None:
        return f"power {DASH}" + (f" / {g.power_limit_w:.0f} W" if g.power_limit_w else "")
    if g.power_limit_w:
        return (
            f"power {g.power_w:.0f}/{g.power_limit_w:.0f} W "
            f"({100.0 * g.power_w / g.power_limit_w:.0f} %)"
        )
    return f"power {g.power_w:.0f} W"


def reason_words(g: GpuSample) -> str:
    if g.throttle_reasons is None:
        return f"reasons {DASH}"
    if not g.throttle_reasons:
        return "reasons [green]none — full clocks allowed[/]"
    parts = []
    for r in g.throttle_reasons:
        style = "bold red" if r in HARD_REASONS else "yellow" if r in SOFT_REASONS else "dim"
        parts.append(f"[{style}]{escape(r)}[/]")
    pct = ""
    if g.throttled_thermal_percent:
        pct = f"  [dim](thermal {g.throttled_thermal_percent:.0f} % of the interval)[/]"
    return "reasons " + " ".join(parts) + pct


def gpu_card(g: GpuSample, server_bytes: int | None, *, sleeping: bool = False) -> list[str]:
    """One GPU's lines, each short enough for the 64 columns the card gets beside the plots.
    `sleeping`: the server unloaded its model (--sleep-idle-seconds), so its VRAM line says
    freed instead of showing a share that is gone (or about to be)."""
    name = escape(g.name or "GPU")
    head = f"[bold]GPU{g.index}[/] {name}"
    if g.pci_bus_id:
        head += f"  [dim]{escape(g.pci_bus_id)}[/]"
    if g.lost:
        return [head, "  [bold red]LOST — fell off the bus; check `dmesg` for Xid errors[/]"]
    used, total = g.memory_used_bytes, g.memory_total_bytes
    frac = used / total if used is not None and total else None
    pct = f"{100 * frac:.0f} %" if frac is not None else DASH
    lines = [head, f"  VRAM  {bar(frac)} {fmt_bytes(used)}/{fmt_bytes(total)} {pct}"]
    if sleeping and g.used_by_server is not False:
        left = f", still {fmt_bytes(server_bytes)}" if server_bytes else ""
        lines.append(f"        [blue]llama-server asleep: model VRAM freed{left}[/]")
    elif server_bytes:
        lines.append(
            f"        [bold cyan]llama-server: {fmt_bytes(server_bytes)} on GPU{g.index}[/]"
        )
    elif g.used_by_server:
        lines.append("        [cyan]llama-server may use it[/]")
    elif g.used_by_server is False:
        lines.append("        [dim]not visible to llama-server[/]")
    util = DASH if g.utilization_percent is None else f"{g.utilization_percent:.0f} %"
    mutil = (
        DASH if g.memory_utilization_percent is None else f"{g.memory_utilization_percent:.0f} %"
    )
    fan = DASH if g.fan_percent is None else f"{g.fan_percent:.0f} %"
    pstate = DASH if g.pstate is None else f"P{g.pstate}"
    lines += [
        f"  util  {util}  mem {mutil}  {pstate}  fan {fan}  " + power_words(g),
        "  " + temp_words(g),
        "  " + clock_words(g),
        "  " + reason_words(g),
    ]
    if g.persistence_mode is False:
        lines.append("  [yellow]persistence mode off[/] [dim]→ sudo nvidia-smi -pm 1[/]")
    return lines


class GpuPanel(SnapshotPanel):
    """One card per GPU, or `snapshot.gpu_note` in one line when there are none."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.border_title = "GPU"

    def show(self, snapshot: Snapshot) -> None:
        self.remember(snapshot)
        note = snapshot.gpu_note
        if not snapshot.gpus:
            self.set_text(f"[yellow]{escape(note)}[/]" if note else "[dim]no GPU data[/]")
            return
        lines: list[str] = []
        if note:
            lines.append(f"[reverse yellow] {escape(note)} [/]")
        server = server_gpu_memory(snapshot)
        for g in snapshot.gpus:
            if lines:
                lines.append("")
            lines += gpu_card(g, server.get(g.index), sleeping=snapshot.server.health == "sleeping")
        self.set_text("\n".join(lines))
