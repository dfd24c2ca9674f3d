"""kopf handlers of CarbonAwareJob: one long-lived daemon per object runs read -> core -> act -> report.

Each pass (`reconcile`):
0. validate: a spec the API server let through but the operator cannot run is InvalidSpec, reported once;
1. read the snapshot: the CarbonAwareJob (its typed status), its workload (any supported kind, created from
   spec.template or named by spec.workloadRef; read only through the workload interface, adapters/workloads) in the
   cluster it is placed in, the GPUs it holds at once (`gpu_demand()`), the candidate clusters (largest node, free
   GPUs, the other jobs' GPU reservations) and fresh forecasts (cached by the providers);
2. call the decision core (`domain.core.reconcile`): node fit, progress, the committed plan, DeadlineAtRisk, the
   EnergyBudgets' admission or hold (on the ledgers of the budgets that select the job, read under their locks; the
   admission the core makes is written into them before anything is acted on, and decided again on a conflicting
   write), and create / resume / announce / suspend; then the Kueue guard (a Kueue-managed Job is never resumed or
   suspended here);
3. act on the workload in the order that keeps accounting safe if the operator dies between two steps (placement before
   creation, status before a resume or a suspension: a crash may only under-count work, which makes the deadline
   safer, never later);
4. report: energy and receipts, status (patched only on change), conditions, an Event per decision, metrics, and
   this job's GPU reservation for the others' plans.
The daemon sleeps until the next planned transition or the next tick, whichever comes first, and wakes early when
the spec or the workload changes. A workload carbonshift cannot drive now (kind not installed, invalid, a reference
to nothing) is the WorkloadUnavailable condition, one Event, and a re-check every WORKLOAD_RECHECK.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

import kopf
from pydantic import ValidationError

from carbonshift import metrics
from carbonshift.adapters.carbon.trace import TraceProvider, replay_note
from carbonshift.adapters.kube import Kube, KubeUnavailableError, namespace_terminating
from carbonshift.adapters.workloads import KINDS, Owner, Workload, WorkloadError, kind_for
from carbonshift.adapters.workloads.client import WorkloadClient
from carbonshift.api.base import GROUP, VERSION
from carbonshift.api.carbonawarejob import (
    PLURAL,
    CarbonAwareJob,
    CarbonAwareJobStatus,
    Display,
    EnergySource,
    PlanStatus,
)
from carbonshift.api.conditions import Condition, ConditionType, Reason, set_condition
from carbonshift.api.jobs import LABEL_CAJ, LABEL_MANAGED, owned_by, parse_time
from carbonshift.domain.accounting import (
    Estimate,
    PodRef,
    Pricing,
    estimate_from_wire,
    estimate_to_wire,
    extend_estimate,
    reprice_estimate,
    wall_to_utc,
    work_from_annotations,
)
from carbonshift.domain.budgets import Admission, BudgetFacts, BudgetSpec, BudgetVerdict, Ledger
from carbonshift.domain.core import AtRisk, CoreSettings, CoreStatus, Outcome, Snapshot, pods_rate
from carbonshift.domain.core import observe as core_observe
from carbonshift.domain.core import reconcile as core_reconcile
from carbonshift.domain.forecast_error import ErrorParams
from carbonshift.domain.forecast_trust import (
    ForecastRecord,
    ForecastTrust,
    TrustSource,
    combined,
    shown_skill,
    trust_for,
)
from carbonshift.domain.kueue import kueue_managed
from carbonshift.domain.lifecycle import Decision, Observed, Phase
from carbonshift.domain.planning.model import Cluster, Plan
from carbonshift.domain.planning.model import Reason as PlanReason
from carbonshift.domain.planning.signals import one_signal
from carbonshift.domain.series import IntensitySeries
from carbonshift.domain.workload import GpuDemand
from carbonshift.handlers import translate, validation
from carbonshift.handlers.energy import (
    awaiting,
    export_receipt_metrics,
    pricing_options,
    receipt_message,
    update_energy,
)
from carbonshift.handlers.energybudget import decide_and_record, job_cap, job_usage, selecting, selecting_listed
from carbonshift.handlers.jobstatus import JobStatus, patch_value, second
from carbonshift.handlers.state import LOCAL, OperatorState, current

log = logging.getLogger(__name__)
PLAN_EVENT_MIN_SHIFT = timedelta(minutes=10)  # re-plans that move the start by less are not news
AT_RISK = {
    PlanReason.DEADLINE_PASSED: Reason.DEADLINE_PASSED,
    PlanReason.INFEASIBLE_DEADLINE: Reason.DURATION_EXCEEDS_TIME_LEFT,
    PlanReason.NO_CAPACITY: Reason.NOT_ENOUGH_GPUS,
}
CORE_AT_RISK = {  # the decision core's DeadlineAtRisk reasons, as conditions say them
    AtRisk.OVERRUN: Reason.OVERRUN,
    AtRisk.INFEASIBLE: Reason.DURATION_EXCEEDS_TIME_LEFT,
    AtRisk.DEADLINE_PASSED: Reason.DEADLINE_PASSED,
    AtRisk.NO_CAPACITY: Reason.NOT_ENOUGH_GPUS,
}


WORKLOAD_RECHECK = timedelta(minutes=5)  # a kind not installed, a referenced workload missing: looked at again


def observe(workload: Workload | None, from_wall: Callable[[datetime], datetime] = lambda t: t) -> Observed:
    """The workload as the decision core sees it, whatever its kind (the adapter's reading, docs/workloads.md).
    `from_wall`: planning time of a wall-clock moment (its completion)."""
    if workload is None:
        return Observed(exists=False)
    seen = workload.observe()
    return Observed(
        exists=True,
        suspended=seen.suspended,
        active_pods=seen.active_pods,
        ready_pods=seen.ready_pods,
        complete=seen.complete,
        failed=seen.failed,
        failure_reason=seen.failure_reason,
        failure_message=seen.failure_message,
        suspend_at_annotation=seen.suspend_at_annotation,
        desired_pods=max(seen.desired_pods, 1),
        completed_at=from_wall(seen.completed_at) if seen.completed_at is not None else None,
    )


@dataclasses.dataclass(frozen=True)
class Target:
    """The workload a CarbonAwareJob drives: its kind's adapter, its name, and whether carbonshift creates it (from
    spec.template) or drives one its user created (spec.workloadRef: never created, never deleted)."""

    kind: type[Workload]
    name: str
    created: bool

    @property
    def label(self) -> str:
        return f"{self.kind.info.kind} {self.name}"


def target_of(caj: CarbonAwareJob) -> Target:
    """The CarbonAwareJob's workload (UnsupportedKind for a kind without an adapter)."""
    spec = caj.spec
    if spec.workload_ref is not None:
        ref = spec.workload_ref
        return Target(kind_for(ref.api_version, ref.kind), ref.name, False)
    assert spec.template is not None  # the CRD's CEL rule: exactly one of template, workloadRef
    return Target(kind_for(spec.template.api_version, spec.template.kind), str(caj.metadata.name), True)


def template_manifest(caj: CarbonAwareJob) -> dict[str, Any]:
    assert caj.spec.template is not None
    return caj.spec.template.model_dump(mode="json", by_alias=True)


