"""kopf handlers of EnergyBudget, and `budget_hold()`, which the CarbonAwareJob reconcile asks before it runs a job.

Importing this module registers the handlers (`carbonshift run` imports it):
- every EnergyBudget and every CarbonAwareJob event refreshes an in-memory mirror of them (kopf lists all objects
  when it starts, so the mirror is rebuilt from the API after a restart; usage comes from the jobs' status
  receipts, never from memory of past events);
- a timer per EnergyBudget (every CARBONSHIFT_BUDGET_INTERVAL_SECONDS, default 30) writes its status: used and
  remaining energy and emissions, the period, projected exhaustion, the Exceeded condition (with an Event when it
  turns true), and the metrics carbonshift_budget_used_ratio / carbonshift_budget_exceeded.

`budget_hold(namespace, labels, now, current_g_per_kwh, interruptible=..., running=...)` returns a `Hold` (which
budget, why, until when, whether to suspend a running interruptible job) or None. Times are planning times (the
operator's clock when one is installed, else wall time).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf

from carbonshift import metrics
from carbonshift.api.base import GROUP, VERSION, LabelSelector
from carbonshift.api.carbonawarejob import PLURAL as CAJ_PLURAL
from carbonshift.api.conditions import Condition, ConditionType, Reason, set_condition
from carbonshift.api.durations import parse_duration
from carbonshift.api.energybudget import CALENDAR_PERIODS, PLURAL, EnergyBudgetSpec
from carbonshift.api.jobs import parse_time
from carbonshift.domain.accounting import account_from_wire
from carbonshift.domain.budgets import BudgetSpec, BudgetState, Hold, JobUsage, UsageChunk, evaluate, hold_for
from carbonshift.handlers import state as operator_state

log = logging.getLogger(__name__)
INTERVAL_SECONDS = float(os.environ.get("CARBONSHIFT_BUDGET_INTERVAL_SECONDS", "30"))


@dataclass
class Mirror:
    budgets: dict[tuple[str, str], tuple[BudgetSpec, LabelSelector]]
    jobs: dict[tuple[str, str], JobUsage]


MIRROR = Mirror({}, {})


def now() -> datetime:
    try:
        return operator_state.current().clock.now()
    except RuntimeError:  # not run by `carbonshift run` (a test, or kopf run -m): wall time
        return datetime.now(UTC)


def budget_spec(namespace: str, name: str, spec: dict[str, Any]) -> tuple[BudgetSpec, LabelSelector]:
    model = EnergyBudgetSpec.model_validate(spec)
    rolling = None if model.period in CALENDAR_PERIODS else parse_duration(model.period)
    return (
        BudgetSpec(
            namespace=namespace,
            name=name,
            period=model.period,
            rolling=rolling,
            energy_kwh=model.limits.energy_kwh,
            emissions_kg=model.limits.emissions_kg,
            action=str(model.action),
            defer_below_g_per_kwh=model.defer_below_intensity,
        ),
        model.selector,
    )


def job_usage(namespace: str, name: str, labels: dict[str, str], status: dict[str, Any]) -> JobUsage:
    """A job's usage from its status: the measured run chunks, else one chunk from the estimate."""
    account = account_from_wire(status.get("energy"))
    chunks: list[UsageChunk] = []
    seen = parse_time((status.get("plan") or {}).get("computedAt"))  # the job's last reconcile
    for c in account.chunks:
        # A chunk still running ends, as far as its energy is known, at the last reconcile (not at its start).
        end = c.end or c.stopped_at or (seen if seen is not None and seen > c.start else c.start)
        chunks.append(UsageChunk(c.start, max(end, c.start), c.kwh, c.emissions_grams))
    if not chunks and status.get("energyKWh"):
        start = parse_time(status.get("submittedAt"))
        if start is not None:
            seconds = float(status.get("runSeconds") or 0.0)
            # runSeconds holds the closed intervals; a running job's open one lasts until its last reconcile.
            since, seen = (
                parse_time(status.get("runningSince")),
                parse_time((status.get("plan") or {}).get("computedAt")),
            )
            if since is not None and seen is not None and seen > since:
                seconds += (seen - since).total_seconds()
            end = start + timedelta(seconds=seconds)
            grams = float(status.get("emissionsGrams") or 0.0)
            chunks.append(UsageChunk(start, end, float(status["energyKWh"]), grams))
    return JobUsage(namespace, name, dict(labels), tuple(chunks))


def selected(spec: BudgetSpec, selector: LabelSelector) -> list[JobUsage]:
    return [j for (ns, _), j in MIRROR.jobs.items() if ns == spec.namespace and selector.matches(j.labels)]


