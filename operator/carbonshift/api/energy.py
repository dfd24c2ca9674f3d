"""status.energy of a CarbonAwareJob: the measured-energy account that lets a restarted operator continue exactly.

The shape of `carbonshift.domain.accounting.account_to_wire`: per-GPU watermarks (last DCGM sample consumed), the
measured and estimated totals, and one entry per run chunk with its suspend/resume overheads. Written by
carbonshift.handlers.energy; read back by it, by EnergyBudgets and by `carbonshift receipt`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from carbonshift.api.base import ApiModel, Bool, Integer, Number


class GpuWatermark(ApiModel):
    """The last sample of one GPU the job's account consumed."""

    gpu: str = Field(description="GPU UUID (or node/index when the exporter gives no UUID).", max_length=128)
    node: str = Field(default="", description="Node (Hostname label).", max_length=253)
    time: Number = Field(description="Sample time, Unix seconds (wall clock, as Prometheus stores it).")
    pod: str | None = Field(default=None, description="namespace/pod holding the GPU at that sample; absent: none.")
    counter_mj: Number | None = Field(default=None, alias="counterMJ", description="Energy counter (mJ).")
    power_watts: Number | None = Field(default=None, description="Power at that sample (W).")
    chunk: Integer = Field(default=0, ge=0, description="Index of the run chunk the GPU last ran in.")
    ramping: Bool = Field(default=False, description="Whether the GPU is still in its restart ramp.")


class WorkloadPod(ApiModel):
    """A pod the operator listed as the workload's (Job selector and owner chain): the only pods charged."""

    namespace: str = Field(default="", description="Namespace of the pod.", max_length=63)
    name: str = Field(description="Pod name, matched exactly against the DCGM series' pod label.", max_length=253)
    uid: str | None = Field(default=None, description="Pod UID, matched against pod_uid where exported.", max_length=64)


class EnergyChunk(ApiModel):
    """One run between a resume and a suspension (or the end), with its measured overheads."""

    start: datetime = Field(description="When the run started (resume decision).")
    stopped_at: datetime | None = Field(default=None, description="When the operator decided to stop it.")
    end: datetime | None = Field(default=None, description="End of the last energy interval of the run.")
    kwh: Number = Field(default=0.0, alias="kWh", description="GPU energy of the run (kWh, before PUE).")
    estimated_kwh: Number = Field(default=0.0, alias="estimatedKWh", description="Part of it estimated (kWh).")
    emissions_grams: Number = Field(default=0.0, description="Emissions of the run (gCO2e, PUE included).")
    ramp_kwh: Number = Field(default=0.0, alias="rampKWh", description="Restart ramp energy (kWh).")
    ramp_seconds: Number = Field(default=0.0, description="Restart ramp, GPU-seconds.")
    tail_kwh: Number = Field(default=0.0, alias="tailKWh", description="Energy after the suspension decision (kWh).")
    tail_seconds: Number = Field(default=0.0, description="Suspension tail, GPU-seconds.")
    steady_joules: Number = Field(default=0.0, description="Energy outside ramp and tail (J).")
    steady_gpu_seconds: Number = Field(
        default=0.0, alias="steadyGPUSeconds", description="GPU-seconds outside ramp and tail."
    )
    gpus: Integer = Field(default=0, ge=0, description="GPUs seen in the run.")


class PendingEnergy(ApiModel):
    """Energy in one 5-minute bucket waiting for actual intensity: unpriced (missing) or priced on a forecast."""

    at: datetime = Field(description="Bucket start of the energy's time (planning time).")
    baseline_at: datetime = Field(description="Bucket start on the counterfactual timeline (submission + offset).")
    since: datetime = Field(description="When it was first recorded; declared final after the wait.")
    quality: Literal["missing", "forecast"] = Field(default="missing", description="How it is priced now.")
    chunk: Integer = Field(default=0, ge=0, description="Run chunk the energy belongs to.")
    kwh: Number = Field(default=0.0, alias="kWh", description="GPU energy (kWh).")
    steady_kwh: Number = Field(default=0.0, alias="steadyKWh", description="Its part outside the overheads (kWh).")
    emissions_grams: Number = Field(default=0.0, description="Emissions it counts now (gCO2e; 0 when missing).")
    baseline_grams: Number = Field(default=0.0, description="Temporal counterfactual it counts now (gCO2e).")
    home_baseline_grams: Number = Field(default=0.0, description="Spatial counterfactual it counts now (gCO2e).")
    provider: str | None = Field(default=None, description="Provider of the forecast, when forecast-priced.")
    why: str | None = Field(default=None, description="Why it is unpriced.", max_length=300)


class PricedShare(ApiModel):
    """Energy priced by one provider at one quality."""

    provider: str = Field(description="Carbon-intensity provider.", max_length=128)
    quality: Literal["actual", "forecast"] = Field(description="Measured actual, or a forecast.")
    kwh: Number = Field(default=0.0, alias="kWh", description="GPU energy priced so (kWh).")


