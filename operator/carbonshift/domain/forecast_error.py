"""A forecast error model that behaves like a real forecast, and its calibration on NESO's GB 2023 file.

The error of a forecast issued at slot t for target slot s (lead L = s - t), as a fraction of the trace's
mean intensity m (the forecast is ``actual[s] + m * e(t, s)``, clipped at 0):

    e(t, s) = e0(s) + (S / sqrt(r)) * sum_i H_i(s) * (G_i(s) - rho**L * G_i(t))

* ``e0`` - the error left at lead 0 (the forecast for the slot in progress): AR(1) in target time with
  standard deviation `sigma0` and correlation `phi` per 30 minutes.
* ``G_i`` - r independent AR(1) processes in issue time (unit variance, rho per slot = exp(-slot / 2 tau)).
  The bracket is the news about slot s that arrives between t and s: its variance 1 - exp(-L / tau)
  grows like a random walk at short leads and saturates at long ones.
* ``H_i`` - r independent unit-variance AR(1) loadings in target time (`phi_news` per 30 minutes): how
  strongly a piece of news moves each target slot, so that neighbouring slots err together, as smoothly as the
  actuals' anomaly around their time-of-day means (the error the forecast tends to at an infinite lead).

Hence (exactly, in expectation over the loadings) the error's standard deviation at lead L is

    sigma(L) = sqrt(sigma0**2 + S**2 * (1 - exp(-L / tau))),  S**2 = sigma_inf**2 - sigma0**2

and the forecast issued one slot later differs from the previous one for the same target by only
``S/sqrt(r) * sum_i H_i(s) rho**(L-1) sqrt(1 - rho**2) eps_i(t+1)``: a small update, not a fresh draw. The
low-rank form (r factors) makes a forecast cost O(r x horizon) from a few arrays drawn once per trace and
seed; the product of two Gaussians gives slightly heavier tails than a Gaussian (excess kurtosis about
6/r), as real forecast errors have.

Calibration (`calibrate`, documented in docs/reproduction.md, "Forecast error model"): NESO's bundled
forecast-vs-actual file holds NESO's *latest* forecast for each half-hour (a short lead), which gives
`sigma0` and `phi`; the bundled actuals give `sigma_inf`, the error of a forecast that knows only the
season and the time of day (the spread of the actuals around their month x half-hour-of-day means);
`tau` is then the one value that makes the error averaged over leads 0-48 h equal the RMS error of
NESO's published national forecasts over all leads, measured by the carbon-intensity-forecast-tracking
project (`NESO_ALL_LEADS_RMS_G_PER_KWH`); `phi_news` makes the infinite-lead error as smooth in target time as
the actuals' anomaly (`fit_news_phi`). The result is `GB_2023`.

Everything here is pure numpy: no I/O (the caller passes the series).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import timedelta

import numpy as np

from carbonshift.domain.series import FloatArray, IntensitySeries

HALF_HOUR = timedelta(minutes=30)
ANCHOR_SPAN = timedelta(hours=48)
NEWS_FIT_SPAN = timedelta(hours=12)  # the lags over which the news correlation is fitted

# RMS error (gCO2/kWh) of NESO's national forecasts as published, all leads pooled, from the
# carbon-intensity-forecast-tracking project (github.com/nmpowell/carbon-intensity-forecast-tracking, MIT),
# README "All data - absolute error": n = 1,305,616 forecast/actual pairs, mean |error| 24.2391, std 19.5086;
# RMS = sqrt(mean^2 + std^2). Each half-hour is forecast about 96 times over the 48 h before it.
NESO_ALL_LEADS_MAE_G_PER_KWH = 24.2391
NESO_ALL_LEADS_ABS_STD_G_PER_KWH = 19.5086
NESO_ALL_LEADS_RMS_G_PER_KWH = math.hypot(NESO_ALL_LEADS_MAE_G_PER_KWH, NESO_ALL_LEADS_ABS_STD_G_PER_KWH)


class CalibrationError(ValueError):
    """Data that cannot calibrate the error model (misaligned series, too few pairs, impossible anchor)."""


@dataclass(frozen=True, slots=True)
class ErrorParams:
    """Parameters of the error model; sigmas are fractions of the trace's mean intensity.

    `sigma0`: error std at lead 0; `sigma_inf`: std at infinite lead (climatology); `tau`: e-folding time
    of the variance growth; `phi`: correlation of the lead-0 errors of neighbouring target slots 30 minutes
    apart; `factors`: rank of the news process (r); `phi_news`: the same correlation for the news still to
    come (the loadings H), None for `phi`."""

    sigma0: float
    sigma_inf: float
    tau: timedelta
    phi: float
    factors: int = 16
    phi_news: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma0) and math.isfinite(self.sigma_inf) and 0 <= self.sigma0 <= self.sigma_inf):
            raise ValueError(f"need 0 <= sigma0 <= sigma_inf, got {self.sigma0}, {self.sigma_inf}")
        if self.tau <= timedelta(0):
            raise ValueError(f"tau must be positive, got {self.tau}")
        if not 0 <= self.phi < 1:
            raise ValueError(f"phi must be in [0, 1), got {self.phi}")
        if self.factors < 1:
            raise ValueError(f"factors must be at least 1, got {self.factors}")
        if self.phi_news is not None and not 0 <= self.phi_news < 1:
            raise ValueError(f"phi_news must be in [0, 1), got {self.phi_news}")

    @property
    def news_phi(self) -> float:
        """Correlation per 30 minutes of the news about neighbouring target slots (`phi_news`, else `phi`)."""
        return self.phi if self.phi_news is None else self.phi_news

    @property
    def news_sigma(self) -> float:
        """S: std of all the news still to come at infinite lead."""
        return math.sqrt(max(self.sigma_inf**2 - self.sigma0**2, 0.0))

    def scaled(self, factor: float) -> ErrorParams:
        """The same model with every error multiplied by `factor` (>= 0)."""
        if not math.isfinite(factor) or factor < 0:
            raise ValueError(f"error scale must be a finite number >= 0, got {factor}")
        return replace(self, sigma0=self.sigma0 * factor, sigma_inf=self.sigma_inf * factor)

    def _growth(self, lead: timedelta) -> float:
        hours = max(lead.total_seconds(), 0.0) / 3600.0
        return -math.expm1(-hours / (self.tau.total_seconds() / 3600.0))

    def sigma(self, lead: timedelta) -> float:
        """Expected error std at `lead` (fraction of the mean intensity): sqrt(sigma0^2 + S^2 (1 - e^-L/tau))."""
        return math.sqrt(self.sigma0**2 + self.news_sigma**2 * self._growth(lead))

    def phi_over(self, apart: timedelta) -> float:
        """Correlation of the lead-0 errors of two target slots `apart` from each other."""
        return float(self.phi ** (abs(apart.total_seconds()) / HALF_HOUR.total_seconds()))

    def news_phi_over(self, apart: timedelta) -> float:
        """Correlation of the loadings of two target slots `apart` from each other (how alike news moves them)."""
        return float(self.news_phi ** (abs(apart.total_seconds()) / HALF_HOUR.total_seconds()))

    def difference_sigma(self, lead_a: timedelta, lead_b: timedelta) -> float:
        """Expected std of the error of a *difference* between two slots of one forecast (fraction of the
        mean intensity): what a forecast difference must exceed before it means anything.

        Var(e_a - e_b) = sigma(a)^2 + sigma(b)^2 - 2 cov, with cov = phi^|b-a| sigma0^2 +
        phi_news^|b-a| S^2 rho^|b-a| (1 - e^-min/tau) for the two leads' common news (rho^|b-a| = e^-|b-a|/2tau)."""
        near, far = sorted((max(lead_a, timedelta(0)), max(lead_b, timedelta(0))))
        apart = far - near
        rho = math.exp(-apart.total_seconds() / (2.0 * self.tau.total_seconds()))
        common = self.phi_over(apart) * self.sigma0**2 + self.news_phi_over(apart) * (
            self.news_sigma**2 * rho * self._growth(near)
        )
        variance = self.sigma(near) ** 2 + self.sigma(far) ** 2 - 2.0 * common
        return math.sqrt(max(variance, 0.0))