async def build_workload(
    client: WorkloadClient, target: Target, caj: CarbonAwareJob, body: dict[str, Any], *, local: bool
) -> dict[str, Any]:
    """The object to create from the template (always suspended, labelled, owned); InvalidWorkload if it cannot be
    driven. A TrainJob that leaves its GPUs to its runtime is built with that runtime."""
    template = template_manifest(caj)
    runtime = None
    if target.kind.info.kind == "TrainJob":
        from carbonshift.adapters.workloads import TrainJob

        meta = {"namespace": body["metadata"]["namespace"], "name": target.name}
        runtime = await client.runtime_of(TrainJob({**template, "metadata": meta}))
    return target.kind.build(template, Owner.of(body, local=local), runtime=runtime)


def demand_of(target: Target, caj: CarbonAwareJob, workload: Workload | None, body: dict[str, Any]) -> GpuDemand:
    """The GPUs the workload holds at once: from the object when it exists, else from its template."""
    if workload is not None:
        return workload.gpu_demand()
    if not target.created:
        return GpuDemand(())
    template = template_manifest(caj)
    meta = {"namespace": body["metadata"]["namespace"], "name": target.name}
    return target.kind({**template, "metadata": meta}).gpu_demand()


async def report_workload_problem(tick: Tick, exc: WorkloadError | str, reason: str | None = None) -> datetime:
    """A workload carbonshift cannot drive now (its kind not installed, not supported, invalid; a referenced one
    missing): the WorkloadUnavailable condition and one Warning Event; looked at again on a slow timer or when the
    spec changes, never in a loop."""
    reason = reason or (exc.reason if isinstance(exc, WorkloadError) else Reason.INVALID_WORKLOAD)
    tick.condition(ConditionType.WORKLOAD_UNAVAILABLE, True, reason, str(exc), event="Warning")
    tick.st.phase = tick.st.phase or Phase.PENDING
    await tick.flush()
    return tick.now + WORKLOAD_RECHECK


class Tick:
    """One reconcile of one CarbonAwareJob: holds what was read and what will be written."""

    def __init__(self, state: OperatorState, body: dict[str, Any]) -> None:
        self.state = state
        self.body = body
        self.meta = body["metadata"]
        self.namespace: str = self.meta["namespace"]
        self.name: str = self.meta["name"]
        self.generation = int(self.meta.get("generation", 0))
        # The status as read (its wire form, what the patch is computed against) and typed, parsed once: `st` is
        # what the steps read and assign, `old` what was last written (flush is the one place that writes).
        self.old_wire: dict[str, Any] = dict(body.get("status") or {})
        self.st = JobStatus.from_wire(self.old_wire)
        self.old = self.st.snapshot()
        # The decision core's status, typed (None until this pass has decided): its wire form (progress, commitment,
        # suspendAt, suspendAnnouncedAt) is written once, in flush.
        self.core: CoreStatus | None = None
        self._core_written: CoreStatus | None = None
        self.now = state.clock.now()
        self.events: list[tuple[str, str, str]] = []
        self.histories: dict[str, IntensitySeries | None] = {}  # zones' measured intensity, read once per tick
        self.written_versions: list[str] = []  # the workload's resourceVersions after this pass's writes

    @property
    def conditions(self) -> list[Condition]:
        return self.st.conditions

    @conditions.setter
    def conditions(self, conditions: list[Condition]) -> None:
        self.st.conditions = conditions

    # -- reporting -------------------------------------------------------------------------------------------
    def condition(
        self, type_: str, status: bool, reason: str, message: str, *, event: str | None = None, again: bool = True
    ) -> None:
        """Set a condition; with `event`, say it in an Event when it turns true, and (`again`) when its words change
        while true. `again=False` for words that carry figures that move a little from pass to pass (a budget's
        projection, clipped to now): the condition shows them, the Event is said once."""
        before = next((c for c in self.conditions if c.type == type_), None)
        self.conditions, changed = set_condition(
            self.conditions, type_, status, reason, message, self.now, self.generation
        )
        was_said = before is not None and before.status == "True" and before.reason == reason
        if changed and status and event and (again or not was_said):
            self.events.append((event, reason, message))

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def wrote(self, workload: Workload) -> None:
        """This pass wrote the workload (the object the server returned): its watch event wakes nobody, if that
        version is our write alone. A patch that changed nothing returns the object at its current version, which
        may be someone else's change since this pass read it (the Job controller's, after our suspension): taken
        for ours, its event, the only one of that change, would be dropped."""
        version = workload.meta.get("resourceVersion")
        if version and workload.own_write:
            self.written_versions.append(str(version))
            self.state.wrote_workload(self.namespace, self.name, self.written_versions)

    async def flush(self) -> None:
        """The one place the typed status becomes the wire form: patched with the fields that changed (None for the
        ones removed), then the Events."""
        st = self.st
        if self.core is not None and self.core is not self._core_written:
            core = translate.core_status_wire(self.core)
            st.progress, st.commitment = core["progress"], core["commitment"]
            st.suspend_at, st.suspend_announced_at = core["suspendAt"], core["suspendAnnouncedAt"]
            self._core_written = self.core
        st.observed_generation = self.generation
        wire = st.to_wire()
        if wire != self.old_wire:
            patch = {k: v for k, v in wire.items() if self.old_wire.get(k) != v}
            # What we send must be what the CRD accepts: a typo here fails in tests, not in the API server. Only what
            # is sent is checked (the fields are independent): all of it on every pass cost 5% of the CPU (py-spy).
            CarbonAwareJobStatus.model_validate(patch)
            patch = {k: patch_value(k, st, v) for k, v in patch.items()}
            patch.update({k: None for k in self.old_wire if k not in wire})
            version = await self.state.local.patch_caj_status(self.namespace, self.name, patch)
            self.state.written[(self.namespace, self.name)] = version
            self.old_wire = wire
            self.old = st.snapshot()
        for kind, reason, message in self.events:
            kopf.event(cast(kopf.Body, self.body), type=kind, reason=reason, message=message)
        self.events.clear()

    # -- the steps -------------------------------------------------------------------------------------------
    def store_energy_estimate(self, estimate: Estimate) -> None:
        """The priced estimate stands until measured DCGM energy replaces it."""
        st = self.st
        st.estimate = estimate_to_wire(estimate)
        if st.energy_source is EnergySource.DCGM:
            return
        st.energy_kwh = round(estimate.kwh, 6)
        st.energy_source = EnergySource.ESTIMATE
        if estimate.kwh > estimate.unpriced_kwh:
            st.emissions_grams = round(estimate.emissions_grams, 3)
            st.baseline_emissions_grams = round(estimate.home_baseline_grams, 3)
            st.avoided_emissions_grams = round(estimate.avoided_grams, 3)


