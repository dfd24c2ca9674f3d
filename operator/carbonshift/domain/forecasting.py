"""Forecast models: what a scheduler would have been told about the future of a measured trace.

This module owns the declared error models that turn actuals into forecasts, so that simulated savings are
honest (a simulator must never plan on the actuals without saying so). Every model is pure and seeded.

Models (spec strings for `parse_forecast_model`):

* ``oracle`` - the actuals themselves: perfect information. Its name says "oracle" and `is_oracle` is True
  so that reports can flag results that used it.
* ``gaussian:E`` - the actuals plus independent Gaussian noise per slot with sigma = E x the mean of the
  whole trace (E as a fraction, ``gaussian:0.05``, or a percentage, ``gaussian:5%``). As in Wiesner et al.,
  "Let's Wait Awhile" (Middleware '21): ONE noisy series per seed, drawn once for the whole trace, so
  forecasts issued at different times see the same error for the same slot. The noise is not clipped, so
  with large E on a low-carbon grid a forecast value can be negative (the paper does the same).
* ``realistic`` (the simulator's default) - an error that grows with lead time, is correlated between
  neighbouring slots and is issued afresh at every issue slot, consistent with the previous issue (the
  forecast issued one slot later differs by a small update, not a fresh draw): see
  `carbonshift.domain.forecast_error` for the model and its calibration on NESO's GB 2023 forecasts
  (error std 9.4% of the mean intensity at lead 0, 21% at 24 h, 26% at 48 h), carried to other zones by
  keeping its skill against the zone's climatology (`RealisticForecast.params_for`: every sigma x the
  trace's climatological spread over GB 2023's). ``realistic:K`` scales every error by K (``realistic:2``
  is twice as bad). `expected_error(lead)` says how large the error is on GB.
* ``persistence`` - each slot is forecast as the value of the same slot one day earlier; for slots more
  than one day ahead it steps back whole days until it reaches a slot that ended before the issue slot.
  It never reads the slot containing the issue time or anything after it.
* ``file:LOCATION`` - a recorded forecast (e.g. NESO's GB file), aligned to the actuals' grid. Reading
  the file is I/O, so the caller injects the reader (`carbonshift.data.load_forecast_model` does).

``gaussian:E`` is the model of Wiesner et al. (kept to reproduce the paper); ``realistic`` is the one that
behaves like a forecast when the simulator re-plans.

`forecast(actual, issued_at, horizon)` returns the slots from the one containing `issued_at` to
`issued_at + horizon` (clipped to the trace), kind=forecast, with `issued_at` set and the model in
`labels["forecast_model"]`. For speed, `noisy_view(actual)` gives the whole forecast array at once,
computed once per actual series and cached (read-only). It is exactly what `forecast` slices for oracle,
gaussian and file models (their error does not depend on the issue time); for persistence it is the
one-day shift, which equals `forecast` for slots less than one day after the issue slot
(`exact_view_horizon`); for realistic it is the lead-0 forecast of every slot (the forecast for the slot
in progress), which equals `forecast` for the issue slot only (`exact_view_horizon` = 0).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

import numpy as np

from carbonshift.domain.forecast_error import (
    GB_2023,
    CalibrationError,
    ErrorField,
    ErrorParams,
    climatological_sigma,
    draw_field,
    fit_news_phi,
)
from carbonshift.domain.series import (
    FloatArray,
    IntensitySeries,
    Kind,
    SeriesError,
    require_utc,
)

ONE_DAY = timedelta(days=1)
_VIEW_CACHE_SIZE = 16


class ForecastSpecError(ValueError):
    """A forecast model spec string that cannot be understood."""


class ForecastError(ValueError):
    """A forecast that cannot be made honestly (bad horizon, wrong zone or signal, incompatible grid)."""


@runtime_checkable
class ForecastModel(Protocol):
    """Anything that can forecast a measured trace from a given issue time."""

    @property
    def name(self) -> str:
        """Label for reports, e.g. "gaussian:0.05 (paper's model) seed=0" or 'oracle (perfect information)'."""
        ...

    @property
    def is_oracle(self) -> bool:
        """True when the forecast is the actuals (results must be flagged as perfect information)."""
        ...

    @property
    def exact_view_horizon(self) -> timedelta | None:
        """Horizon up to which `noisy_view` equals `forecast` (None: any horizon)."""
        ...

    def forecast(self, actual: IntensitySeries, issued_at: datetime, horizon: timedelta) -> IntensitySeries:
        """The forecast issued at `issued_at` (aware datetime) for the next `horizon`."""
        ...

    def noisy_view(self, actual: IntensitySeries) -> FloatArray:
        """The whole forecast array on `actual`'s grid (read-only, cached)."""
        ...


