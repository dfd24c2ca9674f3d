"""The planning grid: forecast intensity on slots that start at `now`.

Slot i of the grid is [now + i*resolution, now + (i+1)*resolution), at the forecast's own resolution. When
`now` falls inside a forecast slot, each planning slot straddles two forecast slots and takes their
time-weighted mean, so the current partial slot is accounted exactly and every planning slot is whole.

Missing forecast values (NaN gaps, or a forecast that ends before the deadline) are filled
pessimistically with the highest value the forecast holds inside the horizon: the planner never prefers
an unknown slot to a known one, and among unknown slots it takes the earliest (ties go to the earliest
slot), which keeps the job close to running now. With no value at all in the horizon there is no grid and
the job runs at its latest safe start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from carbonshift.domain.series import FloatArray, IntensitySeries, require_utc

BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Grid:
    """Forecast intensity (gCO2e/kWh) per planning slot; `known` is False where the value was filled."""

    now: datetime
    resolution: timedelta
    g_per_kwh: FloatArray
    known: BoolArray

    def __len__(self) -> int:
        return int(self.g_per_kwh.shape[0])

    @property
    def hours_per_slot(self) -> float:
        return self.resolution.total_seconds() / 3600.0

    def slot_start(self, index: float) -> datetime:
        return self.now + self.resolution * index

    def slots_between(self, end: datetime) -> int:
        """How many whole slots fit between `now` and `end` (0 if `end` is not after `now`)."""
        span = (end - self.now).total_seconds() / self.resolution.total_seconds()
        return max(0, math.floor(span + 1e-9))


def planning_grid(forecast: IntensitySeries | None, now: datetime, horizon_end: datetime) -> Grid | None:
    """The grid from `now` to `horizon_end` (whole slots, at least one), or None with no usable value."""
    if forecast is None or len(forecast) == 0:
        return None
    now = require_utc(now, "planning time")
    step = forecast.resolution_seconds
    n = max(1, math.ceil((horizon_end - now).total_seconds() / step - 1e-9))
    offset = (now - forecast.start).total_seconds() / step
    first = math.floor(offset + 1e-9)
    phase = offset - first
    values = _take(forecast.values, first, n)
    if phase > 1e-9:
        values = (1.0 - phase) * values + phase * _take(forecast.values, first + 1, n)
    known = ~np.isnan(values)
    if not known.any():
        return None
    filled = np.where(known, values, float(np.max(values[known])))
    return Grid(now=now, resolution=forecast.resolution, g_per_kwh=filled, known=known)


def _take(values: FloatArray, first: int, count: int) -> FloatArray:
    """values[first:first+count], NaN where the range leaves the array."""
    out = np.full(count, np.nan)
    lo, hi = max(first, 0), min(first + count, values.shape[0])
    if hi > lo:
        out[lo - first : hi - first] = values[lo:hi]
    return out
