"""The forecast error model's fitting: known parameters are recovered from synthetic data, and the
calibration on the bundled NESO GB 2023 file gives the numbers documented in docs/reproduction.md."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from carbonshift.data import load_bundled_forecast_vs_actual
from carbonshift.domain.forecast_error import (
    GB_2023,
    CalibrationError,
    ErrorParams,
    anomaly_autocorrelation,
    ar1,
    calibrate,
    climatological_sigma,
    draw_field,
    fit_lead_profile,
    fit_news_phi,
    fit_short_lead,
    fit_tau,
    mean_growth,
)
from carbonshift.domain.forecasting import RealisticForecast
from carbonshift.domain.series import IntensitySeries, Kind

START = datetime(2023, 1, 1, tzinfo=UTC)
HALF = timedelta(minutes=30)
HOUR = timedelta(hours=1)


def constant(level: float, slots: int, step: timedelta) -> IntensitySeries:
    return IntensitySeries(zone="XX", start=START, resolution=step, values=np.full(slots, level))


def test_ar1_has_unit_variance_and_the_asked_correlation() -> None:
    x = ar1(np.random.default_rng(3).standard_normal((2, 100_000)), 0.8)
    assert np.std(x, axis=1) == pytest.approx([1.0, 1.0], abs=0.03)
    for row in x:
        assert np.corrcoef(row[:-1], row[1:])[0, 1] == pytest.approx(0.8, abs=0.01)
        assert np.corrcoef(row[:-4], row[4:])[0, 1] == pytest.approx(0.8**4, abs=0.02)
    white = ar1(np.ones((1, 5)), 0.0)
    np.testing.assert_array_equal(white, np.ones((1, 5)))


@pytest.mark.parametrize("step", [HALF, HOUR])
def test_short_lead_fit_recovers_sigma0_and_phi_from_synthetic_forecasts(step: timedelta) -> None:
    known = ErrorParams(sigma0=0.07, sigma_inf=0.3, tau=timedelta(hours=30), phi=0.6)
    actual = constant(300.0, 60_000, step)
    model = RealisticForecast(known, seed=11, per_zone=False)
    view = model.noisy_view(actual)  # lead-0 forecasts of every slot
    forecast = IntensitySeries(zone="XX", start=START, resolution=step, values=view, kind=Kind.FORECAST)
    fit = fit_short_lead(forecast, actual)
    assert fit.pairs == 60_000
    assert fit.sigma == pytest.approx(0.07, rel=0.05)
    assert fit.phi == pytest.approx(0.6, abs=0.03)  # per 30 minutes, whatever the series' resolution
    assert fit.lag1 == pytest.approx(0.6 ** (step / HALF), abs=0.03)
    assert abs(fit.bias_g_per_kwh) < 0.05 * fit.sigma_g_per_kwh


def test_lead_profile_fit_recovers_known_parameters_from_synthetic_forecasts() -> None:
    known = ErrorParams(sigma0=0.05, sigma_inf=0.3, tau=timedelta(hours=24), phi=0.7)
    actual = constant(500.0, 24 * 365, HOUR)
    leads, errors = [], []
    for seed in range(4):
        model = RealisticForecast(known, seed=seed, per_zone=False)
        for slot in range(0, len(actual) - 96, 5):
            forecast = model.forecast(actual, actual.slot_start(slot), timedelta(hours=96))
            errors.append(forecast.values / 500.0 - 1.0)
            leads.append(np.arange(96) * 3600.0)
    fit = fit_lead_profile(np.concatenate(leads), np.concatenate(errors))
    assert fit.sigma0 == pytest.approx(0.05, rel=0.15)
    assert fit.sigma_inf == pytest.approx(0.3, rel=0.15)
    assert fit.tau / HOUR == pytest.approx(24.0, rel=0.3)
    assert len(fit.leads) == 96 and fit.empirical_sigma[0] < fit.empirical_sigma[-1]


def test_fit_tau_inverts_the_lead_averaged_variance() -> None:
    params = ErrorParams(sigma0=0.08, sigma_inf=0.4, tau=timedelta(hours=60), phi=0.7)
    leads = np.linspace(0, 48, 100_001)
    mean_variance = float(np.mean([params.sigma(timedelta(hours=h)) ** 2 for h in leads[::100]]))
    assert mean_growth(params.tau, timedelta(hours=48)) == pytest.approx(
        (mean_variance - 0.08**2) / (0.4**2 - 0.08**2), rel=1e-3
    )
    tau = fit_tau(0.08, 0.4, math.sqrt(mean_variance))
    assert tau / HOUR == pytest.approx(60.0, rel=0.01)
    with pytest.raises(CalibrationError, match="no tau fits"):
        fit_tau(0.08, 0.4, 0.5)


def test_climatological_sigma_is_the_spread_around_month_and_time_of_day_means() -> None:
    slots = np.arange(48 * 365)
    rng = np.random.default_rng(0)
    profile = 200.0 + 50.0 * np.sin(2 * np.pi * slots / 48) + 30.0 * np.sin(2 * np.pi * slots / (48 * 365))
    noisy = IntensitySeries(zone="XX", start=START, resolution=HALF, values=profile + rng.normal(0, 20.0, slots.size))
    assert climatological_sigma(noisy) == pytest.approx(20.0 / 200.0, rel=0.05)


@pytest.mark.parametrize(("step", "phi_news"), [(HALF, 0.99), (HOUR, 0.95), (timedelta(minutes=15), 0.98)])
def test_news_smoothness_is_recovered_from_an_anomaly_of_known_correlation(step: timedelta, phi_news: float) -> None:
    """A daily shape plus an AR(1) anomaly of known correlation per 30 minutes: the fit finds it (with no lead-0
    error, the model's infinite-lead error is the news alone)."""
    n = int(timedelta(days=365) / step)
    per_slot = phi_news ** (step / HALF)
    anomaly = 30.0 * ar1(np.random.default_rng(5).standard_normal((1, n)), per_slot)[0]
    slots_per_day = int(timedelta(days=1) / step)
    shape = 200.0 + 60.0 * np.sin(2 * np.pi * np.arange(n) / slots_per_day)
    actual = IntensitySeries(zone="XX", start=START, resolution=step, values=shape + anomaly)
    tau = timedelta(days=10_000)  # (rho ~ 1: the news' own drift in target time does not blur the fit)
    fitted = fit_news_phi(actual, 0.0, 0.5, 0.15, tau)
    # (the month x time-of-day means take a little of a slow anomaly with them: the fit is slightly low)
    assert fitted == pytest.approx(phi_news, abs=0.006)
    with pytest.raises(CalibrationError, match="infinite lead"):
        fit_news_phi(actual, 0.0, 0.5, 0.0, tau)
    with pytest.raises(CalibrationError, match="does not vary"):
        fit_news_phi(constant(200.0, 24 * 60, HOUR), 0.0, 0.5, 0.1, tau)


def test_the_models_long_lead_errors_are_as_smooth_as_gb_2023s_anomaly() -> None:
    """The fit's point: the error of a forecast at a long lead moves between neighbouring target slots as the
    actuals' deviation from their time-of-day means does (0.93 4 h apart on GB 2023), where the lead-0 error's
    correlation (phi, 0.74 per 30 minutes, 0.09 4 h apart) would make it flicker from slot to slot."""
    gb = load_bundled_forecast_vs_actual("GB_2023").actual
    measured = anomaly_autocorrelation(gb)
    field = draw_field(GB_2023, 20_000, HALF, seed=2)
    far = np.vstack([field.errors(issue, issue + 1_000, issue + 1_100) for issue in range(0, 18_000, 400)])
    for lag in (1, 4, 8, 16):  # 30 minutes .. 8 h apart
        drawn = np.corrcoef(far[:, :-lag].ravel(), far[:, lag:].ravel())[0, 1]
        assert drawn == pytest.approx(measured[lag - 1], abs=0.05)
    assert GB_2023.phi**8 < 0.1 < 0.85 < GB_2023.news_phi**8


def test_calibration_on_the_bundled_neso_file_gives_the_documented_numbers() -> None:
    recorded = load_bundled_forecast_vs_actual("GB_2023")
    result = calibrate(recorded.forecast, recorded.actual)
    short = result.short_lead
    # docs/reproduction.md, "Forecast error model"
    assert short.pairs == 17_419
    assert short.mean_g_per_kwh == pytest.approx(152.18, abs=0.01)
    assert short.sigma_g_per_kwh == pytest.approx(14.28, abs=0.01)
    assert short.mae_g_per_kwh == pytest.approx(9.86, abs=0.01)
    assert short.bias_g_per_kwh == pytest.approx(-0.90, abs=0.01)
    assert result.anchor_rms * short.mean_g_per_kwh == pytest.approx(31.11, abs=0.01)  # NESO, all leads
    assert result.anchor_rms == pytest.approx(0.2045, abs=1e-4)
    fitted = result.params
    assert fitted.sigma0 == pytest.approx(GB_2023.sigma0, abs=1e-5)
    assert fitted.sigma_inf == pytest.approx(GB_2023.sigma_inf, abs=1e-4)
    assert fitted.phi == pytest.approx(GB_2023.phi, abs=1e-4)
    assert fitted.tau / HOUR == pytest.approx(GB_2023.tau / HOUR, abs=0.01)
    assert fitted.phi_news == pytest.approx(GB_2023.phi_news, abs=1e-4)
    table = {h: round(GB_2023.sigma(timedelta(hours=h)), 3) for h in (0, 1, 6, 12, 24, 48)}
    assert table == {0: 0.094, 1: 0.102, 6: 0.135, 12: 0.165, 24: 0.208, 48: 0.263}


def test_bad_parameters_and_misaligned_series_are_refused() -> None:
    with pytest.raises(ValueError, match="sigma0 <= sigma_inf"):
        ErrorParams(sigma0=0.5, sigma_inf=0.2, tau=HOUR, phi=0.5)
    with pytest.raises(ValueError, match="phi"):
        ErrorParams(sigma0=0.1, sigma_inf=0.2, tau=HOUR, phi=1.0)
    with pytest.raises(ValueError, match="tau"):
        ErrorParams(sigma0=0.1, sigma_inf=0.2, tau=timedelta(0), phi=0.5)
    with pytest.raises(CalibrationError, match="share start"):
        fit_short_lead(constant(1.0, 10, HOUR), constant(1.0, 11, HOUR))
    with pytest.raises(CalibrationError, match="three leads"):
        fit_lead_profile(np.array([0.0, 0.0]), np.array([0.1, -0.1]))
