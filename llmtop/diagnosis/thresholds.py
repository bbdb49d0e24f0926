"""Alert limits. Defaults follow the operators' playbook; ~/.config/llmtop/config.toml and
command-line flags override them (llmtop/config.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    # VRAM: warn above this share used (the playbook's 85 % line) …
    vram_percent: float = 85.0
    # … critical when less than this share is free (playbook: keep 10–15 % headroom).
    vram_headroom_percent: float = 10.0
    # Hysteresis: a VRAM alert clears only below vram_percent - vram_clear_points.
    vram_clear_points: float = 5.0
    # Temperature: warn within this many °C of the slowdown threshold …
    temp_margin_c: float = 5.0
    # … and clear only when this many °C further below.
    temp_clear_c: float = 2.0
    # A thermal or power-brake clock event reason must be active this long before it alerts.
    throttle_s: float = 5.0
    # Silent CPU fallback: server ready, holding no GPU memory for this long.
    cpu_fallback_s: float = 10.0
    # The thermal verdict's window.
    thermal_window_s: float = 300.0
    # Persistence-mode-off hint (info) can be turned off.
    persistence_hint: bool = True
