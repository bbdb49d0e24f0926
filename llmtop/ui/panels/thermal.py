"""Thermal panel: temperature, SM clock and generation tok/s on one time axis, the verdict over
the window ("thermal (HW slowdown) 31 % of the last 5 min; decode −24 % while throttled") and the
throttle events. The plots read the dashboard's one history (`DashboardHistory`, 15 min at 1 s,
shared with the overview: gen tokens/s is kept once); `record(snapshot)` may be called on every
tick even while the panel is hidden (a no-op for a snapshot the app already recorded)."""

from __future__ import annotations

from rich.markup import escape

from llmtop.model.units import DASH
from llmtop.snapshot import GpuSample, Snapshot
from llmtop.ui.charts import sparkline
from llmtop.ui.panels.base import SnapshotPanel
from llmtop.ui.series import DashboardHistory

EVENTS_SHOWN = 6
REASON_WORDS = {
    "HwThermalSlowdown": "HW thermal slowdown",
    "SwThermalSlowdown": "SW thermal slowdown",
    "HwPowerBrakeSlowdown": "HW power brake",
    "HwSlowdown": "HW slowdown",
    "SwPowerCap": "SW power cap",
    "GpuIdle": "idle",
    "ApplicationsClocksSetting": "application clocks",
    "SyncBoost": "sync boost",
    "DisplayClockSetting": "display clock",
}


def focus_gpu(snapshot: Snapshot) -> GpuSample | None:
    """The GPU to show: among those the server may use, the hottest relative to slowdown."""
    live = [g for g in snapshot.gpus if not g.lost]
    if not live:
        return None
    used = [g for g in live if g.used_by_server] or live

    def heat(g: GpuSample) -> float:
        if g.temperature_c is None:
            return -1e9
        return g.temperature_c - (g.temp_slowdown_c or 100.0)

    return max(
        used,
        key=lambda g: (bool(g.throttle_reasons and set(g.throttle_reasons) - {"GpuIdle"}), heat(g)),
    )


class ThermalPanel(SnapshotPanel):
    def __init__(self, history: DashboardHistory | None = None, **kwargs: object) -> None:
        """*history*: the app's (shared with the overview); a panel on its own keeps one."""
        super().__init__(**kwargs)
        self.border_title = "Thermal"
        self.history = history if history is not None else DashboardHistory()

    def record(self, snapshot: Snapshot) -> None:
        """Add the snapshot to the plots' history without redrawing."""
        self.history.add_snapshot(snapshot)

    def show(self, snapshot: Snapshot) -> None:
        self.remember(snapshot)
        self.record(snapshot)
        g = focus_gpu(snapshot)
        if g is None:
            note = snapshot.gpu_note or ("all GPUs lost" if snapshot.gpus else "no GPU data")
            self.set_text(f"[yellow]{escape(note)}[/]")
            return
        lines = [f"[bold]GPU{g.index}[/] {escape(g.name or '')}"]
        report = snapshot.thermal
        if report is not None and report.verdict:
            style = "green" if not report.throttled_percent else "bold yellow"
            lines.append(f"verdict  [{style}]{escape(report.verdict)}[/]")
        if g.temperature_c is not None and g.temp_slowdown_c is not None:
            margin = g.temp_slowdown_c - g.temperature_c
            style = "bold red" if margin <= 0 else "yellow" if margin <= 5 else "green"
            shut = f", shutdown {g.temp_shutdown_c:.0f} °C" if g.temp_shutdown_c is not None else ""
            lines.append(
                f"temp     [{style}]{g.temperature_c:.0f} °C — {margin:.0f} °C margin to "
                f"slowdown[/] ({g.temp_slowdown_c:.0f} °C{shut})"
            )
        else:
            t = DASH if g.temperature_c is None else f"{g.temperature_c:.0f} °C"
            lines.append(f"temp     {t}  [dim](no slowdown threshold reported)[/]")
        if g.sm_clock_mhz is not None and g.sm_clock_max_mhz:
            lines.append(
                f"SM clock {g.sm_clock_mhz} MHz = "
                f"{100.0 * g.sm_clock_mhz / g.sm_clock_max_mhz:.0f} % of max "
                f"({g.sm_clock_max_mhz} MHz)"
            )
        if g.power_w is not None and g.power_limit_w:
            lines.append(
                f"power    {g.power_w:.0f} W = {100.0 * g.power_w / g.power_limit_w:.0f} % "
                f"of the {g.power_limit_w:.0f} W limit"
            )
        active = [REASON_WORDS.get(r, r) for r in (g.throttle_reasons or ()) if r != "GpuIdle"]
        if g.throttle_reasons is None:
            lines.append(f"limits   {DASH}")
        else:
            lines.append(
                "limits   "
                + (f"[bold red]{escape(', '.join(active))}[/]" if active else "[green]none[/]")
            )
        width = max(10, (self.content_size.width or 60) - 11)
        h = self.history
        temp = h.temperature(g.index)
        sm = h.sm_clock(g.index)
        gen = h.gen()
        temp_series = temp.values() if temp is not None else []
        sm_series = sm.values() if sm is not None else []
        # Scaled from a little below the window's minimum so that a few degrees or a clock cut
        # are visible (from 0, a 70 → 86 °C ramp is a barely changing full bar).
        temp_summary = temp.summary() if temp is not None else None
        sm_summary = sm.summary() if sm is not None else None
        t_low = max(0.0, (temp_summary.min if temp_summary else 0.0) - 5.0)
        sm_low = 0.8 * (sm_summary.min if sm_summary else 0.0)
        lines.append(
            f"temp °C  [red]{sparkline(temp_series, width, top=g.temp_shutdown_c, bottom=t_low)}[/]"
        )
        lines.append(
            f"SM MHz   [cyan]{sparkline(sm_series, width, top=g.sm_clock_max_mhz, bottom=sm_low)}[/]"
        )
        gen_series = gen.values() if gen is not None else []
        lines.append(f"gen t/s  [green]{sparkline(gen_series, width, zero_blank=True)}[/]")
        if len(h.metrics) > 1:
            span = h.span_s
            left = f"−{span / 60:.0f} min" if span >= 60 else f"−{span:.0f} s"
            lines.append(f"[dim]{'':9}{left}{'now':>{max(1, width - len(left))}}[/]")
        events = report.events if report is not None else ()
        if events:
            lines.append("events")
            for e in list(events)[-EVENTS_SHOWN:]:
                prefix = f"GPU{e.gpu_index} " if len(snapshot.gpus) > 1 else ""
                style = "red" if e.kind == "throttle_start" else "dim"
                lines.append(f"  [{style}]{prefix}{escape(e.message)}[/]")
        self.set_text("\n".join(lines))
