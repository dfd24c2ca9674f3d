"""EnergyBudget: a cap on the energy or emissions of a namespace's CarbonAwareJobs per period, enforced."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field, StringConstraints

from carbonshift.api.base import API_VERSION, ApiModel, Integer, LabelSelector, Number, ObjectMeta, Rule
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
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions (Exceeded).")
    observed_generation: Integer | None = Field(default=None, description="Last generation acted on.")


class EnergyBudget(ApiModel):
    """Caps the kWh and/or kgCO2e of a namespace's CarbonAwareJobs per period."""

    api_version: Literal["carbonshift.io/v1alpha1"] = Field(default=API_VERSION, description="API version.")
    kind: Literal["EnergyBudget"] = Field(default=KIND, description="Kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: EnergyBudgetSpec = Field(description="Desired behaviour.")
    status: EnergyBudgetStatus | None = Field(default=None, description="Observed state.")