async def reconcile(state: OperatorState, body: dict[str, Any]) -> datetime | None:
    """One tick. Returns the planning time of the next transition, or None when the job is finished."""
    tick = Tick(state, body)
    try:
        caj = CarbonAwareJob.model_validate(body)
    except ValidationError as exc:
        tick.condition(ConditionType.INVALID_SPEC, True, "InvalidSpec", str(exc).splitlines()[0], event="Warning")
        tick.st.phase = Phase.PENDING
        await tick.flush()
        return tick.now + validation.WAIT_FOR_SPEC_CHANGE  # reported once; a corrected spec goes on
    awaiting_actuals = awaiting(tick.st)
    if translate.terminal(tick.st.phase) and tick.st.receipt_posted and not awaiting_actuals:
        return None
    if await validation.first_pass(state, tick):  # InvalidSpec, once; then it waits for its spec to change
        return tick.now + validation.WAIT_FOR_SPEC_CHANGE
    spec = caj.spec
    # maxDelay counts from creation, not from when the operator first saw the job (it may have been down).
    created = parse_time(tick.meta.get("creationTimestamp"))
    submitted = tick.st.submitted_at or (state.clock.from_wall(created) if created else tick.now)
    tick.st.submitted_at = second(submitted)
    deadline = translate.effective_deadline(spec, submitted)
    tick.st.deadline = second(deadline)

    # 1. Read the snapshot: the workload as observed, the core's status so far, candidate clusters, forecasts.
    try:
        target = target_of(caj)
    except WorkloadError as exc:
        return await report_workload_problem(tick, exc)
    if not target.created:
        state.referenced[(tick.namespace, target.kind.info.kind, target.name)] = tick.name
    # Placement: once a cluster is recorded it is kept (the workload may have run there). A referenced workload is
    # where its user created it: in this cluster.
    cluster_name: str | None = tick.st.cluster or (None if target.created else LOCAL)
    client = state.workloads_for(cluster_name) if cluster_name else None
    try:
        workload = await client.get(target.kind.info, tick.namespace, target.name) if client else None
    except WorkloadError as exc:
        return await report_workload_problem(tick, exc)
    if workload is None and not target.created and not translate.terminal(tick.st.phase):
        message = f"{target.label} does not exist in namespace {tick.namespace}; carbonshift never creates it"
        return await report_workload_problem(tick, message, Reason.WORKLOAD_NOT_FOUND)
    if any(c.type == ConditionType.WORKLOAD_UNAVAILABLE and c.status == "True" for c in tick.conditions):
        tick.condition(ConditionType.WORKLOAD_UNAVAILABLE, False, Reason.WORKLOAD_AVAILABLE, f"{target.label} found")
    job = workload.obj if workload is not None else None
    if job is not None and target.created and not owned_by(job, tick.meta["uid"]):
        tick.condition(
            ConditionType.FAILED, True, "JobNameTaken",
            f"a {target.kind.info.kind} named {tick.name} exists that carbonshift did not create; rename the "
            "CarbonAwareJob",
            event="Warning",
        )  # fmt: skip
        tick.st.phase = Phase.FAILED
        await tick.flush()
        return None
    try:
        demand = demand_of(target, caj, workload, body)
    except WorkloadError as exc:
        return await report_workload_problem(tick, exc)
    observed = observe(workload, state.clock.from_wall)
    if job is None and translate.terminal(tick.st.phase):
        # Finished, and its Job since deleted (a TTL): it stays finished; nothing is created again.
        observed = Observed(exists=True, suspended=False, complete=tick.st.phase is Phase.SUCCEEDED,
                            failed=tick.st.phase is Phase.FAILED)  # fmt: skip
    key = (tick.namespace, tick.name)
    watching_since = state.watching.setdefault(key, tick.now)
    needs = translate.job_needs(tick.name, spec, deadline, gpus=max(demand.total, 1))
    before = core_status(caj.status, tick.now)
    finished = observed.complete or observed.failed
    running = observed.exists and not observed.suspended and not finished
    working = running and observed.ready_pods > 0
    allowed = spec.placement.clusters if spec.placement else []
    if cluster_name:
        allowed = [cluster_name]
    entries = await validation.admitted(state, tick.namespace, await state.candidate_entries(allowed), cluster_name)
    per_pod = max(demand.largest_pod, 1)
    # The Job's own pods (running, waiting, or checkpointing after a suspension) are among the GPUs counted as used:
    # they are free for its own plan. (Without this a job that filled its cluster saw no room: it kept running past
    # its window's end, and once suspended it reported NotEnoughGPUs while its own pod was still stopping.) Taken
    # from the same listing as the count, so the two agree whatever the Job's status says meanwhile.
    own = next((e for e in entries if e.name == cluster_name), None)
    held = own.held_by_job.get(key, 0) if own is not None else 0
    candidates = [
        Cluster(e.name, e.zone, e.pue, e.free_gpus + held if e.free_gpus is not None and e is own else e.free_gpus)
        for e in entries
    ]
    if not candidates and not finished:
        tick.condition(
            ConditionType.DEADLINE_AT_RISK, True, Reason.UNKNOWN_CLUSTER,
            f"none of the clusters {allowed} exists", event="Warning",
        )  # fmt: skip
        tick.st.phase = Phase.PENDING
        await tick.flush()
        return tick.now + state.settings.tick
    # One horizon for every job (whole days, at least 3), so cached provider answers serve them all.
    days = max(3, math.ceil((deadline - tick.now) / timedelta(days=1)) + 1)
    horizon = timedelta(days=days)
    forecasts: dict[str, IntensitySeries | None] = {}
    answered: dict[str, str | None] = {}  # who answered each zone's forecast (for its error: forecast_trust)
    degraded: list[str] = []
    provider: str | None = None
    signal: str | None = None
    for zone in sorted({c.zone for c in candidates}) if not finished else ():
        answer = await state.forecasts.forecast(zone, tick.now, horizon)
        forecasts[zone] = answer.series
        answered[zone] = answer.provider
        if answer.degraded:
            degraded.append(f"{zone}: {answer.message}")
            metrics.PROVIDER_FALLBACKS.labels(zone, answer.provider or "none").inc()
        provider = provider or answer.provider
        if answer.series is not None:
            signal = str(answer.series.signal)
    for zone, series in forecasts.items():
        if series is not None and provider is not None:
            metrics.GRID_INTENSITY.labels(zone, provider, str(series.signal)).set(series.at(tick.now))
    # Zones are ranked on one signal (the zone the job runs in sets it): average and marginal grams do not compare.
    choice = one_signal(forecasts, prefer=[e.zone for e in entries if e.name == cluster_name])
    if choice.excluded and any(c.zone not in choice.excluded for c in candidates):
        candidates = [c for c in candidates if c.zone not in choice.excluded]
        signal = str(choice.signal)
    # Do no harm: the forecasts' expected error, per zone once per forecast slot (shared by every job).
    zones = sorted({c.zone for c in candidates} & forecasts.keys())
    trusts = [await zone_trust(state, tick, submitted, z, forecasts[z], answered.get(z)) for z in zones]
    harm = combined(trusts, tick.now, needs.duration, needs.deadline)
    # ... and, for a forecast that declares no error, the skill its recorded forecasts showed for this job's shape.
    window = needs.deadline - state.settings.margin - tick.now
    skill = shown_skill(dict(zip(zones, trusts, strict=True)), state.forecast_records, tick.now, needs.duration,
                        window, needs.interruptible)  # fmt: skip
    # ... and each zone's newest measurement from the provider that answered its forecast (the core's anchored veto).
    latest: dict[str, tuple[datetime, float]] = {}
    for zone in zones:
        who = answered.get(zone)
        seen = await state.forecasts.latest(zone, tick.now, who) if who is not None else None
        if seen is not None:
            latest[zone] = seen
    snapshot = Snapshot(
        job=needs,
        status=before,
        observed=observed,
        now=tick.now,
        clusters=tuple(candidates),
        forecasts=forecasts,
        forecast_error_g_per_kwh=harm.forecast_error_g_per_kwh,
        forecast_error_for=harm.forecast_error_for,
        slot_error_g_per_kwh=harm.slot_error_g_per_kwh,
        forecast_skill=skill,
        latest_actual=latest,
        watching_since=watching_since,
        pod_gpus=per_pod,
        largest_node_gpus={e.name: e.largest_node_gpus for e in entries},
    )

    labels = dict(caj.metadata.labels)
    uid = str(tick.meta.get("uid") or "")
    # The job's usage so far as this pass reports it (a running chunk's energy ends at this pass), its cap, PUEs.
    reported = {**tick.st.to_wire(leave_out=("conditions", "plan")), "plan": {"computedAt": translate.iso(tick.now)}}
    usage = job_usage(tick.namespace, tick.name, labels, reported)
    facts = BudgetFacts(uid, (), job_cap(caj), usage.chunks, {e.name: e.pue for e in state.entries()},
                        state.settings.pue)  # fmt: skip

    # 2. The decision core: progress, the (committed) plan, the budgets' verdict, and what to do. The budgets that
    # select the job are read (under their locks) and the admission the core makes is recorded in them first.
    settings = core_settings(state)
    available = {e.name: (e.free_gpus or 0) + e.carbonshift_gpus for e in entries}

    def decide(budgets: list[tuple[BudgetSpec, Ledger]]) -> Outcome:
        with metrics.PLANNER_SECONDS.time():
            seen = dataclasses.replace(snapshot, budget=dataclasses.replace(facts, budgets=tuple(budgets)))
            return reconcile_around_others(state, key, seen, available, settings)

    def admission_of(o: Outcome) -> Admission | None:
        return o.budget.admission if o.budget else None

    chosen = selecting(tick.namespace, labels)
    outcome = await decide_and_record(chosen, uid, decide, admission_of)
    if outcome.resume:
        # About to start a chunk: the budgets as the API lists them now, in case the watch has not delivered one
        # applied together with the job (it would start unbudgeted). One LIST per start, not per pass.
        listed = selecting_listed(tick.namespace, labels, await state.local.list_energy_budgets(tick.namespace))
        if [key for key, _ in listed] != [key for key, _ in chosen]:
            outcome = await decide_and_record(listed, uid, decide, admission_of)
    if outcome.at_risk == AtRisk.NO_NODE_FITS:  # the core's node fit: no allowed cluster has a node large enough
        tick.condition(ConditionType.DEADLINE_AT_RISK, True, Reason.NOT_ENOUGH_GPUS, outcome.why, event="Warning")
        tick.st.phase = Phase.PENDING
        await tick.flush()
        return outcome.next_wake or tick.now + state.settings.tick
    plan = outcome.plan
    # What the core saw of the progress, before any resume it decides (kept if that resume is not carried out).
    observed_progress = core_observe(before.progress, observed, tick.now, needs, settings, watching_since)
    if plan is not None:
        report_plan(tick, plan, provider, signal, degraded, forecasts, pods_waiting=running and not working,
                    at_risk=outcome.at_risk, note=choice.note, budget=outcome.budget)  # fmt: skip
    if outcome.budget is not None:
        report_budget(tick, outcome.budget)
    decision = Decision(
        outcome.resume, outcome.suspend, outcome.announce_suspend_at, outcome.phase, outcome.transition_at, outcome.why
    )
    new = outcome.status
    budget_held = outcome.budget_held
    if job is not None and kueue_managed(job.get("metadata") or {}) and (decision.resume or decision.suspend):
        # Never both: Kueue owns this Job's suspend field (docs/kueue.md); the carbon-window check times it.
        tick.event("Normal", "KueueManaged", f"not {'resuming' if decision.resume else 'suspending'}: Kueue admits it")
        decision = dataclasses.replace(decision, resume=False, suspend=False, annotate_suspend_at=None)
    if outcome.resume and not decision.resume:  # held by Kueue: no chunk began
        new = dataclasses.replace(new, progress=observed_progress, phase=decision.phase, suspend_at=None,
                                  announced_at=None)  # fmt: skip
    if decision.annotate_suspend_at is None and outcome.announce_suspend_at is not None:
        new = dataclasses.replace(new, suspend_at=None, announced_at=None)
    store_core_status(tick, new, finished=finished, suspended=decision.suspend)

    # 3. Act, in crash-safe order (docs/design/operator.md): placement before the Job; a resumed chunk's start in
    # status before the Job runs (a crash between makes the next pass count that chunk's overhead: under-counts);
    # a suspension in status before the Job stops; an announced suspension (suspendAt) in status before the annotation.
    if outcome.create and workload is None and target.created and plan is not None and plan.cluster is not None:
        client = state.workloads_for(cluster_name or plan.cluster)
        try:
            manifest = await build_workload(client, target, caj, body, local=(cluster_name or plan.cluster) == LOCAL)
        except WorkloadError as exc:
            return await report_workload_problem(tick, exc)
        if not cluster_name:
            cluster_name = plan.cluster
            tick.st.cluster = cluster_name
            await tick.flush()  # record the placement before creating anything there
        try:
            workload = await client.create(manifest)
            tick.wrote(workload)
        except WorkloadError as exc:
            return await report_workload_problem(tick, exc)
        job = workload.obj
        metrics.TRANSITIONS.labels("create").inc()
        tick.event(
            "Normal", "JobCreated", f"Created {target.label} (suspended) in cluster {cluster_name}"
        )  # fmt: skip
        observed = observe(workload, state.clock.from_wall)
    if cluster_name and not tick.st.cluster:
        tick.st.cluster = cluster_name
    tick.st.job_name = target.name if workload is not None else None
    if workload is None:
        decision = dataclasses.replace(decision, resume=False, suspend=False, annotate_suspend_at=None)
    else:
        if decision.resume or decision.suspend:  # reported in the status written before the transition: one patch
            report_decision(tick, decision, plan, observed)  # (each patch is a watch event for kopf), not two
        await act(tick, decision, observed, state.workloads_for(cluster_name), workload)

    # 4. Report: energy, conditions, Events, receipts, metrics, reservations.
    # The core credits run time at the share of pods running; the estimate counts wall time at the GPUs of the
    # pods that ran (the same energy), so its runSeconds and GPUs read as what ran.
    credit = max(new.progress.run_seconds - before.progress.run_seconds, 0.0)
    share = min(before.progress.rate, pods_rate(observed)) if before.progress.rate and pods_rate(observed) else 0.0
    share = share or pods_rate(observed) or before.progress.rate
    gpus = max(round(needs.gpus * share), 1) if share > 0 else needs.gpus
    wall = credit * needs.gpus / gpus
    priced = estimate_from_wire(tick.st.estimate).run_seconds
    await estimate_energy(state, tick, caj, priced + wall, gpus, needs.watts_per_gpu, submitted, cluster_name)
    report_decision(tick, decision, plan, observed)
    finished = decision.phase in (Phase.SUCCEEDED, Phase.FAILED)
    if state.meter is not None and cluster_name is not None:
        await measure_energy(state, tick, caj, decision, submitted, cluster_name, workload, needs.gpus)
    elif finished and not tick.st.receipt_posted:
        pue = zone_and_pue(state, cluster_name)[1] if cluster_name else None
        message = receipt_message(tick.namespace, tick.name, tick.st.to_wire(), pue)
        tick.event("Normal", "Receipt", f"{message} [no DCGM metrics configured: estimated from run time]")
        tick.st.receipt_posted = True
    elif finished and awaiting(tick.old) and not awaiting(tick.st):
        pue = zone_and_pue(state, cluster_name)[1] if cluster_name else None
        tick.event("Normal", "ReceiptRevised", receipt_message(tick.namespace, tick.name, tick.st.to_wire(), pue))
    await tick.flush()
    export_job_metrics(state, tick)
    if finished or budget_held:
        # A job held by a budget does not use its planned GPUs: the others plan with them.
        state.reservations.drop(key)
    elif plan is not None and (place := cluster_name or plan.cluster) is not None:
        # An overrunning job keeps its GPUs reserved: the core plans its estimated remainder at once.
        at_once = max(demand.total, 1)
        windows = plan.windows if plan.reason is not PlanReason.NO_CAPACITY else ()
        state.reservations.put(key, place, at_once, windows)
    if finished:
        # Done once the receipt is out and no energy awaits actual intensity (re-priced, or declared unpriced).
        if tick.st.receipt_posted and not awaiting(tick.st):
            state.watching.pop(key, None)
            return None
        return tick.now + (state.settings.tick if awaiting(tick.st) else state.settings.tick / 5)
    if decision.resume or decision.suspend:
        return decision.next_transition or tick.now + state.settings.tick
    return outcome.next_wake or tick.now + state.settings.tick