class _ViewCache:
    """Views keyed by the identity of the actual series (held, so the id cannot be reused)."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple[IntensitySeries, FloatArray]] = {}

    def get(self, actual: IntensitySeries, compute: Callable[[IntensitySeries], FloatArray]) -> FloatArray:
        entry = self._entries.get(id(actual))
        if entry is not None and entry[0] is actual:
            return entry[1]
        view = np.array(compute(actual), dtype=np.float64)
        if view.shape != actual.values.shape:
            raise ForecastError(f"forecast view has shape {view.shape}, actuals {actual.values.shape}")
        view.flags.writeable = False
        if len(self._entries) >= _VIEW_CACHE_SIZE:
            self._entries.pop(next(iter(self._entries)))
        self._entries[id(actual)] = (actual, view)
        return view


def _slot_range(actual: IntensitySeries, issued_at: datetime, horizon: timedelta) -> tuple[int, int, int]:
    """(issue slot index, first, last) of the forecast slots, first/last clipped to the series."""
    if not isinstance(horizon, timedelta) or horizon <= timedelta(0):
        raise ForecastError(f"forecast horizon must be a positive duration, got {horizon!r}")
    if not isinstance(issued_at, datetime):
        raise ForecastError(f"issued_at must be a datetime, got {issued_at!r}")
    issued = require_utc(issued_at, "forecast issue time")
    issue_slot = actual.index_of(issued)
    last = actual.index_of(issued + horizon - timedelta(microseconds=1)) + 1
    first = min(max(issue_slot, 0), len(actual))
    last = min(max(last, first), len(actual))
    return issue_slot, first, last


class _ViewModel:
    """Shared machinery: models whose forecast is a slice of one precomputed array."""

    def __init__(self, name: str, is_oracle: bool) -> None:
        self._name = name
        self._is_oracle = is_oracle
        self._cache = _ViewCache()

    @property
    def name(self) -> str:
        return self._name

    @property
    def is_oracle(self) -> bool:
        return self._is_oracle

    @property
    def exact_view_horizon(self) -> timedelta | None:
        return None

    def __repr__(self) -> str:
        return f"<forecast model {self._name}>"

    def _compute_view(self, actual: IntensitySeries) -> FloatArray:
        raise NotImplementedError

    def noisy_view(self, actual: IntensitySeries) -> FloatArray:
        return self._cache.get(actual, self._compute_view)

    def _values(self, actual: IntensitySeries, issue_slot: int, first: int, last: int) -> FloatArray:
        return self.noisy_view(actual)[first:last]

    def forecast(self, actual: IntensitySeries, issued_at: datetime, horizon: timedelta) -> IntensitySeries:
        issue_slot, first, last = _slot_range(actual, issued_at, horizon)
        return IntensitySeries(
            zone=actual.zone,
            start=actual.slot_start(first),
            resolution=actual.resolution,
            values=self._values(actual, issue_slot, first, last),
            signal=actual.signal,
            kind=Kind.FORECAST,
            provider=actual.provider,
            issued_at=issued_at,
            labels={**actual.labels, "forecast_model": self._name, "oracle": str(self._is_oracle).lower()},
        )


class OracleForecast(_ViewModel):
    """Perfect information: the forecast is the actuals. Flagged as oracle in its name and labels."""

    def __init__(self) -> None:
        super().__init__("oracle (perfect information)", is_oracle=True)

    def _compute_view(self, actual: IntensitySeries) -> FloatArray:
        return actual.values


class GaussianForecast(_ViewModel):
    """Actuals + N(0, (error_ratio x trace mean)^2) per slot; one fixed noise draw per seed and trace."""

    def __init__(self, error_ratio: float, seed: int = 0) -> None:
        if not math.isfinite(error_ratio) or error_ratio < 0:
            raise ForecastSpecError(f"gaussian error ratio must be a finite number >= 0, got {error_ratio}")
        super().__init__(f"gaussian:{error_ratio:g} (paper's model) seed={seed}", is_oracle=False)
        self.error_ratio = error_ratio
        self.seed = seed

    def sigma_g_per_kwh(self, actual: IntensitySeries) -> float:
        """Standard deviation of the noise for this trace: error_ratio x mean of the whole trace."""
        return self.error_ratio * actual.mean()

    def _compute_view(self, actual: IntensitySeries) -> FloatArray:
        if len(actual) == 0:
            return actual.values
        sigma = self.sigma_g_per_kwh(actual)
        if not math.isfinite(sigma):
            raise ForecastError(f"trace for zone {actual.zone} has no values to take a mean of")
        noise = np.random.default_rng(self.seed).normal(0.0, sigma, size=len(actual))
        return actual.values + noise


def _slots_per_day(actual: IntensitySeries) -> int:
    ratio = ONE_DAY / actual.resolution
    per_day = round(ratio)
    if per_day < 1 or not math.isclose(ratio, per_day):
        raise ForecastError(f"persistence needs a resolution that divides one day, got {actual.resolution}")
    return per_day


class PersistenceForecast(_ViewModel):
    """Yesterday's value for the same slot; never reads the issue slot or anything after it."""

    def __init__(self) -> None:
        super().__init__("persistence (same slot one day earlier)", is_oracle=False)

    @property
    def exact_view_horizon(self) -> timedelta | None:
        return ONE_DAY

    def _compute_view(self, actual: IntensitySeries) -> FloatArray:
        per_day = _slots_per_day(actual)
        view = np.full(len(actual), np.nan)
        if len(actual) > per_day:
            view[per_day:] = actual.values[:-per_day]
        return view

    def _values(self, actual: IntensitySeries, issue_slot: int, first: int, last: int) -> FloatArray:
        per_day = _slots_per_day(actual)
        targets = np.arange(first, last)
        days_back = (targets - issue_slot) // per_day + 1
        sources = targets - days_back * per_day  # always < issue_slot
        usable = (sources >= 0) & (sources < len(actual))
        values = np.full(targets.shape, np.nan)
        values[usable] = actual.values[sources[usable]]
        values.flags.writeable = False
        return values