# Fitted by `calibrate` on the bundled GB_2023 forecast-vs-actual file (tests/unit/test_forecast_error.py
# checks that it still gives these numbers); see docs/reproduction.md, "Forecast error model".
GB_2023 = ErrorParams(sigma0=0.09381, sigma_inf=0.3847, tau=timedelta(hours=84.49), phi=0.7354, phi_news=0.9940)


# -- generation --------------------------------------------------------------------------------------------


def ar1(innovations: FloatArray, coefficient: float) -> FloatArray:
    """Stationary unit-variance AR(1) along the last axis: x[0] = w[0], x[n] = c x[n-1] + sqrt(1-c^2) w[n]."""
    if not 0 <= coefficient < 1:
        raise ValueError(f"AR(1) coefficient must be in [0, 1), got {coefficient}")
    out = np.empty_like(innovations)
    if innovations.shape[-1] == 0:
        return out
    scale = math.sqrt(1.0 - coefficient * coefficient)
    flat = innovations.reshape(-1, innovations.shape[-1])
    result = out.reshape(-1, innovations.shape[-1])
    result[:, 0] = flat[:, 0]  # x[0] = w[0]: the stationary start
    n = flat.shape[1]
    if coefficient == 0.0:
        result[:, 1:] = flat[:, 1:]
        return out
    # Blocked scan without matrix products (BLAS threads crawl on a shared machine): within a block,
    # x[k] = c^(k+1) (x[-1] + scale sum_{j<=k} w[j] c^-(j+1)); blocks are short enough that c^-B <= 1e8.
    block = max(1, min(4096, int(math.log(1e-8) / math.log(coefficient))))
    k = np.arange(1, block + 1, dtype=np.float64)
    powers = coefficient**k
    inverse = 1.0 / powers
    carry = result[:, 0].copy()
    for begin in range(1, n, block):
        end = min(begin + block, n)
        size = end - begin
        sums = np.cumsum(flat[:, begin:end] * inverse[:size], axis=1)
        values = powers[:size] * (carry[:, None] + scale * sums)
        result[:, begin:end] = values
        carry = values[:, -1]
    return out