def core_status(status: CarbonAwareJobStatus | None, now: datetime) -> CoreStatus:
    """The core's status from the CarbonAwareJob's, its commitment with the gain the last plan reported (the
    core's `deferred_for_capacity_only` reads it)."""
    core = translate.core_status(status or CarbonAwareJobStatus(), now)
    plan = status.plan if status is not None else None
    if core.commitment is None or plan is None:
        return core
    planned, at_once = plan.planned_emissions_grams, plan.run_now_emissions_grams
    commitment = dataclasses.replace(
        core.commitment,
        planned_grams=math.nan if planned is None else planned,
        run_now_grams=math.nan if at_once is None else at_once,
    )
    return dataclasses.replace(core, commitment=commitment)


def core_settings(state: OperatorState) -> CoreSettings:
    return CoreSettings(
        tick=state.settings.tick, margin=state.settings.margin, recheck_every=state.settings.recheck_every
    )


def reconcile_around_others(
    state: OperatorState,
    key: tuple[str, str],
    snapshot: Snapshot,
    available: dict[str, int],
    settings: CoreSettings,
) -> Outcome:
    """The core, planning against the GPUs the other jobs' plans leave free, slot by slot (`state.reservations`),
    so that many jobs do not all pick the same clean window. Where that would miss the deadline and planning
    against the free GPUs of the moment would not, the deadline wins (the job may then queue behind others' pods,
    and says so). `available`: per cluster, its GPUs net of the work carbonshift does not manage. Slots are counted
    from the start of the forecast slot holding `now`, as the core plans on the forecast's own boundaries."""
    now, deadline = snapshot.now, snapshot.job.deadline
    reserved = []
    for c in snapshot.clusters:
        series = snapshot.forecasts.get(c.zone)
        if c.free_gpus is None or series is None or len(series) == 0:
            reserved.append(c)
            continue
        step = series.resolution
        start = series.start + step * math.floor((now - series.start) / step) if now >= series.start else now
        count = max(1, math.ceil((deadline - start) / step) + 1)
        free = available.get(c.name, c.free_gpus)
        by_slot = state.reservations.free_by_slot(key, c.name, free, start, step, count)
        reserved.append(dataclasses.replace(c, free_gpus_by_slot=by_slot))
    outcome = core_reconcile(dataclasses.replace(snapshot, clusters=tuple(reserved)), settings)
    plan = outcome.plan
    if plan is not None and (plan.reason is PlanReason.NO_CAPACITY or not plan.feasible):
        alone = core_reconcile(snapshot, settings)
        if alone.plan is not None and (alone.plan.feasible or plan.reason is PlanReason.NO_CAPACITY):
            return alone
    return outcome


