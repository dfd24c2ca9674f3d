"""The one interface every carbon-intensity provider implements, and the guard pipeline they share.

This module owns `CarbonProvider` (current / forecast / history for a zone, `now` always passed in),
`ProviderResult` (an IntensitySeries plus the points that were refused, and where it came from) and
`build_result`, the single place where a provider's raw points go through the quality guards, get their
unit normalised to gCO2e/kWh and are placed on the slot grid: points are sorted and de-duplicated first, a
forecast issued longer ago than `forecast_max_age(resolution)` is refused, and an answer that disagrees with
the zone's recent values from the same source (`RecentValues`; a unit slip) is refused. `latest_slot` is how
every `current()` answers: the newest slot, flagged `stale` with a note when it does not contain `now`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from carbonshift.adapters.carbon.errors import ProviderDataError
from carbonshift.domain.quality import (
    QualityLimits,
    RawPoint,
    Reason,
    RecentValues,
    RejectedPoint,
    UnknownUnitError,
    check_plausible,
    forecast_age_problem,
    guard_freshness,
    guard_issue_time,
    guard_not_future,
    guard_points,
)
from carbonshift.domain.series import IntensitySeries, Kind, Signal, require_utc
from carbonshift.domain.traces import TraceError, build_series


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """What one provider answered: the usable series and every refused point with its reason."""

    provider: str
    zone: str
    series: IntensitySeries
    rejected: list[RejectedPoint] = field(default_factory=list)
    stale: bool = False
    notes: tuple[str, ...] = ()


@runtime_checkable
class CarbonProvider(Protocol):
    """A source of grid carbon intensity. All times are aware datetimes; `now` is always given."""

    @property
    def name(self) -> str: ...

    async def current(self, zone: str, now: datetime) -> ProviderResult:
        """The latest measured (or, where the provider only has that, estimated) slot at `now`."""
        ...

    async def forecast(self, zone: str, now: datetime, horizon: timedelta) -> ProviderResult:
        """Forecast slots from the one containing `now` to `now + horizon` (kind=forecast)."""
        ...

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> ProviderResult:
        """Measured slots overlapping [begin, end)."""
        ...

    async def aclose(self) -> None: ...


def build_result(
    provider: str,
    zone: str,
    raw: Sequence[RawPoint],
    *,
    now: datetime,
    unit: str,
    signal: Signal,
    kind: Kind,
    resolution: timedelta | None,
    issued_at: datetime | None = None,
    max_age: timedelta | None = None,
    limits: QualityLimits | None = None,
    window: tuple[datetime, datetime] | None = None,
    labels: dict[str, str] | None = None,
    recent: RecentValues | None = None,
) -> ProviderResult:
    """Guard raw points, normalise units, build the series and cut it to `window`.

    `recent` (the provider's memory of the zone) is checked against and, when the answer is accepted, updated.
    Raises ProviderDataError (with the refused points) when nothing usable is left, when a forecast is too old
    for its resolution, or when the answer is implausible against the zone's recent values."""
    now = require_utc(now, "now")
    if not raw:
        raise ProviderDataError(provider, f"no data points for zone {zone}")
    try:
        guarded = guard_points(raw, unit=unit, limits=limits)
    except UnknownUnitError as exc:
        raise ProviderDataError(provider, f"refusing the whole answer: {exc}") from None
    if kind == Kind.FORECAST:
        guarded = guard_issue_time(guarded, issued_at=issued_at, now=now)
    else:
        guarded = guard_not_future(guarded, now=now)
    if max_age is not None:
        guarded = guard_freshness(guarded, now=now, max_age=max_age)
    if not guarded.points:
        reasons = sorted({r.reason.value for r in guarded.rejected})
        raise ProviderDataError(
            provider,
            f"no usable data for zone {zone}: {len(guarded.rejected)} points refused ({'; '.join(reasons)})",
            guarded.rejected,
        )
    try:
        series, off_grid = build_series(
            guarded,
            zone,
            resolution=resolution,
            source=provider,
            signal=signal,
            kind=kind,
            provider=provider,
            issued_at=issued_at,
            labels=labels,
        )
    except TraceError as exc:
        raise ProviderDataError(provider, str(exc), guarded.rejected) from None
    points = [(series.slot_start(i), float(v)) for i, v in enumerate(series.values.tolist())]
    if kind == Kind.FORECAST:
        too_old = forecast_age_problem(issued_at, now=now, resolution=series.resolution)
        if too_old is not None:
            stale = [RejectedPoint(m, Reason.STALE, v, too_old) for m, v in points]
            raise ProviderDataError(provider, f"refusing the forecast for zone {zone}: {too_old}", stale)
    if recent is not None:
        implausible = check_plausible(zone, points, recent.values(zone, now))
        if implausible is not None:
            raise ProviderDataError(provider, implausible, guarded.rejected)
        recent.remember(zone, points, now)
    if window is not None:
        series = series.window(*window)
        if len(series) == 0:
            raise ProviderDataError(
                provider,
                f"no data for zone {zone} between {window[0].isoformat()} and {window[1].isoformat()}",
                guarded.rejected,
            )
    return ProviderResult(provider=provider, zone=zone, series=series, rejected=[*guarded.rejected, *off_grid])


def latest_slot(result: ProviderResult, now: datetime, notes: tuple[str, ...] = ()) -> ProviderResult:
    """The slot `current()` answers with: the one containing `now`, else the newest one before it (else the first),
    and then flagged `stale=True` with a note saying how far that slot lies from `now` - an old slot is never
    passed off as the current one."""
    series = result.series
    notes = (*result.notes, *notes)
    known = [i for i, value in enumerate(series.values.tolist()) if math.isfinite(value)]
    here = series.index_of(now)
    if here in known:
        return replace(result, series=series.window(now, now + timedelta(microseconds=1)), notes=notes)
    before = [i for i in known if series.slot_start(i) <= now]
    index = before[-1] if before else known[0]
    begin, end = series.slot_start(index), series.slot_start(index + 1)
    when = f"ended {now - end} before now" if end <= now else f"starts {begin - now} after now"
    note = f"no value for the current slot: the latest one, {begin.isoformat()}..{end.isoformat()}, {when}"
    return replace(result, series=series.window(begin, end), stale=True, notes=(*notes, note))


def parse_time(value: object) -> datetime | None:
    """An ISO 8601 timestamp from a payload; None when missing or unreadable (the guards report it)."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        return None


def forecast_window(now: datetime, horizon: timedelta) -> tuple[datetime, datetime]:
    """[now, now + horizon): series.window keeps the slot containing `now`."""
    return now, now + horizon
