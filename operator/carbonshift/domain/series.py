"""The intensity series: grid carbon intensity on a regular grid of UTC slots.

This is the one shape every provider's data is turned into, and the only one the planner and the simulator
read. Values are gCO2e/kWh on a fixed resolution; a missing slot is NaN (never 0, never -1). The series
carries what kind of number it holds, so that average and marginal signals, or a forecast and the actuals,
are never mixed silently.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class Signal(StrEnum):
    """What an intensity number means: the grid mix average, or the marginal generator's rate."""

    AVERAGE = "average"
    MARGINAL = "marginal"


class Kind(StrEnum):
    """Whether the values were measured (actual) or predicted (forecast)."""

    ACTUAL = "actual"
    FORECAST = "forecast"


class SeriesError(ValueError):
    """A series operation that cannot be done honestly (mismatched signals, naive timestamps...)."""


def require_utc(moment: datetime, what: str = "timestamp") -> datetime:
    """Return `moment` in UTC; a naive datetime is an error, never silently assumed to be UTC."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise SeriesError(f"{what} {moment.isoformat()} has no timezone; give it as UTC (suffix Z)")
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class IntensitySeries:
    """Carbon intensity in gCO2e/kWh on regular slots starting at `start`, `resolution` apart.

    `values[i]` is the mean intensity of slot i, i.e. [start + i*resolution, start + (i+1)*resolution).
    NaN marks a gap. `issued_at` is when a forecast was made (None for actuals).
    """

    zone: str
    start: datetime
    resolution: timedelta
    values: FloatArray
    signal: Signal = Signal.AVERAGE
    kind: Kind = Kind.ACTUAL
    provider: str = "unknown"
    issued_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", require_utc(self.start, "series start"))
        if self.issued_at is not None:
            object.__setattr__(self, "issued_at", require_utc(self.issued_at, "forecast issue time"))
        if self.resolution <= timedelta(0):
            raise SeriesError(f"resolution must be positive, got {self.resolution}")
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 1:
            raise SeriesError("values must be one-dimensional")
        object.__setattr__(self, "values", values)

    # -- shape -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.values.shape[0])

    @property
    def resolution_seconds(self) -> float:
        return self.resolution.total_seconds()

    @property
    def end(self) -> datetime:
        """End of the last slot (exclusive)."""
        return self.start + self.resolution * len(self)

    def slot_start(self, index: int) -> datetime:
        return self.start + self.resolution * index

    def index_of(self, moment: datetime) -> int:
        """Index of the slot containing `moment` (may be out of range: negative or >= len)."""
        offset = (require_utc(moment) - self.start).total_seconds()
        return math.floor(offset / self.resolution_seconds)

    def starts(self) -> list[datetime]:
        return [self.slot_start(i) for i in range(len(self))]

    # -- queries -----------------------------------------------------------------------------------------
    def at(self, moment: datetime) -> float:
        """Intensity of the slot containing `moment`; NaN outside the series or in a gap."""
        i = self.index_of(moment)
        if 0 <= i < len(self):
            return float(self.values[i])
        return math.nan

    def window(self, begin: datetime, end: datetime) -> IntensitySeries:
        """The slots overlapping [begin, end), aligned to this series' grid."""
        if end <= begin:
            return replace(self, start=self.start, values=np.empty(0))
        first = max(self.index_of(begin), 0)
        last = min(self.index_of(end - timedelta(microseconds=1)) + 1, len(self))
        if last <= first:
            return replace(self, start=self.slot_start(max(first, 0)), values=np.empty(0))
        return replace(self, start=self.slot_start(first), values=self.values[first:last].copy())

    def gaps(self) -> list[tuple[datetime, datetime]]:
        """Each run of missing slots as [begin, end)."""
        missing = np.isnan(self.values)
        runs: list[tuple[datetime, datetime]] = []
        i, n = 0, len(self)
        while i < n:
            if missing[i]:
                j = i
                while j < n and missing[j]:
                    j += 1
                runs.append((self.slot_start(i), self.slot_start(j)))
                i = j
            else:
                i += 1
        return runs

    def coverage(self) -> float:
        """Share of slots that hold a value (1.0 = no gaps)."""
        if len(self) == 0:
            return 0.0
        return float(np.count_nonzero(~np.isnan(self.values)) / len(self))

    def mean(self) -> float:
        return float(np.nanmean(self.values)) if len(self) and self.coverage() > 0 else math.nan

    def resample(self, resolution: timedelta) -> IntensitySeries:
        """Re-grid to `resolution`: a coarser grid takes the mean of the finer slots it covers (NaN if any
        is missing), a finer grid repeats each value. The new grid starts at this series' start."""
        if resolution == self.resolution:
            return self
        ratio = self.resolution / resolution
        if ratio >= 1:
            factor = round(ratio)
            if not math.isclose(ratio, factor):
                raise SeriesError(f"cannot split {self.resolution} slots into {resolution} slots")
            return replace(self, resolution=resolution, values=np.repeat(self.values, factor))
        factor = round(1 / ratio)
        if not math.isclose(1 / ratio, factor):
            raise SeriesError(f"cannot merge {self.resolution} slots into {resolution} slots")
        usable = (len(self) // factor) * factor
        merged = self.values[:usable].reshape(-1, factor).mean(axis=1)
        return replace(self, resolution=resolution, values=merged)

    def compatible_with(self, other: IntensitySeries) -> None:
        """Raise unless `other` measures the same thing (zone may differ, signal may not)."""
        if self.signal != other.signal:
            raise SeriesError(
                f"cannot mix {self.signal} ({self.provider}) with {other.signal} ({other.provider}) intensity"
            )

    @staticmethod
    def from_points(
        zone: str,
        points: list[tuple[datetime, float]],
        resolution: timedelta,
        **kwargs: object,
    ) -> IntensitySeries:
        """Build a series from (slot start, value) points already on a `resolution` grid; slots with no
        point become gaps. Points must be UTC, sorted and unique (the quality guards ensure it)."""
        if not points:
            raise SeriesError(f"no data points for zone {zone}")
        start = require_utc(points[0][0])
        step = resolution.total_seconds()
        last = require_utc(points[-1][0])
        n = round((last - start).total_seconds() / step) + 1
        values = np.full(n, np.nan)
        for moment, value in points:
            offset = (require_utc(moment) - start).total_seconds() / step
            index = round(offset)
            if not math.isclose(offset, index, abs_tol=1e-6):
                raise SeriesError(f"point {moment.isoformat()} is not on the {resolution} grid from {start}")
            values[index] = value
        return IntensitySeries(zone=zone, start=start, resolution=resolution, values=values, **kwargs)  # type: ignore[arg-type]
