"""How far the operator trusts a zone's forecast: the error inputs of the decision core's do no harm gate.

The core (carbonshift.domain.core) defers or suspends a job only for a forecast gain above the forecast's
expected error (`Snapshot.forecast_error_g_per_kwh`, `forecast_error_for`, `slot_error_g_per_kwh`). The closed-loop
simulator fills them from the model it replays; this module gives the operator the same kind of inputs from what
it has at `now` (the forecast it was served, the zone's measured history, and, for a trace replay, the model that
made the forecast), so that both run the same gate:

* ``oracle`` - a forecast labelled oracle (a trace replayed with `--forecast oracle`): the actuals, error 0.
* ``declared`` - a forecast from a model that declares its error (``realistic``: `ErrorParams`, sigmas as fractions
  of the trace's mean intensity): that model's own error, computed as the simulator sees it.
* ``prior`` - any other forecast (Electricity Maps, WattTime, Carbon Aware SDK, the GB API, persistence, recorded
  files): its error is not known, so the operator assumes the NESO GB 2023 fit (`GB_2023`, the realistic model's
  default) relative to the zone's recent mean intensity. A deferral must then gain more than a forecast as good
  as NESO's national forecast could be wrong by before the operator acts on it.
* ``measured`` - once the operator has kept a week of a zone's day-ahead forecasts (`ForecastRecord`: the forecast
  it was given first each UTC day, for that day, as the simulator's `ErrorEstimate` views a model that issues no
  view) and the actuals of those days, their measured error replaces the prior: the same mean absolute error of a
  run's mean forecast error that `ErrorEstimate` measures, over the week before `now`.

For prior and measured trust the record also gives the core's skill gate (`Snapshot.forecast_skill`, via
`shown_skill`): it keeps the whole forecast first seen at or after each 6-hour issue boundary and backtests them as
the simulator's `SkillEstimate` does (carbonshift.domain.forecast_skill).

The numbers are the simulator's (carbonshift.simulate.closed_loop), in closed form from the parameters:

* run error (`run_error`): what `ErrorEstimate` measures on a realistic forecast, the mean absolute error of the
  forecast averaged over a run of `length` (capped at a week, as there). The forecast error at lead 0 is AR(1)
  with std `sigma0` and correlation `phi` per 30 minutes, so the run mean's std is sigma0 x sqrt(S / n^2), with
  S = sum over the n x n slot pairs of c^|i-j| (c the correlation of neighbouring slots), and its mean absolute
  value sqrt(2/pi) times that;
* slot error (`slot_error`): what `_slot_error` takes for an extra chunk, the std of the difference between two
  slots 6 h apart at the middle of the job's window (`ErrorParams.difference_sigma`), which grows with lead time.

Pure: no I/O, no clock (`now` is passed in).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import numpy as np

from carbonshift.domain import forecast_skill
from carbonshift.domain.forecast_error import GB_2023, ErrorParams
from carbonshift.domain.series import FloatArray, IntensitySeries

WEEK = timedelta(days=7)
DIFFERENCE_APART = timedelta(hours=6)  # the simulator's `closed_loop.DIFFERENCE_APART`
PRIOR = GB_2023  # the NESO GB 2023 fit: the error assumed for a forecast that declares none
_ABS_OF_NORMAL = math.sqrt(2.0 / math.pi)  # E|X| / std for a normal X


class TrustSource(StrEnum):
    ORACLE = "oracle"  # the actuals: error 0
    DECLARED = "declared"  # the forecast model declares its error (realistic)
    PRIOR = "prior"  # unknown error: the NESO fit x the zone's recent mean
    MEASURED = "measured"  # the zone's recorded day-ahead forecasts of the past week, scored on the actuals
    NONE = "none"  # no forecast, or no intensity to scale an error by: nothing to gate (the core runs at once)


@dataclass(frozen=True, slots=True)
class ErrorInputs:
    """The do no harm inputs of one job's `Snapshot` (see carbonshift.domain.core.Snapshot)."""

    forecast_error_g_per_kwh: float
    forecast_error_for: Callable[[timedelta], float] | None
    slot_error_g_per_kwh: float


