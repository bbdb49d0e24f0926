"""The braille time plot: what a reader sees — the rows with their titles and current values,
the reference lines' labels, where the line is high and low on the time axis, the marked
spans, gaps left open, the window on the axis — and that the widget renders again only when
its data or size changed."""

from __future__ import annotations

import time

import pytest
from textual.app import App, ComposeResult

from llmtop.ui.widgets.time_plot import (
    LEFT_W,
    SPAN_MARK,
    PlotData,
    PlotRow,
    RefLine,
    Series,
    Span,
    TimePlot,
    plot_text,
)

T = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


def thermal(n: int = 300, drop_at: int = 200) -> PlotData:
    """A GPU warming to the slowdown line, its clock cut to 70 % and tokens/s falling at
    *drop_at* seconds, the throttled span marked from there."""
    temp = [(T + i, 70.0 + 17.0 * min(1.0, i / drop_at)) for i in range(n)]
    clock = [(T + i, 100.0 if i < drop_at else 70.0) for i in range(n)]
    gen = [(T + i, 53.0 if i < drop_at else 38.0) for i in range(n)]
    return PlotData(
        rows=(
            PlotRow(
                "temp °C",
                (Series(temp, "red"),),
                (RefLine(87, "slowdown 87", "yellow"), RefLine(92, "shutdown 92")),
                weight=3,
            ),
            PlotRow("SM clk %", (Series(clock, "cyan"),), low=0, high=100, weight=2),
            PlotRow("gen t/s", (Series(gen, "green"),), low=0, weight=2),
        ),  # fmt: skip
        start=T,
        end=T + n - 1,
        spans=(Span(T + drop_at, T + n - 1),),
        window_label="5 min",
        hint="w window",
    )


def plot_columns(line: str) -> str:
    """The plot area of one rendered line (between the gutters' bars)."""
    return line[LEFT_W : line.rindex("│")]


def test_rows_lines_spans_and_axis_are_where_the_data_says() -> None:
    lines = plot_text(thermal(), 100, 24)
    assert len(lines) == 24 and all(len(ln) == 100 for ln in lines)
    text = "\n".join(lines)
    for title in ("temp °C", "SM clk %", "gen t/s", "throttled", "5 min"):
        assert title in text
    assert "slowdown 87" in text and "shutdown 92" in text
    # the current values under the titles
    titles = {ln[: LEFT_W - 1].strip(): i for i, ln in enumerate(lines)}
    assert lines[titles["temp °C"] + 1].startswith("87")
    assert lines[titles["SM clk %"] + 1].startswith("70")
    assert lines[titles["gen t/s"] + 1].startswith("38")
    # the clock row's top line has dots only before the drop (2/3 of the way), and its lower
    # lines only after it
    clock_top = plot_columns(lines[titles["SM clk %"]])
    w = len(clock_top)
    drop = round(w * 200 / 299)
    assert clock_top[: drop - 1].strip() and not clock_top[drop + 1 :].strip()
    # the span row: marks from the drop to the end, nothing before, and its share of the window
    span_line = lines[titles["throttled"]]
    marks = plot_columns(span_line)
    assert set(marks[drop + 1 :]) == {SPAN_MARK} and not marks[: drop - 1].strip()
    assert "33 %" in span_line
    # the axis: times of the window, the last at the right end
    axis = lines[-1]
    assert "00:00:00" in axis and axis.rstrip().endswith("w window") and "00:04:59" in axis


def test_fits_80_columns_and_few_lines() -> None:
    lines = plot_text(thermal(), 76, 9)
    assert len(lines) == 9 and all(len(ln) == 76 for ln in lines)
    assert [ln[: LEFT_W - 1].strip().split(" ")[0] for ln in lines[:7]][0] == "temp"
    assert "throttled" in lines[-2] and "5 min" in lines[-1]


def test_a_gap_longer_than_gap_s_is_left_open() -> None:
    pts = [(T + i, 50.0) for i in range(0, 100)] + [(T + i, 50.0) for i in range(200, 300)]
    data = PlotData(rows=(PlotRow("v", (Series(pts),), low=0, high=100),), start=T, end=T + 299,
                    gap_s=5.0)  # fmt: skip
    row = plot_columns(plot_text(data, 70, 4)[0])
    w = len(row)
    assert not row[round(w * 0.4) : round(w * 0.6)].strip()
    joined = PlotData(rows=data.rows, start=T, end=T + 299)  # no gap_s: joined
    assert plot_columns(plot_text(joined, 70, 4)[0])[round(w * 0.4) : round(w * 0.6)].strip()


def test_a_minute_given_as_min_and_max_draws_its_range() -> None:
    pts: list[tuple[float, float | None]] = []
    for m in range(60):
        pts += [(T + 60 * m, 10.0), (T + 60 * m, 90.0 if m == 30 else 20.0)]
    data = PlotData(rows=(PlotRow("v", (Series(pts),), low=0, high=100),), start=T, end=T + 3599)
    top = plot_columns(plot_text(data, 70, 6)[0])
    assert top.strip() and len(top.strip()) <= 2  # the one peak reaches the top line


def test_nothing_in_the_window_says_so() -> None:
    data = PlotData(rows=(PlotRow("v", (Series([(T - 10, 1.0)]),)),), start=T, end=T + 60,
                    empty="no samples in the last 1 min")  # fmt: skip
    assert plot_text(data, 80, 5) == ["no samples in the last 1 min"]


class PlotApp(App[None]):
    def compose(self) -> ComposeResult:
        yield TimePlot(id="plot")


async def test_widget_renders_once_per_data_and_size() -> None:
    async with PlotApp().run_test(size=(100, 20)) as pilot:
        plot = pilot.app.query_one(TimePlot)
        assert plot.set_data(thermal())
        await pilot.pause()
        before = plot.renders
        assert "slowdown 87" in plot.text
        assert not plot.set_data(thermal())  # equal data: nothing to do
        plot.refresh()  # a repaint (another widget above it, a focus change) reuses the lines
        await pilot.pause()
        assert plot.renders == before
        assert plot.set_data(thermal(drop_at=150))
        await pilot.pause()
        assert plot.renders == before + 1
        await pilot.resize_terminal(80, 16)
        await pilot.pause()
        assert plot.renders == before + 2 and all(len(ln) == 80 for ln in plot.text.splitlines())