def budget_hold(
    namespace: str,
    labels: dict[str, str],
    at: datetime,
    current_g_per_kwh: float | None,
    *,
    interruptible: bool = False,
    running: bool = False,
) -> Hold | None:
    """The first EnergyBudget of the namespace that selects these labels and holds the job now, if any."""
    holds = []
    for (ns, _), (spec, selector) in sorted(MIRROR.budgets.items()):
        if ns != namespace or not selector.matches(labels):
            continue
        state = evaluate(spec, selected(spec, selector), at)
        hold = hold_for(spec, state, g_per_kwh=current_g_per_kwh, interruptible=interruptible, running=running)
        if hold is not None:
            holds.append(hold)
    if not holds:
        return None
    # The one that holds longest (None = until the intensity drops, which may be any time: ranked last).
    return max(holds, key=lambda h: h.until or datetime.min.replace(tzinfo=UTC))


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def status_fields(spec: BudgetSpec, state: BudgetState) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "usedEnergyKWh": round(state.used_kwh, 6),
        "usedEmissionsKg": round(state.used_kg, 6),
        "usedRatio": round(state.used_ratio, 6) if state.used_ratio != float("inf") else 1e9,
        "periodStart": _iso(state.period_start),
        "periodEnd": _iso(state.period_end),
        "projectedExhaustion": _iso(state.projected_exhaustion),
    }
    if state.remaining_kwh is not None:
        fields["remainingEnergyKWh"] = round(state.remaining_kwh, 6)
    if state.remaining_kg is not None:
        fields["remainingEmissionsKg"] = round(state.remaining_kg, 6)
    return fields


# -- kopf wiring --------------------------------------------------------------------------------------------------
@kopf.on.event(GROUP, VERSION, PLURAL)
async def budget_event(type: str, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    key = (namespace or "", name)
    if type == "DELETED":
        MIRROR.budgets.pop(key, None)
        if _has_metric(key):
            metrics.BUDGET_USED_RATIO.remove(*key)
            metrics.BUDGET_EXCEEDED.remove(*key)
        return
    try:
        MIRROR.budgets[key] = budget_spec(key[0], key[1], dict(body.get("spec") or {}))
    except ValueError as exc:  # the CRD's validation makes this rare (a manifest from before a schema change)
        log.warning("EnergyBudget %s/%s ignored: %s", key[0], key[1], str(exc).splitlines()[0])
        MIRROR.budgets.pop(key, None)


def _has_metric(key: tuple[str, str]) -> bool:
    return any(
        sample.labels.get("namespace") == key[0] and sample.labels.get("budget") == key[1]
        for family in metrics.BUDGET_USED_RATIO.collect()
        for sample in family.samples
    )


@kopf.on.event(GROUP, VERSION, CAJ_PLURAL)
async def job_event(type: str, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    key = (namespace or "", name)
    if type == "DELETED":
        # A deleted job's energy was still used in its period: keep counting it until its chunks leave the period.
        return
    labels = dict(body.get("metadata", {}).get("labels") or {})
    MIRROR.jobs[key] = job_usage(key[0], key[1], labels, dict(body.get("status") or {}))


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL_SECONDS, initial_delay=0.5)
async def refresh_budget(body: kopf.Body, name: str | None, namespace: str | None, patch: kopf.Patch, **_: Any) -> None:
    key = (namespace or "", name or "")
    entry = MIRROR.budgets.get(key)
    if entry is None:
        entry = budget_spec(key[0], key[1], dict(body.get("spec") or {}))
        MIRROR.budgets[key] = entry
    spec, selector = entry
    at = now()
    state = evaluate(spec, selected(spec, selector), at)
    old = dict(body.get("status") or {})
    fields = status_fields(spec, state)
    conditions = [Condition.model_validate(c) for c in old.get("conditions") or []]
    generation = int(body.get("metadata", {}).get("generation") or 0)
    if state.exceeded:
        message = f"used {state.used_ratio:.0%} of the budget; action {spec.action} until {_iso(state.period_end)}"
        conditions, _changed = set_condition(
            conditions, ConditionType.EXCEEDED, True, Reason.BUDGET_EXHAUSTED, message, at, generation
        )
        before = old.get("conditions") or []
        if not any(c.get("type") == "Exceeded" and c.get("status") == "True" for c in before):
            kopf.warn(body, reason=Reason.BUDGET_EXHAUSTED, message=message)
    else:
        message = f"used {state.used_ratio:.0%} of the budget this period"
        conditions, _changed = set_condition(
            conditions, ConditionType.EXCEEDED, False, Reason.WITHIN_BUDGET, message, at, generation
        )
    fields["conditions"] = [c.model_dump(mode="json", by_alias=True) for c in conditions]
    fields["observedGeneration"] = generation
    for field, value in fields.items():
        if old.get(field) != value:
            patch.status[field] = value
    metrics.BUDGET_USED_RATIO.labels(*key).set(min(state.used_ratio, 1e9))
    metrics.BUDGET_EXCEEDED.labels(*key).set(1 if state.exceeded else 0)
