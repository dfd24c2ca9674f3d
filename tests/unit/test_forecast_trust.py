"""The operator's do no harm inputs (domain/forecast_trust.py): the declared error of a realistic forecast as the
closed-loop simulator sees it, the NESO-fit prior for a forecast that declares none, 0 for the oracle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from carbonshift.data import parse_bundled_trace
from carbonshift.domain.forecast_error import GB_2023
from carbonshift.domain.forecast_trust import PRIOR, ForecastRecord, ForecastTrust, TrustSource, combined, trust_for
from carbonshift.domain.forecasting import OracleForecast, PersistenceForecast, RealisticForecast
from carbonshift.domain.series import IntensitySeries
from carbonshift.simulate.closed_loop import ErrorEstimate, _slot_error

T0 = datetime(2026, 3, 2, tzinfo=UTC)
HOUR = timedelta(hours=1)


def series(values: list[float], start: datetime = T0, step: timedelta = HOUR) -> IntensitySeries:
    return IntensitySeries("TEST", start, step, np.array(values, dtype=np.float64))


@pytest.fixture(scope="module")
def gb() -> IntensitySeries:
    return parse_bundled_trace("GB_2023").series


def test_a_realistic_forecast_gets_its_declared_error_which_is_what_the_simulator_measures(
    gb: IntensitySeries,
) -> None:
    model = RealisticForecast(seed=0, scale=2.0)
    issued = gb.start + timedelta(days=60)
    trust = trust_for(
        model.forecast(gb, issued, timedelta(days=2)), issued, declared=model.params_for(gb), declared_mean=gb.mean()
    )
    assert trust.source is TrustSource.DECLARED and trust.params == model.params_for(gb)
    assert trust.params.sigma0 == pytest.approx(GB_2023.scaled(2.0).sigma0, rel=1e-3)  # GB is the fitted zone
    # The run error is the expectation of the simulator's ErrorEstimate (the week before, runs of `length`):
    # averaged over a year of weekly decisions they agree within 5 %, and it falls as runs average errors out.
    measured = ErrorEstimate(model, gb)
    moments = [gb.start + timedelta(days=d) for d in range(8, 360, 7)]
    errors = []
    for hours in (1, 8, 24):
        length = timedelta(hours=hours)
        mean = float(np.mean([measured.at(m, length) for m in moments]))
        assert trust.run_error(length) == pytest.approx(mean, rel=0.05), hours
        errors.append(trust.run_error(length))
    assert errors[0] > errors[1] > errors[2] > 0
    # The chunk error is the simulator's own (_slot_error: the declared difference error x the trace's mean).
    deadline = issued + timedelta(hours=30)
    inputs = trust.inputs(issued, timedelta(hours=3), deadline)
    assert inputs.slot_error_g_per_kwh == pytest.approx(_slot_error(model, gb, measured, issued, deadline, HOUR))
    assert inputs.forecast_error_g_per_kwh == trust.run_error(timedelta(hours=3))
    assert inputs.forecast_error_for is not None and inputs.forecast_error_for(HOUR) == trust.run_error(HOUR)


def test_a_provider_forecast_gets_the_neso_prior_scaled_by_the_zone_mean_and_growing_with_lead() -> None:
    now = T0 + timedelta(days=8)
    forecast = series([300.0] * 48, start=now)
    low = trust_for(forecast, now, history=series([100.0] * (24 * 8)))
    high = trust_for(forecast, now, history=series([400.0] * (24 * 8)))
    assert low.source is TrustSource.PRIOR and low.params == PRIOR == GB_2023
    assert low.mean_g_per_kwh == pytest.approx(100.0) and high.mean_g_per_kwh == pytest.approx(400.0)
    # Proportional to the zone's recent mean: 4x the intensity, 4x the error (of every kind).
    assert high.run_error(3 * HOUR) == pytest.approx(4 * low.run_error(3 * HOUR))
    assert low.run_error(3 * HOUR) > 0
    # Only the week before `now` counts: an old dirty spell does not inflate it.
    old_dirty = series([1000.0] * 24 + [100.0] * (24 * 8))
    assert trust_for(forecast, now, history=old_dirty).mean_g_per_kwh == pytest.approx(100.0)
    # The error of the difference a chunk bets on grows with lead time (the job's window).
    near = low.inputs(now, 3 * HOUR, now + 6 * HOUR).slot_error_g_per_kwh
    far = low.inputs(now, 3 * HOUR, now + 48 * HOUR).slot_error_g_per_kwh
    assert 0 < near < far
    assert near == pytest.approx(GB_2023.difference_sigma(3 * HOUR, 9 * HOUR) * 100.0)
    # Without history: the forecast's own mean.
    assert trust_for(forecast, now).mean_g_per_kwh == pytest.approx(300.0)


def test_persistence_and_recorded_forecasts_declare_no_error_and_get_the_prior(gb: IntensitySeries) -> None:
    issued = gb.start + timedelta(days=30)
    forecast = PersistenceForecast().forecast(gb, issued, timedelta(days=1))
    trust = trust_for(forecast, issued, history=gb)
    assert trust.source is TrustSource.PRIOR
    week = gb.window(issued - timedelta(days=7), issued + timedelta(minutes=1))
    assert trust.mean_g_per_kwh == pytest.approx(float(np.nanmean(week.values)), rel=0.01)


def test_the_oracle_and_a_missing_forecast_are_not_gated(gb: IntensitySeries) -> None:
    issued = gb.start + timedelta(days=30)
    oracle = trust_for(OracleForecast().forecast(gb, issued, timedelta(days=1)), issued, history=gb)
    assert oracle.source is TrustSource.ORACLE
    assert oracle.inputs(issued, 3 * HOUR, issued + 24 * HOUR) == (
        type(oracle.inputs(issued, HOUR, issued))(0.0, None, 0.0)
    )
    assert trust_for(None, issued).source is TrustSource.NONE
    assert trust_for(series([]), issued).inputs(issued, HOUR, issued + HOUR).forecast_error_g_per_kwh == 0.0


def test_a_job_that_may_run_in_several_zones_is_gated_on_the_largest_error() -> None:
    now = T0
    clean = ForecastTrust(TrustSource.PRIOR, PRIOR, 100.0, HOUR)
    dirty = ForecastTrust(TrustSource.PRIOR, PRIOR, 500.0, HOUR)
    oracle = ForecastTrust(TrustSource.ORACLE, PRIOR, 0.0, HOUR)
    both = combined([clean, dirty, oracle], now, 3 * HOUR, now + 12 * HOUR)
    assert both.forecast_error_g_per_kwh == pytest.approx(dirty.run_error(3 * HOUR))
    assert both.slot_error_g_per_kwh == pytest.approx(dirty.slot_error(6 * HOUR))
    assert both.forecast_error_for is not None and both.forecast_error_for(HOUR) == pytest.approx(dirty.run_error(HOUR))
    assert combined([oracle], now, HOUR, now + HOUR).forecast_error_for is None


def test_a_week_of_recorded_forecasts_replaces_the_prior_with_their_measured_error(gb: IntensitySeries) -> None:
    """The operator's record of a provider's day-ahead forecasts (here persistence on GB 2023, fed as the
    handler does: the first forecast of each day, and the histories it reads) gives, after a week, the error the
    simulator's ErrorEstimate measures for that model; before, the prior."""
    model = PersistenceForecast()
    record = ForecastRecord()
    start = gb.start + timedelta(days=40)
    trusts = []
    for day in range(10):
        for minutes in (5, 12 * 60 + 5):  # two passes a day: the day's first forecast is the one recorded
            now = start + timedelta(days=day, minutes=minutes)
            forecast = model.forecast(gb, now, timedelta(days=2))
            history = gb.window(now - timedelta(days=2), now + HOUR)
            record.add_forecast(forecast, now)
            record.add_actuals(history, now)
            trusts.append((now, trust_for(forecast, now, history=history, record=record)))
    sources = [t.source for _, t in trusts]
    assert sources[0] is TrustSource.PRIOR and sources[-1] is TrustSource.MEASURED
    first = next(i for i, s in enumerate(sources) if s is TrustSource.MEASURED)
    assert first == 2 * 7 and set(sources[first:]) == {TrustSource.MEASURED}  # from the 8th day: a week (95 %)
    now, trust = trusts[-1]
    measured = ErrorEstimate(model, gb)
    for hours in (1, 8, 24):
        assert trust.run_error(timedelta(hours=hours)) == pytest.approx(measured.at(now, timedelta(hours=hours)))
    inputs = trust.inputs(now, 3 * HOUR, now + 12 * HOUR)
    assert inputs.slot_error_g_per_kwh == pytest.approx(measured.at(now, gb.resolution))
    # Bounded: the day-ahead forecasts of `keep` (8 days) and of the rest of today; the actuals as far back as the
    # shown skill's oldest issue reads (three weeks, the 72 h horizon and a stride: 24.25 days); at most 97 issues.
    slots = int(timedelta(days=8) / gb.resolution)
    assert len(record._forecast) <= slots + int(timedelta(days=1) / gb.resolution)
    assert record.issues_kept == timedelta(days=24, hours=6)
    assert len(record._actual) <= int(record.issues_kept / gb.resolution) + 1
    assert len(record._issued) <= 97