class RecordedForecast(_ViewModel):
    """A forecast recorded from a real provider (e.g. NESO's GB file), placed on the actuals' grid."""

    def __init__(self, recorded: IntensitySeries, location: str) -> None:
        super().__init__(f"recorded:{location}", is_oracle=False)
        self.recorded = recorded

    def _compute_view(self, actual: IntensitySeries) -> FloatArray:
        recorded = self.recorded
        if recorded.zone != actual.zone:
            raise ForecastError(f"{self.name} is a forecast for zone {recorded.zone}, not {actual.zone}")
        actual.compatible_with(recorded)
        try:
            recorded = recorded.resample(actual.resolution)
        except SeriesError as exc:
            raise ForecastError(f"{self.name}: {exc}") from None
        offset_slots = (recorded.start - actual.start) / actual.resolution
        offset = round(offset_slots)
        if not math.isclose(offset_slots, offset, abs_tol=1e-9):
            raise ForecastError(f"{self.name} starts at {recorded.start}, off the actuals' slot grid")
        view = np.full(len(actual), np.nan)
        lo, hi = max(offset, 0), min(offset + len(recorded), len(actual))
        if hi > lo:
            view[lo:hi] = recorded.values[lo - offset : hi - offset]
        return view


CLIMATOLOGY_SPAN = timedelta(days=28)  # the shortest trace whose climatological spread scales the realistic model


