"""Forecast models: oracle, seeded Gaussian noise, persistence, recorded forecasts, spec parsing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from carbonshift.data import load_bundled_forecast_vs_actual, load_bundled_trace, load_forecast_model
from carbonshift.domain.forecasting import (
    ForecastError,
    ForecastModel,
    ForecastSpecError,
    GaussianForecast,
    PersistenceForecast,
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


@pytest.mark.parametrize("spec", ["oracle", "gaussian:0.1", "persistence"])
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