@dataclass(frozen=True, slots=True)
class ForecastTrust:
    """A zone's forecast error model at one moment: `params` (fractions of the mean) x `mean_g_per_kwh`, on the
    forecast's slot length `step`."""

    source: TrustSource
    params: ErrorParams
    mean_g_per_kwh: float
    step: timedelta = timedelta(minutes=30)
    # MEASURED: forecast minus actual (g/kWh) per slot of the week before, NaN where either is missing.
    errors: FloatArray | None = field(default=None, compare=False)

    @property
    def trusted(self) -> bool:
        """Whether the gate sees no error at all (the oracle, or nothing to scale by)."""
        return self.source in (TrustSource.ORACLE, TrustSource.NONE)

    def run_error(self, length: timedelta) -> float:
        """Expected absolute error (g/kWh) of the forecast averaged over a run of `length`."""
        if self.trusted:
            return 0.0
        step_s = max(self.step.total_seconds(), 1.0)
        if self.source is TrustSource.MEASURED and self.errors is not None:
            return _measured_run_error(self.errors, round(length.total_seconds() / step_s))
        n = max(1, min(round(length.total_seconds() / step_s), round(WEEK.total_seconds() / step_s)))
        c = self.params.phi_over(self.step)
        # sum over i, j < n of c^|i-j| (n when c = 0)
        pairs = n * (1.0 + c) / (1.0 - c) - 2.0 * c * (1.0 - c**n) / (1.0 - c) ** 2
        std = self.params.sigma0 * math.sqrt(max(pairs, 0.0)) / n
        return _ABS_OF_NORMAL * std * self.mean_g_per_kwh

    def slot_error(self, lead: timedelta) -> float:
        """Expected error std (g/kWh) of the difference between two slots `DIFFERENCE_APART` apart from `lead` on."""
        if self.trusted:
            return 0.0
        if self.source is TrustSource.MEASURED:  # the simulator's `_slot_error` for a model without declared error
            return self.run_error(self.step)
        lead = max(lead, timedelta(0))
        return self.params.difference_sigma(lead, lead + DIFFERENCE_APART) * self.mean_g_per_kwh

    def inputs(self, now: datetime, duration: timedelta, deadline: datetime) -> ErrorInputs:
        """The Snapshot fields for a job of `duration` due by `deadline`, as the simulator fills them."""
        if self.trusted:
            return ErrorInputs(0.0, None, 0.0)
        return ErrorInputs(
            forecast_error_g_per_kwh=self.run_error(duration),
            forecast_error_for=self.run_error,
            slot_error_g_per_kwh=self.slot_error(max(deadline - now, timedelta(0)) / 2),
        )


def is_oracle(forecast: IntensitySeries) -> bool:
    """Whether the series is labelled as the actuals (a trace replayed with the oracle model)."""
    return str(forecast.labels.get("oracle", "")).lower() == "true"


def recent_mean(history: IntensitySeries | None, now: datetime, span: timedelta = WEEK) -> float | None:
    """The mean measured intensity over the `span` before `now` (None: no finite, positive value)."""
    if history is None or len(history) == 0:
        return None
    lo = max(history.index_of(now - span), 0)
    hi = min(max(history.index_of(now) + 1, 0), len(history))
    window = np.asarray(history.values[lo:hi], dtype=np.float64)
    window = window[np.isfinite(window)]
    if window.size == 0:
        return None
    mean = float(window.mean())
    return mean if mean > 0 else None


def trust_for(
    forecast: IntensitySeries | None,
    now: datetime,
    *,
    history: IntensitySeries | None = None,
    declared: ErrorParams | None = None,
    declared_mean: float | None = None,
    record: ForecastRecord | None = None,
) -> ForecastTrust:
    """How far to trust `forecast` (issued at `now`).

    `declared`/`declared_mean`: the error parameters of the model that made the forecast and the mean intensity
    its errors are relative to (a realistic trace replay: the trace's mean), when it declares them. Otherwise the
    prior: the NESO fit x the mean of `history` over the week before `now` (the zone's measured intensity), or,
    without history, the forecast's own mean. `record`: the zone's recorded forecasts; once they cover a week
    their measured error replaces the prior."""
    if forecast is None or len(forecast) == 0:
        return ForecastTrust(TrustSource.NONE, PRIOR, 0.0)
    step = forecast.resolution
    if is_oracle(forecast):
        return ForecastTrust(TrustSource.ORACLE, PRIOR, 0.0, step)
    if declared is not None and declared_mean is not None and math.isfinite(declared_mean) and declared_mean > 0:
        return ForecastTrust(TrustSource.DECLARED, declared, float(declared_mean), step)
    if record is not None:
        errors = record.errors(now, forecast)
        if errors is not None:
            errors.flags.writeable = False
            return ForecastTrust(TrustSource.MEASURED, PRIOR, 0.0, step, errors)
    mean = recent_mean(history, now)
    if mean is None:
        values = np.asarray(forecast.values, dtype=np.float64)
        values = values[np.isfinite(values)]
        mean = float(values.mean()) if values.size else None
    if mean is None or not mean > 0:
        return ForecastTrust(TrustSource.NONE, PRIOR, 0.0, step)
    return ForecastTrust(TrustSource.PRIOR, PRIOR, mean, step)


