"""WattTime API v3 adapter (marginal `co2_moer` by default, or average `co2_aoer`).

This module owns the WattTime wire format: `GET /login` with HTTP Basic auth returns a token valid for 30
minutes, sent as `Authorization: Bearer`; the token is renewed before it expires and once more after a 401.
Data comes from `/v3/forecast` (issue time `meta.generated_at`) and `/v3/historical` (at most 30 days per
call, so longer ranges are chunked). Units are read from `meta.units` on every answer, never assumed:
`lbs_co2_per_mwh` is converted to g/kWh (x 0.45359237) by the guards; an unknown or missing unit refuses
the whole answer. `co2_moer` is a MARGINAL signal and is labelled so; it is not comparable with average
intensity from the other providers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from carbonshift.adapters.carbon.base import ProviderResult, forecast_window, latest_slot, parse_time
from carbonshift.adapters.carbon.errors import ProviderAuthError, ProviderConfigError, ProviderDataError
from carbonshift.adapters.carbon.http import HttpPolicy, JsonHttp, Sleep, asyncio_sleep
from carbonshift.adapters.carbon.provider import HttpProvider, iso_z
from carbonshift.adapters.carbon.secrets import Secret
from carbonshift.domain.quality import QualityLimits, RawPoint
from carbonshift.domain.series import Kind, Signal, require_utc

DEFAULT_BASE_URL = "https://api.watttime.org"
TOKEN_LIFETIME_SECONDS = 30 * 60
TOKEN_RENEW_MARGIN_SECONDS = 60
HISTORICAL_MAX = timedelta(days=30)
SIGNALS = {"co2_moer": Signal.MARGINAL, "co2_aoer": Signal.AVERAGE}


class WattTimeProvider(HttpProvider):
    """WattTime v3: zones are WattTime region codes such as CAISO_NORTH."""

    def __init__(
        self,
        username: Secret | None,
        password: Secret | None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        signal_type: str = "co2_moer",
        policy: HttpPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio_sleep,
        clock: Callable[[], float] = time.monotonic,
        max_age: timedelta = timedelta(hours=1),
        limits: QualityLimits | None = None,
    ) -> None:
        if username is None or password is None:
            raise ProviderConfigError(
                self.name,
                "no credentials: set WATTTIME_USERNAME and WATTTIME_PASSWORD, or their _FILE variables "
                "(chart: providerSecret.keys.WATTTIME_USERNAME and .WATTTIME_PASSWORD name the keys of your Secret)",
            )
        if signal_type not in SIGNALS:
            raise ProviderConfigError(
                self.name, f"signal type {signal_type!r} is not a carbon intensity; use one of {sorted(SIGNALS)}"
            )
        self._username = username
        self._password = password
        http = JsonHttp(self.name, base_url, policy, client=client, secrets=[username, password], sleep=sleep)
        super().__init__(http, max_age=max_age, limits=limits)
        self.signal_type = signal_type
        self.signal = SIGNALS[signal_type]
        self._clock = clock
        self._token: Secret | None = None
        self._token_expires = -math.inf
        self.logins = 0

    @property
    def name(self) -> str:
        return "watttime"

    def __repr__(self) -> str:
        return f"WattTimeProvider(base_url={self._http.base_url!r}, username={self._username!r})"

    async def _login(self) -> Secret:
        auth = httpx.BasicAuth(self._username.reveal(), self._password.reveal())
        payload = await self._http.get_json("login", auth=auth)
        token = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise ProviderAuthError(self.name, f"GET /login answered without a token; check {self._sources()}")
        self.logins += 1
        self._token = Secret(token, "watttime token")
        self._http.add_secret(self._token)
        self._token_expires = self._clock() + TOKEN_LIFETIME_SECONDS - TOKEN_RENEW_MARGIN_SECONDS
        return self._token

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        token = self._token
        if token is None or self._clock() >= self._token_expires:
            token = await self._login()
        response = await self._http.get(path, params=params, headers={"Authorization": f"Bearer {token.reveal()}"})
        if response.status_code == 401:  # expired or revoked early: log in again, once
            token = await self._login()
            response = await self._http.get(path, params=params, headers={"Authorization": f"Bearer {token.reveal()}"})
        payload = self._http.decode(path, response)
        if not isinstance(payload, dict):
            raise ProviderDataError(self.name, f"GET {path}: expected a JSON object, got {type(payload).__name__}")
        return payload

    def _parse(self, payload: dict[str, Any], zone: str, path: str) -> tuple[list[RawPoint], str, timedelta | None]:
        meta = payload.get("meta")
        data = payload.get("data")
        if not isinstance(meta, dict) or not isinstance(data, list):
            raise ProviderDataError(self.name, f"GET {path}: answer lacks 'data' or 'meta'")
        region = meta.get("region")
        if region is not None and region != zone:
            raise ProviderDataError(self.name, f"GET {path}: asked for region {zone}, answered for {region}")
        answered_signal = meta.get("signal_type")
        if answered_signal is not None and answered_signal != self.signal_type:
            raise ProviderDataError(self.name, f"GET {path}: asked for {self.signal_type}, got {answered_signal}")
        unit = meta.get("units")
        unit = unit if isinstance(unit, str) else "(missing)"
        period = meta.get("data_point_period_seconds", meta.get("data_point_periods_second"))
        resolution = timedelta(seconds=period) if isinstance(period, int | float) and period > 0 else None
        raw: list[RawPoint] = [
            (parse_time(item.get("point_time")), item.get("value")) if isinstance(item, dict) else (None, None)
            for item in data
        ]
        return raw, unit, resolution

    async def current(self, zone: str, now: datetime) -> ProviderResult:
        now = require_utc(now)
        path = "v3/historical"
        params = {
            "region": zone,
            "signal_type": self.signal_type,
            "start": iso_z(now - timedelta(hours=1)),
            "end": iso_z(now),
        }
        raw, unit, resolution = self._parse(await self._get(path, params), zone, path)
        result = self._result(
            zone,
            raw,
            now=now,
            unit=unit,
            signal=self.signal,
            kind=Kind.ACTUAL,
            resolution=resolution,
            max_age=self.max_age,
            labels=self._labels(),
        )
        return latest_slot(result, now)

    async def forecast(self, zone: str, now: datetime, horizon: timedelta) -> ProviderResult:
        path = "v3/forecast"
        hours = min(max(math.ceil(horizon / timedelta(hours=1)), 1), 72)
        params = {"region": zone, "signal_type": self.signal_type, "horizon_hours": str(hours)}
        payload = await self._get(path, params)
        raw, unit, resolution = self._parse(payload, zone, path)
        meta = payload["meta"]
        issued_at = parse_time(meta.get("generated_at"))
        return self._result(
            zone,
            raw,
            now=now,
            unit=unit,
            signal=self.signal,
            kind=Kind.FORECAST,
            resolution=resolution,
            issued_at=issued_at,
            max_age=resolution or timedelta(minutes=5),
            window=forecast_window(now, horizon),
            labels=self._labels(),
        )

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> ProviderResult:
        begin, end = require_utc(begin), require_utc(end)
        path = "v3/historical"
        raw: list[RawPoint] = []
        unit, resolution = "(missing)", None
        chunk_start = begin
        while chunk_start < end:
            chunk_end = min(chunk_start + HISTORICAL_MAX, end)
            params = {
                "region": zone,
                "signal_type": self.signal_type,
                "start": iso_z(chunk_start),
                "end": iso_z(chunk_end),
            }
            chunk, unit, resolution = self._parse(await self._get(path, params), zone, path)
            raw.extend(chunk)
            chunk_start = chunk_end
        return self._result(
            zone,
            raw,
            now=now,
            unit=unit,
            signal=self.signal,
            kind=Kind.ACTUAL,
            resolution=resolution,
            window=(begin, end),
            labels=self._labels(),
        )

    def _sources(self) -> str:
        return f"{self._username.source} and {self._password.source}"

    def _labels(self) -> dict[str, str]:
        return {"signal_type": self.signal_type}
