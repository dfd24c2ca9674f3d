"""Standard status conditions: the shape, the documented types and reasons, and the one function that sets them.

Conditions follow the Kubernetes API convention (type, status, reason, message, lastTransitionTime,
observedGeneration) and are stored as a list-map keyed on `type`. `set_condition` takes `now` and reports whether
anything changed, so handlers patch status only on change.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ConditionType(StrEnum):
    """Condition types of a CarbonAwareJob, an EnergyBudget and a ComputeCluster."""

    PLANNED = "Planned"
    WAITING = "Waiting"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    DEADLINE_AT_RISK = "DeadlineAtRisk"
    PROVIDER_DEGRADED = "ProviderDegraded"
    METRICS_DEGRADED = "MetricsDegraded"
    BUDGET_HELD = "BudgetHeld"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    INVALID_SPEC = "InvalidSpec"
    EXCEEDED = "Exceeded"
    READY = "Ready"
    WORKLOAD_UNAVAILABLE = "WorkloadUnavailable"


class Reason(StrEnum):
    """Documented CamelCase reasons. docs/operations.md explains each one and what to do about it."""

    # Planned / Waiting / Running / Suspended
    PLAN_COMPUTED = "PlanComputed"
    DEFERRED_TO_LOW_CARBON_WINDOW = "DeferredToLowCarbonWindow"
    RUNNING_IN_PLANNED_WINDOW = "RunningInPlannedWindow"
    RUNNING_AT_LATEST_SAFE_START = "RunningAtLatestSafeStart"
    RUNNING_IMMEDIATE_POLICY = "RunningImmediatePolicy"
    RUNNING_FORECAST_WITHIN_ERROR = "RunningForecastWithinError"
    RUNNING_FORECAST_WITHOUT_SKILL = "RunningForecastWithoutSkill"
    BELOW_THRESHOLD = "BelowThreshold"
    SUSPENDED_BETWEEN_WINDOWS = "SuspendedBetweenWindows"
    NO_SLACK = "NoSlack"
    # DeadlineAtRisk / InvalidSpec
    DEADLINE_PASSED = "DeadlinePassed"
    DURATION_EXCEEDS_TIME_LEFT = "DurationExceedsTimeLeft"
    NOT_ENOUGH_GPUS = "NotEnoughGPUs"
    UNKNOWN_CLUSTER = "UnknownCluster"
    TEMPLATE_IMMUTABLE = "TemplateImmutable"
    INVALID_SPEC = "InvalidSpec"
    JOB_REJECTED = "JobRejected"
    NAMESPACE_NOT_ADMITTED = "NamespaceNotAdmitted"
    SPEC_VALID = "SpecValid"
    PODS_NOT_RUNNING = "PodsNotRunning"
    OVERRUN = "Overrun"  # run time reached spec.duration but the Job has not completed
    # ProviderDegraded / MetricsDegraded
    PROVIDER_FALLBACK = "ProviderFallback"
    NO_INTENSITY_DATA = "NoIntensityData"
    PROVIDER_HEALTHY = "ProviderHealthy"
    PROMETHEUS_UNREACHABLE = "PrometheusUnreachable"
    ESTIMATED_ENERGY = "EstimatedEnergy"
    METRICS_HEALTHY = "MetricsHealthy"
    # Budgets
    BUDGET_EXHAUSTED = "BudgetExhausted"
    WITHIN_BUDGET = "WithinBudget"
    # Terminal
    JOB_COMPLETED = "JobCompleted"
    JOB_FAILED = "JobFailed"
    # WorkloadUnavailable (the workload's kind, or a referenced workload)
    KIND_NOT_INSTALLED = "KindNotInstalled"
    INVALID_WORKLOAD = "InvalidWorkload"
    UNSUPPORTED_KIND = "UnsupportedKind"
    WORKLOAD_NOT_FOUND = "WorkloadNotFound"
    WORKLOAD_AVAILABLE = "WorkloadAvailable"
    # Cluster
    CLUSTER_REACHABLE = "ClusterReachable"
    CLUSTER_UNREACHABLE = "ClusterUnreachable"


class Condition(BaseModel):
    """One status condition, as in metav1.Condition."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    type: str = Field(description="Condition type in CamelCase, e.g. Planned, Running, DeadlineAtRisk.")
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition, one of the documented reasons.")
    message: str = Field(default="", description="Human-readable explanation, with numbers where they help.")
    last_transition_time: datetime = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int = Field(
        default=0, ge=0, description="The .metadata.generation the condition was set from."
    )


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: bool | Literal["Unknown"],
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> tuple[list[Condition], bool]:
    """Return the conditions with `type_` set, and whether anything changed.

    lastTransitionTime moves only when the status flips; a new reason or message alone keeps it.
    """
    status_text: Literal["True", "False", "Unknown"] = (
        "Unknown" if status == "Unknown" else ("True" if status else "False")
    )
    result: list[Condition] = []
    changed = True
    found = False
    for cond in conditions:
        if cond.type != type_:
            result.append(cond)
            continue
        found = True
        same_status = cond.status == status_text
        updated = Condition(
            type=type_,
            status=status_text,
            reason=reason,
            message=message,
            last_transition_time=cond.last_transition_time if same_status else now,
            observed_generation=generation,
        )
        changed = updated != cond
        result.append(updated)
    if not found:
        result.append(
            Condition(
                type=type_,
                status=status_text,
                reason=reason,
                message=message,
                last_transition_time=now,
                observed_generation=generation,
            )
        )
    return result, changed


def get_condition(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.status == "True"
