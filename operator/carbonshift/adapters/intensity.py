"""Forecasts for the operator, per zone, on top of the carbon providers' fallback chain.

`ZoneForecasts` keeps one `FallbackChain` per grid zone (the configured API providers, then that zone's bundled
trace when traces are enabled) and turns each chain's answer into a `ZoneForecast`: the series, who answered, and
whether the planner is working on degraded data (a fallback answered, the data is stale, or nothing answered,
in which case the planner runs jobs at their latest safe start).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from carbonshift import metrics
from carbonshift.adapters.carbon.base import CarbonProvider
from carbonshift.adapters.carbon.chain import FallbackChain
from carbonshift.adapters.carbon.errors import ProviderConfigError
from carbonshift.domain.series import IntensitySeries


@dataclass(frozen=True, slots=True)
class ZoneForecast:
    zone: str
    series: IntensitySeries | None
    provider: str | None
    degraded: bool
    message: str


class ZoneForecasts:
    """`providers` serve every zone; `trace_for(zone)` adds a last-resort trace for a zone (None: no trace)."""

    def __init__(
        self,
        providers: Sequence[CarbonProvider],
        trace_for: Callable[[str], CarbonProvider | None] | None = None,
    ) -> None:
        self.providers = list(providers)
        self.trace_for = trace_for
        self.chains: dict[str, FallbackChain] = {}
        self.config_errors: dict[str, str] = {}

    def chain(self, zone: str) -> FallbackChain | None:
        if zone not in self.chains and zone not in self.config_errors:
            links = list(self.providers)
            if self.trace_for is not None:
                try:
                    trace = self.trace_for(zone)
                except ProviderConfigError as exc:
                    self.config_errors[zone] = exc.message
                    trace = None
                if trace is not None:
                    links.append(trace)
            if not links:
                self.config_errors.setdefault(zone, f"no carbon-intensity provider serves zone {zone}")
                return None
            self.chains[zone] = FallbackChain(links)
            for link in links:  # export the series from the start (at 0), so rates and alerts see them
                metrics.PROVIDER_ERRORS.labels(link.name, zone)
                metrics.PROVIDER_FALLBACKS.labels(zone, link.name)
        return self.chains.get(zone)

    async def forecast(self, zone: str, now: datetime, horizon: timedelta) -> ZoneForecast:
        chain = self.chain(zone)
        if chain is None:
            return ZoneForecast(zone, None, None, True, self.config_errors[zone])
        answer = await chain.forecast(zone, now, horizon)
        for failure in answer.failures:
            metrics.PROVIDER_ERRORS.labels(failure.provider, zone).inc()
        first = chain.links[0].provider.name
        degraded = answer.series is None or answer.answered_by != first or answer.stale
        return ZoneForecast(zone, answer.series, answer.answered_by, degraded, answer.explain())

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> IntensitySeries | None:
        """Measured intensity of [begin, end): what emissions are accounted on (never the forecast)."""
        chain = self.chain(zone)
        if chain is None:
            return None
        return (await chain.history(zone, begin, end, now)).series

    async def latest(self, zone: str, now: datetime, provider: str) -> tuple[datetime, float] | None:
        """The newest measured slot at or before `now` (its start, g/kWh) as `provider` reports it (its current
        value, cached per slot like every answer); None when another link answered, the answer is stale or holds no
        value."""
        chain = self.chain(zone)
        if chain is None:
            return None
        answer = await chain.current(zone, now)
        series = answer.series
        if series is None or answer.answered_by != provider or answer.stale or len(series) == 0:
            return None
        for i in range(len(series) - 1, -1, -1):
            start = series.slot_start(i)
            value = float(series.values[i])
            if start <= now and math.isfinite(value):
                return start, value
        return None

    async def aclose(self) -> None:
        for chain in self.chains.values():
            await chain.aclose()
