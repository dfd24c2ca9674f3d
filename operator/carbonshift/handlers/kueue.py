"""carbonshift as a Kueue AdmissionCheck controller (`controllerName: carbonshift.io/carbon-window`).

Kueue decides quota, fair sharing, preemption and which workload goes first; carbonshift decides *when* a
workload's time has come, through the state of its check on the Workload (docs/kueue.md):

- AdmissionChecks naming our controller get their `Active` condition (False, with the reason, when their
  `parameters` do not name an existing CarbonWindowPolicy);
- one daemon per Workload: when its ClusterQueue's checks include ours and Kueue has reserved quota for it,
  read -> plan (`plan_job`) -> decide (`domain.kueue.decide_check`) -> write the check's state when it changes
  (Pending with `requeueAfterSeconds`, wall seconds until the window; Ready; Retry with 0 at a window's end)
  -> Events on the Workload and its Job; nothing is decided while Kueue evicts or requeues it;
- crash-safe order: the run-time account (an annotation on the Workload) is written before the check's state,
  so a crash between the two can only under-count run time, which keeps deadlines safe;
- the receipt is an Event on the Job and the Workload once the Workload is Finished.

carbonshift never writes a Kueue-managed Job's `suspend` field: Kueue does, on Ready (admit) and Retry (evict).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from carbonshift.adapters.kube import Kube, namespace_terminating
from carbonshift.api.base import GROUP, VERSION
from carbonshift.api.carbonawarejob import DEFAULT_CHECKPOINT_OVERHEAD, DEFAULT_MIN_RUN, DEFAULT_WATTS_PER_GPU
from carbonshift.api.carbonwindowpolicy import CONTROLLER_NAME, KIND, PLURAL, CarbonWindowPolicy
from carbonshift.api.durations import parse_duration
from carbonshift.api.jobs import GPU_RESOURCE, parse_time
from carbonshift.domain.accounting import Pricing, estimate_from_wire, estimate_to_wire, extend_estimate, wall_to_utc
from carbonshift.domain.kueue import (
    QUEUE_LABEL,
    CheckDecision,
    CheckState,
    Defaults,
    Terms,
    TermsError,
    decide_check,
    terms,
)
from carbonshift.domain.lifecycle import Accounting, remaining
from carbonshift.domain.planning.model import Cluster, Policy
from carbonshift.domain.planning.model import Job as PlannerJob
from carbonshift.domain.planning.single import plan_job
from carbonshift.handlers import translate
from carbonshift.handlers.energy import receipt_message
from carbonshift.handlers.state import LOCAL, OperatorState, current

log = logging.getLogger(__name__)
KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
WORKLOADS, ADMISSION_CHECKS = "workloads", "admissionchecks"
ANNOTATION_STATE = "carbonshift.io/kueue-account"  # JSON: run-time account, estimate, receipt flag
FIELD_MANAGER = "carbonshift-carbon-window"


@dataclass
class Checks:
    """The AdmissionChecks that name our controller: check name -> CarbonWindowPolicy name (None: defaults)."""

    policies: dict[str, str | None] = field(default_factory=dict)
    workload_of_job: dict[str, tuple[str, str]] = field(default_factory=dict)  # Job uid -> its Workload's wake key
    seen: dict[tuple[str, str], str] = field(default_factory=dict)  # Workload -> fingerprint of what Kueue decided


CHECKS = Checks()


# -- reading -------------------------------------------------------------------------------------------------------
def condition_true(obj: dict[str, Any], type_: str) -> bool:
    return any(
        c.get("type") == type_ and c.get("status") == "True" for c in (obj.get("status") or {}).get("conditions") or []
    )


def workload_gpus(workload: dict[str, Any]) -> int:
    """GPUs of all pod sets at once (count x per-pod GPUs); at least 1, for power estimates."""
    total = 0
    for pod_set in (workload.get("spec") or {}).get("podSets") or []:
        count = int(pod_set.get("count") or 1)
        per_pod = 0
        for container in ((pod_set.get("template") or {}).get("spec") or {}).get("containers") or []:
            resources = container.get("resources") or {}
            limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
            per_pod += int(limits.get(GPU_RESOURCE) or requests.get(GPU_RESOURCE) or 0)
        total += count * per_pod
    return max(total, 1)


def owner_job(workload: dict[str, Any]) -> tuple[str, str] | None:
    """(name, uid) of the batch/v1 Job that owns the Workload."""
    for ref in (workload.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job" and str(ref.get("apiVersion", "")).startswith("batch/"):
            return str(ref["name"]), str(ref.get("uid"))
    return None


def _iso_wall(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def read_policy(kube: Kube, name: str | None) -> CarbonWindowPolicy | str:
    """The named CarbonWindowPolicy (defaults when None), or the reason it cannot be used."""
    if name is None:
        return CarbonWindowPolicy()
    try:
        raw = await kube._call("read policy", kube.custom.get_cluster_custom_object, GROUP, VERSION, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            return f"{KIND} {name} not found"
        raise
    try:
        return CarbonWindowPolicy.model_validate(raw)
    except ValueError as exc:
        return f"{KIND} {name} is invalid: {str(exc).splitlines()[0]}"


# -- AdmissionChecks -------------------------------------------------------------------------------------------------
def parameters_problem(spec: dict[str, Any]) -> str | None:
    params = spec.get("parameters")
    if not params:
        return None
    if params.get("apiGroup") != GROUP or params.get("kind") != KIND:
        return f"parameters must name a {GROUP} {KIND}, not {params.get('apiGroup')}/{params.get('kind')}"
    return None


async def reconcile_check(body: dict[str, Any]) -> None:
    name = body["metadata"]["name"]
    spec = body.get("spec") or {}
    if spec.get("controllerName") != CONTROLLER_NAME:
        CHECKS.policies.pop(name, None)
        return
    state = current()
    problem = parameters_problem(spec)
    policy_name = (spec.get("parameters") or {}).get("name")
    if problem is None:
        found = await read_policy(state.local, policy_name)
        problem = found if isinstance(found, str) else None
    if problem is None:
        known = name in CHECKS.policies
        CHECKS.policies[name] = policy_name
        if not known:  # workloads that waited for this check to be known look again now
            for (space, _name), event in list(state.wake.items()):
                if space.startswith("workload:"):
                    event.set()
        condition = ("True", "Active", f"carbonshift plans workloads with {KIND} {policy_name or '(defaults)'}")
    else:
        CHECKS.policies.pop(name, None)
        condition = ("False", "BadParameters", problem)
    old: dict[str, Any] = next(
        (c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") == "Active"), {}
    )
    if (old.get("status"), old.get("reason"), old.get("message")) == condition:
        return
    patch = {
        "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
        "kind": "AdmissionCheck",
        "metadata": {"name": name},
        "status": {
            "conditions": [
                {
                    "type": "Active",
                    "status": condition[0],
                    "reason": condition[1],
                    "message": condition[2],
                    "lastTransitionTime": _iso_wall(datetime.now(UTC)),
                    "observedGeneration": int(body["metadata"].get("generation") or 0),
                }
            ]
        },
    }
    await state.local._call(
        "patch admissioncheck status",
        state.local.custom.patch_cluster_custom_object_status,
        KUEUE_GROUP, KUEUE_VERSION, ADMISSION_CHECKS, name, patch,
        field_manager=FIELD_MANAGER, force=True, _content_type="application/apply-patch+yaml",
    )  # fmt: skip
    if problem:
        kopf.event(cast(kopf.Body, body), type="Warning", reason="BadParameters", message=problem)


@kopf.on.resume(KUEUE_GROUP, KUEUE_VERSION, ADMISSION_CHECKS)
@kopf.on.create(KUEUE_GROUP, KUEUE_VERSION, ADMISSION_CHECKS)
@kopf.on.update(KUEUE_GROUP, KUEUE_VERSION, ADMISSION_CHECKS, field="spec")
async def admission_check_changed(body: kopf.Body, **_: Any) -> None:
    await reconcile_check(dict(body))


@kopf.timer(KUEUE_GROUP, KUEUE_VERSION, ADMISSION_CHECKS, interval=15.0, idle=5.0)
async def admission_check_recheck(body: kopf.Body, **_: Any) -> None:
    """A policy created (or deleted) after its check: the check's Active condition follows within seconds."""
    await reconcile_check(dict(body))


