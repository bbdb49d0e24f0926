"""Property tests for the parsers of operator input the history commands add: durations
(--keep 7d, --probe-every 5m, --since 24h), sizes (--max-size 1GiB) and times (--from/--to).

Each either returns a sane value or raises ValueError (argparse then prints it) — never
anything else, whatever the text."""

from __future__ import annotations

import math
from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from llmtop.model.timespec import parse_duration, parse_time
from llmtop.model.vram_plan import parse_size

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
NOW = 1_795_615_200.0


@given(st.lists(st.tuples(st.integers(1, 10_000), st.sampled_from(sorted(UNITS))), min_size=1,
                max_size=4), st.sampled_from(["", " "]))  # fmt: skip
def test_durations_sum_their_parts(parts: list[tuple[int, str]], sep: str) -> None:
    text = sep.join(f"{n}{u}" for n, u in parts)
    assert parse_duration(text) == sum(n * UNITS[u] for n, u in parts)
    assert parse_duration(text.upper()) == parse_duration(text)


@given(st.text(max_size=30))
def test_any_duration_text_is_a_positive_number_or_a_value_error(text: str) -> None:
    try:
        v = parse_duration(text)
    except ValueError:
        return
    assert math.isfinite(v) and v > 0


@given(st.floats(min_value=0.001, max_value=1e9, allow_nan=False))
def test_bare_numbers_are_seconds(x: float) -> None:
    assert parse_duration(repr(x)) == x


@given(
    st.integers(1, 4096), st.sampled_from(["K", "M", "G", "T"]), st.sampled_from(["", "B", "iB"])
)
def test_sizes_are_binary_units(n: int, unit: str, suffix: str) -> None:
    assert parse_size(f"{n}{unit}{suffix}") == n * 1024 ** ("KMGT".index(unit) + 1)


@given(st.text(max_size=20))
def test_any_size_text_is_positive_or_a_value_error(text: str) -> None:
    try:
        v = parse_size(text)
    except ValueError:
        return
    assert v >= 0


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_iso_times_round_trip(dt: datetime) -> None:
    dt = dt.replace(microsecond=0)
    assert parse_time(dt.isoformat(), now=NOW) == dt.timestamp()
    assert parse_time(dt.isoformat(sep=" "), now=NOW) == dt.timestamp()


@given(st.integers(1, 10_000), st.sampled_from(sorted(UNITS)))
def test_ago_and_minus_are_before_now(n: int, unit: str) -> None:
    assert parse_time(f"{n}{unit} ago", now=NOW) == NOW - n * UNITS[unit]
    assert parse_time(f"-{n}{unit}", now=NOW) == NOW - n * UNITS[unit]
    assert parse_time(str(NOW - 5), now=NOW) == NOW - 5


@given(st.text(max_size=30))
def test_any_time_text_is_a_time_or_a_value_error(text: str) -> None:
    try:
        v = parse_time(text, now=NOW)
    except ValueError:
        return
    assert math.isfinite(v)
