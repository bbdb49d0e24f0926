"""Thermal view of the GPU tab: the verdict over the window and the throttle events, then one
multi-row time plot per GPU — temperature against its slowdown and shutdown lines, SM clock as
% of max, gen tokens/s, the throttled spans marked on the same time axis — over 5 min, 1 h or
24 h (`w` cycles; llmtop.ui.plot_windows keeps the three windows).

`record(snapshot)` is called on every tick, even while the tab is hidden, so the plots have no
gaps; `show(snapshot)` redraws, and a plot renders again only when its data changed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll

from llmtop.snapshot import GpuSample, Snapshot
from llmtop.ui.panels.base import SnapshotPanel
from llmtop.ui.plot_windows import WINDOWS, GpuPlotHistory, Window
from llmtop.ui.widgets.time_plot import PlotData, PlotRow, RefLine, Series, TimePlot

if TYPE_CHECKING:  # pragma: no cover - typing only
    from llmtop.sources.history_plot import PlotHistory

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
WINDOW_HINT = "w 5m·1h·24h"


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


def plot_title(g: GpuSample | None, index: int) -> str:
    """The plot's header: which GPU, how hot against slowdown, its clock and what limits it."""
    if g is None:
        return f"[bold]GPU{index}[/] [dim]not in the latest sample[/]"
    head = f"[bold]GPU{g.index}[/] {escape(g.name or '')}"
    if g.lost:
        return head + "  [bold red]LOST[/]"
    if g.temperature_c is not None:
        t = g.temperature_c
        if g.temp_slowdown_c is not None:
            margin = g.temp_slowdown_c - t
            style = "bold red" if margin <= 0 else "yellow" if margin <= 5 else "green"
            head += f"  [{style}]{t:.0f} °C, {margin:.0f} °C to slowdown[/]"
        else:
            head += f"  {t:.0f} °C"
    if g.sm_clock_mhz is not None and g.sm_clock_max_mhz:
        pct = 100.0 * g.sm_clock_mhz / g.sm_clock_max_mhz
        head += f"  SM {g.sm_clock_mhz} MHz = {pct:.0f} %"
    active = [REASON_WORDS.get(r, r) for r in (g.throttle_reasons or ()) if r != "GpuIdle"]
    if active:
        head += f"  [bold red]{escape(', '.join(active))}[/]"
    return head


def gpu_plot(
    history: GpuPlotHistory, window: Window, index: int, g: GpuSample | None, end: float
) -> PlotData:
    """GPU *index*'s plot over *window* ending at *end* (the latest snapshot's time)."""
    t0 = end - window.seconds
    lines = []
    if g is not None and g.temp_slowdown_c is not None:
        lines.append(RefLine(g.temp_slowdown_c, f"slowdown {g.temp_slowdown_c:.0f}", "yellow"))
    if g is not None and g.temp_shutdown_c is not None:
        lines.append(RefLine(g.temp_shutdown_c, f"shutdown {g.temp_shutdown_c:.0f}", "red"))
    temp_now = None if g is None or g.temperature_c is None else f"{g.temperature_c:.0f}"
    step = window.bucket_s or history.interval_s
    return PlotData(
        rows=(
            PlotRow(
                "temp °C",
                (Series(history.temperature(window, index, t0), "red"),),
                tuple(lines),
                weight=3,
                value=temp_now,
            ),
            PlotRow(
                "SM clk %",
                (Series(history.clock_pct(window, index, t0), "cyan"),),
                low=0.0,
                high=100.0,
                weight=2,
            ),
            PlotRow("gen t/s", (Series(history.gen(window, t0), "green"),), low=0.0, weight=2),
        ),  # fmt: skip
        start=t0,
        end=end,
        spans=tuple(history.spans(window, index, t0)),
        title=plot_title(g, index),
        window_label=window.label,
        hint=WINDOW_HINT,
        gap_s=3.0 * step,
        empty=f"GPU{index}: no samples in the last {window.label}",
    )