class RealisticForecast(_ViewModel):
    """Errors that grow with lead time and move a little at each new issue (see forecast_error).

    The forecast issued at slot t for slot s is ``actual[s] + m x e(t, s)`` clipped at 0, with m the trace's
    mean intensity and e drawn once per (trace, seed) as a few arrays; a forecast costs O(factors x horizon)
    and the last issues are cached, so re-planning every 5 minutes (many calls per issue slot) is cheap.
    Deterministic for a given seed, trace and issue time, whatever the order of the calls."""

    _ISSUE_CACHE_SIZE = 4096

    def __init__(
        self, params: ErrorParams = GB_2023, seed: int = 0, *, scale: float = 1.0, per_zone: bool = True
    ) -> None:
        fit = "NESO GB 2023 fit" if params == GB_2023 else "custom fit"
        if per_zone:
            fit += ", scaled to the zone's climatology"
        label = f"realistic ({fit})" if scale == 1.0 else f"realistic:{scale:g} ({fit} x{scale:g})"
        self.fit_sigma_inf = params.sigma_inf  # the climatological error of the zone the fit was made on
        params = params.scaled(scale) if scale != 1.0 else params
        super().__init__(f"{label} seed={seed}", is_oracle=False)
        self.params = params
        self.seed = seed
        self.per_zone = per_zone
        self._fields: dict[int, tuple[IntensitySeries, ErrorField, float]] = {}
        self._issues: dict[tuple[int, int], tuple[int, FloatArray]] = {}
        self._zone_params: dict[int, tuple[IntensitySeries, ErrorParams]] = {}

    def params_for(self, actual: IntensitySeries) -> ErrorParams:
        """The error parameters for this trace (fractions of its mean intensity).

        Per zone (the default), the fit keeps its skill against climatology: every sigma is multiplied by the
        trace's climatological error (`climatological_sigma`, the spread of the actuals around their month x
        time-of-day means) over the fitted zone's. On GB 2023 that is 1; on PJM 2022, whose intensity moves
        6 times less around its daily shape than GB's, 0.16. Without it, a forecast for PJM would err 6 times
        more than the time-of-day average at long leads: no provider would publish one. `per_zone=False` keeps
        the GB fractions for every zone (the model before this scaling), as does a trace shorter than
        `CLIMATOLOGY_SPAN` (too few days per month and time of day to measure a spread)."""
        if not self.per_zone or self.fit_sigma_inf <= 0 or len(actual) * actual.resolution < CLIMATOLOGY_SPAN:
            return self.params
        entry = self._zone_params.get(id(actual))
        if entry is not None and entry[0] is actual:
            return entry[1]
        try:
            spread = climatological_sigma(actual)
        except CalibrationError:
            return self.params
        params = self.params.scaled(spread / self.fit_sigma_inf) if math.isfinite(spread) else self.params
        fit = self.params
        with contextlib.suppress(CalibrationError):  # the zone's own smoothness of the news (the fit's is GB's)
            params = replace(params, phi_news=fit_news_phi(actual, fit.sigma0, fit.phi, fit.sigma_inf, fit.tau))
        if len(self._zone_params) >= _VIEW_CACHE_SIZE:
            self._zone_params.pop(next(iter(self._zone_params)))
        self._zone_params[id(actual)] = (actual, params)
        return params

    @property
    def exact_view_horizon(self) -> timedelta | None:
        return timedelta(0)

    def expected_error(self, lead: timedelta) -> float:
        """Expected std of the forecast error at `lead` after the issue time, as a fraction of the trace's
        mean intensity (0.094 at lead 0, 0.21 at 24 h, 0.26 at 48 h for the GB 2023 fit).

        Multiply by a mean intensity for g/kWh (`expected_error_g_per_kwh`). For the error of a
        *difference* between two slots of one forecast (the quantity to beat before acting on it), use
        `self.params.difference_sigma(lead_a, lead_b)`: neighbouring slots err together, so it is smaller
        than either slot's error when they are close and tends to sqrt(2) x sigma when they are far apart."""
        return self.params.sigma(lead)

    def expected_error_g_per_kwh(self, actual: IntensitySeries, lead: timedelta) -> float:
        """The expected error std at `lead` in gCO2e/kWh for this trace (its `params_for` x its mean intensity)."""
        return self.params_for(actual).sigma(lead) * actual.mean()

    def _field(self, actual: IntensitySeries) -> tuple[ErrorField, float]:
        entry = self._fields.get(id(actual))
        if entry is not None and entry[0] is actual:
            return entry[1], entry[2]
        mean = actual.mean() if len(actual) else 0.0
        if len(actual) and not math.isfinite(mean):
            raise ForecastError(f"trace for zone {actual.zone} has no values to take a mean of")
        error_field = draw_field(self.params_for(actual), len(actual), actual.resolution, self.seed)
        if len(self._fields) >= _VIEW_CACHE_SIZE:
            stale = next(iter(self._fields))
            self._fields.pop(stale)
            self._issues = {k: v for k, v in self._issues.items() if k[0] != stale}
        self._fields[id(actual)] = (actual, error_field, mean)
        return error_field, mean

    def _compute_view(self, actual: IntensitySeries) -> FloatArray:
        error_field, mean = self._field(actual)
        return np.maximum(actual.values + mean * error_field.e0, 0.0)

    def _values(self, actual: IntensitySeries, issue_slot: int, first: int, last: int) -> FloatArray:
        # One entry per issue slot, grown to the longest horizon asked so far; shorter asks are slices of it
        # (jobs with different deadlines re-planned at the same tick share one forecast).
        key = (id(actual), issue_slot)
        cached = self._issues.get(key)
        if cached is not None and self._fields.get(id(actual), (None,))[0] is actual:
            cached_first, values = cached
            if cached_first == first and last - first <= len(values):
                return values[: last - first]
        error_field, mean = self._field(actual)
        upto = max(last, first + len(cached[1])) if cached is not None and cached[0] == first else last
        values = np.maximum(actual.values[first:upto] + mean * error_field.errors(issue_slot, first, upto), 0.0)
        values.flags.writeable = False
        if key not in self._issues and len(self._issues) >= self._ISSUE_CACHE_SIZE:
            self._issues.pop(next(iter(self._issues)))
        self._issues[key] = (first, values)
        return values[: last - first]