def store_core_status(tick: Tick, new: CoreStatus, *, finished: bool, suspended: bool) -> None:
    """The core's status (typed, written by flush), and the run-time fields written before the core
    (`runSeconds`: run time of the closed stretches, `runningSince` while pods run, `suspensions`)."""
    tick.core = new
    progress = new.progress
    st = tick.st
    since = tick.old.running_since
    pods_run = progress.rate > 0 and not finished and not suspended
    if pods_run and since is None:
        st.running_since = second(tick.now)
        st.run_seconds = round(progress.run_seconds, 3)
    elif not pods_run:
        st.run_seconds = round(progress.run_seconds, 3)
        st.running_since = None
        if since is not None and not finished:
            st.suspensions = (st.suspensions or 0) + 1
    if st.suspensions is None:
        st.suspensions = 0


def report_budget(tick: Tick, verdict: BudgetVerdict) -> None:
    """The budgets' verdict, never silent: the limits an admission went over that hold no job (an Event each) and
    the BudgetHeld condition (DeadlineAtRisk, when the hold outlasts the latest safe start, is said with the plan)."""
    for note in verdict.notes:
        tick.event("Warning", Reason.BUDGET_EXHAUSTED, f"admitted over a limit that does not hold jobs: {note}")
    if verdict.hold is None:
        tick.condition(ConditionType.BUDGET_HELD, False, Reason.WITHIN_BUDGET, "no EnergyBudget holds this job")
        return
    tick.condition(ConditionType.BUDGET_HELD, True, Reason.BUDGET_EXHAUSTED, verdict.message, event="Warning",
                   again=False)  # fmt: skip


async def act(tick: Tick, decision: Decision, observed: Observed, client: WorkloadClient, workload: Workload) -> None:
    """Resume, suspend or announce, through the workload's own adapter (its kind's suspend field), each after the
    status that accounts for it."""
    if decision.resume:
        tick.st.phase = Phase.RUNNING
        await tick.flush()  # the chunk's start (it pays the overhead) first, then the Job: a crash between under-counts
        workload = await client.resume(workload)  # run time accrues from when its pods are seen running
        tick.wrote(workload)
        metrics.TRANSITIONS.labels("resume").inc()
        until = translate.iso(decision.next_transition)
        tick.event("Normal", "Resumed", f"Resumed: {decision.why} (until {until}){replayed_suffix(tick.st.plan)}")
    elif decision.suspend:
        tick.st.phase = Phase.SUSPENDED
        await tick.flush()  # status first, then the Job: a crash between under-counts
        workload = await client.suspend(workload)
        tick.wrote(workload)
        metrics.TRANSITIONS.labels("suspend").inc()
        workload = await client.announce(workload, None)
        tick.wrote(workload)
        next_window = translate.iso(decision.next_transition)
        suffix = replayed_suffix(tick.st.plan)
        tick.event("Normal", "Suspended", f"Suspended: {decision.why}; next window {next_window}{suffix}")
    # Compared as written (to the second): the plan's end carries the clock's microseconds, the annotation does not,
    # and comparing them raw re-annotated on every pass, each patch waking the next pass.
    announced = translate.iso(observed.suspend_at_annotation)
    if decision.annotate_suspend_at and announced != translate.iso(decision.annotate_suspend_at):
        # The status that announces it (suspendAt, suspendAnnouncedAt) first, then the workload: whoever reads the
        # annotation finds it in status too (e2e saw the pod annotated and status without suspendAt in between).
        await tick.flush()
        tick.wrote(await client.announce(workload, translate.iso(decision.annotate_suspend_at)))
        tick.event(
            "Normal", "SuspendPlanned", f"Checkpoint now: suspending at {translate.iso(decision.annotate_suspend_at)}"
        )