class ThermalSummary(SnapshotPanel):
    """The verdict over the thermal window and the last throttle events, in words."""

    def show(self, snapshot: Snapshot) -> None:
        self.remember(snapshot)
        g = focus_gpu(snapshot)
        if g is None:
            note = snapshot.gpu_note or ("all GPUs lost" if snapshot.gpus else "no GPU data")
            self.set_text(f"[yellow]{escape(note)}[/]")
            return
        report = snapshot.thermal
        lines = []
        if report is not None and report.verdict:
            style = "green" if not report.throttled_percent else "bold yellow"
            lines.append(f"verdict  [{style}]{escape(report.verdict)}[/]")
        else:
            lines.append("verdict  [dim]not enough samples yet[/]")
        events = report.events if report is not None else ()
        for e in list(events)[-self.events_shown :]:
            prefix = f"GPU{e.gpu_index} " if len(snapshot.gpus) > 1 else ""
            style = "red" if e.kind == "throttle_start" else "dim"
            lines.append(f"  [{style}]{prefix}{escape(e.message)}[/]")
        self.set_text("\n".join(lines))

    @property
    def events_shown(self) -> int:
        return EVENTS_SHOWN if self.screen.has_class("-wide") else 1


class ThermalPanel(Vertical):
    """The summary over one time plot per GPU (see the module docstring)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.plot_history = GpuPlotHistory()
        self.window = WINDOWS[0]
        self._snapshot: Snapshot | None = None
        self._plots: dict[int, TimePlot] = {}

    def compose(self) -> ComposeResult:
        yield ThermalSummary(id="thermal-summary")
        yield VerticalScroll(id="thermal-plots")

    # ------------------------------------------------------------------ feeding
    def record(self, snapshot: Snapshot) -> None:
        """Add the snapshot to the plots' windows without redrawing."""
        self.plot_history.record(snapshot)

    def show(self, snapshot: Snapshot) -> None:
        self.record(snapshot)
        self._snapshot = snapshot
        self.query_one(ThermalSummary).show(snapshot)
        self._draw()

    def clear(self) -> None:
        """Forget the plotted past (replay: the window at the cursor is loaded next)."""
        self.plot_history.clear()

    def load(self, window: Window, past: PlotHistory) -> None:
        """The recorded buckets of *window* (from the history DB), then a redraw."""
        self.plot_history.load(window, past)
        self._draw()

    def cycle_window(self) -> Window:
        """5 min → 1 h → 24 h → 5 min; the new window (redrawn at once)."""
        i = next(i for i, w in enumerate(WINDOWS) if w.key == self.window.key)
        self.window = WINDOWS[(i + 1) % len(WINDOWS)]
        self._draw()
        return self.window

    # ------------------------------------------------------------------ drawing
    def _draw(self) -> None:
        snap = self._snapshot
        if snap is None or not self.is_mounted:
            return
        box = self.query_one("#thermal-plots", VerticalScroll)
        by_index = {g.index: g for g in snap.gpus}
        indexes = sorted(set(by_index) | set(self.plot_history.gpus(self.window)))
        if not snap.gpus:
            indexes = []
        gone = [i for i in self._plots if i not in indexes]
        for i in gone:
            self._plots.pop(i).remove()
        new = []
        for i in indexes:
            data = gpu_plot(self.plot_history, self.window, i, by_index.get(i), snap.time)
            plot = self._plots.get(i)
            if plot is None:
                plot = self._plots[i] = TimePlot(data, id=f"gpu-plot-{i}")
                new.append(plot)
            else:
                plot.set_data(data)
        if new:
            box.mount(*new)
        box.display = bool(indexes)

    @property
    def plots(self) -> list[TimePlot]:
        return [self._plots[i] for i in sorted(self._plots)]

    @property
    def text(self) -> str:
        """The summary and the plots as plain text (tests read it)."""
        parts = [self.query_one(ThermalSummary).text]
        parts += [p.text for p in self.plots]
        return "\n".join(parts)
