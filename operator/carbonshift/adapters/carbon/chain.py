"""The fallback chain: ask providers in a configured order, say who answered and why the others did not.

This module owns `FallbackChain` and `ChainResult`. Each link is a provider plus the zone name that provider
uses (the same grid is `DE` for Electricity Maps, a region code for WattTime, a cloud region for the Carbon
Aware SDK). Links are tried in order - typically primary API, secondary API, static trace - and the first
usable answer wins. When every link fails the result is the explicit no-data state (`no_data=True`), which
the planner answers by running jobs at their latest safe start. Signals are not mixed silently: the answer's
series carries its own signal (average or marginal) and provider.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from carbonshift.adapters.carbon.base import CarbonProvider, ProviderResult
from carbonshift.adapters.carbon.errors import ProviderDataError, ProviderError
from carbonshift.domain.quality import RejectedPoint
from carbonshift.domain.series import IntensitySeries

logger = logging.getLogger("carbonshift.carbon")

NO_DATA_ADVICE = "no carbon-intensity data from any source: run jobs at their latest safe start"


@dataclass(frozen=True, slots=True)
class ChainLink:
    """One provider of the chain and the zone name it is asked for (None: the chain's zone)."""

    provider: CarbonProvider
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderFailure:
    """Why one provider did not answer: its name, the error class and the message."""

    provider: str
    error: str
    message: str


@dataclass(frozen=True, slots=True)
class ChainResult:
    """The chain's answer: the series from the first provider that answered, or the no-data state."""

    zone: str
    series: IntensitySeries | None
    answered_by: str | None
    failures: list[ProviderFailure] = field(default_factory=list)
    rejected: list[RejectedPoint] = field(default_factory=list)
    stale: bool = False
    notes: tuple[str, ...] = ()

    @property
    def no_data(self) -> bool:
        return self.series is None

    @property
    def advice(self) -> str | None:
        return NO_DATA_ADVICE if self.series is None else None

    def explain(self) -> str:
        """One line: who answered and why the ones before it did not."""
        failed = "; ".join(f"{f.provider} failed ({f.message})" for f in self.failures)
        head = f"answered by {self.answered_by}" if self.answered_by else NO_DATA_ADVICE
        return f"{head}; {failed}" if failed else head


class FallbackChain:
    """Try each link in order; the first usable answer wins."""

    def __init__(self, links: Sequence[ChainLink | CarbonProvider]) -> None:
        if not links:
            raise ValueError("a fallback chain needs at least one provider")
        self.links = [link if isinstance(link, ChainLink) else ChainLink(link) for link in links]

    async def aclose(self) -> None:
        for link in self.links:
            await link.provider.aclose()

    async def _ask(self, zone: str, call: Callable[[CarbonProvider, str], Awaitable[ProviderResult]]) -> ChainResult:
        failures: list[ProviderFailure] = []
        rejected: list[RejectedPoint] = []
        for link in self.links:
            name = link.provider.name
            try:
                result = await call(link.provider, link.zone or zone)
            except ProviderError as exc:
                failures.append(ProviderFailure(name, type(exc).__name__, exc.message))
                if isinstance(exc, ProviderDataError):
                    rejected.extend(exc.rejected)
                level = logging.DEBUG if exc.remembered else logging.WARNING
                logger.log(level, "carbon provider %s failed for %s: %s", name, link.zone or zone, exc.message)
                continue
            return ChainResult(
                zone=zone,
                series=result.series,
                answered_by=name,
                failures=failures,
                rejected=[*rejected, *result.rejected],
                stale=result.stale,
                notes=result.notes,
            )
        logger.error("no carbon data for %s: %s", zone, "; ".join(f"{f.provider}: {f.message}" for f in failures))
        return ChainResult(zone=zone, series=None, answered_by=None, failures=failures, rejected=rejected)

    async def current(self, zone: str, now: datetime) -> ChainResult:
        return await self._ask(zone, lambda provider, z: provider.current(z, now))

    async def forecast(self, zone: str, now: datetime, horizon: timedelta) -> ChainResult:
        return await self._ask(zone, lambda provider, z: provider.forecast(z, now, horizon))

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> ChainResult:
        return await self._ask(zone, lambda provider, z: provider.history(z, begin, end, now))
