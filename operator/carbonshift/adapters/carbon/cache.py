"""Caching of provider answers to the provider's resolution, with a bounded stale fallback.

This module owns `CachedProvider`, which wraps any CarbonProvider. An answer is reused until `now` (the
caller's logical clock, so tests and the simulator control it) leaves the slot in which it was fetched, at
the answer's own resolution (an hourly provider is asked at most once per hour per zone and horizon). When
the wrapped provider fails, an older answer no more than `max_stale` old is served instead, marked
`stale=True` with the failure in `notes`; beyond that the failure propagates to the fallback chain.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from carbonshift.adapters.carbon.base import CarbonProvider, ProviderResult
from carbonshift.adapters.carbon.errors import ProviderConfigError, ProviderError
from carbonshift.domain.series import require_utc

MIN_TTL = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class _Entry:
    result: ProviderResult
    fetched_at: datetime
    expires_at: datetime


def _slot_end(moment: datetime, resolution: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    slots = (moment - epoch) // resolution
    return epoch + (slots + 1) * resolution


class CachedProvider:
    """Wrap `inner` with a cache keyed by (call, zone, arguments)."""

    def __init__(self, inner: CarbonProvider, *, max_stale: timedelta = timedelta(hours=6)) -> None:
        self.inner = inner
        self.max_stale = max_stale
        self._entries: dict[tuple[str, ...], _Entry] = {}
        self.hits = 0
        self.misses = 0
        self.stale_served = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def __repr__(self) -> str:
        return f"CachedProvider({self.inner!r})"

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def _cached(
        self, key: tuple[str, ...], now: datetime, fetch: Callable[[], Awaitable[ProviderResult]]
    ) -> ProviderResult:
        now = require_utc(now, "now")
        entry = self._entries.get(key)
        if entry is not None and entry.fetched_at <= now < entry.expires_at:
            self.hits += 1
            return entry.result
        self.misses += 1
        try:
            result = await fetch()
        except ProviderConfigError:
            raise
        except ProviderError as exc:
            if entry is not None and timedelta(0) <= now - entry.fetched_at <= self.max_stale:
                self.stale_served += 1
                age = now - entry.fetched_at
                note = f"served from cache fetched {age} ago because {exc}"
                return replace(entry.result, stale=True, notes=(*entry.result.notes, note))
            raise
        expires = max(_slot_end(now, result.series.resolution), now + MIN_TTL)
        self._entries[key] = _Entry(result, now, expires)
        return result

    async def current(self, zone: str, now: datetime) -> ProviderResult:
        return await self._cached(("current", zone), now, lambda: self.inner.current(zone, now))

    async def forecast(self, zone: str, now: datetime, horizon: timedelta) -> ProviderResult:
        key = ("forecast", zone, str(horizon.total_seconds()))
        return await self._cached(key, now, lambda: self.inner.forecast(zone, now, horizon))

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> ProviderResult:
        key = ("history", zone, begin.isoformat(), end.isoformat())
        return await self._cached(key, now, lambda: self.inner.history(zone, begin, end, now))
