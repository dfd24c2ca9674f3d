"""Caching of provider answers to the provider's resolution, one request in flight, failures remembered briefly.

This module owns `CachedProvider`, which wraps any CarbonProvider (the operator and `carbonshift forecast` wrap
every API provider in it). An answer is reused until `now` (the caller's logical clock, so tests and the
simulator control it) leaves the slot in which it was fetched, at the answer's own resolution (an hourly
provider is asked at most once per hour per zone and horizon). Besides:

* one request in flight per call, zone and window: concurrent callers of the same key wait for the one
  request already made and share its answer (or its failure);
* every call ends within `budget_seconds` (15 s; the HTTP layer's retries happen inside it);
* a failure is remembered for `negative_ttl_seconds` (30 s, wall clock), doubling with each consecutive failure
  of the same call up to `negative_ttl_max_seconds` (5 min) and reset by an answer: calls for the same key in that
  time fail at once without a request, and while the provider is unreachable (timeouts, refused connections, 5xx,
  429) calls for any of its zones do, so a hanging provider costs one budget now and then, not one per zone and
  job on every pass;
* when the wrapped provider fails, an older answer no more than `max_stale` old is served instead, marked
  `stale=True` with the failure in `notes`; beyond that the failure propagates to the fallback chain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from carbonshift.adapters.carbon.base import CarbonProvider, ProviderResult
from carbonshift.adapters.carbon.errors import (
    ProviderConfigError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
)
from carbonshift.domain.series import require_utc

MIN_TTL = timedelta(minutes=1)
DEFAULT_BUDGET_SECONDS = 15.0
DEFAULT_NEGATIVE_TTL_SECONDS = 30.0
DEFAULT_NEGATIVE_TTL_MAX_SECONDS = 300.0
_PROVIDER_WIDE = "*"


@dataclass(frozen=True, slots=True)
class _Entry:
    result: ProviderResult
    fetched_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class _Failure:
    error: ProviderError
    until: float  # monotonic seconds


def _slot_end(moment: datetime, resolution: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=moment.tzinfo)
    slots = (moment - epoch) // resolution
    return epoch + (slots + 1) * resolution


class CachedProvider:
    """Wrap `inner` with a cache keyed by (call, zone, arguments), single-flight requests, a time budget per
    call and a short negative cache. `monotonic` is the wall clock of the negative cache (injectable)."""

    def __init__(
        self,
        inner: CarbonProvider,
        *,
        max_stale: timedelta = timedelta(hours=6),
        budget_seconds: float = DEFAULT_BUDGET_SECONDS,
        negative_ttl_seconds: float = DEFAULT_NEGATIVE_TTL_SECONDS,
        negative_ttl_max_seconds: float = DEFAULT_NEGATIVE_TTL_MAX_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.max_stale = max_stale
        self.budget_seconds = budget_seconds
        self.negative_ttl_seconds = negative_ttl_seconds
        self.negative_ttl_max_seconds = max(negative_ttl_max_seconds, negative_ttl_seconds)
        self._monotonic = monotonic
        self._streaks: dict[tuple[str, ...], int] = {}
        self._entries: dict[tuple[str, ...], _Entry] = {}
        self._failures: dict[tuple[str, ...], _Failure] = {}
        self._in_flight: dict[tuple[str, ...], asyncio.Future[None]] = {}
        self.hits = 0
        self.misses = 0
        self.stale_served = 0
        self.shared = 0
        self.failures_served = 0

    @property
    def name(self) -> str:
        return self.inner.name

    def __repr__(self) -> str:
        return f"CachedProvider({self.inner!r})"

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _remembered_failure(self, key: tuple[str, ...]) -> ProviderError | None:
        """The failure remembered for `key` (or for the whole provider), as a new error saying so; else None."""
        clock = self._monotonic()
        for k in (key, (_PROVIDER_WIDE,)):
            failure = self._failures.get(k)
            if failure is None:
                continue
            if clock >= failure.until:
                del self._failures[k]
                continue
            error = failure.error
            again = ProviderError.__new__(type(error))
            again.__dict__.update(error.__dict__)
            again.message = f"{error.message} (remembered; not asking again for {failure.until - clock:.0f}s)"
            again.args = (f"{error.provider}: {again.message}",)
            again.remembered = True  # the chain logs it at DEBUG: the failure itself was logged when it happened
            return again
        return None

    def _remember_failure(self, key: tuple[str, ...], error: ProviderError) -> None:
        if self.negative_ttl_seconds <= 0:
            return
        streak = self._streaks[key] = self._streaks.get(key, 0) + 1
        ttl = min(self.negative_ttl_seconds * 2 ** (streak - 1), self.negative_ttl_max_seconds)
        until = self._monotonic() + ttl
        self._failures[key] = _Failure(error, until)
        if isinstance(error, ProviderUnavailableError | ProviderRateLimitedError):
            self._failures[(_PROVIDER_WIDE,)] = _Failure(error, until)

    async def _fetch(self, fetch: Callable[[], Awaitable[ProviderResult]]) -> ProviderResult:
        try:
            async with asyncio.timeout(self.budget_seconds):
                return await fetch()
        except TimeoutError:
            raise ProviderUnavailableError(
                self.name, f"no answer within the {self.budget_seconds:g}s budget of one call (retries included)"
            ) from None

    async def _cached(
        self, key: tuple[str, ...], now: datetime, fetch: Callable[[], Awaitable[ProviderResult]]
    ) -> ProviderResult:
        now = require_utc(now, "now")
        while True:
            entry = self._entries.get(key)
            if entry is not None and entry.fetched_at <= now < entry.expires_at:
                self.hits += 1
                return entry.result
            failed = self._remembered_failure(key)
            if failed is not None:
                self.failures_served += 1
                return self._fallback(key, now, failed)
            running = self._in_flight.get(key)
            if running is None:
                break
            # The same request is already on its way: wait for it, then look again (cached, or failed).
            self.shared += 1
            await asyncio.wait([running])
        self.misses += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            result = await self._fetch(fetch)
        except ProviderError as exc:
            self._remember_failure(key, exc)
            return self._fallback(key, now, exc)
        else:
            self._streaks.pop(key, None)
            expires = max(_slot_end(now, result.series.resolution), now + MIN_TTL)
            self._entries[key] = _Entry(result, now, expires)
            return result
        finally:
            del self._in_flight[key]
            future.set_result(None)

    def _fallback(self, key: tuple[str, ...], now: datetime, error: ProviderError) -> ProviderResult:
        """A recent enough cached answer marked stale, else `error` raised (a configuration error always is)."""
        entry = self._entries.get(key)
        if isinstance(error, ProviderConfigError):
            raise error
        if entry is not None and timedelta(0) <= now - entry.fetched_at <= self.max_stale:
            self.stale_served += 1
            age = now - entry.fetched_at
            note = f"served from cache fetched {age} ago because {error}"
            return replace(entry.result, stale=True, notes=(*entry.result.notes, note))
        raise error

    async def current(self, zone: str, now: datetime) -> ProviderResult:
        return await self._cached(("current", zone), now, lambda: self.inner.current(zone, now))

    async def forecast(self, zone: str, now: datetime, horizon: timedelta) -> ProviderResult:
        key = ("forecast", zone, str(horizon.total_seconds()))
        return await self._cached(key, now, lambda: self.inner.forecast(zone, now, horizon))

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> ProviderResult:
        key = ("history", zone, begin.isoformat(), end.isoformat())
        return await self._cached(key, now, lambda: self.inner.history(zone, begin, end, now))