@dataclass(frozen=True, slots=True)
class ErrorField:
    """The random arrays behind one (trace, seed): e0 (n,), H (r, n), G (r, n), per-slot rho and scales."""

    e0: FloatArray
    loadings: FloatArray
    news: FloatArray
    rho: float
    news_scale: float  # S / sqrt(r)

    def errors(self, issue_slot: int, first: int, last: int) -> FloatArray:
        """e(issue_slot, s) for s in [first, last) (fractions of the mean intensity)."""
        n = self.e0.shape[0]
        if last <= first:
            return np.empty(0)
        targets = np.arange(first, last)
        leads = np.maximum(targets - issue_slot, 0)
        at_issue = self.news[:, min(max(issue_slot, 0), n - 1)]
        decay = self.rho**leads
        news = self.news[:, first:last] - at_issue[:, None] * decay[None, :]
        total = np.einsum("ij,ij->j", self.loadings[:, first:last], news)
        return np.asarray(self.e0[first:last] + self.news_scale * total, dtype=np.float64)


def draw_field(params: ErrorParams, length: int, resolution: timedelta, seed: int) -> ErrorField:
    """Draw the model's random arrays for a trace of `length` slots at `resolution` (deterministic per seed)."""
    rng = np.random.default_rng([seed, 0x5EED_F0CA])
    r = params.factors
    step = resolution.total_seconds()
    phi_slot = params.phi ** (step / HALF_HOUR.total_seconds())
    rho = math.exp(-step / (2.0 * params.tau.total_seconds()))
    raw = rng.standard_normal((2 * r + 1, length))
    e0 = ar1(raw[:1], phi_slot)[0] * params.sigma0
    loadings = ar1(raw[1 : r + 1], params.news_phi ** (step / HALF_HOUR.total_seconds()))
    news = ar1(raw[r + 1 :], rho)
    return ErrorField(e0=e0, loadings=loadings, news=news, rho=rho, news_scale=params.news_sigma / math.sqrt(r))


