"""EnergyBudget periods, usage, projections and holds (carbonshift.domain.budgets)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbonshift.domain.budgets import (
    HISTORY_PERIODS,
    BudgetSpec,
    Candidate,
    Cap,
    JobRecord,
    JobUsage,
    Ledger,
    UsageChunk,
    admit,
    bucket_bounds,
    cap_hold,
    chunk_share,
    evaluate,
    hold_for,
    period_bounds,
    project,
    release,
    release_time,
    reserved,
    split,
    sync,
    usage,
    used_chunks,
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


# -- admission and the ledger -------------------------------------------------------------------------------------
HOUR = timedelta(hours=1)


def candidate(uid: str, hours: float = 1.0, kwh_per_hour: float = 1.0, g_per_kwh: float = 200.0,
              start: datetime = NOW, used: tuple[UsageChunk, ...] = ()) -> Candidate:  # fmt: skip
    watts = kwh_per_hour * 1000.0
    ahead = project([(start, start + hours * HOUR, g_per_kwh)], 1, watts, 1.0, NOW)
    return Candidate(uid, f"job-{uid}", used, ahead)


def test_projection_is_gpus_times_watts_times_time_and_priced_with_pue_from_now_on() -> None:
    chunks = project([(NOW - HOUR, NOW + HOUR, 300.0), (NOW + 2 * HOUR, NOW + 3 * HOUR, float("nan"))], 4, 500.0,
                     1.25, NOW)  # fmt: skip
    assert [(c.start, c.end) for c in chunks] == [(NOW, NOW + HOUR), (NOW + 2 * HOUR, NOW + 3 * HOUR)]
    assert chunks[0].kwh == pytest.approx(2.0)  # 4 x 500 W x 1 h (the past hour is not projected)
    assert chunks[0].grams == pytest.approx(2.0 * 1.25 * 300.0)
    assert math.isnan(chunks[1].grams)


def test_a_burst_admits_only_what_fits_each_admission_counting_the_ones_before() -> None:
    s = spec(kwh=5.5)
    ledger = Ledger()
    admitted = []
    for i in range(50):
        answer = admit(candidate(f"u{i}"), [(s, ledger)], None, NOW, g_per_kwh=200.0)
        if answer.admitted:
            ledger = answer.ledgers["ml/team"]
            admitted.append(i)
        else:
            assert answer.hold is not None and answer.hold.until == datetime(2026, 3, 19, tzinfo=UTC)
            assert "does not fit the 0.500 kWh left of 5.5" in answer.hold.reason
    assert admitted == [0, 1, 2, 3, 4]
    assert reserved(ledger) == pytest.approx((5.0, 1.0, 5))


def test_an_admitted_job_is_counted_once_whatever_it_has_used_and_is_freed_when_it_finishes() -> None:
    s = spec(kwh=2.5)
    ledger = admit(candidate("a", hours=2), [(s, Ledger())], None, NOW, g_per_kwh=200.0).ledgers["ml/team"]
    # Half-way, its usage is in the ledger: used + still reserved = what it was admitted for.
    half = (UsageChunk(NOW, NOW + HOUR, 1.0, 200.0),)
    ledger = sync(s, ledger, [JobRecord("a", "job-a", half, finished=False)], NOW + HOUR)
    assert reserved(ledger)[0] == pytest.approx(1.0)
    assert not admit(candidate("b"), [(s, ledger)], None, NOW + HOUR, g_per_kwh=200.0).admitted  # 2 + 1 > 2.5
    # It re-asks (a second window): its own entry is replaced, not added to.
    again = admit(candidate("a", start=NOW + HOUR, used=half), [(s, ledger)], None, NOW + HOUR, g_per_kwh=200.0)
    assert again.admitted and reserved(again.ledgers["ml/team"])[0] == pytest.approx(1.0)
    # Finished after 1 h of its 2: the unused hour is free for another job.
    done = sync(s, ledger, [JobRecord("a", "job-a", half, finished=True)], NOW + HOUR)
    assert reserved(done) == (0.0, 0.0, 0)
    assert admit(candidate("b"), [(s, done)], None, NOW + HOUR, g_per_kwh=200.0).admitted


def test_deleted_recreated_and_relabelled_jobs_keep_their_usage_in_the_ledger() -> None:
    s = spec(kwh=10.0)
    used = (UsageChunk(NOW - 2 * HOUR, NOW - HOUR, 3.0, 600.0),)
    ledger = sync(s, Ledger(), [JobRecord("old-uid", "train", used, finished=True)], NOW)
    # Deleted (gone from the jobs) and re-created under the same name (a new UID) with nothing used yet.
    ledger = sync(s, ledger, [JobRecord("new-uid", "train", (), finished=False)], NOW)
    assert evaluate(s, [JobUsage("ml", "l", {}, tuple(used_chunks(ledger)))], NOW).used_kwh == pytest.approx(3.0)
    more = (UsageChunk(NOW, NOW + timedelta(minutes=30), 0.5, 100.0),)
    ledger = sync(s, ledger, [JobRecord("new-uid", "train", more, finished=False)], NOW + HOUR)
    assert evaluate(s, [JobUsage("ml", "l", {}, tuple(used_chunks(ledger)))], NOW + HOUR).used_kwh == pytest.approx(3.5)
    # Relabelled out of the selector: it is no longer among the selected jobs, and its usage stays.
    ledger = sync(s, ledger, [], NOW + HOUR)
    assert sum(e.used_kwh for e in ledger.entries) == pytest.approx(3.5)
    assert not any(e.active for e in ledger.entries)


def test_an_operator_that_has_not_seen_every_job_yet_keeps_their_reservations() -> None:
    s = spec(kwh=10.0)
    ledger = admit(candidate("a", hours=3), [(s, Ledger())], None, NOW, g_per_kwh=200.0).ledgers["ml/team"]
    assert sync(s, ledger, [], NOW, complete=False) == ledger
    assert reserved(sync(s, ledger, [], NOW))[0] == 0.0


def test_a_held_job_releases_its_reservation_but_not_its_usage() -> None:
    s = spec(kwh=10.0)
    used = (UsageChunk(NOW - HOUR, NOW, 1.0, 100.0),)
    ledger = admit(candidate("a", hours=3, used=used), [(s, Ledger())], None, NOW, g_per_kwh=200.0).ledgers["ml/team"]
    assert reserved(ledger)[0] == pytest.approx(3.0)
    freed = release(ledger, "a")
    assert reserved(freed)[0] == 0.0 and sum(e.used_kwh for e in freed.entries) == pytest.approx(1.0)


def test_past_periods_are_summed_into_a_bounded_history() -> None:
    s = spec(period="Daily", kwh=100.0)
    ledger = Ledger()
    for day in range(20):
        start = datetime(2026, 3, 1, 10, tzinfo=UTC) + timedelta(days=day)
        chunk = (UsageChunk(start, start + HOUR, 1.0, 100.0),)
        jobs = [JobRecord(f"u{day}-{i}", "j", chunk, finished=True) for i in range(3)]
        ledger = sync(s, ledger, jobs, start + 2 * HOUR)
        assert len(ledger.entries) == 3  # only today's jobs keep entries
    assert len(ledger.history) == HISTORY_PERIODS
    last = ledger.history[-1]
    assert (last.start, last.end, last.jobs) == (
        datetime(2026, 3, 19, tzinfo=UTC),
        datetime(2026, 3, 20, tzinfo=UTC),
        3,
    )
    assert (last.kwh, last.kg) == pytest.approx((3.0, 0.3))


def test_a_projection_across_midnight_is_checked_against_both_periods() -> None:
    s = spec(kwh=3.0)
    late = datetime(2026, 3, 18, 23, tzinfo=UTC)
    tomorrow = admit(candidate("t", hours=2.5, start=late + HOUR), [(s, Ledger())], None, NOW, g_per_kwh=1.0)
    ledger = tomorrow.ledgers["ml/team"]  # 2.5 kWh reserved for tomorrow
    # 2 h from 23:00: 1 kWh today (fits), 1 kWh tomorrow (3.5 > 3 with the other's 2.5): held.
    answer = admit(candidate("x", hours=2, start=late), [(s, ledger)], None, NOW, g_per_kwh=1.0)
    assert not answer.admitted and answer.hold is not None
    assert "the period from 2026-03-19T00:00:00Z" in answer.hold.reason
    assert admit(candidate("y", hours=1, start=late), [(s, ledger)], None, NOW, g_per_kwh=1.0).admitted


def test_a_projection_larger_than_the_whole_limit_says_waiting_will_not_make_room() -> None:
    """A job whose own projection in one period is more than the limit is not told it fits tomorrow: no other job's
    finishing makes room for it (the demo's sandbox job said "does not fit ... until tomorrow" day after day)."""
    daily = spec(kwh=1.0)
    answer = admit(candidate("big", hours=3), [(daily, Ledger())], None, NOW, g_per_kwh=1.0)
    assert not answer.admitted and answer.hold is not None
    assert answer.hold.reason == (
        "EnergyBudget ml/team: its projected 3.000 kWh in the period from 2026-03-18T00:00:00Z is more than the "
        "budget's whole limit of 1 kWh a period: it is held until the limit is raised or a later plan spreads it "
        "over several periods"
    )
    # One that fits the limit but not what others left is told how much is left, as before.
    ledger = admit(candidate("a", hours=0.5), [(daily, Ledger())], None, NOW, g_per_kwh=1.0).ledgers["ml/team"]
    small = admit(candidate("b", hours=0.75), [(daily, ledger)], None, NOW, g_per_kwh=1.0)
    assert small.hold is not None and "does not fit the 0.500 kWh left of 1 in the period" in small.hold.reason
    rolling = spec(period="8h", rolling=timedelta(hours=8), kwh=1.0)
    held = admit(candidate("r", hours=2), [(rolling, Ledger())], None, NOW, g_per_kwh=1.0).hold
    assert held is not None and "is more than the budget's whole limit of 1 kWh per 8h window" in held.reason


def test_rolling_windows_count_reservations_where_they_fall() -> None:
    window = timedelta(hours=8)
    s = spec(period="8h", rolling=window, kwh=2.0)
    ledger = admit(candidate("a", hours=1.5, start=NOW + HOUR), [(s, Ledger())], None, NOW, g_per_kwh=1.0).ledgers[
        "ml/team"
    ]
    assert not admit(candidate("b", hours=1), [(s, ledger)], None, NOW, g_per_kwh=1.0).admitted
    # Nine hours later the first job's window has slid out of any 8 h window containing the second one.
    assert admit(candidate("c", hours=1, start=NOW + 11 * HOUR), [(s, ledger)], None, NOW, g_per_kwh=1.0).admitted


def test_emissions_limits_need_a_forecast_and_every_selecting_budget_must_fit() -> None:
    energy, carbon = spec(kwh=10.0), BudgetSpec("ml", "carbon", "Daily", None, None, 0.3, "Suspend")
    ok = admit(candidate("a", hours=1, g_per_kwh=200.0), [(energy, Ledger()), (carbon, Ledger())], None, NOW,
               g_per_kwh=200.0)  # fmt: skip
    assert ok.admitted and set(ok.ledgers) == {"ml/team", "ml/carbon"}
    no_forecast = admit(candidate("b", g_per_kwh=float("nan")), [(carbon, Ledger())], None, NOW, g_per_kwh=None)
    assert no_forecast.hold is not None and "no intensity forecast" in no_forecast.hold.reason
    dirty = admit(candidate("c", hours=1, g_per_kwh=400.0), [(energy, Ledger()), (carbon, Ledger())], None, NOW,
                  g_per_kwh=400.0)  # fmt: skip
    assert not dirty.admitted and dirty.ledgers == {} and dirty.hold is not None and "ml/carbon" in dirty.hold.budget


def test_notify_admits_and_says_so_and_defer_admits_only_below_its_intensity() -> None:
    notify = BudgetSpec("ml", "n", "Daily", None, 0.5, None, "Notify")
    answer = admit(candidate("a"), [(notify, Ledger())], None, NOW, g_per_kwh=200.0)
    assert answer.admitted and "(Notify)" in answer.notes[0]
    defer = BudgetSpec("ml", "d", "Daily", None, 0.5, None, "Defer", 150.0)
    assert admit(candidate("a"), [(defer, Ledger())], None, NOW, g_per_kwh=100.0).admitted
    held = admit(candidate("a"), [(defer, Ledger())], None, NOW, g_per_kwh=300.0)
    assert held.hold is not None and held.hold.until is None and "below 150 g/kWh" in held.hold.reason


def test_a_jobs_own_cap_counts_what_it_used_plus_its_projection() -> None:
    used = (UsageChunk(NOW - HOUR, NOW, 1.0, 500.0),)
    cap = Cap(energy_kwh=2.5, emissions_kg=None, action="Suspend")
    assert admit(candidate("a", hours=1.5, used=used), [], cap, NOW, g_per_kwh=1.0).admitted
    held = admit(candidate("a", hours=2, used=used), [], cap, NOW, g_per_kwh=1.0)
    assert held.hold is not None and "projected 3.000 kWh exceeds its cap of 2.5 kWh" in held.hold.reason
    kg_cap = Cap(energy_kwh=None, emissions_kg=0.6, action="Notify")
    noted = admit(candidate("a", hours=1, g_per_kwh=200.0, used=used), [], kg_cap, NOW, g_per_kwh=1.0)
    assert noted.admitted and "0.700 kgCO2e exceeds its cap of 0.6" in noted.notes[0]
    # A running interruptible job is suspended when its projection outgrows the cap; a non-interruptible one runs on.
    hold, _ = cap_hold(cap, list(used), candidate("a", hours=2).projection, 1.0, "j", running=True, interruptible=True)
    assert hold is not None and hold.suspend_running
    hold, note = cap_hold(cap, list(used), candidate("a", hours=2).projection, 1.0, "j", running=True,
                          interruptible=False)  # fmt: skip
    assert hold is None and note == "cap of j: projected 3.000 kWh exceeds its cap of 2.5 kWh"


@given(
    sizes=st.lists(st.floats(min_value=0.05, max_value=3.0), min_size=1, max_size=30),
    limit=st.floats(min_value=0.1, max_value=20.0),
)
def test_whatever_the_order_admitted_projections_never_exceed_the_limit(sizes: list[float], limit: float) -> None:
    s = spec(kwh=limit)
    ledger = Ledger()
    for i, hours in enumerate(sizes):
        answer = admit(candidate(f"u{i}", hours=hours), [(s, ledger)], None, NOW, g_per_kwh=1.0)
        if answer.admitted:
            ledger = answer.ledgers["ml/team"]
    assert reserved(ledger)[0] <= limit * (1 + 1e-6)


def test_split_buckets_add_up_to_the_chunks() -> None:
    s = spec(period="8h", rolling=timedelta(hours=8), kwh=1.0)
    chunk = UsageChunk(NOW - 5 * HOUR, NOW + 3 * HOUR, 8.0, 800.0)
    parts = split(s, [chunk])
    assert len(parts) == 9 and sum(p.kwh for p in parts.values()) == pytest.approx(8.0)
    assert all(bucket_bounds(s, b) == (b, b + HOUR) for b in parts)


def test_a_job_with_nothing_planned_resumes_only_while_the_budget_is_not_used_up() -> None:
    s = spec(kwh=1.0)
    done = Candidate("a", "job-a", (UsageChunk(NOW - HOUR, NOW, 0.6, 0.0),), ())
    assert admit(done, [(s, Ledger())], None, NOW, g_per_kwh=1.0).admitted
    over = Candidate("a", "job-a", (UsageChunk(NOW - HOUR, NOW, 1.2, 0.0),), ())
    held = admit(over, [(s, Ledger())], None, NOW, g_per_kwh=1.0)
    assert held.hold is not None and "used up (1.200 kWh" in held.hold.reason