class EnergyAccount(ApiModel):
    """Measured energy so far, and where the reading stopped."""

    watermarks: list[GpuWatermark] = Field(default_factory=list, description="Per GPU, the last sample consumed.")
    measured_kwh: Number = Field(default=0.0, alias="measuredKWh", description="Energy read from DCGM (kWh).")
    estimated_kwh: Number = Field(
        default=0.0, alias="estimatedKWh", description="Energy filled in from spec.power.wattsPerGPU (kWh)."
    )
    unpriced_kwh: Number = Field(
        default=0.0, alias="unpricedKWh", description="Energy with no intensity data for its time (kWh)."
    )
    stayed_unpriced_kwh: Number = Field(
        default=0.0, alias="stayedUnpricedKWh", description="Unpriced energy whose wait for actuals ended (kWh)."
    )
    forecast_kwh: Number = Field(default=0.0, alias="forecastKWh", description="Energy priced on a forecast (kWh).")
    emissions_grams: Number = Field(default=0.0, description="Emissions of the measured energy (gCO2e).")
    baseline_grams: Number = Field(
        default=0.0, description="Temporal counterfactual: the same cluster, running at submission (gCO2e)."
    )
    home_baseline_grams: Number = Field(
        default=0.0, description="Spatial counterfactual: the home cluster, running at submission (gCO2e)."
    )
    home_cluster: str | None = Field(default=None, description="The home cluster; absent: the job ran at home.")
    provider: str | None = Field(default=None, description="Provider whose intensity priced the energy first.")
    signal: Literal["average", "marginal"] | None = Field(default=None, description="The receipt's one signal.")
    replayed_trace: Bool = Field(default=False, description="Priced on a recorded trace (operator started so).")
    priced_by: list[PricedShare] = Field(default_factory=list, description="Energy per provider and quality.")
    pending: list[PendingEnergy] = Field(
        default_factory=list, description="Energy waiting for actual intensity.", max_length=288
    )
    gpu_seconds: Number = Field(default=0.0, alias="gpuSeconds", description="GPU time held by the job's pods (s).")
    embodied_grams: Number = Field(default=0.0, description="Embodied emissions share, SCI's M (gCO2e).")
    baseline_kwh: Number = Field(default=0.0, alias="baselineKWh", description="Energy on the baseline timeline.")
    counter_resets: Integer = Field(default=0, ge=0, description="Energy counter resets seen.")
    running: Bool = Field(default=False, description="Whether the job was running at the last update.")
    settle_after: Number | None = Field(
        default=None,
        alias="settleAfter",
        description="Wall time (Unix seconds) after which a stopped job's DCGM samples are all in Prometheus.",
    )
    chunks: list[EnergyChunk] = Field(default_factory=list, description="Run chunks, oldest first.", max_length=64)
    pods: list[WorkloadPod] = Field(
        default_factory=list, description="The workload's pods seen so far (the pods charged).", max_length=256
    )


class EnergyEstimate(ApiModel):
    """Energy estimated from run time x GPUs x spec.power.wattsPerGPU, priced as it accrued."""

    run_seconds: Number = Field(default=0.0, ge=0, description="Run time priced so far (seconds).")
    kwh: Number = Field(default=0.0, ge=0, alias="kWh", description="Estimated GPU energy (kWh).")
    emissions_grams: Number = Field(default=0.0, ge=0, description="Emissions of the estimate (gCO2e).")
    baseline_grams: Number = Field(default=0.0, ge=0, description="Baseline emissions of the estimate (gCO2e).")
    unpriced_kwh: Number = Field(
        default=0.0, ge=0, alias="unpricedKWh", description="Estimated energy with no intensity data for its time."
    )
    home_baseline_grams: Number = Field(default=0.0, ge=0, description="Spatial counterfactual (gCO2e).")
    forecast_kwh: Number = Field(default=0.0, ge=0, alias="forecastKWh", description="Priced on a forecast (kWh).")
    provider: str | None = Field(default=None, description="Provider whose intensity priced the estimate first.")
    signal: Literal["average", "marginal"] | None = Field(default=None, description="The one signal used.")
    replayed_trace: Bool = Field(default=False, description="Priced on a recorded trace (operator started so).")
    home_cluster: str | None = Field(default=None, description="The home cluster; absent: the job ran at home.")
    embodied_grams: Number = Field(default=0.0, ge=0, description="Embodied emissions share, SCI's M (gCO2e).")
    pending: list[PendingEnergy] = Field(
        default_factory=list, description="Estimated energy waiting for actual intensity.", max_length=288
    )
    stayed_unpriced_kwh: Number = Field(
        default=0.0, ge=0, alias="stayedUnpricedKWh", description="Unpriced energy whose wait for actuals ended (kWh)."
    )