# -- fitting -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShortLeadFit:
    """What one forecast-vs-actual pair of series says about the error at its (single) lead."""

    pairs: int
    mean_g_per_kwh: float  # mean of the actuals over the pairs
    sigma_g_per_kwh: float
    mae_g_per_kwh: float
    bias_g_per_kwh: float  # mean of forecast - actual
    sigma: float  # relative to the mean
    phi: float  # correlation of neighbouring slots' errors, converted to 30 minutes apart
    lag1: float  # the same at the series' own resolution


def _aligned(forecast: IntensitySeries, actual: IntensitySeries) -> tuple[FloatArray, FloatArray]:
    if forecast.resolution != actual.resolution or forecast.start != actual.start or len(forecast) != len(actual):
        raise CalibrationError("forecast and actual must share start, resolution and length")
    return forecast.values, actual.values


def fit_short_lead(forecast: IntensitySeries, actual: IntensitySeries) -> ShortLeadFit:
    """Error size and slot-to-slot correlation of a forecast series against the actuals (pairs where both
    are known; the correlation uses only neighbouring pairs that are both known)."""
    f, a = _aligned(forecast, actual)
    error = f - a
    known = np.isfinite(error)
    pairs = int(np.count_nonzero(known))
    if pairs < 3:
        raise CalibrationError(f"only {pairs} forecast/actual pairs; need at least 3")
    mean = float(np.mean(a[known]))
    sigma_g = float(np.std(error[known]))
    both = known[:-1] & known[1:]
    lag1 = float(np.corrcoef(error[:-1][both], error[1:][both])[0, 1]) if np.count_nonzero(both) > 2 else 0.0
    lag1 = min(max(lag1, 0.0), 0.999999)
    phi = lag1 ** (HALF_HOUR.total_seconds() / forecast.resolution.total_seconds())
    return ShortLeadFit(
        pairs=pairs,
        mean_g_per_kwh=mean,
        sigma_g_per_kwh=sigma_g,
        mae_g_per_kwh=float(np.mean(np.abs(error[known]))),
        bias_g_per_kwh=float(np.mean(error[known])),
        sigma=sigma_g / mean,
        phi=phi,
        lag1=lag1,
    )


def _anomaly(actual: IntensitySeries) -> tuple[FloatArray, float]:
    """The actuals minus their month x slot-of-day means (NaN where unknown), and the mean of the actuals: the
    error of a forecast that knows only the season and the time of day."""
    values = actual.values
    known = np.isfinite(values)
    if np.count_nonzero(known) < 2:
        raise CalibrationError("the actuals hold fewer than two values")
    step = actual.resolution.total_seconds()
    midnight = actual.start.replace(hour=0, minute=0, second=0, microsecond=0)
    offsets = (actual.start - midnight).total_seconds() + step * np.arange(len(actual))
    slot_of_day = np.floor((offsets % 86400.0) / step).astype(np.int64)
    months = np.array([12 * moment.year + moment.month for moment in actual.starts()], dtype=np.int64)
    keys = months * 100_000 + slot_of_day
    groups, inverse = np.unique(keys[known], return_inverse=True)
    sums = np.bincount(inverse, weights=values[known], minlength=len(groups))
    counts = np.bincount(inverse, minlength=len(groups))
    anomaly = np.full(len(values), np.nan)
    anomaly[known] = values[known] - (sums / counts)[inverse]
    return anomaly, float(np.mean(values[known]))


def climatological_sigma(actual: IntensitySeries) -> float:
    """Std of the actuals around their month x slot-of-day means, relative to the mean: the error of a
    forecast that knows only the season and the time of day (the model's infinite-lead error)."""
    anomaly, mean = _anomaly(actual)
    return float(np.nanstd(anomaly) / mean)


