"""Green Software Foundation Carbon Aware SDK WebAPI adapter (a self-hosted service, gCO2/kWh).

This module owns the SDK WebAPI wire format: `/emissions/bylocations` with the query name `location`
(repeated for several locations; the docs say `locations`, the controller binds `location`), fields
`location`/`time`/`rating`/`duration` (a .NET TimeSpan "hh:mm:ss"), `204 No Content` meaning no data;
and `/emissions/forecasts/current` answering one `EmissionsForecast` per location whose `forecastData`
items are `timestamp`/`value`/`duration` (integer minutes) and whose issue time is `generatedAt`.
The SDK already converts WattTime's lbs/MWh to g/kWh, but whether its numbers are average or marginal
depends on the data source it is configured with, so the signal is a setting here (default average).
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import httpx

from carbonshift.adapters.carbon.base import ProviderResult, forecast_window, latest_slot, parse_time
from carbonshift.adapters.carbon.errors import ProviderDataError
from carbonshift.adapters.carbon.http import HttpPolicy, JsonHttp, Sleep, asyncio_sleep
from carbonshift.adapters.carbon.provider import HttpProvider, iso_z
from carbonshift.domain.quality import QualityLimits, RawPoint
from carbonshift.domain.series import Kind, Signal, require_utc

DEFAULT_BASE_URL = "http://localhost:8080"
UNIT = "gco2/kwh"
_TIMESPAN = re.compile(r"^(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{2}):(?P<s>\d{2})(?:\.\d+)?$")


def parse_timespan(value: object) -> timedelta | None:
    """A .NET TimeSpan ('01:00:00', '1.00:00:00') or integer minutes; None when unreadable or zero."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return timedelta(minutes=value) if value > 0 else None
    if not isinstance(value, str):
        return None
    match = _TIMESPAN.match(value.strip())
    if not match:
        return None
    span = timedelta(
        days=int(match.group("days") or 0),
        hours=int(match.group("h")),
        minutes=int(match.group("m")),
        seconds=int(match.group("s")),
    )
    return span if span > timedelta(0) else None


def _common_duration(items: list[Any]) -> timedelta | None:
    durations = Counter(
        span for item in items if isinstance(item, dict) and (span := parse_timespan(item.get("duration")))
    )
    return durations.most_common(1)[0][0] if durations else None


class CarbonAwareSdkProvider(HttpProvider):
    """Carbon Aware SDK WebAPI: zones are the SDK's location names (eastus, westeurope, ...)."""

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        signal: Signal = Signal.AVERAGE,
        policy: HttpPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio_sleep,
        max_age: timedelta = timedelta(hours=3),
        limits: QualityLimits | None = None,
    ) -> None:
        http = JsonHttp(
            self.name,
            base_url,
            policy,
            client=client,
            sleep=sleep,
            no_credentials_hint="check CARBON_AWARE_SDK_BASE_URL: it should name an SDK WebAPI that needs no key",
        )
        super().__init__(http, max_age=max_age, limits=limits)
        self.signal = signal

    @property
    def name(self) -> str:
        return "carbon-aware-sdk"

    def __repr__(self) -> str:
        return f"CarbonAwareSdkProvider(base_url={self._http.base_url!r})"

    async def _emissions(self, zone: str, begin: datetime, end: datetime) -> tuple[list[RawPoint], timedelta | None]:
        path = "emissions/bylocations"
        params: dict[str, str | list[str]] = {"location": [zone], "time": iso_z(begin), "toTime": iso_z(end)}
        payload = await self._http.get_json(path, params=params, allow_no_content=True)
        if payload is None:
            span = f"[{iso_z(begin)}, {iso_z(end)})"
            raise ProviderDataError(self.name, f"GET {path}: 204 No Content for {zone} in {span}")
        if not isinstance(payload, list):
            raise ProviderDataError(self.name, f"GET {path}: expected a JSON array, got {type(payload).__name__}")
        items = [item for item in payload if not isinstance(item, dict) or item.get("location") == zone]
        if payload and not items:
            raise ProviderDataError(self.name, f"GET {path}: answer holds no data for location {zone}")
        raw: list[RawPoint] = [
            (parse_time(item.get("time")), item.get("rating")) if isinstance(item, dict) else (None, None)
            for item in items
        ]
        return raw, _common_duration(items)

    async def current(self, zone: str, now: datetime) -> ProviderResult:
        now = require_utc(now)
        raw, resolution = await self._emissions(zone, now - self.max_age, now)
        result = self._result(
            zone,
            raw,
            now=now,
            unit=UNIT,
            signal=self.signal,
            kind=Kind.ACTUAL,
            resolution=resolution,
            max_age=self.max_age,
        )
        return latest_slot(result, now)

    async def forecast(self, zone: str, now: datetime, horizon: timedelta) -> ProviderResult:
        now = require_utc(now)
        path = "emissions/forecasts/current"
        params: dict[str, str | list[str]] = {
            "location": [zone],
            "dataStartAt": iso_z(now),
            "dataEndAt": iso_z(now + horizon),
        }
        payload = await self._http.get_json(path, params=params, allow_no_content=True)
        if payload is None:
            raise ProviderDataError(self.name, f"GET {path}: 204 No Content for {zone}")
        forecasts = payload if isinstance(payload, list) else [payload]
        mine = [f for f in forecasts if isinstance(f, dict) and f.get("location", zone) == zone]
        if not mine:
            raise ProviderDataError(self.name, f"GET {path}: answer holds no forecast for location {zone}")
        forecast = mine[0]
        items = forecast.get("forecastData")
        if not isinstance(items, list):
            raise ProviderDataError(self.name, f"GET {path}: forecast lacks a 'forecastData' array")
        raw: list[RawPoint] = [
            (parse_time(item.get("timestamp")), item.get("value")) if isinstance(item, dict) else (None, None)
            for item in items
        ]
        issued_at = parse_time(forecast.get("generatedAt"))
        window_minutes = forecast.get("windowSize")
        labels = {"window_size_minutes": str(window_minutes)} if window_minutes is not None else {}
        return self._result(
            zone,
            raw,
            now=now,
            unit=UNIT,
            signal=self.signal,
            kind=Kind.FORECAST,
            resolution=_common_duration(items),
            issued_at=issued_at,
            max_age=timedelta(hours=1),
            window=forecast_window(now, horizon),
            labels=labels,
        )

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> ProviderResult:
        begin, end = require_utc(begin), require_utc(end)
        raw, resolution = await self._emissions(zone, begin, end)
        return self._result(
            zone,
            raw,
            now=now,
            unit=UNIT,
            signal=self.signal,
            kind=Kind.ACTUAL,
            resolution=resolution,
            window=(begin, end),
        )