def combined(trusts: list[ForecastTrust], now: datetime, duration: timedelta, deadline: datetime) -> ErrorInputs:
    """One job's inputs when it may run in several zones: the largest error of each kind (the gate is then right
    whichever zone the plan picks)."""
    inputs = [t.inputs(now, duration, deadline) for t in trusts if not t.trusted]
    if not inputs:
        return ErrorInputs(0.0, None, 0.0)
    if len(inputs) == 1:
        return inputs[0]
    errors = [t.run_error for t in trusts if not t.trusted]
    return ErrorInputs(
        forecast_error_g_per_kwh=max(i.forecast_error_g_per_kwh for i in inputs),
        forecast_error_for=lambda length: max(e(length) for e in errors),
        slot_error_g_per_kwh=max(i.slot_error_g_per_kwh for i in inputs),
    )


def shown_skill(
    trusts: Mapping[str, ForecastTrust],
    records: Mapping[str, ForecastRecord],
    now: datetime,
    length: timedelta,
    window: timedelta,
    interruptible: bool,
) -> float | None:
    """`Snapshot.forecast_skill` for a job of `length` due in `window` that may run in the zones of `trusts`, as
    the simulator sets it: measured only where the forecast declares no error (trust prior or measured; the
    oracle and a realistic replay are not skill-gated), the least skill any such zone's record shows (the gate is
    then right whichever zone the plan picks). None while no zone's record has enough issues scored."""
    skills = []
    for zone, trust in trusts.items():
        record = records.get(zone)
        if record is not None and trust.source in (TrustSource.PRIOR, TrustSource.MEASURED):
            skill = record.skill(now, length, window, interruptible)
            if skill is not None:
                skills.append(skill)
    return min(skills, default=None)


def _measured_run_error(diff: FloatArray, span: int) -> float:
    """`ErrorEstimate.at` on recorded errors: the mean absolute value of the mean error over runs of `span` slots."""
    n = diff.shape[0]
    span = max(1, min(span, n))
    cumulative = np.concatenate(([0.0], np.cumsum(np.nan_to_num(diff, nan=0.0))))
    counts = np.concatenate(([0], np.cumsum(~np.isnan(diff))))
    sums = cumulative[span:] - cumulative[:-span]
    have = counts[span:] - counts[:-span]
    valid = have > 0
    if not valid.any():
        return 0.0
    return float(np.mean(np.abs(sums[valid] / have[valid])))