def anomaly_autocorrelation(actual: IntensitySeries, span: timedelta = NEWS_FIT_SPAN) -> FloatArray:
    """Correlation of the actuals' anomalies (`_anomaly`) `k` slots apart, for k = 1 .. span / resolution
    (pairs where both are known)."""
    anomaly, _ = _anomaly(actual)
    lags = max(1, int(span / actual.resolution))
    out = np.empty(lags)
    for k in range(1, lags + 1):
        a, b = anomaly[:-k], anomaly[k:]
        both = np.isfinite(a) & np.isfinite(b)
        if np.count_nonzero(both) < 3:
            raise CalibrationError(f"too few anomaly pairs {k} slots apart to measure their correlation")
        x, y = a[both], b[both]
        out[k - 1] = np.corrcoef(x, y)[0, 1] if np.std(x) > 0 and np.std(y) > 0 else np.nan
    return out


def fit_news_phi(
    actual: IntensitySeries,
    sigma0: float,
    phi: float,
    sigma_inf: float,
    tau: timedelta,
    span: timedelta = NEWS_FIT_SPAN,
) -> float:
    """The loadings' correlation per 30 minutes (`ErrorParams.phi_news`) that makes the model's infinite-lead
    error as smooth in target time as the error of the forecast it tends to, the actuals' anomaly around
    their month x time-of-day means: least squares over lags of one slot to `span` between the anomaly's
    autocorrelation and the model's, (sigma0^2 phi^k + S^2 (phi_news rho)^k) / sigma_inf^2."""
    if not (sigma_inf > 0 and math.isfinite(sigma_inf)):
        raise CalibrationError("no error at infinite lead: nothing to correlate")
    measured = anomaly_autocorrelation(actual, span)
    if not np.all(np.isfinite(measured)):
        raise CalibrationError("the actuals' anomaly does not vary: its correlation is undefined")
    k = np.arange(1, len(measured) + 1, dtype=np.float64)
    per_slot = actual.resolution / HALF_HOUR
    rho = math.exp(-actual.resolution.total_seconds() / (2.0 * tau.total_seconds()))
    lead0 = (sigma0 / sigma_inf) ** 2 * (phi**per_slot) ** k
    news_share = 1.0 - (sigma0 / sigma_inf) ** 2
    grid = 1.0 - np.exp(np.linspace(math.log(0.5), math.log(1e-5), 4001))  # 0.5 .. 0.99999 per slot
    model = lead0[None, :] + news_share * (grid[:, None] * rho) ** k[None, :]
    best = float(grid[int(np.argmin(np.sum((model - measured[None, :]) ** 2, axis=1)))])
    return float(best ** (1.0 / per_slot))


def mean_growth(tau: timedelta, span: timedelta) -> float:
    """Mean of 1 - exp(-L/tau) over L uniform in [0, span]."""
    ratio = tau.total_seconds() / span.total_seconds()
    return 1.0 - ratio * -math.expm1(-1.0 / ratio)


def fit_tau(sigma0: float, sigma_inf: float, mean_rms: float, span: timedelta = ANCHOR_SPAN) -> timedelta:
    """The tau for which the error variance averaged over leads 0..span equals mean_rms^2 (bisection on log tau)."""
    news = sigma_inf**2 - sigma0**2
    if news <= 0:
        raise CalibrationError("sigma_inf must exceed sigma0 to fit a growth")
    target = (mean_rms**2 - sigma0**2) / news
    if not 0 < target < 1:
        raise CalibrationError(
            f"an all-leads RMS of {mean_rms:.4f} is outside ({sigma0:.4f}, {sigma_inf:.4f}); no tau fits"
        )
    lo, hi = math.log(60.0), math.log(1e9)  # 1 minute .. ~30 years; mean_growth falls as tau grows
    for _ in range(200):
        mid = (lo + hi) / 2
        if mean_growth(timedelta(seconds=math.exp(mid)), span) > target:
            lo = mid
        else:
            hi = mid
    return timedelta(seconds=math.exp((lo + hi) / 2))


