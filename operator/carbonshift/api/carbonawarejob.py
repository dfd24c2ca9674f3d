"""CarbonAwareJob: a workload (a template, or a reference to an existing one) plus when it must be done and how it
may be moved in time.

The operator creates the workload from `spec.template` (always suspended first; a `spec.workloadRef` names one the
user created), plans its run windows against the grid's
carbon-intensity forecast, and resumes and suspends it. Status explains every decision and ends with a receipt.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import Field, StringConstraints

from carbonshift.api.base import (
    API_VERSION,
    ApiModel,
    Bool,
    Duration,
    Integer,
    Number,
    ObjectMeta,
    Rule,
    positive,
)
from carbonshift.api.conditions import Condition
from carbonshift.api.energy import EnergyAccount, EnergyEstimate
from carbonshift.api.energybudget import Action

KIND: Final = "CarbonAwareJob"
PLURAL = "carbonawarejobs"

# Defaults grounded in the measured H100 run (../shared/data/gpu-power, bundled under docs/data):
# steady training draw 683 W; a checkpoint of 3 GB took 3.9-4.5 s and restart to the first step 12 s, so a
# suspend/resume cycle costs about 17 s on the GPU; 60 s leaves room for pod scheduling and image start.
DEFAULT_WATTS_PER_GPU = 683.0
DEFAULT_CHECKPOINT_OVERHEAD = "60s"
DEFAULT_GRACE_PERIOD = "2m"
DEFAULT_MIN_RUN = "15m"


class Policy(StrEnum):
    OPTIMAL = "Optimal"
    THRESHOLD = "Threshold"
    IMMEDIATE = "Immediate"


class Phase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class EnergySource(StrEnum):
    DCGM = "dcgm"
    ESTIMATE = "estimate"


class Checkpoint(ApiModel):
    """How an interruptible job stops and restarts."""

    overhead: Duration = Field(
        default=DEFAULT_CHECKPOINT_OVERHEAD,
        description="Run time lost per suspend/resume cycle (checkpoint, restart, reload); planned for.",
    )
    grace_period: Duration = Field(
        default=DEFAULT_GRACE_PERIOD,
        description="How long before a planned suspension the Job and its pods are annotated, so the workload "
        "can checkpoint ahead of the SIGTERM.",
    )
    min_run_duration: Duration = Field(
        default=DEFAULT_MIN_RUN, description="Shortest run chunk worth resuming for (overheads included)."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "duration(self.gracePeriod) > duration('0s')",
            "checkpoint.gracePeriod must be positive",
            lambda c: positive(c.grace_period),
        ),
        Rule(
            "duration(self.minRunDuration) > duration('0s')",
            "checkpoint.minRunDuration must be positive",
            lambda c: positive(c.min_run_duration),
        ),
    )


class Placement(ApiModel):
    """Where the job may run."""

    clusters: list[Annotated[str, StringConstraints(max_length=253)]] = Field(
        default_factory=list,
        description="Names of the ComputeClusters the job may run in; empty means any.",
        max_length=64,
    )
    migratable: Bool = Field(
        default=False,
        description="Whether a job that has already run may be moved to another cluster (needs a checkpoint "
        "that the other cluster can read).",
    )


class Power(ApiModel):
    """Power used for planning and for filling gaps in measurements."""

    watts_per_gpu: Number = Field(
        default=DEFAULT_WATTS_PER_GPU,
        alias="wattsPerGPU",
        gt=0,
        le=5000,
        description="Expected board power per GPU in watts, used until DCGM measurements exist and to fill gaps "
        "in them (then flagged energySource=estimate). Default: a measured H100 training run (683 W).",
    )


class Cap(ApiModel):
    """A cap on the job's own run, projected ahead: what it used so far plus what its planned windows will use."""

    energy_kwh: Number | None = Field(default=None, alias="energyKWh", ge=0, description="Energy cap (kWh).")
    emissions_kg: Number | None = Field(default=None, ge=0, description="Emissions cap (kgCO2e).")
    action: Action = Field(
        default=Action.SUSPEND,
        description="Suspend: not started or resumed (an interruptible running job is suspended) while the "
        "projection exceeds the cap. Defer: only run below deferBelowIntensity. Notify: a condition and an Event.",
    )
    defer_below_intensity: Number | None = Field(
        default=None, gt=0, le=2000, description="For action Defer: intensity limit in gCO2e/kWh."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.energyKWh) || has(self.emissionsKg)",
            "set at least one of cap.energyKWh or cap.emissionsKg",
            lambda s: s.energy_kwh is not None or s.emissions_kg is not None,
        ),
        Rule(
            "self.action != 'Defer' || has(self.deferBelowIntensity)",
            "cap.deferBelowIntensity is required when cap.action is Defer",
            lambda s: s.action != Action.DEFER or s.defer_below_intensity is not None,
        ),
    )


