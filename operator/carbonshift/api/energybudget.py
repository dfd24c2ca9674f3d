"""EnergyBudget: a cap on the energy or emissions of a namespace's CarbonAwareJobs per period, enforced."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field, StringConstraints

from carbonshift.api.base import API_VERSION, ApiModel, Bool, Integer, LabelSelector, Number, ObjectMeta, Rule
from carbonshift.api.conditions import Condition
from carbonshift.api.durations import parse_duration

KIND: Final = "EnergyBudget"
PLURAL = "energybudgets"
CALENDAR_PERIODS = ("Daily", "Weekly", "Monthly")
PERIOD_PATTERN = r"^(Daily|Weekly|Monthly|([0-9]+(\.[0-9]+)?(ms|s|m|h))+)$"


class Action(StrEnum):
    SUSPEND = "Suspend"
    DEFER = "Defer"
    NOTIFY = "Notify"


class Limits(ApiModel):
    """At least one limit; a job is held once any limit is reached."""

    energy_kwh: Number | None = Field(default=None, alias="energyKWh", ge=0, description="Energy limit (kWh).")
    emissions_kg: Number | None = Field(default=None, ge=0, description="Emissions limit (kgCO2e).")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "has(self.energyKWh) || has(self.emissionsKg)",
            "set at least one of limits.energyKWh or limits.emissionsKg",
            lambda s: s.energy_kwh is not None or s.emissions_kg is not None,
        ),
    )


def _rolling_at_least_a_minute(period: str) -> bool:
    return period in CALENDAR_PERIODS or parse_duration(period).total_seconds() >= 60


class EnergyBudgetSpec(ApiModel):
    selector: LabelSelector = Field(
        default_factory=LabelSelector,
        description="Which CarbonAwareJobs of the namespace count against the budget; empty means all.",
    )
    period: Annotated[str, StringConstraints(pattern=PERIOD_PATTERN, max_length=32)] = Field(
        default="Monthly",
        description="Daily, Weekly or Monthly (calendar periods in UTC), or a rolling duration such as 72h.",
    )
    limits: Limits = Field(description="The caps; at least one must be set.")
    action: Action = Field(
        default=Action.NOTIFY,
        description="Suspend: suspend interruptible jobs and hold new ones until the next period. Defer: only "
        "run below deferBelowIntensity. Notify: events and metrics only.",
    )
    defer_below_intensity: Number | None = Field(
        default=None, gt=0, le=2000, description="For action Defer: intensity limit in gCO2e/kWh."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "self.action != 'Defer' || has(self.deferBelowIntensity)",
            "spec.deferBelowIntensity is required when spec.action is Defer",
            lambda s: s.action != Action.DEFER or s.defer_below_intensity is not None,
        ),
        Rule(
            "self.period in ['Daily', 'Weekly', 'Monthly'] || duration(self.period) >= duration('1m')",
            "a rolling spec.period must be at least 1m",
            lambda s: _rolling_at_least_a_minute(s.period),
        ),
    )


class LedgerEntry(ApiModel):
    """One job's use of one bucket (the period; a rolling window's eighth), keyed by the job's UID."""

    uid: Annotated[str, StringConstraints(max_length=64)] = Field(description="The CarbonAwareJob's UID.")
    job: Annotated[str, StringConstraints(max_length=253)] = Field(description="Its name (for reading only).")
    bucket: datetime = Field(description="Start of the bucket the figures belong to.")
    used_kwh: Number = Field(default=0.0, alias="usedKWh", ge=0, description="kWh the job used in the bucket.")
    used_kg: Number = Field(default=0.0, ge=0, description="kgCO2e the job emitted in the bucket.")
    used_from: datetime | None = Field(default=None, description="Start of the use within the bucket.")
    used_to: datetime | None = Field(default=None, description="End of the use within the bucket (so far).")
    reserved_kwh: Number = Field(
        default=0.0, alias="reservedKWh", ge=0, description="kWh projected for the bucket when last admitted."
    )
    reserved_kg: Number = Field(default=0.0, ge=0, description="kgCO2e projected for the bucket when last admitted.")
    reserved_from: datetime | None = Field(default=None, description="Start of the projected use.")
    reserved_to: datetime | None = Field(default=None, description="End of the projected use.")
    base_kwh: Number = Field(
        default=0.0, alias="baseKWh", ge=0, description="kWh used at the admission (the reservation is net of it)."
    )
    base_kg: Number = Field(default=0.0, ge=0, description="kgCO2e used at the admission.")
    active: Bool = Field(
        default=True,
        description="False once the job finished, was deleted or left the selector: its use stays, its "
        "reservation no longer counts.",
    )


class PastBucket(ApiModel):
    """A bucket that has left the budget's window, summed over its jobs."""

    start: datetime = Field(description="Bucket start.")
    end: datetime = Field(description="Bucket end.")
    energy_kwh: Number = Field(alias="energyKWh", ge=0, description="kWh used.")
    emissions_kg: Number = Field(ge=0, description="kgCO2e emitted.")
    jobs: Integer = Field(ge=0, description="How many jobs used it.")


class EnergyBudgetStatus(ApiModel):
    used_energy_kwh: Number | None = Field(default=None, alias="usedEnergyKWh", description="kWh used this period.")
    used_emissions_kg: Number | None = Field(default=None, description="kgCO2e used this period.")
    remaining_energy_kwh: Number | None = Field(
        default=None, alias="remainingEnergyKWh", description="kWh left this period."
    )
    remaining_emissions_kg: Number | None = Field(default=None, description="kgCO2e left this period.")
    used_ratio: Number | None = Field(default=None, description="Largest used/limit ratio over the limits.")
    period_start: datetime | None = Field(default=None, description="Start of the current period.")
    period_end: datetime | None = Field(default=None, description="End of the current period.")
    projected_exhaustion: datetime | None = Field(
        default=None, description="When the budget runs out at the current rate, if within the period."
    )
    reserved_energy_kwh: Number | None = Field(
        default=None, alias="reservedEnergyKWh", description="kWh admitted jobs are projected to use still."
    )
    reserved_emissions_kg: Number | None = Field(
        default=None, description="kgCO2e admitted jobs are projected to emit still."
    )
    admitted_jobs: Integer | None = Field(default=None, description="Jobs with an outstanding reservation.")
    ledger: list[LedgerEntry] = Field(
        default_factory=list,
        description="Use and reservations per job UID and bucket (admission counts them; written with the "
        "object's resourceVersion).",
    )
    history: list[PastBucket] = Field(
        default_factory=list, description="Totals of the last buckets that left the window (at most 12)."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions (Exceeded).")
    observed_generation: Integer | None = Field(default=None, description="Last generation acted on.")


class EnergyBudget(ApiModel):
    """Caps the kWh and/or kgCO2e of a namespace's CarbonAwareJobs per period."""

    api_version: Literal["carbonshift.io/v1alpha1"] = Field(default=API_VERSION, description="API version.")
    kind: Literal["EnergyBudget"] = Field(default=KIND, description="Kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: EnergyBudgetSpec = Field(description="Desired behaviour.")
    status: EnergyBudgetStatus | None = Field(default=None, description="Observed state.")