@dataclass(frozen=True, slots=True)
class LeadProfileFit:
    """sigma0, sigma_inf and tau fitted to errors observed at many leads, and the per-lead empirical stds."""

    sigma0: float
    sigma_inf: float
    tau: timedelta
    leads: tuple[timedelta, ...]
    empirical_sigma: tuple[float, ...]


def fit_lead_profile(leads: FloatArray, errors: FloatArray) -> LeadProfileFit:
    """Fit sigma(L)^2 = sigma0^2 + S^2 (1 - exp(-L/tau)) to relative errors observed at leads (seconds):
    the per-lead variance (mean square) is fitted by weighted least squares, linear in (sigma0^2, S^2)
    for each tau of a log grid, then refined around the best grid point."""
    leads = np.asarray(leads, dtype=np.float64)
    errors = np.asarray(errors, dtype=np.float64)
    known = np.isfinite(errors) & np.isfinite(leads)
    unique, inverse = np.unique(leads[known], return_inverse=True)
    if len(unique) < 3:
        raise CalibrationError("need errors at three leads or more")
    counts = np.bincount(inverse).astype(np.float64)
    variance = np.bincount(inverse, weights=errors[known] ** 2) / counts
    weights = np.sqrt(counts)

    def solve(tau_s: float) -> tuple[float, float, float]:
        growth = -np.expm1(-unique / tau_s)
        design = np.stack([np.ones_like(growth), growth], axis=1) * weights[:, None]
        coef, *_ = np.linalg.lstsq(design, variance * weights, rcond=None)
        a, b = max(float(coef[0]), 0.0), max(float(coef[1]), 0.0)
        residual = float(np.sum((design @ np.array([a, b]) - variance * weights) ** 2))
        return residual, a, b

    grid = np.exp(np.linspace(math.log(600.0), math.log(3.6e7), 400))
    scores = [solve(t)[0] for t in grid]
    best = int(np.argmin(scores))
    fine = np.exp(np.linspace(math.log(grid[max(best - 1, 0)]), math.log(grid[min(best + 1, len(grid) - 1)]), 200))
    tau_s = float(min(fine, key=lambda t: solve(float(t))[0]))
    _, a, b = solve(tau_s)
    return LeadProfileFit(
        sigma0=math.sqrt(a),
        sigma_inf=math.sqrt(a + b),
        tau=timedelta(seconds=tau_s),
        leads=tuple(timedelta(seconds=float(x)) for x in unique),
        empirical_sigma=tuple(float(x) for x in np.sqrt(variance)),
    )


@dataclass(frozen=True, slots=True)
class Calibration:
    """The fit on a forecast-vs-actual file, step by step (see the module docstring)."""

    short_lead: ShortLeadFit
    sigma_inf: float
    anchor_rms: float  # all-leads RMS error, relative to the mean of the actuals
    params: ErrorParams


def calibrate(
    forecast: IntensitySeries,
    actual: IntensitySeries,
    *,
    all_leads_rms_g_per_kwh: float = NESO_ALL_LEADS_RMS_G_PER_KWH,
    span: timedelta = ANCHOR_SPAN,
    factors: int = 16,
) -> Calibration:
    """Calibrate the model: sigma0 and phi from the recorded (short-lead) forecast, sigma_inf from the
    actuals' spread around their month x time-of-day means, tau from the all-leads RMS anchor, phi_news from
    that spread's autocorrelation (`fit_news_phi`)."""
    short = fit_short_lead(forecast, actual)
    sigma_inf = climatological_sigma(actual)
    anchor = all_leads_rms_g_per_kwh / short.mean_g_per_kwh
    tau = fit_tau(short.sigma, sigma_inf, anchor, span)
    phi_news = fit_news_phi(actual, short.sigma, short.phi, sigma_inf, tau)
    params = ErrorParams(
        sigma0=short.sigma, sigma_inf=sigma_inf, tau=tau, phi=short.phi, factors=factors, phi_news=phi_news
    )
    return Calibration(short_lead=short, sigma_inf=sigma_inf, anchor_rms=anchor, params=params)