class JobTemplate(ApiModel):
    """The workload to create: a batch/v1 Job (default) or another suspendable kind (docs/workloads.md), as its
    metadata and spec. Validated by the API server (a dry-run create at admission) and by the kind's adapter."""

    model_config = ApiModel.model_config | {"extra": "forbid"}

    api_version: str = Field(
        default="batch/v1",
        max_length=253,
        description="apiVersion of the workload: batch/v1 (default), jobset.x-k8s.io/v1alpha2, "
        "trainer.kubeflow.org/v1alpha1, kubeflow.org/v1 or ray.io/v1.",
    )
    kind: str = Field(
        default="Job", max_length=63, description="Kind of the workload: Job (default), JobSet, TrainJob, "
        "PyTorchJob or RayJob."
    )  # fmt: skip
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Labels and annotations for the workload the operator creates."
    )
    spec: dict[str, Any] = Field(
        description="The workload's spec (a batch/v1 JobSpec by default). Its suspend field is managed by the operator."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.apiVersion != 'batch/v1' || self.kind != 'Job' || has(self.spec.template)",
            "template.spec.template (the pod template) is required",
            lambda t: t.api_version != "batch/v1" or t.kind != "Job" or isinstance(t.spec.get("template"), dict),
        ),
    )

    @property
    def is_job(self) -> bool:
        return self.api_version == "batch/v1" and self.kind == "Job"


class WorkloadRef(ApiModel):
    """An existing workload in the CarbonAwareJob's namespace, created by its user: carbonshift suspends and resumes
    it in planned windows, and never creates or deletes it."""

    api_version: str = Field(max_length=253, description="apiVersion of the workload, e.g. batch/v1.")
    kind: str = Field(max_length=63, description="Kind of the workload, e.g. Job.")
    name: str = Field(max_length=253, description="Name of the workload, in the CarbonAwareJob's namespace.")


class CarbonAwareJobSpec(ApiModel):
    """What to run, by when, and how it may be shifted."""

    template: JobTemplate | None = Field(
        default=None, description="The workload to create and run. Exactly one of template, workloadRef."
    )
    workload_ref: WorkloadRef | None = Field(
        default=None, description="An existing workload to drive (never created or deleted by carbonshift). "
        "Exactly one of template, workloadRef."
    )  # fmt: skip
    deadline: datetime | None = Field(
        default=None,
        description="When the job must be complete (RFC 3339). Exactly one of deadline, maxDelay.",
    )
    max_delay: Duration | None = Field(
        default=None,
        description="How long after creation the job must be complete, e.g. 24h. Exactly one of deadline, maxDelay.",
    )
    duration: Duration = Field(description="Expected run time at full speed, e.g. 4h. Refined from progress.")
    interruptible: Bool = Field(
        default=False, description="Whether the job checkpoints and may be suspended and resumed."
    )
    checkpoint: Checkpoint | None = Field(default=None, description="Checkpoint settings; only for interruptible jobs.")
    policy: Policy = Field(
        default=Policy.OPTIMAL,
        description="Optimal: lowest forecast emissions that meet the deadline. Threshold: run while intensity "
        "<= maxIntensity, forced by the deadline. Immediate: run now, account only.",
    )
    max_intensity: Number | None = Field(
        default=None, gt=0, le=2000, description="Intensity limit in gCO2e/kWh for policy Threshold."
    )
    placement: Placement | None = Field(default=None, description="Which clusters the job may use.")
    power: Power | None = Field(default=None, description="Power estimate for planning and gaps.")
    cap: Cap | None = Field(default=None, description="A cap on this job's energy and/or emissions, projected ahead.")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.template) != has(self.workloadRef)",
            "exactly one of spec.template or spec.workloadRef must be set",
            lambda s: (s.template is None) != (s.workload_ref is None),
        ),
        Rule(
            "has(self.deadline) != has(self.maxDelay)",
            "exactly one of spec.deadline or spec.maxDelay must be set",
            lambda s: (s.deadline is None) != (s.max_delay is None),
        ),
        Rule(
            "self.policy != 'Threshold' || has(self.maxIntensity)",
            "spec.maxIntensity is required when spec.policy is Threshold",
            lambda s: s.policy != Policy.THRESHOLD or s.max_intensity is not None,
        ),
        Rule(
            "!has(self.checkpoint) || self.interruptible",
            "spec.checkpoint is only allowed when spec.interruptible is true",
            lambda s: s.checkpoint is None or s.interruptible,
        ),
        Rule(
            "duration(self.duration) > duration('0s')",
            "spec.duration must be positive",
            lambda s: positive(s.duration),
        ),
        Rule(
            "!has(self.maxDelay) || duration(self.maxDelay) > duration('0s')",
            "spec.maxDelay must be positive",
            lambda s: positive(s.max_delay),
        ),
    )


