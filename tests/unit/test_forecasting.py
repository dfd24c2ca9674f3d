"""Forecast models: oracle, seeded Gaussian noise, persistence, recorded forecasts, spec parsing."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from carbonshift.data import load_bundled_forecast_vs_actual, load_bundled_trace, load_forecast_model
from carbonshift.domain.forecast_error import GB_2023, climatological_sigma, fit_news_phi
from carbonshift.domain.forecasting import (
    ForecastError,
    ForecastModel,
    ForecastSpecError,
    GaussianForecast,
    PersistenceForecast,
    RealisticForecast,
    expected_error,
    parse_forecast_model,
)
from carbonshift.domain.series import IntensitySeries, Kind, Signal

START = datetime(2022, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def hourly(values: list[float] | np.ndarray, zone: str = "XX") -> IntensitySeries:
    return IntensitySeries(zone=zone, start=START, resolution=HOUR, values=np.asarray(values, dtype=float))


def ramp(days: int = 4) -> IntensitySeries:
    """Distinct value per slot: slot i holds 100 + i, so a forecast value names its source slot."""
    return hourly(100.0 + np.arange(24 * days))


def test_oracle_returns_the_actuals_from_the_issue_slot_and_says_so() -> None:
    actual = ramp()
    issued = START + timedelta(hours=5, minutes=20)
    forecast = parse_forecast_model("oracle").forecast(actual, issued, timedelta(hours=3))
    # slots overlapping [05:20, 08:20): 05, 06, 07, 08
    assert forecast.start == START + 5 * HOUR
    assert forecast.values.tolist() == [105.0, 106.0, 107.0, 108.0]
    assert forecast.kind == Kind.FORECAST
    assert forecast.issued_at == issued
    assert "oracle" in forecast.labels["forecast_model"]
    assert forecast.labels["oracle"] == "true"
    assert parse_forecast_model("oracle").is_oracle


def test_forecast_is_clipped_to_the_trace() -> None:
    actual = ramp(days=1)
    model = parse_forecast_model("oracle")
    tail = model.forecast(actual, START + 22 * HOUR, timedelta(hours=10))
    assert tail.values.tolist() == [122.0, 123.0]
    after = model.forecast(actual, START + 30 * HOUR, HOUR)
    assert len(after) == 0


def test_gaussian_noise_has_the_declared_size_and_is_fixed_per_seed() -> None:
    actual = load_bundled_trace("DE_2020")
    model = parse_forecast_model("gaussian:0.05", seed=3)
    view = model.noisy_view(actual)
    error = view - actual.values
    sigma = 0.05 * actual.mean()
    assert float(np.nanstd(error)) == pytest.approx(sigma, rel=0.02)
    assert abs(float(np.nanmean(error))) < 0.05 * sigma
    # same slot, two different issue times: same forecast value
    slot = START.replace(year=2020) + timedelta(days=100, hours=12)
    early = model.forecast(actual, slot - timedelta(hours=20), timedelta(hours=24))
    late = model.forecast(actual, slot - timedelta(hours=2), timedelta(hours=24))
    assert early.at(slot) == late.at(slot) == view[actual.index_of(slot)]
    assert early.at(slot) != actual.at(slot)
    # a new model with the same seed reproduces it; another seed does not
    np.testing.assert_array_equal(parse_forecast_model("gaussian:5%", seed=3).noisy_view(actual), view)
    assert not np.array_equal(parse_forecast_model("gaussian:0.05", seed=4).noisy_view(actual), view)


def test_gaussian_zero_error_equals_oracle_but_is_not_labelled_oracle() -> None:
    actual = ramp()
    model = parse_forecast_model("gaussian:0")
    np.testing.assert_array_equal(model.noisy_view(actual), actual.values)
    assert not model.is_oracle


def test_noisy_view_is_read_only_and_cached() -> None:
    actual = ramp()
    model = GaussianForecast(0.1, seed=1)
    view = model.noisy_view(actual)
    assert model.noisy_view(actual) is view
    with pytest.raises(ValueError, match="read-only"):
        view[0] = 0.0


def test_persistence_uses_yesterday_and_never_the_issue_slot_or_later() -> None:
    actual = ramp(days=4)
    model = parse_forecast_model("persistence")
    issued = START + timedelta(days=2, hours=3, minutes=10)  # issue slot index 51
    forecast = model.forecast(actual, issued, timedelta(hours=30))
    issue_slot = actual.index_of(issued)
    sources = forecast.values - 100.0
    assert (sources < issue_slot).all()
    # first day ahead: exactly one day back; beyond: two days back
    assert sources[:24].tolist() == [float(i - 24) for i in range(issue_slot, issue_slot + 24)]
    assert sources[24:].tolist() == [float(i - 48) for i in range(issue_slot + 24, issue_slot + 31)]


def test_persistence_view_matches_forecast_within_one_day() -> None:
    actual = ramp(days=3)
    model = PersistenceForecast()
    assert model.exact_view_horizon == timedelta(days=1)
    issued = START + timedelta(days=1, hours=6)
    forecast = model.forecast(actual, issued, timedelta(days=1))
    i = actual.index_of(issued)
    np.testing.assert_array_equal(forecast.values, model.noisy_view(actual)[i : i + 24])


def test_persistence_first_day_is_unknown() -> None:
    forecast = parse_forecast_model("persistence").forecast(ramp(), START + HOUR, timedelta(hours=2))
    assert np.isnan(forecast.values).all()


def test_persistence_rejects_a_resolution_that_does_not_divide_a_day() -> None:
    odd = IntensitySeries(zone="XX", start=START, resolution=timedelta(hours=7), values=np.ones(10))
    with pytest.raises(ForecastError, match="divides one day"):
        parse_forecast_model("persistence").forecast(odd, START, HOUR)


def test_recorded_gb_forecast_is_placed_on_the_actual_grid() -> None:
    recorded = load_bundled_forecast_vs_actual("GB_2023")
    actual = load_bundled_trace("GB")
    model = load_forecast_model("file:GB_2023_forecast_vs_actual")
    issued = datetime(2023, 3, 1, 12, tzinfo=UTC)
    forecast = model.forecast(actual, issued, timedelta(hours=2))
    assert forecast.values.tolist() == [recorded.forecast.at(issued + i * timedelta(minutes=30)) for i in range(4)]
    assert not model.is_oracle
    assert forecast.labels["forecast_model"] == "recorded:GB_2023_forecast_vs_actual"


def test_recorded_forecast_for_another_zone_is_refused() -> None:
    model = load_forecast_model("file:GB")
    with pytest.raises(ForecastError, match="zone GB, not DE"):
        model.forecast(load_bundled_trace("DE"), datetime(2020, 3, 1, tzinfo=UTC), HOUR)


def test_recorded_forecast_with_another_signal_is_refused() -> None:
    recorded = IntensitySeries(
        zone="XX", start=START, resolution=HOUR, values=np.ones(48), kind=Kind.FORECAST, signal=Signal.MARGINAL
    )
    model = parse_forecast_model("file:x", read_recorded=lambda _: recorded)
    with pytest.raises(ValueError, match="cannot mix"):
        model.noisy_view(ramp())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("magic", "unknown forecast model"),
        ("gaussian", "needs an error"),
        ("gaussian:", "needs an error"),
        ("gaussian:lots", "not a number"),
        ("gaussian:-0.1", ">= 0"),
        ("gaussian:nan", ">= 0"),
        ("oracle:3", "unknown forecast model"),
        ("file:", "needs a location"),
        ("file:GB_2023", "load_forecast_model"),
        ("realistic:lots", "not a scale factor"),
        ("realistic:-1", ">= 0"),
        ("realistic:inf", ">= 0"),
    ],
)
def test_bad_specs_are_refused_clearly(spec: str, message: str) -> None:
    with pytest.raises(ForecastSpecError, match=message):
        parse_forecast_model(spec)


def test_file_spec_holding_actuals_is_refused() -> None:
    with pytest.raises(ForecastSpecError, match="holds actuals"):
        parse_forecast_model("file:x", read_recorded=lambda _: ramp())


@pytest.mark.parametrize("bad_horizon", [timedelta(0), timedelta(hours=-1)])
def test_horizon_must_be_positive(bad_horizon: timedelta) -> None:
    with pytest.raises(ForecastError, match="positive"):
        parse_forecast_model("oracle").forecast(ramp(), START, bad_horizon)


def test_naive_issue_time_is_refused() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        parse_forecast_model("oracle").forecast(ramp(), datetime(2022, 1, 1, 5), HOUR)


@pytest.mark.parametrize("spec", ["oracle", "gaussian:0.1", "persistence", "realistic", "realistic:2"])
def test_models_satisfy_the_protocol_and_keep_zone_signal(spec: str) -> None:
    model = parse_forecast_model(spec)
    assert isinstance(model, ForecastModel)
    marginal = IntensitySeries(
        zone="CAISO", start=START, resolution=HOUR, values=np.full(72, 400.0), signal=Signal.MARGINAL
    )
    forecast = model.forecast(marginal, START + timedelta(days=2), timedelta(hours=5))
    assert forecast.signal == Signal.MARGINAL
    assert forecast.zone == "CAISO"
    assert len(forecast) == 5
    assert not any(math.isnan(v) for v in forecast.values)


# -- realistic: errors that grow with lead time and move a little at each issue -------------------------------

HALF = timedelta(minutes=30)
LEADS = 96  # 48 h of half-hours


def flat_year(level: float = 200.0, days: int = 365) -> IntensitySeries:
    """A half-hourly year with a daily swing, high enough that no forecast is clipped at 0."""
    slots = np.arange(days * 48)
    values = level + 0.2 * level * np.sin(2 * np.pi * slots / 48)
    return IntensitySeries(zone="XX", start=START, resolution=HALF, values=values)


def relative_errors(model: ForecastModel, actual: IntensitySeries, issues: range) -> np.ndarray:
    """(issue, lead) matrix of (forecast - actual) / mean for 48 h forecasts issued at those slots."""
    mean = actual.mean()
    rows = []
    for slot in issues:
        forecast = model.forecast(actual, actual.slot_start(slot), LEADS * HALF)
        rows.append((forecast.values - actual.values[slot : slot + LEADS]) / mean)
    return np.array(rows)


def test_realistic_is_the_documented_gb_fit_and_says_what_it_is() -> None:
    model = parse_forecast_model("realistic", seed=2)
    assert isinstance(model, RealisticForecast)
    assert model.params == GB_2023 and not model.is_oracle
    assert model.name == "realistic (NESO GB 2023 fit, scaled to the zone's climatology) seed=2"
    assert model.exact_view_horizon == timedelta(0)
    assert "realistic" in load_forecast_model("realistic").name


def test_realistic_error_grows_with_lead_time_as_fitted() -> None:
    actual = flat_year()
    errors = np.vstack(
        [
            relative_errors(RealisticForecast(seed=seed, per_zone=False), actual, range(0, len(actual) - LEADS, 7))
            for seed in range(3)
        ]
    )
    empirical = np.sqrt(np.mean(errors**2, axis=0))
    expected = np.array([GB_2023.sigma(k * HALF) for k in range(LEADS)])
    np.testing.assert_allclose(empirical, expected, rtol=0.12)
    assert empirical[0] < empirical[12] < empirical[47] < empirical[95]  # 0 h < 6 h < 23.5 h < 47.5 h
    assert empirical[95] > 2.5 * empirical[0]  # 48 h ahead is much worse than the slot in progress
    assert abs(float(np.mean(errors))) < 0.02  # unbiased


def test_consecutive_issues_differ_by_a_small_update_not_a_fresh_draw() -> None:
    actual = flat_year(days=120)
    model = RealisticForecast(seed=0, per_zone=False)
    first, later = [], []
    for slot in range(0, len(actual) - LEADS - 1, 5):
        now = model.forecast(actual, actual.slot_start(slot), LEADS * HALF).values
        next_issue = model.forecast(actual, actual.slot_start(slot + 1), LEADS * HALF).values
        first.append(now[2:])  # targets slot+2 .. : leads 2..95 now, 1..94 half an hour later
        later.append(next_issue[1:-1])
    before = (np.concatenate(first) - 200.0) / 200.0
    after = (np.concatenate(later) - 200.0) / 200.0
    update = after - before
    assert np.corrcoef(before, after)[0, 1] > 0.98
    assert 0 < float(np.std(update)) < 0.2 * float(np.std(before))


def test_errors_for_one_slot_shrink_as_it_approaches_and_are_renewed() -> None:
    """Issued afresh: the error of a slot forecast 48 h ahead is mostly gone at lead 0."""
    actual = flat_year(days=200)
    model = RealisticForecast(seed=1, per_zone=False)
    far, near = [], []
    for target in range(LEADS, len(actual), 11):
        far.append(model.forecast(actual, actual.slot_start(target - LEADS + 1), LEADS * HALF).values[-1])
        near.append(model.forecast(actual, actual.slot_start(target), HALF).values[0])
    far_error = np.array(far) - actual.values[LEADS::11][: len(far)]
    near_error = np.array(near) - actual.values[LEADS::11][: len(near)]
    assert np.std(near_error) < 0.5 * np.std(far_error)
    assert np.corrcoef(far_error, near_error)[0, 1] < 0.6


def test_same_slot_issue_times_share_one_forecast_and_are_deterministic_per_seed() -> None:
    actual = flat_year(days=30)
    issue = actual.slot_start(500) + timedelta(minutes=5)
    a = RealisticForecast(seed=4, per_zone=False)
    b = RealisticForecast(seed=4, per_zone=False)
    for minute in (0, 5, 25):  # a different call history before the compared call
        a.forecast(actual, actual.slot_start(500) + timedelta(minutes=minute), timedelta(hours=6))
    mine = a.forecast(actual, issue, timedelta(hours=6)).values
    np.testing.assert_array_equal(mine, b.forecast(actual, issue, timedelta(hours=6)).values)
    at_slot_start = a.forecast(actual, actual.slot_start(500), timedelta(hours=6)).values
    np.testing.assert_array_equal(mine[:12], at_slot_start)  # from :05 the 6 h reach one slot further
    assert not np.array_equal(
        mine, RealisticForecast(seed=5, per_zone=False).forecast(actual, issue, timedelta(hours=6)).values
    )
    shorter = a.forecast(actual, issue, timedelta(hours=2)).values
    np.testing.assert_array_equal(shorter, mine[:5])  # the horizon cuts the same forecast
    longer = a.forecast(actual, issue, timedelta(hours=12)).values  # asked after shorter ones: grows
    assert len(longer) == 25
    np.testing.assert_array_equal(longer[:13], mine)
    np.testing.assert_array_equal(longer, b.forecast(actual, issue, timedelta(hours=12)).values)
    assert len(a.forecast(actual, issue, timedelta(hours=1)).values) == 3


def test_realistic_view_is_the_lead_zero_forecast() -> None:
    actual = flat_year(days=10)
    model = RealisticForecast(seed=0, per_zone=False)
    view = model.noisy_view(actual)
    for slot in (0, 17, 300):
        assert model.forecast(actual, actual.slot_start(slot), HALF).values[0] == view[slot]
    errors = (view - actual.values) / actual.mean()
    assert float(np.std(errors)) == pytest.approx(GB_2023.sigma0, rel=0.25)


def test_realistic_forecasts_are_never_negative_and_keep_gaps() -> None:
    values = np.full(24 * 30, 5.0)
    values[100] = np.nan
    low = hourly(values)
    low.values[0] = 500.0  # a mean far above most slots: large errors, many clipped
    model = parse_forecast_model("realistic:3")
    for slot in (0, 50, 90):
        forecast = model.forecast(low, START + slot * HOUR, timedelta(hours=48)).values
        assert np.nanmin(forecast) >= 0.0
    assert math.isnan(model.forecast(low, START + 99 * HOUR, timedelta(hours=3)).values[1])


def test_realistic_scale_multiplies_the_error_and_zero_is_the_actuals_unflagged() -> None:
    actual = flat_year(days=60)
    issues = range(0, len(actual) - LEADS, 13)
    base = relative_errors(RealisticForecast(seed=0, per_zone=False), actual, issues)
    double = relative_errors(RealisticForecast(seed=0, scale=2.0, per_zone=False), actual, issues)
    unclipped = 2 * base > -0.75  # the lowest slot is 0.8 x the mean: below that the forecast is clipped at 0
    assert np.mean(unclipped) > 0.95
    np.testing.assert_allclose(double[unclipped], 2 * base[unclipped], atol=1e-12)
    zero = parse_forecast_model("realistic:0")
    assert not zero.is_oracle
    np.testing.assert_allclose(zero.forecast(actual, START, timedelta(hours=5)).values, actual.values[:10])


def test_expected_error_is_the_fitted_curve_and_difference_error_matches_the_draws() -> None:
    model = RealisticForecast(per_zone=False)
    assert model.expected_error(timedelta(0)) == pytest.approx(GB_2023.sigma0)
    sigmas = [model.expected_error(timedelta(hours=h)) for h in (0, 1, 6, 24, 48, 480)]
    assert sigmas == sorted(sigmas) and sigmas[-1] < GB_2023.sigma_inf
    assert sigmas[3] == pytest.approx(0.208, abs=0.002) and sigmas[4] == pytest.approx(0.263, abs=0.002)
    actual = flat_year()
    assert model.expected_error_g_per_kwh(actual, timedelta(hours=24)) == pytest.approx(sigmas[3] * actual.mean())
    errors = np.vstack(
        [relative_errors(RealisticForecast(seed=s, per_zone=False), actual, range(0, 17000, 9)) for s in range(2)]
    )
    for a, b in [(4, 6), (10, 40), (20, 90)]:
        empirical = float(np.std(errors[:, b] - errors[:, a]))
        assert empirical == pytest.approx(GB_2023.difference_sigma(a * HALF, b * HALF), rel=0.15), (a, b)
    # close slots err together: their difference is far less uncertain than either slot
    assert GB_2023.difference_sigma(20 * HALF, 21 * HALF) < 0.8 * GB_2023.sigma(20 * HALF)


def test_expected_error_of_any_model_is_declared_or_none() -> None:
    assert expected_error(parse_forecast_model("realistic"), timedelta(hours=24)) == pytest.approx(0.208, abs=0.001)
    assert expected_error(parse_forecast_model("realistic:2"), timedelta(0)) == pytest.approx(2 * GB_2023.sigma0)
    assert expected_error(parse_forecast_model("oracle"), timedelta(hours=5)) == 0.0
    assert expected_error(parse_forecast_model("persistence"), timedelta(hours=5)) is None
    assert RealisticForecast(GB_2023.scaled(0.5)).name.startswith("realistic (custom fit,")


def test_realistic_keeps_the_fits_skill_against_each_zones_climatology() -> None:
    """Per zone, every sigma scales with the trace's climatological spread: on GB 2023 (the fitted zone) the fit
    itself, on PJM 2022 (a grid 6 times steadier around its daily shape) errors 6 times smaller, so that no
    zone's forecast is worse than its time-of-day average; a flat daily shape has nothing left to get wrong."""
    gb, pjm = load_bundled_trace("GB_2023"), load_bundled_trace("PJM_2022")
    model = parse_forecast_model("realistic", seed=3)
    assert isinstance(model, RealisticForecast)
    assert model.params_for(gb).sigma_inf == pytest.approx(GB_2023.sigma_inf, rel=1e-3)
    ratio = climatological_sigma(pjm) / GB_2023.sigma_inf
    assert 0.1 < ratio < 0.25
    # scaled, and as smooth in target time as PJM's own anomaly (the fit's smoothness is GB's)
    own = fit_news_phi(pjm, GB_2023.sigma0, GB_2023.phi, GB_2023.sigma_inf, GB_2023.tau)
    assert model.params_for(pjm) == replace(GB_2023.scaled(ratio), phi_news=own)
    assert 0.98 < own < 0.99 < GB_2023.news_phi
    assert model.params_for(pjm).sigma(timedelta(hours=480)) < climatological_sigma(pjm)  # better than climatology
    # the draws follow: PJM's forecast errors (relative to its mean) are `ratio` times those of the unscaled fit
    issues = range(0, len(pjm) - 48, 37)
    mine = np.vstack([model.forecast(pjm, pjm.slot_start(i), timedelta(hours=24)).values for i in issues])
    fit = RealisticForecast(seed=3, per_zone=False)
    theirs = np.vstack([fit.forecast(pjm, pjm.slot_start(i), timedelta(hours=24)).values for i in issues])
    truth = np.vstack([pjm.values[i : i + 24] for i in issues])
    assert float(np.nanstd(mine - truth)) == pytest.approx(ratio * float(np.nanstd(theirs - truth)), rel=0.05)
    expected = model.expected_error_g_per_kwh(pjm, timedelta(hours=12))
    assert expected == pytest.approx(GB_2023.scaled(ratio).sigma(timedelta(hours=12)) * pjm.mean())
    # a daily shape that repeats exactly: the time of day tells all, the forecast is exact
    steady = flat_year(days=60)
    assert np.allclose(model.forecast(steady, START, timedelta(hours=24)).values, steady.values[:48])
    # shorter than four weeks: too few days to measure a spread, the fit as it is
    short = flat_year(days=10)
    assert model.params_for(short) == GB_2023
