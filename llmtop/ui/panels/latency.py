"""Latency panel: a table of recent probes (client TTFT/ITL/tok/s beside the server's timings)
and braille plots of TTFT and generation speed over time. `ProbeSummary` is the overview line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from llmtop.model.units import DASH, fmt_clock, fmt_ms, fmt_rate
from llmtop.snapshot import Snapshot
from llmtop.ui.charts import braille_plot, downsample
from llmtop.ui.format import keep_gaps
from llmtop.ui.series import DashboardHistory

if TYPE_CHECKING:  # pragma: no cover - typing only: sources.probe imports httpx (~0.1 s)
    from llmtop.sources.probe import ProbeResult

COLUMNS = (
    "time",
    "TTFT",
    "ITL p50",
    "ITL p95",
    "gen tok/s",
    "prompt tok/s",
    "tokens",
    "srv prompt",
    "srv gen tok/s",
    "note",
)


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) else None


def probe_row(r: ProbeResult) -> tuple[str, ...]:
    timings = r.server_timings or {}
    note = ""
    if r.error:
        note = f"error: {r.error}"
    elif r.cancelled:
        note = "cancelled"
    elif r.includes_model_load:
        note = "TTFT incl. model load (server was asleep)"
    return (
        fmt_clock(r.started_at),
        fmt_ms(r.ttft_ms),
        fmt_ms(r.itl_ms_p50),
        fmt_ms(r.itl_ms_p95),
        fmt_rate(r.gen_tokens_per_s, ""),
        fmt_rate(r.prompt_tokens_per_s, ""),
        str(r.tokens) if r.tokens is not None else DASH,
        fmt_ms(_num(timings.get("prompt_ms"))),
        fmt_rate(_num(timings.get("predicted_per_second")), ""),
        note,
    )


def load_note(r: ProbeResult) -> str:
    """After a TTFT: the server was asleep, so that TTFT includes loading the model."""
    return " [blue](incl. model load)[/]" if r.includes_model_load else ""


def probe_summary(r: ProbeResult | None) -> str:
    if r is None:
        return "probe    [dim]none yet — p fires one (tab 3 edits the prompt)[/]"
    if r.error:
        return f"probe    [red]{escape(r.error)}[/] [dim]at {fmt_clock(r.started_at)}[/]"
    return (
        f"probe    TTFT [bold]{fmt_ms(r.ttft_ms)}[/]{load_note(r)}  ITL p50 {fmt_ms(r.itl_ms_p50)}"
        f" p95 {fmt_ms(r.itl_ms_p95)}  gen {fmt_rate(r.gen_tokens_per_s)}"
        f" [dim]at {fmt_clock(r.started_at)}[/]"
    )


class ProbeSummary(Static):
    """One line on the overview: the latest probe."""

    def __init__(self, series: DashboardHistory, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.series = series
        self._last = ""
        # Seconds between periodic probes while they are on (the app sets it with the key `P`).
        self.periodic_s: float | None = None

    def show(self, snapshot: Snapshot | None = None) -> None:
        latest = self.series.probes[-1] if self.series.probes else None
        markup = probe_summary(latest)
        if self.periodic_s:
            markup += f"  [cyan]every {self.periodic_s:.0f} s[/]"
        if markup != self._last:
            self._last = markup
            self.update(keep_gaps(Text.from_markup(markup)), layout=False)  # one line


class LatencyPanel(Vertical):
    def __init__(self, series: DashboardHistory, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.series = series
        self.border_title = "Latency"
        self._plot_key: tuple[int, int] | None = None
        self._plotext: Any | None = None  # textual-plotext plot, mounted on first wide view

    def compose(self) -> ComposeResult:
        table: DataTable[str] = DataTable(id="probe-table", zebra_stripes=True, cursor_type="row")
        yield table
        yield Static(id="latency-plot")

    def on_mount(self) -> None:
        table = self.query_one("#probe-table", DataTable)
        table.add_columns(*COLUMNS)
        self.load(self.series.probes)

    @property
    def table(self) -> DataTable[str]:
        return self.query_one("#probe-table", DataTable)

    def load(self, results: Iterable[ProbeResult]) -> None:
        table = self.table
        table.clear()
        for r in reversed(list(results)):
            table.add_row(*probe_row(r))
        self._redraw_plot(force=True)

    def add_probe(self, result: ProbeResult) -> None:
        """Newest first; the table keeps the series' bound."""
        self.load(self.series.probes)

    async def ensure_plotext(self) -> None:
        """Wide terminals: mount the textual-plotext plot (imported here: it loads slowly)."""
        if self._plotext is not None or not self.screen.has_class("-wide"):
            return
        from textual_plotext import PlotextPlot

        self._plotext = PlotextPlot(id="latency-plotext")
        self.add_class("-plotext")
        await self.mount(self._plotext)
        self._redraw_plot(force=True)

    def show(self, snapshot: Snapshot) -> None:
        self._redraw_plot()

    def on_resize(self) -> None:
        self._redraw_plot(force=True)

    def _redraw_plot(self, force: bool = False) -> None:
        key = (len(self.series.probes), self.size.width)
        if not force and key == self._plot_key:
            return
        self._plot_key = key
        probes = [r for r in self.series.probes if not r.error]
        if self._plotext is not None and self.screen.has_class("-wide"):
            self._draw_plotext(probes)
            return
        width = max(10, (self.content_size.width or 60) - 23)
        ttft = [r.ttft_ms for r in probes]
        gen = [r.gen_tokens_per_s for r in probes]
        if not probes:
            self.query_one("#latency-plot", Static).update(
                Text.from_markup("[dim]no probes yet: p fires one, P probes periodically[/]")
            )
            return
        lines: list[str] = []
        for label, vals, style in (("TTFT ms", ttft, "magenta"), ("gen tok/s", gen, "cyan")):
            nums = [v for v in vals if v is not None]
            top = max(nums) if nums else 0.0
            rows = braille_plot(vals, width, 2)
            lines.append(f"{label:<10} max {top:>6.1f} [{style}]{rows[0]}[/]")
            lines.append(f"{'':<10} {'':>10} [{style}]{rows[1]}[/]")
        self.query_one("#latency-plot", Static).update(
            keep_gaps(Text.from_markup("\n".join(lines)))
        )

    def _draw_plotext(self, probes: list[ProbeResult]) -> None:
        """TTFT (left axis) and generation tok/s (right axis) per probe, downsampled to width."""
        assert self._plotext is not None
        plt = self._plotext.plt
        plt.clear_data()
        plt.clear_figure()
        width = max(10, self.content_size.width or 80)
        xs = downsample([float(i + 1) for i in range(len(probes))], width)
        ttft = downsample([r.ttft_ms for r in probes], width)
        gen = downsample([r.gen_tokens_per_s for r in probes], width)
        if probes:
            plt.plot(xs, [0.0 if v is None else v for v in ttft], label="TTFT ms", color="magenta")
            plt.plot(
                xs,
                [0.0 if v is None else v for v in gen],
                label="gen tok/s",
                color="cyan",
                yside="right",
            )
        plt.title("probes: TTFT ms (left) · gen tok/s (right)")
        plt.xlabel("probe #")
        self._plotext.refresh()