SPEC_FORMS = (
    "realistic, realistic:K (K x the fitted error), persistence, file:PATH, oracle, "
    "gaussian:E (the paper's model, e.g. gaussian:0.05 or gaussian:5%)"
)


def _parse_ratio(text: str, spec: str) -> float:
    raw = text.strip()
    try:
        ratio = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ForecastSpecError(f"forecast model {spec!r}: {text!r} is not a number (forms: {SPEC_FORMS})") from None
    if not math.isfinite(ratio) or ratio < 0:
        raise ForecastSpecError(f"forecast model {spec!r}: the error must be a finite number >= 0")
    return ratio


def parse_forecast_model(
    spec: str,
    seed: int = 0,
    *,
    read_recorded: Callable[[str], IntensitySeries] | None = None,
) -> ForecastModel:
    """Build a model from its spec string (see the module docstring for the forms).

    `file:` specs need `read_recorded(location) -> IntensitySeries` (a forecast series); the domain layer
    does no I/O, so use carbonshift.data.load_forecast_model for the ready-wired version.
    """
    text = spec.strip()
    kind, sep, argument = text.partition(":")
    kind = kind.strip().lower()
    if kind in {"oracle", "perfect"} and not sep:
        return OracleForecast()
    if kind == "persistence" and not sep:
        return PersistenceForecast()
    if kind == "realistic":
        if not sep:
            return RealisticForecast(seed=seed)
        raw = argument.strip().lower().removesuffix("x")
        try:
            scale = float(raw)
        except ValueError:
            raise ForecastSpecError(
                f"forecast model {spec!r}: {argument!r} is not a scale factor (e.g. realistic:2)"
            ) from None
        if not math.isfinite(scale) or scale < 0:
            raise ForecastSpecError(f"forecast model {spec!r}: the scale factor must be a finite number >= 0")
        return RealisticForecast(seed=seed, scale=scale)
    if kind == "gaussian":
        if not sep or not argument.strip():
            raise ForecastSpecError(f"forecast model {spec!r}: gaussian needs an error, e.g. gaussian:0.05")
        return GaussianForecast(_parse_ratio(argument, spec), seed=seed)
    if kind == "file":
        location = argument.strip()
        if not location:
            raise ForecastSpecError(f"forecast model {spec!r}: file needs a location, e.g. file:GB_2023")
        if read_recorded is None:
            raise ForecastSpecError(
                f"forecast model {spec!r} reads a file; call carbonshift.data.load_forecast_model or pass read_recorded"
            )
        recorded = read_recorded(location)
        if recorded.kind != Kind.FORECAST:
            raise ForecastSpecError(f"forecast model {spec!r}: {location} holds actuals, not a forecast")
        return RecordedForecast(recorded, location)
    raise ForecastSpecError(f"unknown forecast model {spec!r}; expected one of: {SPEC_FORMS}")


def expected_error(model: ForecastModel, lead: timedelta) -> float | None:
    """The model's expected error std at `lead`, as a fraction of the trace's mean intensity, when it
    declares one (`realistic`: the fitted curve; `oracle`: 0); None when it does not (persistence,
    recorded files, gaussian: their error is not modelled per lead)."""
    if model.is_oracle:
        return 0.0
    declared = getattr(model, "expected_error", None)
    if callable(declared):
        return float(declared(lead))
    return None
