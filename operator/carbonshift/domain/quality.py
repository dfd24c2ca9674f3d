"""Data-quality guards that every carbon-intensity source passes through before its numbers are used.

This module owns the rules that decide whether a raw (timestamp, value) point from a provider or a trace
file may become part of an IntensitySeries, and the record of why a point was refused. It owns unit
normalisation too: values are converted to gCO2e/kWh exactly once, here, at the edge.

Rules, in the order they are applied to each point:

* the timestamp is missing or has no timezone (naive)          -> rejected (never assumed UTC);
* the value is missing (null / empty cell)                      -> rejected;
* the value is not a finite number (NaN, inf, text)             -> rejected;
* the value is -1 (the common "no data" sentinel)               -> rejected;
* the value is zero or negative (physically impossible average) -> rejected;
* the value, after unit conversion, is above `max_g_per_kwh`    -> rejected (absurd; 2000 g/kWh is well
  above the dirtiest real grid, about 1,100 g/kWh for lignite);
* points are then sorted by time (a stable sort: an answer that arrives out of order, or pages concatenated
  in another order, keeps every point - nothing is refused for its position);
* the timestamp equals another point's timestamp                 -> rejected (the later copies; if the copies
  disagree, every copy is refused, because nobody can tell which one is right);
* and, per series: the latest point older than `max_age` before `now` -> every point rejected as stale;
  a forecast whose issue time lies after `now`                  -> every point rejected;
  a forecast issued longer ago than `forecast_max_age(resolution)` -> every point rejected as stale;
  a measured (actual) point for a slot starting after `now`     -> rejected.

Per zone, `check_plausible` compares an answer with the values the same source gave for that zone recently
(`RecentValues`): where slots overlap, their values must agree within a factor of `OVERLAP_FACTOR`, and the
answer's median may not exceed the zone's recent maximum by more than `RANGE_FACTOR`. Both catch a unit slip
such as lbs/MWh served as g/kWh (every value 2.2x) that the global ceiling misses.

An unknown unit rejects the whole batch: a number whose unit is unknown is not a number we can use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

LBS_PER_MWH_TO_G_PER_KWH = 0.45359237
"""1 lb = 453.59237 g and 1 MWh = 1000 kWh, so 1 lb/MWh = 0.45359237 g/kWh (exact by definition)."""

KG_PER_KWH_TO_G_PER_KWH = 1000.0

DEFAULT_MAX_G_PER_KWH = 2000.0

SENTINEL_VALUE = -1.0


class Reason(StrEnum):
    """Why a point was refused. The value is the human-readable phrase used in reports."""

    MISSING_TIMESTAMP = "missing or unparseable timestamp"
    NAIVE_TIMESTAMP = "timestamp has no timezone"
    NULL_VALUE = "value is null"
    NOT_A_NUMBER = "value is not a finite number"
    SENTINEL = "value is the -1 no-data sentinel"
    NON_POSITIVE = "value is zero or negative"
    ABSURD = "value is implausibly high"
    DUPLICATE = "duplicate timestamp"
    CONFLICTING_DUPLICATE = "duplicate timestamp with a different value"
    OUT_OF_ORDER = "timestamp earlier than the previous point (unsorted)"  # no longer produced: points are sorted
    OFF_GRID = "timestamp is not on the series' slot grid"
    STALE = "data is stale"
    FUTURE_FORECAST = "forecast issued in the future"
    FUTURE_ACTUAL = "measured value for a slot that has not started yet"
    UNKNOWN_UNIT = "unknown unit"
    MALFORMED_ROW = "malformed row"


@dataclass(frozen=True, slots=True)
class RejectedPoint:
    """One point that was not used, and why.

    `start` is the slot start when it could be read (None when the timestamp itself was the problem),
    `value` the raw value as received (before unit conversion), `detail` adds specifics such as the
    line number or the limit that was exceeded.
    """

    start: datetime | None
    reason: Reason
    value: float | None = None
    detail: str = ""

    def describe(self) -> str:
        """One line for humans: reason plus detail."""
        return f"{self.reason.value} ({self.detail})" if self.detail else self.reason.value


class UnknownUnitError(ValueError):
    """A value came with a unit that cannot be converted to gCO2e/kWh."""


_UNIT_FACTORS: dict[str, float] = {
    "g_per_kwh": 1.0,
    "gco2_per_kwh": 1.0,
    "gco2e_per_kwh": 1.0,
    "gco2eq_per_kwh": 1.0,
    "g/kwh": 1.0,
    "gco2/kwh": 1.0,
    "gco2e/kwh": 1.0,
    "gco2eq/kwh": 1.0,
    "kg/mwh": 1.0,
    "kgco2/mwh": 1.0,
    "kg_per_mwh": 1.0,
    "lbs_co2_per_mwh": LBS_PER_MWH_TO_G_PER_KWH,
    "lbs_per_mwh": LBS_PER_MWH_TO_G_PER_KWH,
    "lb_per_mwh": LBS_PER_MWH_TO_G_PER_KWH,
    "lbs/mwh": LBS_PER_MWH_TO_G_PER_KWH,
    "lb/mwh": LBS_PER_MWH_TO_G_PER_KWH,
    "kg_per_kwh": KG_PER_KWH_TO_G_PER_KWH,
    "kgco2_per_kwh": KG_PER_KWH_TO_G_PER_KWH,
    "kg_co2_per_kwh": KG_PER_KWH_TO_G_PER_KWH,
    "kg/kwh": KG_PER_KWH_TO_G_PER_KWH,
    "kgco2/kwh": KG_PER_KWH_TO_G_PER_KWH,
}


def known_units() -> list[str]:
    """Every unit spelling the guards accept."""
    return sorted(_UNIT_FACTORS)


def unit_factor_to_g_per_kwh(unit: str) -> float:
    """Multiplier that turns a value in `unit` into gCO2e/kWh; UnknownUnitError for anything else."""
    key = unit.strip().lower().replace(" ", "").replace("₂", "2")
    if key not in _UNIT_FACTORS:
        raise UnknownUnitError(f"unknown carbon-intensity unit {unit!r}; known units: {', '.join(known_units())}")
    return _UNIT_FACTORS[key]


@dataclass(frozen=True, slots=True)
class QualityLimits:
    """Thresholds the guards apply. `max_age` None disables the staleness check."""

    max_g_per_kwh: float = DEFAULT_MAX_G_PER_KWH
    max_age: timedelta | None = None


@dataclass(frozen=True, slots=True)
class GuardedPoints:
    """Points that passed every guard (UTC, sorted, unique, in gCO2e/kWh) and the ones that did not."""

    points: list[tuple[datetime, float]]
    rejected: list[RejectedPoint] = field(default_factory=list)


RawPoint = tuple[datetime | None, float | str | None]
"""A point as a source gave it: a timestamp (maybe naive, maybe missing) and a value (maybe null/text)."""


def _value_problem(value: float | str | None, factor: float, limits: QualityLimits) -> tuple[Reason, str] | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return Reason.NULL_VALUE, ""
    if isinstance(value, bool):
        return Reason.NOT_A_NUMBER, repr(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return Reason.NOT_A_NUMBER, repr(value)[:40]
    if not math.isfinite(number):
        return Reason.NOT_A_NUMBER, repr(value)
    if number == SENTINEL_VALUE:
        return Reason.SENTINEL, ""
    if number <= 0:
        return Reason.NON_POSITIVE, f"{number:g}"
    if number * factor > limits.max_g_per_kwh:
        return Reason.ABSURD, f"{number * factor:g} g/kWh > {limits.max_g_per_kwh:g}"
    return None


def _as_float_or_none(value: float | str | None) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def guard_points(
    raw: Iterable[RawPoint],
    *,
    unit: str = "g_per_kwh",
    limits: QualityLimits | None = None,
    details: Sequence[str] | None = None,
) -> GuardedPoints:
    """Run the per-point guards over `raw` and convert accepted values to gCO2e/kWh.

    `details`, if given, is one string per raw point (e.g. "line 12") copied into each rejection.
    Raises UnknownUnitError when `unit` is not convertible.
    """
    factor = unit_factor_to_g_per_kwh(unit)
    limits = limits or QualityLimits()
    accepted: dict[datetime, tuple[float, str]] = {}  # raw value and detail
    rejected: list[RejectedPoint] = []
    conflicted: set[datetime] = set()
    valid: list[tuple[datetime, float, str]] = []
    for i, (moment, value) in enumerate(raw):
        detail = details[i] if details is not None else ""
        if moment is None:
            rejected.append(RejectedPoint(None, Reason.MISSING_TIMESTAMP, _as_float_or_none(value), detail))
            continue
        if moment.tzinfo is None or moment.utcoffset() is None:
            rejected.append(RejectedPoint(moment, Reason.NAIVE_TIMESTAMP, _as_float_or_none(value), detail))
            continue
        moment = moment.astimezone(UTC)
        problem = _value_problem(value, factor, limits)
        if problem is not None:
            reason, extra = problem
            text = ", ".join(part for part in (detail, extra) if part)
            rejected.append(RejectedPoint(moment, reason, _as_float_or_none(value), text))
            continue
        valid.append((moment, float(value), detail))  # type: ignore[arg-type]  # proved a finite number
    valid.sort(key=lambda point: point[0])  # stable: copies of one timestamp keep their arrival order
    for moment, number, detail in valid:
        if moment in conflicted:
            rejected.append(RejectedPoint(moment, Reason.CONFLICTING_DUPLICATE, number, detail))
        elif moment in accepted:
            first_value, first_detail = accepted[moment]
            if first_value == number:
                rejected.append(RejectedPoint(moment, Reason.DUPLICATE, number, detail))
                continue
            conflicted.add(moment)
            del accepted[moment]
            rejected.append(RejectedPoint(moment, Reason.CONFLICTING_DUPLICATE, first_value, first_detail))
            rejected.append(RejectedPoint(moment, Reason.CONFLICTING_DUPLICATE, number, detail))
        else:
            accepted[moment] = (number, detail)
    points = [(moment, raw_value * factor) for moment, (raw_value, _) in accepted.items()]
    return GuardedPoints(points=points, rejected=rejected)


def forecast_max_age(resolution: timedelta) -> timedelta:
    """How old a forecast may be and still be used: three of its slots, and never less than an hour.

    Providers re-issue forecasts about once a slot (Electricity Maps hourly, WattTime every 5 minutes), so a
    forecast three slots old has missed several updates: its first hours are what the grid was expected to do
    before the latest weather and outages were known."""
    return max(3 * resolution, timedelta(hours=1))


def forecast_age_problem(issued_at: datetime | None, *, now: datetime, resolution: timedelta) -> str | None:
    """Why a forecast issued at `issued_at` is too old to use at `now`, or None when it is fresh enough."""
    if issued_at is None or issued_at.tzinfo is None:
        return None
    age = now.astimezone(UTC) - issued_at.astimezone(UTC)
    bound = forecast_max_age(resolution)
    if age <= bound:
        return None
    return (
        f"forecast issued at {issued_at.astimezone(UTC).isoformat()} is {age} old, more than the {bound} "
        f"allowed for {resolution} slots"
    )


OVERLAP_FACTOR = 1.6
"""Where an answer and the zone's recent values share slots, the median ratio of their values must lie within
[1/1.6, 1.6]: forecasts are revised, but not all by one factor, and lbs/MWh read as g/kWh is 2.2x."""

RANGE_FACTOR = 1.3
"""An answer whose median exceeds the zone's largest recent value by more than 30% is refused: a day whose
middle value beats the whole recent week's peak by a third is far rarer than a unit slip (2.2x)."""