class RecentProbes(Static):
    """Wide overview only: the last probes as a compact text table (client vs server)."""

    def __init__(self, series: DashboardHistory, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.series = series
        self.border_title = "Recent probes"
        self._key: tuple[int, int] | None = None

    def show(self, snapshot: Snapshot | None = None) -> None:
        rows = max(1, (self.content_size.height or 8) - 1)
        key = (len(self.series.probes), rows)
        if key == self._key:
            return
        self._key = key
        probes = list(self.series.probes)[-rows:]
        if not probes:
            self.update(Text.from_markup("[dim]no probes yet — p fires one[/]"))
            return
        lines = [f"[bold]{'time':<8} {'TTFT':>8} {'ITL p50':>8} {'gen t/s':>8} {'srv t/s':>8}[/]"]
        for r in reversed(probes):
            if r.error:
                lines.append(f"{fmt_clock(r.started_at):<8} [red]{escape(r.error)[:34]}[/]")
                continue
            srv = _num((r.server_timings or {}).get("predicted_per_second"))
            lines.append(
                f"{fmt_clock(r.started_at):<8} {fmt_ms(r.ttft_ms):>8} {fmt_ms(r.itl_ms_p50):>8}"
                f" {fmt_rate(r.gen_tokens_per_s, ''):>8} {fmt_rate(srv, ''):>8}"
                + (" [blue]+load[/]" if r.includes_model_load else "")
            )
        self.update(keep_gaps(Text.from_markup("\n".join(lines))), layout=False)  # fixed height

    def on_resize(self) -> None:
        self._key = None
        self.show()