class ForecastRecord:
    """A zone's forecasts as the operator was given them, and the actuals, with bounded memory.

    * Day-ahead (for the measured error, `errors`): the forecast recorded for a UTC day is the first one the
      operator saw that day, for the rest of that day (as the simulator's `ErrorEstimate` views a model that issues
      no whole view: its forecasts issued at each midnight for the day ahead); one value per slot, kept `keep`.
    * Issued (for the shown skill, `skill`): at each 6-hour issue boundary (`forecast_skill.STRIDE`, on the UTC
      clock), the first forecast seen at or after it, from the slot holding the moment it was seen, up to
      `horizon` of values: the forecasts the simulator's `SkillEstimate` backtests. Kept for the backtest's span
      (`forecast_skill.HISTORY`, three weeks), a horizon and a stride (the oldest issue its backtest of the longest
      window reads): at most 97 issues of 72 h.
    * Actuals come from the histories the operator reads; kept as long as either needs them."""

    def __init__(
        self, keep: timedelta = WEEK + timedelta(days=1), need: float = 0.95, horizon: timedelta = timedelta(hours=72)
    ) -> None:
        self.keep = keep
        self.need = need  # the share of a week's slots that must be scored before the measured error is used
        self.horizon = horizon  # the most of each issued forecast kept (and the longest window it can score)
        self.issues_kept = forecast_skill.HISTORY + horizon + forecast_skill.STRIDE
        self._forecast: dict[datetime, float] = {}
        self._actual: dict[datetime, float] = {}
        self._days: set[datetime] = set()
        # issue boundary -> (start of the slot it was seen in, slot length, the values from there on)
        self._issued: dict[datetime, tuple[datetime, timedelta, FloatArray]] = {}
        self._skills: dict[tuple[datetime, datetime, int, int, bool, float], float | None] = {}  # cleared on new data
        # Bumped when a forecast is recorded (a new issue or day-ahead forecast: a few times a day), so that a
        # caller keeping the record across restarts writes it only then (`to_wire`).
        self.revision = 0

    def add_forecast(self, forecast: IntensitySeries, now: datetime) -> None:
        self._add_issue(forecast, now)
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        if day in self._days or len(forecast) == 0:
            return
        self._days.add(day)
        first = max(forecast.index_of(now), 0)
        last = min(forecast.index_of(day + timedelta(days=1) - timedelta(microseconds=1)) + 1, len(forecast))
        for i in range(first, last):
            value = float(forecast.values[i])
            if math.isfinite(value):
                self._forecast.setdefault(forecast.slot_start(i), value)
        self.revision += 1
        self._prune(now)

    def _add_issue(self, forecast: IntensitySeries, now: datetime) -> None:
        boundary = _issue_boundary(now)
        if boundary in self._issued or len(forecast) == 0:
            return
        first = forecast.index_of(now)
        if not 0 <= first < len(forecast):  # (the forecast does not cover the moment it was seen)
            return
        step = forecast.resolution
        count = max(int(self.horizon / step), 1)
        values = np.array(forecast.values[first : first + count], dtype=np.float64)
        values.flags.writeable = False
        self._issued[boundary] = (forecast.slot_start(first), step, values)
        self._skills.clear()
        self.revision += 1
        self._prune(now)

    def add_actuals(self, history: IntensitySeries | None, now: datetime) -> None:
        if history is None or len(history) == 0:
            return
        first = max(history.index_of(now - max(self.keep, self.issues_kept)), 0)
        last = min(history.index_of(now), len(history))  # slots that ended by `now`
        for i in range(first, last):
            value = float(history.values[i])
            if math.isfinite(value):
                self._actual[history.slot_start(i)] = value
        self._skills.clear()
        self._prune(now)

    def _prune(self, now: datetime) -> None:
        oldest = now - self.keep
        for stale in [t for t in self._forecast if t < oldest]:
            del self._forecast[stale]
        oldest_actual = now - max(self.keep, self.issues_kept)
        for stale in [t for t in self._actual if t < oldest_actual]:
            del self._actual[stale]
        for stale in [b for b in self._issued if b <= now - self.issues_kept]:  # (41 at most)
            del self._issued[stale]
        self._days = {d for d in self._days if d >= oldest - timedelta(days=1)}

    def errors(self, now: datetime, grid: IntensitySeries) -> FloatArray | None:
        """Forecast minus actual on `grid`'s slots (a forecast issued at `now`) over the week before `now` (NaN
        where not both known), or None while fewer than `need` of that week's slots are scored."""
        step = grid.resolution
        slots = int(WEEK / step)
        if slots < 1:
            return None
        current = grid.slot_start(grid.index_of(now))  # the slot holding `now` (not ended)
        forecast, actual = self._forecast, self._actual
        starts = [current - step * (slots - k) for k in range(slots)]
        diff = np.array([forecast[t] - actual[t] if t in forecast and t in actual else math.nan for t in starts])
        if np.count_nonzero(~np.isnan(diff)) < self.need * slots:
            return None
        return diff

    def skill(
        self, now: datetime, length: timedelta, window: timedelta, interruptible: bool, z: float = forecast_skill.Z
    ) -> float | None:
        """The forecasts' shown skill at `now` for a job of `length` due in `window`, computed as the simulator's
        `SkillEstimate.at` (domain/forecast_skill.py): over the week's issues (one per 6-hour boundary, the latest
        whose rounded window ended by `now`, so all causal), the decision each recorded forecast would have made,
        scored on the recorded actuals. None while fewer than `forecast_skill.MIN_SAMPLES` issues can be scored
        (the core then has no skill gate); 1.0 when the rounded length fills the window (nothing to choose)."""
        if not self._issued:
            return None
        origin, step, _ = self._issued[max(self._issued)]  # the latest forecasts' grid (issues on another are left)
        n_len, n_win = forecast_skill.shape_slots(length, window, step)
        if n_len >= n_win:
            return 1.0
        last = _issue_boundary(now - step * n_win)
        # (which issues' windows have ended changes only at their slot boundaries: kept per slot of `now`)
        key = (origin + step * math.floor((now - origin) / step), last, n_len, n_win, interruptible, z)
        if key in self._skills:
            return self._skills[key]
        count = int(forecast_skill.HISTORY / forecast_skill.STRIDE)
        issues: list[tuple[FloatArray, list[float]]] = []
        for k in range(count - 1, -1, -1):  # oldest first, as the simulator sums them
            issued = self._issued.get(last - forecast_skill.STRIDE * k)
            if issued is None or issued[1] != step or issued[0] + step * n_win > now or issued[2].shape[0] < n_win:
                continue  # (none at that boundary, on another grid, its window not over, or shorter than it)
            start, _, values = issued
            issues.append((values, [self._actual.get(start + step * i, math.nan) for i in range(n_win)]))
        samples = forecast_skill.scored(issues, n_len, n_win, interruptible)
        result = forecast_skill.skill_of(samples, z)[0] if len(samples) >= forecast_skill.MIN_SAMPLES else None
        if len(self._skills) >= 1 << 12:
            self._skills.clear()
        self._skills[key] = result
        return result

    # -- kept across restarts ---------------------------------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        """The record as JSON-ready data (what the operator keeps in a ConfigMap, handlers/forecast_store.py):
        times as Unix seconds, intensities rounded to 0.001 g/kWh (finer than any provider publishes). At most a
        week and a few days of day-ahead values, three weeks and a few days of actuals and issued forecasts (about
        100 of 72 h): about 110 KiB of JSON on 30-minute slots, 58 KiB on hourly ones, 800 KiB on 5-minute ones
        (the store keeps only the newest issues beyond 900 KiB)."""
        return {
            "version": WIRE_VERSION,
            "days": sorted(_epoch(d) for d in self._days),
            "dayAhead": _pairs(self._forecast),
            "actuals": _pairs(self._actual),
            "issued": [
                {"at": _epoch(b), "start": _epoch(start), "step": step.total_seconds(), "values": _rounded(values)}
                for b, (start, step, values) in sorted(self._issued.items())
            ],
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any], now: datetime) -> ForecastRecord:
        """A record from `to_wire` data, pruned as of `now`. Raises ValueError on data it cannot read (another
        version, missing or malformed fields): the caller then starts afresh rather than trusting part of it."""
        found = data.get("version") if isinstance(data, dict) else type(data).__name__
        if found != WIRE_VERSION:
            raise ValueError(f"forecast record: expected version {WIRE_VERSION}, got {found!r}")
        record = cls()
        try:
            record._days = {_from_epoch(t) for t in data["days"]}
            record._forecast = _unpairs(data["dayAhead"])
            record._actual = _unpairs(data["actuals"])
            for item in data["issued"]:
                step = timedelta(seconds=float(item["step"]))
                if step <= timedelta(0):
                    raise ValueError(f"forecast record: issue step {step}")
                values = np.array([math.nan if v is None else float(v) for v in item["values"]], dtype=np.float64)
                values.flags.writeable = False
                record._issued[_from_epoch(item["at"])] = (_from_epoch(item["start"]), step, values)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"forecast record: malformed ({exc!r})") from None
        record._prune(now)
        return record


WIRE_VERSION = 1


def _epoch(moment: datetime) -> int:
    return round(moment.timestamp())


def _from_epoch(value: object) -> datetime:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"forecast record: {value!r} is not a Unix time")
    return datetime.fromtimestamp(value, UTC)


def _rounded(values: FloatArray) -> list[float | None]:
    return [round(float(v), 3) if math.isfinite(v) else None for v in values.tolist()]


def _pairs(values: dict[datetime, float]) -> dict[str, list[Any]]:
    times = sorted(values)
    return {"t": [_epoch(t) for t in times], "v": [round(values[t], 3) for t in times]}


def _unpairs(data: dict[str, list[Any]]) -> dict[datetime, float]:
    times, values = data["t"], data["v"]
    if len(times) != len(values):
        raise ValueError("forecast record: times and values differ in length")
    out = {}
    for t, v in zip(times, values, strict=True):
        value = float(v)
        if math.isfinite(value):
            out[_from_epoch(t)] = value
    return out


def _issue_boundary(moment: datetime) -> datetime:
    """The 6-hour issue boundary (UTC clock: 00, 06, 12, 18 h) at or before `moment`."""
    stride = forecast_skill.STRIDE
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day + stride * math.floor((moment - day) / stride)
