"""IntensitySeries: slot arithmetic, windows, gaps, resampling and the signal/timezone rules."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbonshift.domain.series import IntensitySeries, SeriesError, Signal, require_utc

START = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def series(values: list[float], resolution: timedelta = HOUR, **kwargs: object) -> IntensitySeries:
    return IntensitySeries(zone="XX", start=START, resolution=resolution, values=np.array(values), **kwargs)  # type: ignore[arg-type]


def test_naive_times_are_refused_and_offsets_become_utc() -> None:
    with pytest.raises(SeriesError, match="no timezone"):
        IntensitySeries(zone="XX", start=datetime(2024, 1, 1), resolution=HOUR, values=np.ones(2))
    plus_two = datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert require_utc(plus_two) == START
    assert require_utc(plus_two).tzinfo == UTC


@pytest.mark.parametrize("bad", [timedelta(0), timedelta(hours=-1)])
def test_resolution_must_be_positive(bad: timedelta) -> None:
    with pytest.raises(SeriesError, match="positive"):
        series([1.0], resolution=bad)


def test_values_must_be_one_dimensional() -> None:
    with pytest.raises(SeriesError, match="one-dimensional"):
        IntensitySeries(zone="XX", start=START, resolution=HOUR, values=np.ones((2, 2)))


def test_slot_lookup_and_end() -> None:
    s = series([10.0, 20.0, 30.0])
    assert s.end == START + 3 * HOUR
    assert s.index_of(START + timedelta(minutes=59)) == 0
    assert s.index_of(START + HOUR) == 1
    assert s.index_of(START - timedelta(minutes=1)) == -1
    assert s.at(START + timedelta(hours=2, minutes=30)) == 30.0
    assert math.isnan(s.at(START + 3 * HOUR))
    assert math.isnan(s.at(START - HOUR))
    assert s.starts() == [START, START + HOUR, START + 2 * HOUR]


def test_window_takes_overlapping_slots() -> None:
    s = series([10.0, 20.0, 30.0, 40.0])
    w = s.window(START + timedelta(minutes=30), START + timedelta(hours=2, minutes=1))
    assert w.start == START
    assert w.values.tolist() == [10.0, 20.0, 30.0]
    assert s.window(START + HOUR, START + 2 * HOUR).values.tolist() == [20.0]
    assert len(s.window(START + 2 * HOUR, START + HOUR)) == 0
    assert len(s.window(START + 10 * HOUR, START + 12 * HOUR)) == 0
    # a window is a copy: changing it leaves the series alone
    w.values[0] = 99.0
    assert s.values[0] == 10.0


def test_gaps_coverage_and_mean() -> None:
    s = series([10.0, math.nan, math.nan, 40.0, math.nan])
    assert s.gaps() == [(START + HOUR, START + 3 * HOUR), (START + 4 * HOUR, START + 5 * HOUR)]
    assert s.coverage() == pytest.approx(0.4)
    assert s.mean() == 25.0
    assert math.isnan(series([math.nan]).mean())
    assert series([]).coverage() == 0.0


def test_resample_coarser_takes_means_and_propagates_gaps() -> None:
    quarter = series([1.0, 2.0, 3.0, 4.0, 5.0, math.nan, 7.0, 8.0, 9.0], resolution=timedelta(minutes=15))
    hourly = quarter.resample(HOUR)
    assert hourly.resolution == HOUR
    assert hourly.values[0] == 2.5
    assert math.isnan(hourly.values[1])
    assert len(hourly) == 2  # the incomplete last hour is dropped


def test_resample_finer_repeats_values() -> None:
    hourly = series([10.0, 20.0])
    half = hourly.resample(timedelta(minutes=30))
    assert half.values.tolist() == [10.0, 10.0, 20.0, 20.0]
    assert hourly.resample(HOUR) is hourly


@pytest.mark.parametrize("target", [timedelta(minutes=25), timedelta(minutes=70)])
def test_resample_refuses_uneven_ratios(target: timedelta) -> None:
    with pytest.raises(SeriesError, match="cannot"):
        series([1.0, 2.0, 3.0]).resample(target)


def test_average_and_marginal_never_mix() -> None:
    average = series([1.0], provider="electricitymaps")
    marginal = series([1.0], signal=Signal.MARGINAL, provider="watttime")
    with pytest.raises(SeriesError, match="cannot mix marginal"):
        marginal.compatible_with(average)
    average.compatible_with(series([2.0]))


def test_from_points_puts_points_on_the_grid_with_gaps() -> None:
    s = IntensitySeries.from_points("XX", [(START, 1.0), (START + 3 * HOUR, 4.0)], HOUR, provider="p")
    assert len(s) == 4
    assert s.values[0] == 1.0
    assert np.isnan(s.values[1:3]).all()
    assert s.provider == "p"
    with pytest.raises(SeriesError, match="not on the"):
        IntensitySeries.from_points("XX", [(START, 1.0), (START + timedelta(minutes=90), 2.0)], HOUR)
    with pytest.raises(SeriesError, match="no data points"):
        IntensitySeries.from_points("XX", [], HOUR)


@given(
    st.lists(st.floats(min_value=1, max_value=1000), min_size=1, max_size=200),
    st.integers(min_value=-50, max_value=250),
    st.integers(min_value=1, max_value=300),
)
def test_window_matches_a_plain_scan(values: list[float], first_slot: int, length_minutes: int) -> None:
    s = series(values, resolution=timedelta(minutes=15))
    begin = START + timedelta(minutes=15 * first_slot + 7)
    end = begin + timedelta(minutes=length_minutes)
    expected = [
        v
        for i, v in enumerate(values)
        if START + timedelta(minutes=15 * i) < end and START + timedelta(minutes=15 * (i + 1)) > begin
    ]
    assert s.window(begin, end).values.tolist() == expected
