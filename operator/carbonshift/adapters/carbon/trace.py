"""The static trace provider: a recorded series (bundled by zone, or a CSV file) served as a provider.

This module owns how a trace answers `current`, `forecast` and `history` without ever showing the future:
`current` is the slot containing `now`, `history` the slots that started by `now`, and `forecast` comes from
a declared forecast model applied to the actuals (default: persistence, the value one day earlier), never
the actuals themselves unless the model is the oracle, whose results are labelled so.

As the last configured fallback of a live operator, `now` usually lies outside the trace's year. With
`replay=True` the trace is then shifted by a whole number of 52-week periods (364 days, which keeps
weekdays aligned) so that `now` falls inside it; the result is labelled `replayed_from`, and the provider's name
says "replayed trace of YEAR" so that every plan, Event and receipt made from it says so (`replay_note`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from carbonshift.adapters.carbon.base import ProviderResult
from carbonshift.adapters.carbon.errors import ProviderConfigError, ProviderDataError
from carbonshift.data import UnknownTraceError, parse_bundled_trace
from carbonshift.domain.forecasting import ForecastModel, PersistenceForecast
from carbonshift.domain.quality import RejectedPoint
from carbonshift.domain.series import IntensitySeries, require_utc
from carbonshift.domain.traces import TraceError, parse_trace_csv

REPLAY_PERIOD = timedelta(days=364)
_REPLAY_NOTE = re.compile(r"replayed trace of \d{4}")


def replay_note(provider: str | None) -> str | None:
    """'replayed trace of YEAR' when `provider` (a provider name, as plans record it) is a replayed trace."""
    match = _REPLAY_NOTE.search(provider or "")
    return match.group(0) if match else None


class TraceProvider:
    """Serve one recorded series. `zone` arguments must match the trace's zone (or be empty)."""

    def __init__(
        self,
        series: IntensitySeries,
        *,
        forecast_model: ForecastModel | None = None,
        rejected: list[RejectedPoint] | None = None,
        replay: bool = False,
        label: str | None = None,
    ) -> None:
        self.series = series
        self.model = forecast_model or PersistenceForecast()
        self.load_rejected = list(rejected or [])
        self.replay = replay
        self._label = label or series.provider
        self._shifted: dict[int, IntensitySeries] = {}

    @classmethod
    def bundled(cls, name: str, **kwargs: object) -> TraceProvider:
        """A bundled trace by zone ('DE') or stem ('DE_2020')."""
        try:
            parsed = parse_bundled_trace(name)
        except UnknownTraceError as exc:
            raise ProviderConfigError("trace", str(exc)) from None
        return cls(parsed.series, rejected=parsed.rejected, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_csv(cls, path: str | Path, zone: str | None = None, **kwargs: object) -> TraceProvider:
        """A trace file in the bundled shape (`timestamp,gco2_per_kwh`); the zone defaults to the file stem."""
        location = Path(path)
        try:
            text = location.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProviderConfigError("trace", f"cannot read trace {location}: {exc.strerror}") from None
        try:
            parsed = parse_trace_csv(
                text, zone or location.stem, source=location.name, provider=f"trace:{location.name}"
            )
        except TraceError as exc:
            raise ProviderDataError("trace", str(exc)) from None
        return cls(parsed.series, rejected=parsed.rejected, **kwargs)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        name = f"trace:{self._label.removeprefix('trace:')}"
        return f"{name} (replayed trace of {self.series.start.year})" if self.replay else name

    def __repr__(self) -> str:
        span = f"{self.series.start.date()}..{self.series.end.date()}"
        return f"TraceProvider({self.series.zone}, {span}, {self.model.name})"

    async def aclose(self) -> None:
        return None

    def _check_zone(self, zone: str) -> None:
        if zone and zone.upper() != self.series.zone.upper():
            raise ProviderConfigError(self.name, f"this trace is for zone {self.series.zone}, not {zone}")

    def _series_for(self, now: datetime) -> IntensitySeries:
        series = self.series
        if not self.replay or series.start <= now < series.end:
            return series
        periods = (now - series.start) // REPLAY_PERIOD
        cached = self._shifted.get(periods)
        if cached is None:
            labels = {**series.labels, "replayed_from": f"{series.start.date()}..{series.end.date()}"}
            cached = replace(series, start=series.start + periods * REPLAY_PERIOD, labels=labels)
            self._shifted = {periods: cached}
        return cached

    def _require(self, series: IntensitySeries, what: str, begin: datetime, end: datetime) -> IntensitySeries:
        if len(series) == 0 or series.coverage() == 0:
            raise ProviderDataError(
                self.name,
                f"no {what} for zone {self.series.zone} in [{begin.isoformat()}, {end.isoformat()}); "
                f"the trace covers {self.series.start.isoformat()} to {self.series.end.isoformat()}",
            )
        return series

    async def current(self, zone: str, now: datetime) -> ProviderResult:
        self._check_zone(zone)
        now = require_utc(now)
        source = self._series_for(now)
        slot = self._require(source.window(now, now + timedelta(microseconds=1)), "data", now, now)
        return ProviderResult(self.name, source.zone, slot, self.load_rejected)

    async def forecast(self, zone: str, now: datetime, horizon: timedelta) -> ProviderResult:
        self._check_zone(zone)
        now = require_utc(now)
        source = self._series_for(now)
        forecast = self._require(self.model.forecast(source, now, horizon), "forecast", now, now + horizon)
        notes = ("oracle forecast: these are the actuals (perfect information)",) if self.model.is_oracle else ()
        return ProviderResult(self.name, source.zone, forecast, self.load_rejected, notes=notes)

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> ProviderResult:
        self._check_zone(zone)
        now = require_utc(now)
        source = self._series_for(now)
        stop = min(require_utc(end), source.slot_start(source.index_of(now) + 1))
        window = self._require(source.window(require_utc(begin), stop), "history", begin, end)
        return ProviderResult(self.name, source.zone, window, self.load_rejected)
