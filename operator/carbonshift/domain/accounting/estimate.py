"""The estimate, for jobs with no measurement: run time x GPUs x wattsPerGPU, priced as it accrues.

The receipt of a job that DCGM never measured (no Prometheus configured, or no samples of its GPUs), with the
same pricing rules as the measured account (pricing.py): provenance, one signal, unpriced energy never counted as
avoided, both counterfactuals. Unlike the measured account it keeps no pending buckets: energy unpriced when it
accrued waits, like the account's, in 5-minute buckets (`pending`) until the provider publishes actuals for it or
the wait runs out (`reprice_estimate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from carbonshift.domain.accounting.account import BUCKET, MAX_PENDING, Pending, bucket
from carbonshift.domain.accounting.attribution import J_PER_KWH
from carbonshift.domain.accounting.pricing import Counterfactuals, Pricing, Quality
from carbonshift.domain.accounting.wire import from_wire, to_wire, wire


@dataclass(frozen=True, slots=True)
class Estimate(Counterfactuals):
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
    pending: tuple[Pending, ...] = field(default=(), metadata=wire("pending"))
    stayed_unpriced_kwh: float = field(default=0.0, metadata=wire("stayedUnpricedKWh", 9))


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
    if priced.quality is not Quality.ACTUAL:
        held = Pending(
            bucket(at), bucket(base_at), now, priced.quality.value, 0, kwh, kwh,
            priced.grams, priced.baseline_grams, priced.home_grams, priced.provider, priced.why or None,
        )  # fmt: skip
        out = replace(out, pending=(*out.pending, held))
        while len(out.pending) > MAX_PENDING:  # bounded: the oldest is declared as it is
            out = _let_go(out, out.pending[0])
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


def _let_go(estimate: Estimate, p: Pending) -> Estimate:
    rest = tuple(q for q in estimate.pending if q is not p)
    extra = p.kwh if p.quality == Quality.MISSING.value else 0.0
    return replace(estimate, pending=rest, stayed_unpriced_kwh=estimate.stayed_unpriced_kwh + extra)


def reprice_estimate(estimate: Estimate, pricing: Pricing, now: datetime) -> Estimate:
    """Price the estimate's pending buckets whose actual intensity is now published (a forecast's grams replaced);
    declare those older than `pricing.unpriced_wait`."""
    out = estimate
    half = BUCKET / 2
    for p in estimate.pending:
        priced = pricing.price(p.kwh, p.steady_kwh, p.at + half, p.base_at + half, out.signal)
        missing = p.quality == Quality.MISSING.value
        if priced.quality is Quality.ACTUAL or (priced.quality is Quality.FORECAST and missing):
            rest = tuple(q for q in out.pending if q is not p)
            if priced.quality is Quality.FORECAST:
                rest = (*rest, replace(p, quality=priced.quality.value, grams=priced.grams,
                                       baseline_grams=priced.baseline_grams, home_grams=priced.home_grams,
                                       provider=priced.provider, why=None))  # fmt: skip
            was_forecast = p.kwh if p.quality == Quality.FORECAST.value else 0.0
            now_forecast = p.kwh if priced.quality is Quality.FORECAST else 0.0
            out = replace(
                out,
                pending=rest,
                emissions_grams=out.emissions_grams + priced.grams - p.grams,
                baseline_grams=out.baseline_grams + priced.baseline_grams - p.baseline_grams,
                home_baseline_grams=out.home_baseline_grams + priced.home_grams - p.home_grams,
                unpriced_kwh=out.unpriced_kwh - (p.kwh if missing else 0.0),
                forecast_kwh=out.forecast_kwh - was_forecast + now_forecast,
                provider=out.provider or priced.provider,
                signal=out.signal or priced.signal,
                replayed=out.replayed or priced.trace,
            )
        elif now - p.since > pricing.unpriced_wait:
            out = _let_go(out, p)
    return out


def estimate_to_wire(estimate: Estimate) -> dict[str, Any]:
    return to_wire(estimate)


def estimate_from_wire(data: Mapping[str, Any] | None) -> Estimate:
    estimate = from_wire(Estimate, data)
    if data and "homeBaselineGrams" not in data:  # written before the spatial counterfactual existed
        estimate = replace(estimate, home_baseline_grams=estimate.baseline_grams)
    return estimate
