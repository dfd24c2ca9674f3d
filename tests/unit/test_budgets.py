"""EnergyBudget periods, usage, projections and holds (carbonshift.domain.budgets)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbonshift.domain.budgets import (
    BudgetSpec,
    JobUsage,
    UsageChunk,
    chunk_share,
    evaluate,
    hold_for,
    period_bounds,
    release_time,
    usage,
)

NOW = datetime(2026, 3, 18, 15, 30, tzinfo=UTC)  # a Wednesday


def spec(period: str = "Daily", action: str = "Suspend", kwh: float | None = 10.0, kg: float | None = None,
         rolling: timedelta | None = None, defer: float | None = None) -> BudgetSpec:  # fmt: skip
    return BudgetSpec("ml", "team", period, rolling, kwh, kg, action, defer)


def job(*chunks: tuple[datetime, datetime, float, float]) -> JobUsage:
    return JobUsage("ml", "j", {}, tuple(UsageChunk(*c) for c in chunks))


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("Daily", datetime(2026, 3, 18, tzinfo=UTC), datetime(2026, 3, 19, tzinfo=UTC)),
        ("Weekly", datetime(2026, 3, 16, tzinfo=UTC), datetime(2026, 3, 23, tzinfo=UTC)),
        ("Monthly", datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC)),
    ],
)
def test_calendar_periods_are_utc(period: str, start: datetime, end: datetime) -> None:
    assert period_bounds(period, None, NOW) == (start, end)


def test_december_rolls_into_the_next_year_and_rolling_periods_end_now() -> None:
    assert period_bounds("Monthly", None, datetime(2026, 12, 31, 23, tzinfo=UTC))[1] == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_bounds("72h", timedelta(hours=72), NOW) == (NOW - timedelta(hours=72), NOW)
    with pytest.raises(ValueError, match="neither Daily, Weekly, Monthly nor a positive duration"):
        period_bounds("bogus", None, NOW)


def test_usage_counts_chunks_pro_rata_to_the_period() -> None:
    midnight = datetime(2026, 3, 18, tzinfo=UTC)
    straddling = (midnight - timedelta(hours=1), midnight + timedelta(hours=3), 8.0, 4000.0)  # 3/4 in today
    assert usage([job(straddling)], *period_bounds("Daily", None, NOW)) == pytest.approx((6.0, 3.0))


@given(
    start=st.integers(min_value=-48, max_value=48),
    hours=st.integers(min_value=1, max_value=48),
    cut=st.integers(min_value=-48, max_value=96),
)
def test_shares_of_a_split_add_up_to_the_whole(start: int, hours: int, cut: int) -> None:
    begin = NOW + timedelta(hours=start)
    chunk = UsageChunk(begin, begin + timedelta(hours=hours), 1.0, 1.0)
    middle = NOW + timedelta(hours=cut)
    far_past, far_future = NOW - timedelta(days=10), NOW + timedelta(days=10)
    assert chunk_share(chunk, far_past, middle) + chunk_share(chunk, middle, far_future) == pytest.approx(1.0)


def test_state_remaining_ratio_and_projection() -> None:
    today = datetime(2026, 3, 18, tzinfo=UTC)
    state = evaluate(
        spec(kwh=10.0, kg=5.0), [job((today + timedelta(hours=1), today + timedelta(hours=2), 4.0, 1000.0))], NOW
    )
    assert (state.used_kwh, state.used_kg) == pytest.approx((4.0, 1.0))
    assert state.remaining_kwh == pytest.approx(6.0)
    assert state.remaining_kg == pytest.approx(4.0)
    assert state.used_ratio == pytest.approx(0.4)
    assert not state.exceeded
    # 40% in 15.5 h: the remaining 60% at the same rate takes 23.25 h, past midnight: no exhaustion this period.
    assert state.projected_exhaustion is None
    busy = evaluate(spec(kwh=10.0), [job((today, today + timedelta(hours=15), 9.0, 0.0))], NOW)
    assert busy.projected_exhaustion == NOW + timedelta(hours=15.5 / 9)


def test_suspend_holds_new_and_interruptible_jobs_until_the_next_period_but_never_stops_the_rest() -> None:
    today = datetime(2026, 3, 18, tzinfo=UTC)
    s = spec(action="Suspend", kwh=1.0)
    state = evaluate(s, [job((today, today + timedelta(hours=1), 1.5, 0.0))], NOW)
    assert state.exceeded
    waiting = hold_for(s, state, g_per_kwh=100.0, interruptible=False, running=False)
    assert waiting is not None and waiting.until == today + timedelta(days=1) and not waiting.suspend_running
    assert "1.500 of 1 kWh" in waiting.reason
    running = hold_for(s, state, g_per_kwh=100.0, interruptible=True, running=True)
    assert running is not None and running.suspend_running
    assert hold_for(s, state, g_per_kwh=100.0, interruptible=False, running=True) is None
    assert hold_for(spec(action="Notify", kwh=1.0), state, g_per_kwh=100.0, interruptible=True, running=True) is None


def test_defer_allows_running_only_below_the_intensity_limit() -> None:
    today = datetime(2026, 3, 18, tzinfo=UTC)
    s = spec(action="Defer", kwh=1.0, defer=150.0)
    state = evaluate(s, [job((today, today + timedelta(hours=1), 1.5, 0.0))], NOW)
    assert hold_for(s, state, g_per_kwh=120.0, interruptible=True, running=False) is None
    dirty = hold_for(s, state, g_per_kwh=300.0, interruptible=True, running=True)
    assert dirty is not None and dirty.until is None and dirty.suspend_running
    assert "below 150 g/kWh (now 300)" in dirty.reason
    assert hold_for(s, state, g_per_kwh=None, interruptible=False, running=False) is not None  # unknown: held


def test_rolling_budget_releases_when_enough_usage_slides_out() -> None:
    window = timedelta(hours=24)
    s = spec(period="24h", rolling=window, kwh=10.0)
    jobs = [job((NOW - timedelta(hours=20), NOW - timedelta(hours=18), 8.0, 0.0)),
            job((NOW - timedelta(hours=2), NOW - timedelta(hours=1), 4.0, 0.0))]  # fmt: skip
    state = evaluate(s, jobs, NOW)
    assert state.used_kwh == pytest.approx(12.0) and state.exceeded
    release = release_time(s, jobs, NOW)
    # The first chunk (4 kWh/h) must slide out by 2 kWh: half an hour after its start leaves the window.
    assert abs((release - (NOW + timedelta(hours=4, minutes=30))).total_seconds()) <= 1
    assert state.period_end == release
    assert usage(jobs, release - window, release)[0] < 10.0