def zone_and_pue(state: OperatorState, cluster_name: str) -> tuple[str, float]:
    entry = next((e for e in state.entries() if e.name == cluster_name), None)
    return (entry.zone, entry.pue) if entry else (state.settings.zone, state.settings.pue)


async def actual_intensity(
    state: OperatorState, tick: Tick, submitted: datetime, cluster_name: str
) -> tuple[IntensitySeries | None, float]:
    """The measured intensity of the cluster's zone since the job was submitted (read once per tick and zone,
    shared by the estimate and the measured account), and the cluster's PUE."""
    zone, pue = zone_and_pue(state, cluster_name)
    return await zone_history(state, tick, submitted, zone), pue


async def zone_history(state: OperatorState, tick: Tick, submitted: datetime, zone: str) -> IntensitySeries | None:
    if zone not in tick.histories:
        # A window shared by every job submitted the same day, so cached provider answers serve them all.
        begin = min(submitted, tick.now - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
        tick.histories[zone] = await state.forecasts.history(zone, begin, tick.now + timedelta(hours=1), tick.now)
    return tick.histories[zone]


async def zone_trust(
    state: OperatorState,
    tick: Tick,
    submitted: datetime,
    zone: str,
    forecast: IntensitySeries | None,
    provider: str | None,
) -> ForecastTrust:
    """How far to trust a zone's forecast (domain/forecast_trust.py): the oracle 0, a trace replayed with a model
    that declares its error (realistic) that error, any other forecast the NESO fit x the zone's recent mean until
    a week of its recorded day-ahead forecasts is scored, then their measured error. The zone's `ForecastRecord` is
    fed on every pass (its issues for the shown skill, `shown_skill`; the actuals with each new trust).
    Computed once per zone, answering provider and forecast slot, and kept on the state for every job."""
    labels = forecast.labels if forecast is not None else {}
    key = (provider, forecast.start if forecast is not None else None, labels.get("oracle"))
    cached = state.trust.get(zone)
    if cached is not None and cached[0] == key:
        record = state.forecast_records.get(zone)
        if (
            record is not None
            and forecast is not None
            and cached[1].source not in (TrustSource.ORACLE, TrustSource.DECLARED)
        ):
            record.add_forecast(forecast, tick.now)  # (a new 6-hour issue may begin within a forecast slot)
            if state.forecast_store is not None:
                await state.forecast_store.save(zone, record)
        return cached[1]
    declared: ErrorParams | None = None
    declared_mean: float | None = None
    chain = getattr(state.forecasts, "chains", {}).get(zone)
    for link in chain.links if chain is not None else ():
        source = link.provider
        if isinstance(source, TraceProvider) and source.name == provider:
            params_for = getattr(source.model, "params_for", None)
            params = params_for(source.series) if callable(params_for) else getattr(source.model, "params", None)
            if isinstance(params, ErrorParams):  # the model's errors are relative to the trace's mean
                declared, declared_mean = params, source.series.mean()
            break
    history = record = None
    if forecast is not None and declared is None and labels.get("oracle") != "true":
        history = await zone_history(state, tick, submitted, zone)
        # The forecasts it was given and the actuals, kept a week: then their measured error replaces the prior.
        store = state.forecast_store
        record = (
            await store.record(state.forecast_records, zone, tick.now)
            if store is not None
            else state.forecast_records.setdefault(zone, ForecastRecord())
        )
        record.add_forecast(forecast, tick.now)
        record.add_actuals(history, tick.now)
        if store is not None:  # (kept across restarts when it recorded a forecast: a few times a day)
            await store.save(zone, record)
    trust = trust_for(
        forecast, tick.now, history=history, declared=declared, declared_mean=declared_mean, record=record
    )
    state.trust[zone] = (key, trust)
    return trust


async def pricing_context(
    state: OperatorState, tick: Tick, caj: CarbonAwareJob, submitted: datetime, cluster_name: str
) -> tuple[IntensitySeries | None, float, dict[str, Any]]:
    """(intensity, PUE, pricing keywords: home cluster, trace rule, embodied; see handlers/energy.py)."""
    actual, pue = await actual_intensity(state, tick, submitted, cluster_name)

    async def history(zone: str) -> IntensitySeries | None:
        return await zone_history(state, tick, submitted, zone)

    return actual, pue, await pricing_options(state, caj, cluster_name, history)


async def estimate_energy(
    state: OperatorState,
    tick: Tick,
    caj: CarbonAwareJob,
    run_seconds: float,
    gpus: int,
    watts: float,
    submitted: datetime,
    cluster_name: str | None,
) -> None:
    """Run time x GPUs x wattsPerGPU, priced on the actual intensity as it accrues: what the receipt shows where
    DCGM measured nothing (no Prometheus configured, or no samples of the job's GPUs)."""
    estimate = estimate_from_wire(tick.st.estimate)
    if (run_seconds > estimate.run_seconds or estimate.pending) and cluster_name is not None:
        actual, pue, context = await pricing_context(state, tick, caj, submitted, cluster_name)
        context.pop("traces_allowed", None)
        pricing = Pricing(
            pue, actual, submitted, wall_to_utc, traces_allowed=state.settings.receipts_on_traces, **context
        )
        estimate = extend_estimate(estimate, run_seconds, tick.now, gpus, watts, pricing)
        estimate = reprice_estimate(estimate, pricing, tick.now)
    tick.store_energy_estimate(estimate)


async def measure_energy(
    state: OperatorState,
    tick: Tick,
    caj: CarbonAwareJob,
    decision: Decision,
    submitted: datetime,
    cluster_name: str,
    workload: Workload | None,
    gpus: int,
) -> None:
    """Measured energy (DCGM via Prometheus), emissions on the actual intensity, and the receipt at the end; a
    revised receipt once energy that was unpriced at the end has been priced (or declared to stay unpriced)."""
    assert state.meter is not None
    actual, pue, context = await pricing_context(state, tick, caj, submitted, cluster_name)
    pods: list[PodRef] = []
    if workload is not None and (decision.phase is Phase.RUNNING or tick.st.run_seconds):
        # Only the workload's own pods are charged: a Job's by the CarbonAwareJob's UID label and the Job's owner
        # chain (a referenced Job's pods carry no label of ours: its owner chain alone); other kinds' by the labels
        # their controller puts on all their pods (`pod_selector`, e.g. a JobSet's name through its Jobs).
        with contextlib.suppress(LookupError):  # its ComputeCluster deleted: the pods seen before still count
            listed = await workload_pods(state.kube_for(cluster_name), tick, workload)
            pods = [PodRef(tick.namespace, name, uid or None) for name, uid in listed]
    update = await update_energy(
        state.meter,
        tick.body,
        status=tick.st,
        running=decision.phase is Phase.RUNNING,
        now=tick.now,
        intensity=actual,
        pue=pue,
        to_planning=state.clock.from_wall,
        pods=pods,
        gpus=gpus,
        **context,
    )
    tick.st.merge_wire(update.status)  # the account's summary fields and the account, as domain/accounting writes them
    type_, true, reason, message = update.condition
    tick.condition(type_, true, reason, message, event="Warning")
    work = work_from_annotations(tick.meta.get("annotations"))
    finished = decision.phase in (Phase.SUCCEEDED, Phase.FAILED)
    if finished and update.settled and not tick.st.receipt_posted:
        tick.event("Normal", "Receipt", receipt_message(tick.namespace, tick.name, tick.st.to_wire(), pue, work))
        tick.st.receipt_posted = True
    elif tick.st.receipt_posted and (tick.old.energy or {}).get("pending") and not update.awaiting_actuals:
        revised = receipt_message(tick.namespace, tick.name, tick.st.to_wire(), pue, work)
        tick.event("Normal", "ReceiptRevised", revised)


async def workload_pods(kube: Kube, tick: Tick, workload: Workload) -> list[tuple[str, str]]:
    """(name, uid) of the workload's pods, finished ones included."""
    if workload.info.kind == "Job" and workload.info.group == "batch" and owned_by(workload.obj, tick.meta["uid"]):
        return list(await kube.workload_pods(tick.namespace, tick.meta["uid"], workload.meta.get("uid")))
    selector = workload.pod_selector()
    if not selector:
        return []
    return list(await kube.pods_matching(workload.namespace, selector))


def export_job_metrics(state: OperatorState, tick: Tick) -> None:
    ns, name, st = tick.namespace, tick.name, tick.st
    state.phases.set(ns, name, str(st.phase or Phase.PENDING))
    if st.energy_kwh is not None:
        metrics.JOB_ENERGY.labels(ns, name, str(st.energy_source or EnergySource.ESTIMATE)).set(st.energy_kwh)
    for gauge, value in (
        (metrics.JOB_EMISSIONS, st.emissions_grams),
        (metrics.JOB_AVOIDED, st.avoided_emissions_grams),
    ):
        if value is not None:
            gauge.labels(ns, name).set(value)
    export_receipt_metrics(ns, name, st, tick.meta.get("annotations"))
    nxt = st.next_transition_time
    metrics.JOB_PLANNED_START.labels(ns, name).set(nxt.timestamp() if nxt else 0)
    at_risk = any(c.type == ConditionType.DEADLINE_AT_RISK and c.status == "True" for c in tick.conditions)
    metrics.DEADLINE_AT_RISK.labels(ns, name).set(1 if at_risk else 0)


def replayed_suffix(plan: PlanStatus | None) -> str:
    """' [on a replayed trace of YEAR, not today's grid]' when the plan was made on one: never pass a recorded grid
    off as today's (in the Planned, Resumed and Suspended Events and the Planned condition)."""
    replayed = replay_note(plan.provider if plan is not None else None)
    return f" [on a {replayed}, not today's grid]" if replayed else ""


def report_plan(
    tick: Tick,
    plan: Plan,
    provider: str | None,
    signal: str | None,
    degraded: list[str],
    forecasts: dict[str, Any],
    *,
    pods_waiting: bool = False,
    at_risk: str | None = None,
    note: str | None = None,
    budget: BudgetVerdict | None = None,
) -> None:
    """`pods_waiting`: the Job is resumed but none of its pods runs yet, so no run time accrues. `at_risk`: the
    decision core's DeadlineAtRisk reason (an overrun is one the plan alone does not show). `note`: said with the
    plan (zones left out of the ranking for their signal). `budget`: the budgets' verdict (a hold that outlasts the
    latest safe start wins over the plan's say on the deadline)."""
    series = forecasts.get(plan.zone) if plan.zone else None
    now_g = series.at(tick.now) if series is not None else None
    old_plan = tick.old.plan
    previous = old_plan.windows[0].start if old_plan is not None and old_plan.windows else None
    tick.st.plan = PlanStatus.model_validate(translate.plan_status(plan, provider, signal, tick.now))
    summary = translate.plan_summary(plan, now_g, tick.now) + replayed_suffix(tick.st.plan)
    if note:
        summary = f"{summary}; {note}"
    planned_reason = Reason.PLAN_COMPUTED
    tick.condition(ConditionType.PLANNED, plan.reason is not PlanReason.NO_CAPACITY, planned_reason, summary)
    deferred = plan.start is not None and plan.start > tick.now
    moved = previous is None or plan.start is None or abs(plan.start - previous) >= PLAN_EVENT_MIN_SHIFT
    if plan.windows and (previous is None or (deferred and moved)):
        tick.event("Normal", "Planned", summary)
    at_risk = CORE_AT_RISK.get(at_risk or "") or AT_RISK.get(plan.reason)
    if budget is not None and budget.deadline_at_risk:  # the budget wins over the deadline, and says so
        tick.condition(
            ConditionType.DEADLINE_AT_RISK, True, Reason.BUDGET_EXHAUSTED,
            f"the deadline cannot be kept while {budget.message}", event="Warning", again=False,
        )  # fmt: skip
    elif at_risk == Reason.OVERRUN:
        message = (
            "the Job has done its whole spec.duration of work but has not completed (the duration was "
            f"underestimated): it keeps running and keeps its GPUs; {summary}"
        )
        tick.condition(ConditionType.DEADLINE_AT_RISK, True, Reason.OVERRUN, message, event="Warning")
    elif (at_risk is not None or not plan.feasible) and pods_waiting:
        # The time ran out while the Job was resumed: the cause is its pods not starting, not the plan.
        message = (
            "the Job is resumed but none of its pods is running (waiting for free GPUs, or a nodeSelector, "
            f"affinity or taint that no node satisfies?): {summary}"
        )
        tick.condition(ConditionType.DEADLINE_AT_RISK, True, Reason.PODS_NOT_RUNNING, message, event="Warning")
    elif at_risk is not None or not plan.feasible:
        tick.condition(
            ConditionType.DEADLINE_AT_RISK, True, at_risk or Reason.DURATION_EXCEEDS_TIME_LEFT, summary, event="Warning"
        )
    else:
        tick.condition(
            ConditionType.DEADLINE_AT_RISK,
            False,
            "DeadlineSafe",
            f"latest safe start {translate.iso(plan.latest_safe_start)}",
        )
    if degraded:
        reason = Reason.NO_INTENSITY_DATA if plan.reason is PlanReason.NO_DATA else Reason.PROVIDER_FALLBACK
        tick.condition(ConditionType.PROVIDER_DEGRADED, True, reason, "; ".join(degraded), event="Warning")
    else:
        tick.condition(ConditionType.PROVIDER_DEGRADED, False, Reason.PROVIDER_HEALTHY, f"forecast from {provider}")


def report_decision(tick: Tick, decision: Decision, plan: Plan | None, observed: Observed) -> None:
    phase = decision.phase
    tick.st.phase = phase
    tick.st.next_transition_time = second(decision.next_transition) if decision.next_transition else None
    running = phase is Phase.RUNNING
    if running:
        reason = {
            PlanReason.IMMEDIATE: Reason.RUNNING_IMMEDIATE_POLICY,
            PlanReason.WITHIN_ERROR: Reason.RUNNING_FORECAST_WITHIN_ERROR,
            PlanReason.WITHOUT_SKILL: Reason.RUNNING_FORECAST_WITHOUT_SKILL,
            PlanReason.LATEST_SAFE_START: Reason.RUNNING_AT_LATEST_SAFE_START,
            PlanReason.NO_DATA: Reason.RUNNING_AT_LATEST_SAFE_START,
        }.get(plan.reason if plan is not None else PlanReason.OPTIMAL, Reason.RUNNING_IN_PLANNED_WINDOW)
        tick.condition(ConditionType.RUNNING, True, reason, decision.why)
    else:
        tick.condition(ConditionType.RUNNING, False, Reason.DEFERRED_TO_LOW_CARBON_WINDOW, decision.why)
    tick.condition(
        ConditionType.WAITING, phase is Phase.WAITING, Reason.DEFERRED_TO_LOW_CARBON_WINDOW,
        f"next window {translate.iso(decision.next_transition)}",
    )  # fmt: skip
    tick.condition(
        ConditionType.SUSPENDED, phase is Phase.SUSPENDED, Reason.SUSPENDED_BETWEEN_WINDOWS,
        f"next window {translate.iso(decision.next_transition)}",
    )  # fmt: skip
    if phase is Phase.SUCCEEDED:
        tick.condition(ConditionType.SUCCEEDED, True, Reason.JOB_COMPLETED, "the Job completed", event="Normal")
    if phase is Phase.FAILED:
        message = f"{observed.failure_reason}: {observed.failure_message}" if observed.failure_reason else "failed"
        tick.condition(ConditionType.FAILED, True, Reason.JOB_FAILED, message, event="Warning")
    emitted, baseline = tick.st.emissions_grams, tick.st.baseline_emissions_grams
    if emitted is not None and baseline:  # the receipt so far, once measured
        saved = 100 * (baseline - emitted) / baseline
        tick.st.display = Display(co2e=translate.kg(emitted), saved=f"{saved:.0f}%")
    elif (
        plan is not None
        and math.isfinite(plan.planned_grams)
        and math.isfinite(plan.baseline_grams)
        and plan.baseline_grams > 0
    ):
        saved = 100 * (plan.baseline_grams - plan.planned_grams) / plan.baseline_grams
        tick.st.display = Display(co2e=f"~{translate.kg(plan.planned_grams)}", saved=f"~{saved:.0f}%")


# -- kopf wiring --------------------------------------------------------------------------------------------------
@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def run_carbonawarejob(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    stopped: kopf.DaemonStopped,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    assert namespace is not None  # CarbonAwareJob is namespaced
    state = current()
    wake = state.wake_event(namespace, name)
    failures = 0
    while not stopped:
        wake.clear()
        state.pokes.pop((namespace, name), None)
        try:
            async with state.reconciling:
                with metrics.RECONCILE_SECONDS.labels("ok").time():
                    nxt = await reconcile(state, dict(body))
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never let one object's failure stop its daemon: report, back off, retry
            if namespace_terminating(exc):  # its namespace is going away, and this object with it: wait for that
                logger.info("namespace %s is being deleted; not creating anything in it", namespace)
                await asyncio.sleep(30)
                continue
            failures += 1
            metrics.RECONCILE_SECONDS.labels("error").observe(0)
            level = logging.WARNING if isinstance(exc, (KubeUnavailableError, OSError)) else logging.ERROR
            logger.log(
                level,
                "reconcile failed (%s: %s); retry %d",
                type(exc).__name__,
                exc,
                failures,
                exc_info=level == logging.ERROR,
            )
            await asyncio.sleep(min(2**failures, 30))
            continue
        if nxt is None:
            state.forget_own_writes(namespace, name)
            return  # finished and accounted; the daemon ends (a restarted operator checks once and ends too)
        await caught_up(body, state.written.pop((namespace, name), None))
        if wake.is_set() and state.only_own_pokes(namespace, name):
            wake.clear()  # woken only by the events of this pass's own writes to its workload: nothing new
        wait = min(state.settings.tick, max(nxt - state.clock.now(), timedelta(0)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=max(state.clock.wall_seconds(wait), 0.05))


async def caught_up(body: kopf.Body, version: str | None, timeout_seconds: float = 2.0) -> None:
    """Wait until kopf's live body shows our own last status patch (its watch event arrives a little later).

    The next pass reads its state from that body: reading it stale would redo the last pass's accounting, e.g.
    count the same energy interval twice. Gives up after `timeout_seconds` (the pass after that reads fresh)."""
    if not version:
        return
    deadline = time.monotonic() + timeout_seconds
    while body.get("metadata", {}).get("resourceVersion") != version and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def spec_changed(name: str, namespace: str | None, **_: Any) -> None:
    current().poke(namespace or "", name)


async def workload_changed(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    """A workload carbonshift drives changed: its CarbonAwareJob looks again now (created from a template: named by
    our label; referenced by a workloadRef: the CarbonAwareJob seen referring to it, else one of its own name)."""
    meta = body.get("metadata", {})
    state = current()
    name = str(meta.get("name") or "")
    owner = (meta.get("labels") or {}).get(LABEL_CAJ) or state.referenced.get(
        (namespace or "", str(body.get("kind") or ""), name), name
    )
    version = meta.get("resourceVersion")
    if owner and not state.own_event(namespace or "", owner, version):
        state.poke(namespace or "", owner, version)


def watch_workloads(kinds: list[tuple[str, str, str]]) -> None:
    """One watch per served kind (group, version, plural), on objects labelled carbonshift.io/managed (ours, and
    adopted ones). `carbonshift run` registers the kinds the cluster serves, so kopf never watches a missing one."""
    for group, version, plural in kinds:
        kopf.on.event(group, version, plural, labels={LABEL_MANAGED: "true"})(workload_changed)


watch_workloads([("batch", "v1", "jobs")])  # the built-in kind is always served
OPTIONAL_KINDS = [(k.info.group, k.info.version, k.info.plural) for k in KINDS if not k.info.builtin]


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete_job(body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    """Deleting the CarbonAwareJob deletes the workload it created, in whichever cluster it was placed (the
    finalizer's job); a referenced workload (spec.workloadRef) is its user's and stays."""
    state = current()
    # Read by key, not parsed (JobStatus): a status it could not read must never keep the finalizer from ending.
    cluster = (body.get("status") or {}).get("cluster")
    template = (body.get("spec") or {}).get("template")
    if cluster and template is not None:
        try:
            kind = kind_for(str(template.get("apiVersion", "batch/v1")), str(template.get("kind", "Job")))
            await state.workloads_for(cluster).delete(kind.info, namespace or "", name)
        except LookupError:
            log.warning("cluster %s of %s/%s is gone; nothing to clean up there", cluster, namespace, name)
        except WorkloadError as exc:
            log.info("nothing to delete for %s/%s: %s", namespace, name, exc)
    state.wake.pop((namespace or "", name), None)
    state.forget_own_writes(namespace or "", name)
    state.phases.drop(namespace or "", name)
    state.reservations.drop((namespace or "", name))
    state.watching.pop((namespace or "", name), None)
    for ref in [r for r, caj in state.referenced.items() if r[0] == (namespace or "") and caj == name]:
        state.referenced.pop(ref, None)
    for gauge in (metrics.JOB_EMISSIONS, metrics.JOB_AVOIDED, metrics.JOB_PLANNED_START, metrics.DEADLINE_AT_RISK):
        with contextlib.suppress(KeyError):
            gauge.remove(namespace or "", name)
    for source in ("dcgm", "estimate"):
        with contextlib.suppress(KeyError):
            metrics.JOB_ENERGY.remove(namespace or "", name, source)
