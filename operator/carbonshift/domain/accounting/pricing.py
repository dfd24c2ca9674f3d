"""Pricing with provenance: how an interval's energy becomes emissions, and its two counterfactuals.

Each interval is priced at its midpoint (planning time) on the measured intensity of the zone it ran in, and the
pricing says where the number came from: the provider, the signal (average or marginal) and the quality:

- `actual`: a measured value of the provider's history;
- `forecast`: the provider's history had only a forecast for that slot (e.g. the GB API before its actuals);
  priced, flagged, and re-priced when actuals appear;
- `missing`: no value, a value on another signal than the receipt's, or a replayed trace the operator was not
  told to price receipts on. The energy is unpriced: no emissions, no baseline, so never counted as avoided.

Counterfactuals (both on the same energy profile minus the suspend/resume overheads, the interval at run offset r
priced at submittedAt + r, as running at once would have drawn it):

- temporal baseline: the cluster the job ran in, at submission. temporal avoided = temporal baseline - actual.
- home baseline: the job's home cluster (its first allowed cluster, else the operator's local one), at submission.
  spatial avoided = home baseline - temporal baseline. total avoided = home baseline - actual = temporal + spatial.

Where a counterfactual's intensity is unknown (a gap, another signal) nothing is claimed for it: that baseline
takes the value of the one before it (temporal = actual, home = temporal).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from carbonshift.domain.series import IntensitySeries, Kind

DEFAULT_UNPRICED_WAIT = timedelta(hours=24)


class Quality(StrEnum):
    ACTUAL = "actual"
    FORECAST = "forecast"
    MISSING = "missing"


def is_trace(series: IntensitySeries) -> bool:
    """A recorded trace (bundled or a file), typically replayed from another year: not this interval's grid."""
    return series.provider.startswith("trace:") or "replayed_from" in series.labels


@dataclass(frozen=True, slots=True)
class Priced:
    quality: Quality
    provider: str | None
    signal: str | None
    grams: float  # emissions of the interval, PUE included (0 when missing)
    baseline_grams: float  # temporal counterfactual of its steady part
    home_grams: float  # spatial counterfactual (home cluster) of its steady part
    trace: bool = False
    why: str = ""  # why it is missing


@dataclass(frozen=True, slots=True)
class Pricing:
    """How energy becomes emissions for one job, and what it is compared with."""

    pue: float
    intensity: IntensitySeries | None  # the zone's intensity covering [submittedAt, now], planning time
    submitted_at: datetime
    to_planning: Callable[[float], datetime]  # wall Unix seconds -> planning time
    home: IntensitySeries | None = None  # the home cluster's zone (used when home_cluster is set)
    home_pue: float | None = None
    home_cluster: str | None = None  # None: the job runs in its home cluster (no spatial part)
    traces_allowed: bool = True  # whether a recorded trace may price (the operator was started with traces)
    unpriced_wait: timedelta = DEFAULT_UNPRICED_WAIT  # after this, unpriced energy is declared to stay unpriced
    embodied_grams_per_gpu_second: float = 0.0  # the cluster's embodied emissions per GPU / lifetime seconds

    def g_per_kwh(self, moment: datetime) -> float:
        return self.intensity.at(moment) if self.intensity is not None else math.nan

    def _usable(self, series: IntensitySeries | None, signal: str | None) -> str:
        if series is None:
            return "no intensity data"
        if is_trace(series) and not self.traces_allowed:
            return f"only a replayed trace ({series.provider}) and the operator was not started with traces"
        if signal is not None and str(series.signal) != signal:
            return f"{series.provider} gives {series.signal} intensity, the receipt is priced on {signal}"
        return ""

    def price(self, kwh: float, steady_kwh: float, at: datetime, base_at: datetime, signal: str | None) -> Priced:
        """Price `kwh` drawn at `at`; its `steady_kwh` part also on the counterfactual timeline at `base_at`.
        `signal`: the receipt's signal so far (None: not chosen yet); another signal is never mixed in."""
        series = self.intensity
        why = self._usable(series, signal)
        g = series.at(at) if series is not None and not why else math.nan
        if series is None or not math.isfinite(g):
            return Priced(Quality.MISSING, None, None, 0.0, 0.0, 0.0, why=why or f"no intensity for {at:%H:%M}Z")
        quality = Quality.ACTUAL if series.kind is Kind.ACTUAL else Quality.FORECAST
        grams = kwh * self.pue * g
        base_g = series.at(base_at)
        baseline = steady_kwh * self.pue * (base_g if math.isfinite(base_g) else g)
        home = baseline
        if self.home_cluster is not None and not self._usable(self.home, str(series.signal)):
            assert self.home is not None
            home_g = self.home.at(base_at)
            if math.isfinite(home_g):
                home = steady_kwh * (self.home_pue or self.pue) * home_g
        return Priced(quality, series.provider, str(series.signal), grams, baseline, home, trace=is_trace(series))


class Counterfactuals:
    """Avoided emissions against the two counterfactuals (docs/energy-and-budgets.md): temporal, the same cluster at
    submission; spatial, the home cluster at submission instead of this one; their sum, the total avoided."""

    __slots__ = ()
    emissions_grams: float
    baseline_grams: float  # the same cluster, run at submission
    home_baseline_grams: float  # the home cluster, run at submission

    @property
    def avoided_grams(self) -> float:
        return self.home_baseline_grams - self.emissions_grams

    @property
    def temporal_avoided_grams(self) -> float:
        return self.baseline_grams - self.emissions_grams

    @property
    def spatial_avoided_grams(self) -> float:
        return self.home_baseline_grams - self.baseline_grams