@kopf.on.delete(KUEUE_GROUP, KUEUE_VERSION, ADMISSION_CHECKS, optional=True)
async def admission_check_deleted(name: str, **_: Any) -> None:
    CHECKS.policies.pop(name, None)


# -- Workloads ---------------------------------------------------------------------------------------------------------
@dataclass
class Pass:
    """One reconcile of one Workload: what was read, and what will be written."""

    state: OperatorState
    body: dict[str, Any]
    now: datetime
    job: dict[str, Any] | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def namespace(self) -> str:
        return str(self.body["metadata"]["namespace"])

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    def event(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def post_events(self) -> None:
        for kind, reason, message in self.events:
            kopf.event(cast(kopf.Body, self.body), type=kind, reason=reason, message=message)
            if self.job is not None:  # where `kubectl describe job` shows it
                kopf.event(cast(kopf.Body, self.job), type=kind, reason=reason, message=message)
        self.events.clear()


def our_check(workload: dict[str, Any]) -> dict[str, Any] | None:
    for check in (workload.get("status") or {}).get("admissionChecks") or []:
        if check.get("name") in CHECKS.policies:
            return cast(dict[str, Any], check)
    return None


async def write_account(p: Pass, account: dict[str, Any]) -> None:
    old = ((p.body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_STATE)
    text = json.dumps(account, sort_keys=True, separators=(",", ":"))
    if old == text:
        return
    patch = {"metadata": {"annotations": {ANNOTATION_STATE: text}}}
    kube = p.state.local
    await kube._call(
        "annotate workload", kube.custom.patch_namespaced_custom_object,
        KUEUE_GROUP, KUEUE_VERSION, p.namespace, WORKLOADS, p.name, patch,
    )  # fmt: skip


async def apply_check(
    kube: Kube, namespace: str, name: str, check: dict[str, Any], state: CheckState, message: str, requeue: int
) -> None:
    """Server-side apply of our entry of `status.admissionChecks` (a list map keyed by name: the others stay).

    `requeueAfterSeconds` is always written: Kueue co-owns the entry (it resets it to Pending after an eviction,
    keeping the field), so leaving it out would leave an old value in force."""
    entry: dict[str, Any] = {
        "name": check["name"],
        "state": str(state),
        "message": message[:1024],
        "lastTransitionTime": _iso_wall(datetime.now(UTC))
        if check.get("state") != state or not check.get("lastTransitionTime")
        else check["lastTransitionTime"],
        "requeueAfterSeconds": requeue,
    }
    body = {
        "apiVersion": f"{KUEUE_GROUP}/{KUEUE_VERSION}",
        "kind": "Workload",
        "metadata": {"name": name, "namespace": namespace},
        "status": {"admissionChecks": [entry]},
    }
    await kube._call(
        "patch workload check", kube.custom.patch_namespaced_custom_object_status,
        KUEUE_GROUP, KUEUE_VERSION, namespace, WORKLOADS, name, body,
        field_manager=FIELD_MANAGER, force=True, _content_type="application/apply-patch+yaml",
    )  # fmt: skip


async def write_check(p: Pass, check: dict[str, Any], decision: CheckDecision, requeue: int = 0) -> None:
    await apply_check(p.state.local, p.namespace, p.name, check, decision.state, decision.message, requeue)


def hold_seconds(state: OperatorState, until: datetime, now: datetime) -> int:
    """Wall seconds from now until `until` (planning time), at least 1."""
    return max(math.ceil(state.clock.wall_seconds(until - now)), 1)


def place(state: OperatorState, policy: CarbonWindowPolicy) -> Cluster:
    """Where the queue's workloads run: the policy's ComputeCluster, its zone, or the operator's own zone."""
    spec = policy.spec
    entry = state.clusters.get(spec.cluster) if spec.cluster else None
    if entry is not None:
        return Cluster(entry.name, entry.zone, entry.pue)
    return Cluster(spec.cluster or LOCAL, spec.zone or state.settings.zone, state.settings.pue)


def planner_job(name: str, t: Terms, acc: Accounting, now: datetime, gpus: int, *, running: bool) -> PlannerJob:
    interruptible = t.interruptible
    return PlannerJob(
        name=name,
        remaining=remaining(t.duration, acc, now),
        deadline=t.deadline,
        interruptible=interruptible,
        overhead=parse_duration(DEFAULT_CHECKPOINT_OVERHEAD) if interruptible else timedelta(0),
        min_run=parse_duration(DEFAULT_MIN_RUN) if interruptible else timedelta(0),
        gpus=gpus,
        watts_per_gpu=DEFAULT_WATTS_PER_GPU,
        policy=Policy.OPTIMAL,
        running=running,
        started=acc.run_seconds > 0 or acc.running_since is not None,
    )


async def reconcile_workload(state: OperatorState, body: dict[str, Any]) -> datetime | None:
    """One pass. Returns when to look again (planning time); None: wait for the Workload to change."""
    check = our_check(body)
    if check is None:
        return None
    p = Pass(state, body, state.clock.now())
    meta = body["metadata"]
    owner = owner_job(body)
    job_name = owner[0] if owner else None
    if owner is not None:
        CHECKS.workload_of_job[owner[1]] = _key(p.namespace, p.name)
    p.job = await state.local.get_job(p.namespace, job_name) if job_name else None
    annotations = {
        **(meta.get("annotations") or {}),
        **(((p.job or {}).get("metadata") or {}).get("annotations") or {}),
    }
    account: dict[str, Any] = json.loads((meta.get("annotations") or {}).get(ANNOTATION_STATE) or "{}")
    if account.get("receiptPosted"):
        return None
    created = parse_time(meta.get("creationTimestamp"))
    submitted = parse_time(account.get("submittedAt")) or (state.clock.from_wall(created) if created else p.now)
    account["submittedAt"] = translate.iso(submitted)

    found = await read_policy(state.local, CHECKS.policies.get(check["name"]))
    if isinstance(found, str):
        return None  # the check itself says so (Active=False); nothing to decide with
    policy = found
    cluster = place(state, policy)
    max_exec = (body.get("spec") or {}).get("maximumExecutionTimeSeconds")
    defaults = Defaults(
        max_delay=parse_duration(policy.spec.default_max_delay),
        duration=parse_duration(policy.spec.default_duration) if policy.spec.default_duration else None,
        interruptible=policy.spec.interruptible,
    )
    try:
        t = terms(
            annotations, created=submitted, defaults=defaults,
            max_execution=timedelta(seconds=int(max_exec)) if max_exec else None,
            parse_duration=parse_duration, parse_time=parse_time,
        )  # fmt: skip
    except TermsError as exc:
        if check.get("state") != CheckState.REJECTED:
            decision = CheckDecision(CheckState.REJECTED, None, None, "InvalidTerms", str(exc))
            await write_check(p, check, decision)
            p.event("Warning", "InvalidTerms", f"carbonshift rejected the workload: {exc}")
            p.post_events()
        return None

    # The run-time account: as for a CarbonAwareJob, it accrues only while the Job's pods run.
    finished = condition_true(body, "Finished")
    admitted = condition_true(body, "Admitted") and not finished
    reserved = condition_true(body, "QuotaReserved")
    evicted = condition_true(body, "Evicted")  # until Kueue reserves quota again: being stopped, or requeued
    job_status = (p.job or {}).get("status") or {}
    # Once we have said Retry the Job is on its way out: its last seconds are not counted (under-count, never over).
    working = (
        admitted
        and not evicted
        and check.get("state") != CheckState.RETRY
        and not bool((p.job or {}).get("spec", {}).get("suspend"))
        and int(job_status.get("ready") or 0) > 0
    )
    acc = Accounting(
        float(account.get("runSeconds") or 0.0),
        parse_time(account.get("runningSince")),
        int(account.get("suspensions") or 0),
    )
    if working and acc.running_since is None:
        acc = acc.resumed(p.now)
    if not working and acc.running_since is not None:
        acc = acc.stopped(p.now) if finished or admitted else acc.suspended(p.now)
    account.update(
        runSeconds=round(acc.run_seconds, 3), suspensions=acc.suspensions, deadline=translate.iso(t.deadline)
    )
    account["runningSince"] = translate.iso(acc.running_since)
    gpus = workload_gpus(body)
    await estimate(state, p, account, acc, gpus, submitted, cluster)

    if finished:
        account["phase"] = "Succeeded" if "Succeeded" in str(_finished_reason(body)) else "Finished"
        message = receipt_message(p.namespace, job_name or p.name, _receipt_status(account), cluster.pue)
        p.event("Normal", "Receipt", f"{message} [Kueue workload; estimated from run time]")
        account["receiptPosted"] = True
        await write_account(p, account)
        p.post_events()
        return None

    horizon = timedelta(days=max(3, math.ceil((t.deadline - p.now) / timedelta(days=1)) + 1))
    answer = await state.forecasts.forecast(cluster.zone, p.now, horizon)
    pjob = planner_job(p.name, t, acc, p.now, gpus, running=admitted)
    plan = plan_job(pjob, [cluster], {cluster.zone: answer.series}, p.now, state.settings.margin)
    account["plan"] = translate.plan_status(
        plan, answer.provider, str(answer.series.signal) if answer.series else None, p.now
    )
    if evicted or (not reserved and not admitted):
        # Queued, or evicted: nothing to decide until Kueue reserves quota again. (Deciding while an eviction is
        # under way would say Retry again after Kueue reset the check to Pending, and a Workload left with a Retry
        # check is never admitted.)
        await write_account(p, account)
        return None
    decision = decide_check(plan, p.now, admitted=admitted, interruptible=t.interruptible)
    if decision.state is CheckState.RETRY and admitted:
        acc = acc.suspended(p.now)  # written before Kueue is told to evict: a crash only under-counts
        account.update(runSeconds=round(acc.run_seconds, 3), suspensions=acc.suspensions, runningSince=None)
    account["phase"] = {
        CheckState.READY: "Running",
        CheckState.PENDING: "Suspended" if acc.suspensions else "Waiting",
        CheckState.RETRY: "Suspended",
    }.get(decision.state, "Pending")
    decided = f"{decision.state}:{decision.reason}"
    news = check.get("state") != decision.state or account.get("decided") != decided
    account["decided"] = decided
    await write_account(p, account)
    if not news:  # the message went with the decision; rewriting it each pass would be churn
        return decision.recheck_at
    # requeueAfterSeconds: on Pending, when carbonshift looks again; on Retry 0, so that Kueue evicts at once
    # (Kueue 0.17 keeps an admitted workload until lastTransitionTime + requeueAfterSeconds before evicting it).
    wait = hold_seconds(state, p.now + decision.requeue_after, p.now) if decision.requeue_after else 0
    await write_check(p, check, decision, wait if decision.state is CheckState.PENDING else 0)
    summary = translate.plan_summary(plan, answer.series.at(p.now) if answer.series else None, p.now)
    p.event(
        "Normal", f"CarbonWindow{decision.reason}", f"{check['name']} {decision.state}: {decision.message}. {summary}"
    )
    p.post_events()
    return decision.recheck_at


def _finished_reason(body: dict[str, Any]) -> str:
    for c in (body.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Finished":
            return str(c.get("reason") or "")
    return ""


def _receipt_status(account: dict[str, Any]) -> dict[str, Any]:
    return {
        "phase": account.get("phase"),
        "plan": account.get("plan") or {},
        "energyKWh": account.get("energyKWh"),
        "energySource": "estimate",
        "emissionsGrams": account.get("emissionsGrams"),
        "baselineEmissionsGrams": account.get("baselineEmissionsGrams"),
        "avoidedEmissionsGrams": account.get("avoidedEmissionsGrams"),
        "estimate": account.get("estimate"),
        "suspensions": account.get("suspensions"),
    }


async def estimate(
    state: OperatorState,
    p: Pass,
    account: dict[str, Any],
    acc: Accounting,
    gpus: int,
    submitted: datetime,
    cluster: Cluster,
) -> None:
    """Run time x GPUs x watts, priced on the zone's measured intensity as it accrues (as for a CarbonAwareJob
    without DCGM metrics)."""
    est = estimate_from_wire(account.get("estimate"))
    run_seconds = acc.total_seconds(p.now)
    if run_seconds > est.run_seconds:
        begin = min(submitted, p.now - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
        actual = await state.forecasts.history(cluster.zone, begin, p.now + timedelta(hours=1), p.now)
        pricing = Pricing(cluster.pue, actual, submitted, wall_to_utc)
        est = extend_estimate(est, run_seconds, p.now, gpus, DEFAULT_WATTS_PER_GPU, pricing)
    account["estimate"] = estimate_to_wire(est)
    account["energyKWh"] = round(est.kwh, 6)
    if est.kwh > est.unpriced_kwh:
        account["emissionsGrams"] = round(est.emissions_grams, 3)
        account["baselineEmissionsGrams"] = round(est.baseline_grams, 3)
        account["avoidedEmissionsGrams"] = round(est.avoided_grams, 3)


def receipt_posted(body: kopf.Body) -> bool:
    text = ((body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_STATE) or "{}"
    return bool(json.loads(text).get("receiptPosted"))


def _key(namespace: str, name: str) -> tuple[str, str]:
    return (f"workload:{namespace}", name)  # apart from the CarbonAwareJobs' wake events


@kopf.daemon(KUEUE_GROUP, KUEUE_VERSION, WORKLOADS, cancellation_timeout=10.0)
async def run_workload(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    stopped: kopf.DaemonStopped,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    state = current()
    wake = state.wake_event(*_key(namespace or "", name))
    failures = 0
    while not stopped:
        wake.clear()
        try:
            async with state.reconciling:
                nxt = await reconcile_workload(state, dict(body))
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # report, back off, retry: one workload's failure never stops its daemon
            if namespace_terminating(exc):
                await asyncio.sleep(30)
                continue
            failures += 1
            logger.warning("carbon-window check failed (%s: %s); retry %d", type(exc).__name__, exc, failures)
            await asyncio.sleep(min(2**failures, 30))
            continue
        if nxt is None and receipt_posted(body):
            return  # finished and accounted; a restarted operator checks once and ends too
        wait = (
            state.settings.tick if nxt is None else min(state.settings.tick, max(nxt - state.clock.now(), timedelta(0)))
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=max(state.clock.wall_seconds(wait), 0.05))


def fingerprint(body: dict[str, Any]) -> str:
    """What Kueue decided about a Workload (conditions, checks' states): our own annotation writes leave it as is."""
    status = body.get("status") or {}
    conditions = sorted((c.get("type"), c.get("status")) for c in status.get("conditions") or [])
    checks = sorted((c.get("name"), c.get("state")) for c in status.get("admissionChecks") or [])
    return json.dumps([conditions, checks])


@kopf.on.event(KUEUE_GROUP, KUEUE_VERSION, WORKLOADS)
async def workload_changed(body: kopf.Body, name: str, namespace: str | None, type: str | None, **_: Any) -> None:
    key = _key(namespace or "", name)
    if type == "DELETED":
        CHECKS.seen.pop(key, None)
        current().wake.pop(key, None)
        return
    mark = fingerprint(dict(body))
    if CHECKS.seen.get(key) != mark:
        CHECKS.seen[key] = mark
        current().poke(*key)


@kopf.on.event("batch", "v1", "jobs", labels={QUEUE_LABEL: kopf.PRESENT})
async def kueue_job_changed(body: kopf.Body, **_: Any) -> None:
    """A Kueue Job's pods started or stopped: its Workload's run-time account moves."""
    key = CHECKS.workload_of_job.get(str(body.get("metadata", {}).get("uid")))
    if key is not None:
        current().poke(*key)
