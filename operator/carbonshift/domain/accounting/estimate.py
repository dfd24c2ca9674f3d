"""The estimate, for jobs with no measurement: run time x GPUs x wattsPerGPU, priced as it accrues.

The receipt of a job that DCGM never measured (no Prometheus configured, or no samples of its GPUs), with the
same pricing rules as the measured account (pricing.py): provenance, one signal, unpriced energy never counted as
avoided, both counterfactuals. Unlike the measured account it keeps no pending buckets: energy unpriced when it
accrued stays unpriced (the run time it came from has no per-interval record to re-price).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from carbonshift.domain.accounting.attribution import J_PER_KWH
from carbonshift.domain.accounting.pricing import Pricing, Quality
from carbonshift.domain.accounting.wire import from_wire, to_wire, wire


@dataclass(frozen=True, slots=True)
class Estimate:
    run_seconds: float = field(default=0.0, metadata=wire("runSeconds", 3))  # run time already priced
    kwh: float = field(default=0.0, metadata=wire("kWh", 9))
    emissions_grams: float = field(default=0.0, metadata=wire("emissionsGrams", 6))
    baseline_grams: float = field(default=0.0, metadata=wire("baselineGrams", 6))  # temporal counterfactual
    home_baseline_grams: float = field(default=0.0, metadata=wire("homeBaselineGrams", 6))  # spatial one
    unpriced_kwh: float = field(default=0.0, metadata=wire("unpricedKWh", 9))
    forecast_kwh: float = field(default=0.0, metadata=wire("forecastKWh", 9))
    provider: str | None = field(default=None, metadata=wire("provider"))
    signal: str | None = field(default=None, metadata=wire("signal"))
    replayed: bool = field(default=False, metadata=wire("replayedTrace"))
    home_cluster: str | None = field(default=None, metadata=wire("homeCluster"))
    embodied_grams: float = field(default=0.0, metadata=wire("embodiedGrams", 6))

    @property
    def avoided_grams(self) -> float:
        return self.home_baseline_grams - self.emissions_grams

    @property
    def temporal_avoided_grams(self) -> float:
        return self.baseline_grams - self.emissions_grams

    @property
    def spatial_avoided_grams(self) -> float:
        return self.home_baseline_grams - self.baseline_grams


def extend_estimate(
    estimate: Estimate, run_seconds: float, now: datetime, gpus: int, watts_per_gpu: float, pricing: Pricing
) -> Estimate:
    """Price the run time added since the last call: it ran just before `now`; its counterfactuals run at the same
    offset from submission. Intensity gaps leave the energy unpriced (and say so), never guessed."""
    added = run_seconds - estimate.run_seconds
    if added <= 0:
        return estimate
    kwh = added * gpus * watts_per_gpu / J_PER_KWH
    at = now - timedelta(seconds=added / 2)
    base_at = pricing.submitted_at + timedelta(seconds=estimate.run_seconds + added / 2)
    priced = pricing.price(kwh, kwh, at, base_at, estimate.signal)
    embodied = added * gpus * pricing.embodied_grams_per_gpu_second
    out = replace(
        estimate, run_seconds=run_seconds, kwh=estimate.kwh + kwh, embodied_grams=estimate.embodied_grams + embodied
    )
    if priced.quality is Quality.MISSING:
        return replace(out, unpriced_kwh=estimate.unpriced_kwh + kwh)
    return replace(
        out,
        emissions_grams=estimate.emissions_grams + priced.grams,
        baseline_grams=estimate.baseline_grams + priced.baseline_grams,
        home_baseline_grams=estimate.home_baseline_grams + priced.home_grams,
        forecast_kwh=estimate.forecast_kwh + (kwh if priced.quality is Quality.FORECAST else 0.0),
        provider=estimate.provider or priced.provider,
        signal=estimate.signal or priced.signal,
        replayed=estimate.replayed or priced.trace,
        home_cluster=pricing.home_cluster,
    )


def estimate_to_wire(estimate: Estimate) -> dict[str, Any]:
    return to_wire(estimate)


def estimate_from_wire(data: Mapping[str, Any] | None) -> Estimate:
    estimate = from_wire(Estimate, data)
    if data and "homeBaselineGrams" not in data:  # written before the spatial counterfactual existed
        estimate = replace(estimate, home_baseline_grams=estimate.baseline_grams)
    return estimate
