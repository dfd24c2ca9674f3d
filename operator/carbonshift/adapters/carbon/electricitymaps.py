"""Electricity Maps API v3 adapter (average, consumption-based intensity; lifecycle factors by default).

This module owns the Electricity Maps wire format: header `auth-token`, endpoints
`carbon-intensity/latest`, `/history` (last 24 h), `/forecast` and `/past-range` (at most 10 days per call
at hourly granularity, so longer ranges are fetched in chunks). The series timestamp is each item's
`datetime` (interval start), never `updatedAt`; `carbonIntensity` is nullable and nulls are refused by the
guards, not read as zero. An answer for another zone than the one asked is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import httpx

from carbonshift.adapters.carbon.base import ProviderResult, forecast_window, latest_slot, parse_time
from carbonshift.adapters.carbon.errors import ProviderConfigError, ProviderDataError
from carbonshift.adapters.carbon.http import HttpPolicy, JsonHttp, Sleep, asyncio_sleep
from carbonshift.adapters.carbon.provider import HttpProvider, iso_z
from carbonshift.adapters.carbon.secrets import Secret
from carbonshift.domain.quality import QualityLimits, RawPoint
from carbonshift.domain.series import Kind, Signal, require_utc

DEFAULT_BASE_URL = "https://api.electricitymaps.com/v3"
GRANULARITIES = {"5_minutes": timedelta(minutes=5), "15_minutes": timedelta(minutes=15), "hourly": timedelta(hours=1)}
PAST_RANGE_MAX = timedelta(days=10)
UNIT = "gco2eq/kwh"


class ElectricityMapsProvider(HttpProvider):
    """Electricity Maps v3: zone keys such as DE, FR, GB, US-CAL-CISO."""

    def __init__(
        self,
        token: Secret | None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        policy: HttpPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio_sleep,
        temporal_granularity: str = "hourly",
        emission_factor_type: str = "lifecycle",
        max_age: timedelta = timedelta(hours=3),
        limits: QualityLimits | None = None,
    ) -> None:
        if token is None:
            raise ProviderConfigError(
                self.name,
                "no API token: set ELECTRICITYMAPS_API_TOKEN, or ELECTRICITYMAPS_API_TOKEN_FILE to a file holding it "
                "(chart: providerSecret.keys.ELECTRICITYMAPS_API_TOKEN names the key of your Secret)",
            )
        if temporal_granularity not in GRANULARITIES:
            raise ProviderConfigError(
                self.name, f"temporal granularity {temporal_granularity!r} not one of {sorted(GRANULARITIES)}"
            )
        if emission_factor_type not in {"lifecycle", "direct"}:
            raise ProviderConfigError(self.name, f"emission factor type {emission_factor_type!r} not lifecycle|direct")
        self._token = token
        http = JsonHttp(self.name, base_url, policy, client=client, secrets=[token], sleep=sleep)
        super().__init__(http, max_age=max_age, limits=limits)
        self.granularity = temporal_granularity
        self.resolution = GRANULARITIES[temporal_granularity]
        self.emission_factor_type = emission_factor_type

    @property
    def name(self) -> str:
        return "electricitymaps"

    def __repr__(self) -> str:
        return f"ElectricityMapsProvider(base_url={self._http.base_url!r}, token={self._token!r})"

    async def _get(self, path: str, zone: str, **extra: str) -> Any:
        params = {"zone": zone, "emissionFactorType": self.emission_factor_type, **extra}
        payload = await self._http.get_json(path, params=params, headers={"auth-token": self._token.reveal()})
        if not isinstance(payload, dict):
            raise ProviderDataError(self.name, f"GET {path}: expected a JSON object, got {type(payload).__name__}")
        answered = payload.get("zone")
        if answered is not None and answered != zone:
            raise ProviderDataError(self.name, f"GET {path}: asked for zone {zone}, answered for {answered}")
        return payload

    def _items(self, payload: dict[str, Any], key: str, path: str) -> list[RawPoint]:
        items = payload.get(key)
        if not isinstance(items, list):
            raise ProviderDataError(self.name, f"GET {path}: no {key!r} array in the answer")
        return list(_points(items))

    async def current(self, zone: str, now: datetime) -> ProviderResult:
        now = require_utc(now)
        payload = await self._get("carbon-intensity/latest", zone)
        raw = list(_points([payload]))
        result = self._result(
            zone,
            raw,
            now=now,
            unit=UNIT,
            signal=Signal.AVERAGE,
            kind=Kind.ACTUAL,
            resolution=self.resolution,
            max_age=self.max_age,
            labels=self._labels(),
        )
        return latest_slot(result, now)

    async def forecast(self, zone: str, now: datetime, horizon: timedelta) -> ProviderResult:
        path = "carbon-intensity/forecast"
        payload = await self._get(path, zone, temporalGranularity=self.granularity)
        raw = self._items(payload, "forecast", path)
        issued_at = parse_time(payload.get("updatedAt"))
        return self._result(
            zone,
            raw,
            now=now,
            unit=UNIT,
            signal=Signal.AVERAGE,
            kind=Kind.FORECAST,
            resolution=self.resolution,
            issued_at=issued_at,
            max_age=self.resolution,
            window=forecast_window(now, horizon),
            labels=self._labels(),
        )

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> ProviderResult:
        begin, end, now = require_utc(begin), require_utc(end), require_utc(now)
        raw: list[RawPoint] = []
        if begin >= now - timedelta(hours=24):
            path = "carbon-intensity/history"
            raw = self._items(await self._get(path, zone), "history", path)
        else:
            path = "carbon-intensity/past-range"
            chunk_start = begin
            while chunk_start < end:
                chunk_end = min(chunk_start + PAST_RANGE_MAX, end)
                payload = await self._get(
                    path, zone, start=iso_z(chunk_start), end=iso_z(chunk_end), temporalGranularity=self.granularity
                )
                raw.extend(self._items(payload, "data", path))
                chunk_start = chunk_end
        return self._result(
            zone,
            raw,
            now=now,
            unit=UNIT,
            signal=Signal.AVERAGE,
            kind=Kind.ACTUAL,
            resolution=self.resolution,
            window=(begin, end),
            labels=self._labels(),
        )

    def _labels(self) -> dict[str, str]:
        return {"emission_factor_type": self.emission_factor_type}


def _points(items: Iterable[Any]) -> Iterable[RawPoint]:
    for item in items:
        if not isinstance(item, dict):
            yield None, None
            continue
        yield parse_time(item.get("datetime")), item.get("carbonIntensity")