class PlannedWindow(ApiModel):
    start: datetime = Field(description="Window start (RFC 3339).")
    end: datetime = Field(description="Window end (RFC 3339).")
    g_per_kwh: Number | None = Field(
        default=None, alias="gPerKWh", description="Mean forecast intensity over the window in gCO2e/kWh."
    )


# The planner's flags (domain/planning/model.py `Flag`; tests/unit/test_translate_and_jobs.py keeps the two equal).
PlanFlag = Literal["partial-forecast", "no-forecast", "forced", "best-effort", "unanchored"]


class PlanStatus(ApiModel):
    """The plan in force: where and when the job runs, and what the forecast said."""

    windows: list[PlannedWindow] = Field(default_factory=list, description="Planned run windows, in order.")
    zone: str | None = Field(default=None, description="Grid zone of the chosen cluster.")
    provider: str | None = Field(default=None, description="Carbon-intensity source the plan used.")
    signal: Literal["average", "marginal"] | None = Field(default=None, description="Intensity signal the plan used.")
    planned_emissions_grams: Number | None = Field(default=None, description="Forecast emissions of the plan (gCO2e).")
    run_now_emissions_grams: Number | None = Field(
        default=None, description="Forecast emissions of running at once (gCO2e)."
    )
    latest_safe_start: datetime | None = Field(
        default=None, description="Latest start that still meets the deadline with overheads and margin."
    )
    computed_at: datetime | None = Field(default=None, description="When the plan was computed.")
    flags: list[PlanFlag] | None = Field(
        default=None,
        description="Facts about the plan's inputs: partial-forecast (slots before the deadline without a forecast,"
        " counted at the dearest value forecast), no-forecast (none at all), forced (run time forced by the latest"
        " safe start), best-effort (the deadline cannot be met), unanchored (a deferral no later re-plan can take"
        " back, taken without the provider's current measurement to check the forecast against).",
    )


class Progress(ApiModel):
    """The decision core's account of the work done (domain/core.py `Progress`), so a restarted operator continues."""

    work_seconds: Number = Field(default=0.0, ge=0, description="True work: run time net of each resume's overhead.")
    run_seconds: Number = Field(default=0.0, ge=0, description="Run time credited, at the share of pods running.")
    chunk_run_seconds: Number = Field(default=0.0, ge=0, description="Run time of the current chunk.")
    chunk_pays: Bool = Field(default=False, description="Whether the current chunk pays the checkpoint overhead.")
    chunk_started_at: datetime | None = Field(default=None, description="When the current chunk was resumed.")
    observed_at: datetime | None = Field(default=None, description="Last observation of the Job's pods.")
    rate: Number = Field(default=0.0, ge=0, le=1, description="Share of the Job's pods running at that observation.")
    resumes: Integer = Field(default=0, ge=0, description="Resumes that paid the checkpoint overhead.")
    ran: Bool = Field(default=False, description="Whether the Job has run at all.")