RECENT_MIN_POINTS = 12
RECENT_KEEP = timedelta(days=2)


class RecentValues:
    """The values one source gave for each zone lately (slot start -> g/kWh), the reference of `check_plausible`.

    A later answer for a slot replaces an earlier one. An entry is forgotten `keep` after it was recorded (on
    the caller's clock), so a source that changes level for good is trusted again after `keep` of refusals
    (or at a restart); only accepted answers are recorded."""

    def __init__(self, keep: timedelta = RECENT_KEEP) -> None:
        self.keep = keep
        self._zones: dict[str, dict[datetime, tuple[float, datetime]]] = {}

    def values(self, zone: str, now: datetime) -> dict[datetime, float]:
        known = self._zones.get(zone, {})
        expired = [m for m, (_, recorded) in known.items() if now - recorded > self.keep]
        for moment in expired:
            del known[moment]
        return {m: v for m, (v, _) in known.items()}

    def remember(self, zone: str, points: Iterable[tuple[datetime, float]], now: datetime) -> None:
        known = self._zones.setdefault(zone, {})
        for moment, value in points:
            if math.isfinite(value):
                known[moment] = (value, now)


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def check_plausible(
    zone: str,
    points: Sequence[tuple[datetime, float]],
    recent: dict[datetime, float],
) -> str | None:
    """Why `points` (g/kWh) are implausible against the zone's `recent` values from the same source, or None.

    Two tests, each needing enough reference: (1) slots present in both must agree, median ratio within
    OVERLAP_FACTOR (catches a slip up or down once any earlier answer overlaps); (2) the answer's median may
    not exceed the largest recent value by more than RANGE_FACTOR (catches an upward slip with no overlap)."""
    finite = [(m, v) for m, v in points if math.isfinite(v)]
    if not finite or not recent:
        return None
    ratios = [v / recent[m] for m, v in finite if m in recent and recent[m] > 0]
    if len(ratios) >= 3:
        ratio = _median(ratios)
        if ratio > OVERLAP_FACTOR or ratio < 1 / OVERLAP_FACTOR:
            return (
                f"implausible values for zone {zone}: {ratio:.2f}x what the same source gave for the same "
                f"{len(ratios)} slots before (a unit slip? lbs/MWh read as g/kWh is 2.20x); refusing the answer"
            )
    if len(recent) >= RECENT_MIN_POINTS:
        median = _median([v for _, v in finite])
        peak = max(recent.values())
        if median > RANGE_FACTOR * peak:
            return (
                f"implausible values for zone {zone}: median {median:.0f} g/kWh is {median / peak:.2f}x the "
                f"zone's highest value of the last {len(recent)} slots ({peak:.0f} g/kWh) (a unit slip? lbs/MWh "
                f"read as g/kWh is 2.20x); refusing the answer"
            )
    return None


