"""The receipt of a CarbonAwareJob: what it drew, what that emitted, against what, and per unit of work.

Read from the status (the measured account when there is one, else the estimate). Figures, in the words of the
GHG Protocol (Scope 2, location-based) and the Software Carbon Intensity specification (ISO/IEC 21031:2024):

- E: GPU energy, measured by DCGM (or estimated from run time x wattsPerGPU), kWh; facility energy is E x PUE.
- E x I: operational emissions, each interval's facility energy x the grid's location-based intensity of its zone
  and time, on one signal (average or marginal), with its provider and quality (actual/forecast); energy with no
  usable intensity is unpriced and listed apart, never counted as avoided.
- M: embodied emissions, the job's share of its GPUs' manufacturing emissions: GPU-hours held x embodied per GPU /
  lifetime hours (ComputeCluster spec.embodied).
- R: the functional unit, the work the workload reports (annotation carbonshift.io/work-done, e.g. tokens).
  SCI = (E x I + M) / R, given per 1M units; Wh per 1M units likewise.
- Counterfactuals: temporal baseline (the same cluster, running at submission), home baseline (the job's home
  cluster, at submission). Avoided = home baseline - E x I = temporal part + spatial part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from carbonshift.domain.accounting.account import Account, Chunk, Share
from carbonshift.domain.accounting.estimate import estimate_from_wire
from carbonshift.domain.accounting.pricing import Counterfactuals
from carbonshift.domain.accounting.wire import iso

ANNOTATION_WORK_DONE = "carbonshift.io/work-done"
ANNOTATION_WORK_UNIT = "carbonshift.io/work-unit"
PER = 1e6  # SCI is given per 1M units


@dataclass(frozen=True, slots=True)
class Work:
    units: float
    unit: str = "units"


def work_from_annotations(annotations: Mapping[str, str] | None) -> Work | None:
    """The work a workload reports on its CarbonAwareJob (a count it writes as it goes); None when absent or not a
    non-negative number."""
    text = (annotations or {}).get(ANNOTATION_WORK_DONE, "").strip()
    try:
        units = float(text)
    except ValueError:
        return None
    if not math.isfinite(units) or units < 0:
        return None
    return Work(units, (annotations or {}).get(ANNOTATION_WORK_UNIT, "").strip() or "units")


@dataclass(frozen=True, slots=True)
class Receipt(Counterfactuals):
    namespace: str
    name: str
    phase: str
    zone: str | None
    pue: float | None
    energy_kwh: float
    energy_source: str
    emissions_grams: float
    baseline_grams: float  # temporal counterfactual: same cluster, at submission
    home_baseline_grams: float  # spatial counterfactual: home cluster, at submission
    home_cluster: str | None
    unpriced_kwh: float
    overhead_kwh: float
    suspensions: int
    chunks: tuple[Chunk, ...] = field(default_factory=tuple)
    counter_resets: int = 0
    awaiting_kwh: float = 0.0  # unpriced, still waiting for the provider's actuals
    forecast_kwh: float = 0.0
    provider: str | None = None
    signal: str | None = None
    replayed: bool = False
    shares: tuple[Share, ...] = ()
    embodied_grams: float = 0.0
    gpu_seconds: float = 0.0
    work: Work | None = None

    @property
    def avoided_percent(self) -> float | None:
        return 100 * self.avoided_grams / self.home_baseline_grams if self.home_baseline_grams > 0 else None

    @property
    def sci_grams(self) -> float:
        """E x I + M: operational plus embodied emissions."""
        return self.emissions_grams + self.embodied_grams

    @property
    def sci_per_million(self) -> float | None:
        return self.sci_grams / self.work.units * PER if self.work and self.work.units > 0 else None

    @property
    def wh_per_million(self) -> float | None:
        return self.energy_kwh * 1000 / self.work.units * PER if self.work and self.work.units > 0 else None

    @property
    def work_lost(self) -> float | None:
        """Work the suspend/resume overhead's GPU time would have done at the job's steady rate."""
        steady = sum(c.steady_gpu_seconds for c in self.chunks)
        if self.work is None or steady <= 0:
            return None
        overhead = sum(c.ramp_seconds + c.tail_seconds for c in self.chunks)
        return self.work.units / steady * overhead

    def as_dict(self) -> dict[str, Any]:
        def r(value: float | None, digits: int = 3) -> float | None:
            return round(value, digits) if value is not None else None

        return {
            "namespace": self.namespace,
            "name": self.name,
            "phase": self.phase,
            "zone": self.zone,
            "pue": self.pue,
            "energyKWh": r(self.energy_kwh, 6),
            "energySource": self.energy_source,
            "provider": self.provider,
            "signal": self.signal,
            "replayedTrace": self.replayed,
            "pricedBy": [{"provider": s.provider, "quality": s.quality, "kWh": r(s.kwh, 6)} for s in self.shares],
            "emissionsGrams": r(self.emissions_grams),
            "baselineEmissionsGrams": r(self.baseline_grams),
            "homeCluster": self.home_cluster,
            "homeBaselineEmissionsGrams": r(self.home_baseline_grams),
            "avoidedEmissionsGrams": r(self.avoided_grams),
            "temporalAvoidedGrams": r(self.temporal_avoided_grams),
            "spatialAvoidedGrams": r(self.spatial_avoided_grams),
            "avoidedPercent": r(self.avoided_percent, 2),
            "unpricedKWh": r(self.unpriced_kwh, 6),
            "awaitingActualsKWh": r(self.awaiting_kwh, 6),
            "forecastKWh": r(self.forecast_kwh, 6),
            "overheadKWh": r(self.overhead_kwh, 6),
            "suspensions": self.suspensions,
            "counterResets": self.counter_resets,
            "embodiedGrams": r(self.embodied_grams),
            "gpuHours": r(self.gpu_seconds / 3600, 6),
            "sci": {
                "gramsTotal": r(self.sci_grams),
                "workUnits": self.work.units if self.work else None,
                "workUnit": self.work.unit if self.work else None,
                "gramsPerMillionUnits": r(self.sci_per_million, 6),
                "whPerMillionUnits": r(self.wh_per_million, 6),
                "workLostToOverhead": r(self.work_lost, 1),
            },
            "chunks": Account(chunks=self.chunks).to_wire()["chunks"],
        }


def receipt_from_status(
    namespace: str,
    name: str,
    status: Mapping[str, Any],
    pue: float | None = None,
    work: Work | None = None,
) -> Receipt:
    """The receipt of a CarbonAwareJob from its status (measured account when there is one, else the estimate)."""
    account = Account.from_wire(status.get("energy"))
    measured = account.kwh > 0
    source: Any = account if measured else estimate_from_wire(status.get("estimate"))
    # The summary fields are authoritative for the totals (they include a provisional estimate while Prometheus is
    # down); the account says how the baseline splits. Without a home elsewhere the job ran at home: no spatial part.
    home = status.get("baselineEmissionsGrams")
    home_grams = float(home) if home is not None else source.home_baseline_grams
    temporal_grams = source.baseline_grams + (home_grams - source.home_baseline_grams)
    if source.home_cluster is None:
        temporal_grams = home_grams
    return Receipt(
        namespace=namespace,
        name=name,
        phase=str(status.get("phase") or "Pending"),
        zone=(status.get("plan") or {}).get("zone"),
        pue=pue,
        energy_kwh=float(status.get("energyKWh") or 0.0),
        energy_source=str(status.get("energySource") or "estimate"),
        emissions_grams=float(status.get("emissionsGrams") or 0.0),
        baseline_grams=temporal_grams,
        home_baseline_grams=home_grams,
        home_cluster=source.home_cluster,
        unpriced_kwh=source.unpriced_kwh,
        awaiting_kwh=source.unpriced_kwh - source.stayed_unpriced_kwh,
        forecast_kwh=source.forecast_kwh,
        provider=source.provider,
        signal=source.signal,
        replayed=source.replayed,
        shares=account.shares,
        overhead_kwh=account.overhead_kwh,
        suspensions=int(status.get("suspensions") or 0),
        chunks=account.chunks,
        counter_resets=account.resets,
        embodied_grams=source.embodied_grams,
        gpu_seconds=account.gpu_seconds,
        work=work,
    )


def _grams(value: float) -> str:
    return f"{value / 1000:.3f} kg" if abs(value) >= 1000 else f"{value:.1f} g"


def format_receipt(receipt: Receipt) -> str:
    """The receipt as text: one summary line (the Event message), then the counterfactuals, SCI, and one line per
    run chunk."""
    pct = receipt.avoided_percent
    how = f"{receipt.signal} intensity from {receipt.provider}" if receipt.provider else "no intensity data"
    if receipt.provider is None and receipt.emissions_grams > 0:
        how = "intensity source not recorded"
    if receipt.replayed:
        how += " (a replayed trace, as the operator was started with)"
    if receipt.forecast_kwh > 0:
        how += f"; {receipt.forecast_kwh:.4f} kWh on a forecast"
    lines = [
        f"{receipt.energy_kwh:.4f} kWh GPU energy ({receipt.energy_source}), {_grams(receipt.emissions_grams)} CO2e "
        f"({how}); avoided {_grams(receipt.avoided_grams)}"
        + (f" ({pct:.0f}%)" if pct is not None else "")
        + f" = temporal {_grams(receipt.temporal_avoided_grams)} + spatial {_grams(receipt.spatial_avoided_grams)}"
        + f"; {receipt.suspensions} suspension(s), overhead {receipt.overhead_kwh * 1000:.2f} Wh"
        + (
            f"; unpriced {receipt.unpriced_kwh:.4f} kWh (no intensity data, not in any figure)"
            if receipt.unpriced_kwh > 0
            else ""
        )
        + (f", {receipt.awaiting_kwh:.4f} kWh of it awaiting actuals" if receipt.awaiting_kwh > 0 else "")
        + (f"; {receipt.counter_resets} counter reset(s)" if receipt.counter_resets else ""),
        f"  counterfactuals: this cluster at submission {_grams(receipt.baseline_grams)} (temporal); "
        f"home cluster {receipt.home_cluster or '(this one)'} at submission {_grams(receipt.home_baseline_grams)} "
        "(spatial)",
    ]
    sci = f"  SCI: E x I {_grams(receipt.emissions_grams)} + M {_grams(receipt.embodied_grams)} embodied "
    sci += f"({receipt.gpu_seconds / 3600:.3f} GPU-h)"
    if receipt.work is not None and receipt.sci_per_million is not None:
        sci += (
            f" per {receipt.work.units:.6g} {receipt.work.unit}: {receipt.sci_per_million:.3f} gCO2e and "
            f"{receipt.wh_per_million or 0:.3f} Wh per 1M {receipt.work.unit}"
        )
        if receipt.work_lost is not None:
            sci += f"; {receipt.work_lost:.6g} {receipt.work.unit} lost to suspend/resume overhead"
    lines.append(sci)
    for i, c in enumerate(receipt.chunks, 1):
        lines.append(
            f"  run {i}: {iso(c.start)} -> {iso(c.stopped_at or c.end)}: {c.kwh * 1000:.2f} Wh on {c.gpus} GPU(s), "
            f"{_grams(c.emissions_grams)}; restart ramp {c.ramp_kwh * 1000:.2f} Wh ({c.ramp_seconds:.1f} GPU-s), "
            f"suspend tail {c.tail_kwh * 1000:.2f} Wh ({c.tail_seconds:.1f} GPU-s)"
        )
    return "\n".join(lines)
