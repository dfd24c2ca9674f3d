"""GB Carbon Intensity API adapter (NESO, api.carbonintensity.org.uk; no authentication, CC BY 4.0 data).

This module owns the NESO wire format. Zones: `GB` is the national series (`/intensity`,
`/intensity/{from}/fw48h`, `/intensity/{from}/{to}` with at most 14 days per call); `GB-<regionid>` (1-17,
e.g. `GB-13` for London) is a regional series, which NESO publishes as forecasts only
(`/regional/regionid/{id}`, `/regional/intensity/{from}/fw48h/regionid/{id}`, ...). Regional answers come in
two shapes - all regions per slot (`data[].regions[]`) and one region with nested slots (`data[].data[]`);
both are read. Values are integer gCO2/kWh per half hour, `from` is the slot start; path times are
`YYYY-MM-DDThh:mmZ`. NESO's figures are direct (combustion) emissions, not lifecycle.
NESO keeps no forecast history and stamps no issue time, so a forecast's `issued_at` is the fetch time.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import httpx

from carbonshift.adapters.carbon.base import ProviderResult, forecast_window, latest_slot, parse_time
from carbonshift.adapters.carbon.errors import ProviderConfigError, ProviderDataError
from carbonshift.adapters.carbon.http import HttpPolicy, JsonHttp, Sleep, asyncio_sleep
from carbonshift.adapters.carbon.provider import HttpProvider
from carbonshift.domain.quality import QualityLimits, RawPoint
from carbonshift.domain.series import Kind, Signal, require_utc

DEFAULT_BASE_URL = "https://api.carbonintensity.org.uk"
RESOLUTION = timedelta(minutes=30)
RANGE_MAX = timedelta(days=14)
UNIT = "gco2/kwh"
_REGION = re.compile(r"^GB-(?P<id>\d{1,2})$")
REGION_IDS = range(1, 18)


def _path_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%MZ")


def _intensity(slot: Any, field: str) -> Any:
    intensity = slot.get("intensity") if isinstance(slot, dict) else None
    return intensity.get(field) if isinstance(intensity, dict) else None


def national_points(payload: Any, field: str) -> list[RawPoint]:
    """(from, intensity.<field>) of each national slot; `field` is 'actual' or 'forecast'."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise ValueError("answer lacks a 'data' array")
    return [(parse_time(s.get("from")) if isinstance(s, dict) else None, _intensity(s, field)) for s in data]


def regional_points(payload: Any, region_id: int) -> list[RawPoint]:
    """(from, forecast) of each slot of region `region_id`, from either regional answer shape."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise ValueError("answer lacks a 'data' array")
    points: list[RawPoint] = []
    for entry in data:
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("regions"), list):  # shape 1: one slot, all regions
            moment = parse_time(entry.get("from"))
            points.extend(
                (moment, _intensity(region, "forecast"))
                for region in entry["regions"]
                if isinstance(region, dict) and region.get("regionid") == region_id
            )
        elif isinstance(entry.get("data"), list) and entry.get("regionid") == region_id:  # shape 2
            points.extend(
                (parse_time(slot.get("from")) if isinstance(slot, dict) else None, _intensity(slot, "forecast"))
                for slot in entry["data"]
            )
    return points


class GbCarbonIntensityProvider(HttpProvider):
    """NESO Carbon Intensity API: zone `GB` (national) or `GB-1` ... `GB-17` (regions)."""

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        policy: HttpPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio_sleep,
        max_age: timedelta = timedelta(hours=2),
        limits: QualityLimits | None = None,
    ) -> None:
        http = JsonHttp(
            self.name,
            base_url,
            policy,
            client=client,
            sleep=sleep,
            no_credentials_hint="the NESO API needs no key; check GB_CARBON_INTENSITY_BASE_URL",
        )
        super().__init__(http, max_age=max_age, limits=limits)

    @property
    def name(self) -> str:
        return "gb-carbon-intensity"

    def __repr__(self) -> str:
        return f"GbCarbonIntensityProvider(base_url={self._http.base_url!r})"

    def _region(self, zone: str) -> int | None:
        if zone == "GB":
            return None
        match = _REGION.match(zone)
        if match and int(match.group("id")) in REGION_IDS:
            return int(match.group("id"))
        raise ProviderConfigError(self.name, f"zone {zone!r} is neither GB nor GB-<regionid 1..17>")

    async def _points(self, path: str, zone: str, field: str) -> list[RawPoint]:
        region = self._region(zone)
        payload = await self._http.get_json(path, headers={"Accept": "application/json"})
        try:
            return national_points(payload, field) if region is None else regional_points(payload, region)
        except ValueError as exc:
            raise ProviderDataError(self.name, f"GET {path}: {exc}") from None

    async def current(self, zone: str, now: datetime) -> ProviderResult:
        now = require_utc(now)
        region = self._region(zone)
        path = "intensity" if region is None else f"regional/regionid/{region}"
        notes: tuple[str, ...] = ()
        kind = Kind.ACTUAL
        raw = await self._points(path, zone, "actual")
        if region is None and raw and raw[-1][1] is None:
            raw = await self._points(path, zone, "forecast")
            notes = ("the current half hour has no actual yet; NESO's forecast for it is used",)
            kind = Kind.FORECAST
        if region is not None:
            notes = ("NESO publishes regional intensity as forecasts only",)
            kind = Kind.FORECAST
        result = self._result(
            zone,
            raw,
            now=now,
            unit=UNIT,
            signal=Signal.AVERAGE,
            kind=kind,
            resolution=RESOLUTION,
            issued_at=now if kind == Kind.FORECAST else None,
            max_age=self.max_age,
        )
        return latest_slot(result, now, notes)

    async def forecast(self, zone: str, now: datetime, horizon: timedelta) -> ProviderResult:
        now = require_utc(now)
        region = self._region(zone)
        step = "fw24h" if horizon <= timedelta(hours=24) else "fw48h"
        base = f"intensity/{_path_time(now)}/{step}"
        path = base if region is None else f"regional/{base}/regionid/{region}"
        raw = await self._points(path, zone, "forecast")
        return self._result(
            zone,
            raw,
            now=now,
            unit=UNIT,
            signal=Signal.AVERAGE,
            kind=Kind.FORECAST,
            resolution=RESOLUTION,
            issued_at=now,
            max_age=RESOLUTION,
            window=forecast_window(now, horizon),
            labels={"issued_at_source": "fetch time"},
        )

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> ProviderResult:
        begin, end = require_utc(begin), require_utc(end)
        region = self._region(zone)
        raw: list[RawPoint] = []
        chunk_start = begin
        while chunk_start < end:
            chunk_end = min(chunk_start + RANGE_MAX, end)
            base = f"intensity/{_path_time(chunk_start)}/{_path_time(chunk_end)}"
            path = base if region is None else f"regional/{base}/regionid/{region}"
            raw.extend(await self._points(path, zone, "actual"))
            chunk_start = chunk_end
        kind = Kind.ACTUAL if region is None else Kind.FORECAST
        result = self._result(
            zone,
            raw,
            now=now,
            unit=UNIT,
            signal=Signal.AVERAGE,
            kind=kind,
            resolution=RESOLUTION,
            issued_at=now if kind == Kind.FORECAST else None,
            window=(begin, end),
        )
        notes = ("NESO publishes regional intensity as forecasts only",) if region is not None else ()
        return ProviderResult(self.name, zone, result.series, result.rejected, notes=notes)