def guard_freshness(
    guarded: GuardedPoints,
    *,
    now: datetime,
    max_age: timedelta,
) -> GuardedPoints:
    """Reject every point when the latest one started more than `max_age` before `now` (stale source)."""
    if not guarded.points:
        return guarded
    latest = guarded.points[-1][0]
    age = now.astimezone(UTC) - latest
    if age <= max_age:
        return guarded
    detail = f"latest point {latest.isoformat()} is {age} old, more than {max_age}"
    stale = [RejectedPoint(moment, Reason.STALE, value, detail) for moment, value in guarded.points]
    return GuardedPoints(points=[], rejected=[*guarded.rejected, *stale])


def guard_not_future(guarded: GuardedPoints, *, now: datetime) -> GuardedPoints:
    """Refuse measured (actual) points whose slot starts after `now`: nobody measured the future."""
    cutoff = now.astimezone(UTC)
    kept = [(m, v) for m, v in guarded.points if m <= cutoff]
    if len(kept) == len(guarded.points):
        return guarded
    detail = f"now is {cutoff.isoformat()}"
    future = [RejectedPoint(m, Reason.FUTURE_ACTUAL, v, detail) for m, v in guarded.points if m > cutoff]
    return GuardedPoints(points=kept, rejected=[*guarded.rejected, *future])


def guard_issue_time(
    guarded: GuardedPoints,
    *,
    issued_at: datetime | None,
    now: datetime,
    tolerance: timedelta = timedelta(minutes=5),
) -> GuardedPoints:
    """Reject every point of a forecast whose issue time is after `now` (beyond a small clock-skew
    tolerance): a forecast from the future means a broken clock or a mislabelled payload."""
    if issued_at is None:
        return guarded
    if issued_at.tzinfo is None or issued_at.utcoffset() is None:
        detail = f"issue time {issued_at.isoformat()} has no timezone"
        naive = [RejectedPoint(m, Reason.NAIVE_TIMESTAMP, v, detail) for m, v in guarded.points]
        return GuardedPoints(points=[], rejected=[*guarded.rejected, *naive])
    if issued_at.astimezone(UTC) <= now.astimezone(UTC) + tolerance:
        return guarded
    detail = f"issued at {issued_at.isoformat()}, now is {now.isoformat()}"
    future = [RejectedPoint(m, Reason.FUTURE_FORECAST, v, detail) for m, v in guarded.points]
    return GuardedPoints(points=[], rejected=[*guarded.rejected, *future])