class Commitment(ApiModel):
    """The windows the job is committed to; they move only when a re-plan beats them by the core's threshold."""

    windows: list[PlannedWindow] = Field(default_factory=list, description="Committed run windows, in order.")
    cluster: str | None = Field(default=None, description="Cluster of the committed plan.")
    zone: str | None = Field(default=None, description="Grid zone of the committed plan.")
    made_at: datetime | None = Field(default=None, description="When the commitment was made.")
    checked_at: datetime | None = Field(
        default=None,
        description="Start of the forecast slot in which the commitment was last weighed against a fresh forecast;"
        " it is weighed again once the forecast's slots have moved on by the operator's re-check interval.",
    )
    remaining_seconds: Number = Field(default=0.0, ge=0, description="Run time left when it was made.")
    flags: list[PlanFlag] | None = Field(
        default=None, description="The flags of the plan the commitment was made from (see plan.flags)."
    )
    fits_from: datetime | None = Field(
        default=None,
        description="When the commitment was last weighed, the first forecast slot before its next start in which a"
        " cluster had the job's GPUs free; GPUs freed earlier than that have it weighed again at once.",
    )


class Display(ApiModel):
    """Human-readable summaries for `kubectl get` columns."""

    co2e: str | None = Field(default=None, alias="co2e", description="Emissions so far, e.g. 12.4 kg.")
    saved: str | None = Field(default=None, description="Emissions avoided versus running at once, e.g. 31%.")


class CarbonAwareJobStatus(ApiModel):
    """Observed state, the plan, and the carbon receipt."""

    phase: Phase | None = Field(default=None, description="Summary: Pending, Waiting, Running, Suspended, ...")
    cluster: str | None = Field(default=None, description="ComputeCluster the Job is placed in.")
    job_name: str | None = Field(default=None, description="Name of the owned batch/v1 Job.")
    deadline: datetime | None = Field(default=None, description="Effective deadline (from deadline or maxDelay).")
    plan: PlanStatus | None = Field(default=None, description="The plan in force.")
    next_transition_time: datetime | None = Field(
        default=None, description="When the operator next resumes or suspends the Job."
    )
    submitted_at: datetime | None = Field(
        default=None, description="When the operator first saw the job (planning time); the receipt's baseline."
    )
    running_since: datetime | None = Field(
        default=None, description="When the Job was last resumed, while it runs (run-time accounting)."
    )
    run_seconds: Number | None = Field(default=None, ge=0, description="Wall-clock seconds the Job has run.")
    suspensions: Integer | None = Field(default=None, ge=0, description="How many times the Job was suspended.")
    progress: Progress | None = Field(default=None, description="Work done so far (the decision core's account).")
    commitment: Commitment | None = Field(default=None, description="The committed plan (the decision core's).")
    suspend_at: datetime | None = Field(default=None, description="An announced suspension (the suspend-at time).")
    suspend_announced_at: datetime | None = Field(default=None, description="When that suspension was announced.")
    energy_kwh: Number | None = Field(
        default=None, alias="energyKWh", ge=0, description="GPU energy used so far (kWh)."
    )
    energy_source: EnergySource | None = Field(
        default=None, description="dcgm when measured throughout, estimate when any part was estimated."
    )
    emissions_grams: Number | None = Field(default=None, ge=0, description="Emissions so far (gCO2e).")
    baseline_emissions_grams: Number | None = Field(
        default=None, ge=0, description="Emissions of the same energy profile run at submission time."
    )
    avoided_emissions_grams: Number | None = Field(
        default=None, description="baselineEmissionsGrams - emissionsGrams (may be negative)."
    )
    energy: EnergyAccount | None = Field(
        default=None, description="Measured-energy account (DCGM watermarks, run chunks, overheads)."
    )
    estimate: EnergyEstimate | None = Field(
        default=None, description="Energy estimated from run time and wattsPerGPU, for when DCGM measured nothing."
    )
    display: Display | None = Field(default=None, description="Human-readable summaries.")
    receipt_posted: Bool | None = Field(
        default=None, description="Whether the final receipt Event was posted (the job's accounting is closed)."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")
    observed_generation: Integer | None = Field(default=None, description="Last generation acted on.")


class CarbonAwareJob(ApiModel):
    """A training Job that runs when and where the grid is cleanest, by its deadline."""

    api_version: Literal["carbonshift.io/v1alpha1"] = Field(default=API_VERSION, description="API version.")
    kind: Literal["CarbonAwareJob"] = Field(default=KIND, description="Kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: CarbonAwareJobSpec = Field(description="Desired behaviour.")
    status: CarbonAwareJobStatus | None = Field(default=None, description="Observed state.")
