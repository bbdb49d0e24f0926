"""The one bounded time series: bound, window reads from the newest end, gaps, a shared axis."""

from __future__ import annotations

import math

from llmtop.model.timeseries import SeriesGroup, TimeSeries


def test_bounded_windows_and_last_n() -> None:
    s: TimeSeries[float | None] = TimeSeries(maxlen=5)
    for i in range(8):
        s.append(float(i), float(i) if i != 6 else None)
    assert len(s) == 5 and s.times() == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert s.tail(2) == [None, 7.0] and s.tail(50) == [3.0, 4.0, 5.0, None, 7.0] and s.tail(0) == []
    assert s.since(5.0) == [5.0, None, 7.0] and s.since(100.0) == []
    assert s.span_s == 4.0 and s.last_time == 7.0 and s.latest() == 7.0
    assert not s.append_newer(7.0, 1.0) and len(s) == 5  # the same instant again: dropped
    assert s.append_newer(8.0, math.nan) and s.latest() == 7.0  # NaN is no reading


def test_summary_skips_gaps_and_honours_the_window() -> None:
    s: TimeSeries[float | None] = TimeSeries(maxlen=100)
    for i, v in enumerate([80.0, None, 60.0, 90.0, math.inf]):
        s.append(float(i), v)
    whole = s.summary()
    assert whole is not None and (whole.count, whole.min, whole.max) == (3, 60.0, 90.0)
    assert whole.mean == (80.0 + 60.0 + 90.0) / 3
    recent = s.summary(since=2.0)
    assert recent is not None and (recent.min, recent.max) == (60.0, 90.0)
    assert TimeSeries[float | None](3).summary() is None


def test_group_shares_one_axis_and_pads_late_members() -> None:
    g = SeriesGroup(maxlen=4)
    assert g.record(1.0, {"a": 1.0})
    assert g.record(2.0, {"a": 2.0, "b": 20.0})  # b joins late: a gap where it was not there
    assert g.record(3.0, {"b": 30.0})  # a not given: a gap
    assert not g.record(3.0, {"a": 9.0})  # not newer: dropped
    assert g["a"].values() == [1.0, 2.0, None] and g["b"].values() == [None, 20.0, 30.0]
    assert g.times() == g["a"].times() == g["b"].times() == [1.0, 2.0, 3.0]
    for t in (4.0, 5.0):
        g.record(t, a=t)
    assert len(g) == len(g["b"]) == 4 and g.times()[0] == 2.0  # every member keeps the bound
    g.clear()
    assert len(g) == 0 and "a" in g and len(g["a"]) == 0
