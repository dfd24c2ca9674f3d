"""Quality guards: every bad point is refused with its reason, units are normalised once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbonshift.domain.quality import (
    LBS_PER_MWH_TO_G_PER_KWH,
    GuardedPoints,
    QualityLimits,
    RawPoint,
    Reason,
    UnknownUnitError,
    guard_freshness,
    guard_issue_time,
    guard_points,
    unit_factor_to_g_per_kwh,
)

T0 = datetime(2025, 3, 4, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


@pytest.mark.parametrize(
    ("unit", "factor"),
    [
        ("gCO2/kWh", 1.0),
        ("g_per_kwh", 1.0),
        ("gCO2eq/kWh", 1.0),
        ("gCO₂eq/kWh", 1.0),
        ("kg/MWh", 1.0),
        ("lbs_co2_per_mwh", 0.45359237),
        ("lbs/MWh", 0.45359237),
        ("kg/kWh", 1000.0),
        ("kgCO2/kWh", 1000.0),
    ],
)
def test_units_convert_to_grams_per_kwh(unit: str, factor: float) -> None:
    assert unit_factor_to_g_per_kwh(unit) == factor


@pytest.mark.parametrize("unit", ["percentile", "lbs_co2_per_kwh", "", "tons"])
def test_unknown_units_are_refused(unit: str) -> None:
    with pytest.raises(UnknownUnitError, match="unknown carbon-intensity unit"):
        unit_factor_to_g_per_kwh(unit)
    with pytest.raises(UnknownUnitError):
        guard_points([(T0, 100.0)], unit=unit)


def test_lbs_per_mwh_values_are_converted_and_the_absurd_limit_applies_after_conversion() -> None:
    # 4000 lbs/MWh = 1814 g/kWh: plausible (below 2000) only once converted
    guarded = guard_points([(at(0), 4000.0), (at(1), 900.0)], unit="lbs_co2_per_mwh")
    assert guarded.rejected == []
    assert [v for _, v in guarded.points] == pytest.approx(
        [4000 * LBS_PER_MWH_TO_G_PER_KWH, 900 * LBS_PER_MWH_TO_G_PER_KWH]
    )
    # the same number read as g/kWh is absurd
    assert guard_points([(at(0), 4000.0)]).rejected[0].reason == Reason.ABSURD


def test_kg_per_kwh_values_are_multiplied_by_1000() -> None:
    guarded = guard_points([(at(0), 0.35)], unit="kg/kWh")
    assert guarded.points == [(at(0), pytest.approx(350.0))]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, Reason.NULL_VALUE),
        ("", Reason.NULL_VALUE),
        ("   ", Reason.NULL_VALUE),
        (-1, Reason.SENTINEL),
        (-1.0, Reason.SENTINEL),
        ("-1", Reason.SENTINEL),
        (0, Reason.NON_POSITIVE),
        (-0.5, Reason.NON_POSITIVE),
        (2000.5, Reason.ABSURD),
        (float("nan"), Reason.NOT_A_NUMBER),
        (float("inf"), Reason.NOT_A_NUMBER),
        ("n/a", Reason.NOT_A_NUMBER),
        (True, Reason.NOT_A_NUMBER),
    ],
)
def test_bad_values_are_refused_with_their_reason(value: float | str | None, reason: Reason) -> None:
    guarded = guard_points([(at(0), 100.0), (at(1), value), (at(2), 120.0)], details=["a", "b", "c"])
    assert [v for _, v in guarded.points] == [100.0, 120.0]
    assert len(guarded.rejected) == 1
    rejected = guarded.rejected[0]
    assert rejected.reason == reason
    assert rejected.start == at(1)
    assert rejected.detail.startswith("b")


def test_absurd_limit_is_configurable() -> None:
    guarded = guard_points([(at(0), 900.0)], limits=QualityLimits(max_g_per_kwh=800.0))
    assert guarded.rejected[0].reason == Reason.ABSURD
    assert "900 g/kWh > 800" in guarded.rejected[0].describe()


def test_naive_and_missing_timestamps_are_refused_and_offsets_normalised() -> None:
    tokyo = datetime(2025, 3, 4, 21, tzinfo=ZoneInfo("Asia/Tokyo"))
    guarded = guard_points([(None, 100.0), (datetime(2025, 3, 4, 11), 100.0), (tokyo, 200.0)])
    assert [r.reason for r in guarded.rejected] == [Reason.MISSING_TIMESTAMP, Reason.NAIVE_TIMESTAMP]
    assert guarded.points == [(T0, 200.0)]
    assert guarded.points[0][0].tzinfo == UTC


def test_duplicates_are_refused_and_unsorted_points_are_sorted_not_refused() -> None:
    raw: list[RawPoint] = [(at(0), 100.0), (at(1), 110.0), (at(1), 110.0), (at(2), 120.0), (at(1.5), 115.0)]
    guarded = guard_points(raw)
    assert [r.reason for r in guarded.rejected] == [Reason.DUPLICATE]
    assert guarded.points == [(at(0), 100.0), (at(1), 110.0), (at(1.5), 115.0), (at(2), 120.0)]


def test_a_reversed_answer_keeps_every_point() -> None:
    """Before sorting, a point earlier than the last accepted one was refused: a reversed day kept 1 of 24."""
    raw: list[RawPoint] = [(at(h), 100.0 + h) for h in reversed(range(24))]
    guarded = guard_points(raw)
    assert guarded.rejected == []
    assert guarded.points == [(at(h), 100.0 + h) for h in range(24)]


def test_pages_concatenated_out_of_order_with_an_overlap_keep_every_slot() -> None:
    """Two pages of 288 five-minute points, the later page first and overlapping the earlier by one slot."""
    five = timedelta(minutes=5)
    first = [(T0 + i * five, 200.0 + i % 7) for i in range(288)]
    second = [(T0 + (287 + i) * five, 200.0 + (287 + i) % 7) for i in range(289)]
    guarded = guard_points([*second, *first])
    assert len(guarded.points) == 576
    assert [r.reason for r in guarded.rejected] == [Reason.DUPLICATE]
    assert [m for m, _ in guarded.points] == sorted({m for m, _ in [*first, *second]})


def test_conflicting_duplicates_refuse_every_copy_even_when_not_adjacent() -> None:
    raw: list[RawPoint] = [(at(0), 100.0), (at(1), 110.0), (at(2), 120.0), (at(1), 999.0), (at(1), 110.0)]
    guarded = guard_points(raw)
    assert [m for m, _ in guarded.points] == [at(0), at(2)]
    assert [r.reason for r in guarded.rejected] == [Reason.CONFLICTING_DUPLICATE] * 3


def test_stale_data_is_refused_as_a_whole() -> None:
    guarded = guard_points([(at(0), 100.0), (at(1), 110.0)])
    fresh = guard_freshness(guarded, now=at(2), max_age=timedelta(hours=2))
    assert fresh is guarded
    stale = guard_freshness(guarded, now=at(4), max_age=timedelta(hours=2))
    assert stale.points == []
    assert {r.reason for r in stale.rejected} == {Reason.STALE}
    assert "3:00:00 old" in stale.rejected[0].detail


def test_forecast_issued_in_the_future_is_refused() -> None:
    guarded = guard_points([(at(1), 100.0), (at(2), 110.0)])
    assert guard_issue_time(guarded, issued_at=at(0), now=at(0.5)) is guarded
    assert guard_issue_time(guarded, issued_at=at(0.5) + timedelta(minutes=4), now=at(0.5)) is guarded
    future = guard_issue_time(guarded, issued_at=at(3), now=at(0.5))
    assert future.points == []
    assert [r.reason for r in future.rejected] == [Reason.FUTURE_FORECAST] * 2
    naive = guard_issue_time(guarded, issued_at=datetime(2025, 3, 4, 12), now=at(0.5))
    assert {r.reason for r in naive.rejected} == {Reason.NAIVE_TIMESTAMP}


values = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-1.0, 0.0, "", "x", "250", 2500.0]),
)


@given(st.lists(st.tuples(st.integers(min_value=0, max_value=30), values), max_size=60))
def test_every_point_is_either_used_or_reported(raw_points: list[tuple[int, float | str | None]]) -> None:
    raw: list[RawPoint] = [(at(h), v) for h, v in raw_points]
    guarded: GuardedPoints = guard_points(raw)
    assert len(guarded.points) + len(guarded.rejected) == len(raw)
    moments = [m for m, _ in guarded.points]
    assert moments == sorted(set(moments))
    assert all(0 < v <= 2000 for _, v in guarded.points)


def test_measured_points_from_the_future_are_refused() -> None:
    from carbonshift.domain.quality import guard_not_future

    guarded = guard_points([(at(0), 100.0), (at(1), 110.0), (at(2), 120.0)])
    checked = guard_not_future(guarded, now=at(1))
    assert [m for m, _ in checked.points] == [at(0), at(1)]
    assert [(r.start, r.reason) for r in checked.rejected] == [(at(2), Reason.FUTURE_ACTUAL)]
    assert guard_not_future(guarded, now=at(5)) is guarded
