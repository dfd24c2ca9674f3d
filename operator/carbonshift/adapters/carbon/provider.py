"""What the HTTP providers share: their JSON client, guard settings, memory of recent values, and result building.

Each provider module owns its wire format (paths, fields, auth); this class owns what is the same for all of them,
so the guards (`build_result`) are always called with the provider's limits and memory of the zone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from carbonshift.adapters.carbon.base import ProviderResult, build_result
from carbonshift.adapters.carbon.http import JsonHttp
from carbonshift.domain.quality import QualityLimits, RawPoint, RecentValues
from carbonshift.domain.series import Kind, Signal


def iso_z(moment: datetime) -> str:
    """A UTC time as the providers' query strings want it: 2026-01-02T03:04:05Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class HttpProvider:
    """Base of the providers that speak JSON over HTTP (Electricity Maps, WattTime, Carbon Aware SDK, NESO)."""

    def __init__(self, http: JsonHttp, *, max_age: timedelta, limits: QualityLimits | None) -> None:
        self._http = http
        self.max_age = max_age
        self.limits = limits
        self.recent = RecentValues()

    @property
    def name(self) -> str:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self._http.aclose()

    def _result(
        self,
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
        window: tuple[datetime, datetime] | None = None,
        labels: dict[str, str] | None = None,
    ) -> ProviderResult:
        """The guarded result of one answer, checked against (and remembered in) this provider's recent values."""
        return build_result(
            self.name,
            zone,
            raw,
            now=now,
            unit=unit,
            signal=signal,
            kind=kind,
            resolution=resolution,
            issued_at=issued_at,
            max_age=max_age,
            limits=self.limits,
            window=window,
            labels=labels,
            recent=self.recent,
        )
