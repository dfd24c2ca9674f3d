"""Checks of a CarbonAwareJob that need the API server, with the pure rules of domain/validation.py.

- the author may create the workload's kind in the namespace (a SubjectAccessReview on the admission request's
  user: the operator creates it with its own rights, so it must never create what its author could not), or, for a
  `spec.workloadRef`, may patch that object (the operator suspends and resumes it), which must exist;
- the workload built from the template passes its kind's adapter (`Kind.build`: InvalidWorkload) and the API
  server's own validation and admission (a server-side dry-run create), so the user reads the API server's words;
- a ComputeCluster admits the namespace (`spec.namespaceSelector`), for every cluster the job names, or for at
  least one when it names none;
- the rules CEL cannot express (domain/validation.py).

The admission webhook (handlers/admission.py) refuses a manifest at `kubectl apply` with these messages. The
operator makes the same checks on its first pass over a job (`first_pass`), so that with the webhook off (or a job
admitted while the operator was down) a bad job gets one `InvalidSpec` condition and one Warning Event, and waits
for its spec to change: no Job, no retry loop, no traceback. Only the author check needs the webhook: the operator
does not know who created an object it reads.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from carbonshift.adapters.workloads import KindNotInstalled, Owner, WorkloadError, kind_for
from carbonshift.api.carbonawarejob import CarbonAwareJob
from carbonshift.api.computecluster import ComputeCluster
from carbonshift.api.conditions import Condition, ConditionType, Reason
from carbonshift.api.durations import parse_duration
from carbonshift.api.jobs import build_job, parse_time
from carbonshift.domain.lifecycle import Phase
from carbonshift.domain.validation import ClusterFacts, JobFacts, gpu_problems, job_problems, placement_problems
from carbonshift.handlers import translate
from carbonshift.handlers.jobstatus import JobStatus
from carbonshift.handlers.state import ClusterEntry, OperatorState

REASON_INVALID = Reason.INVALID_SPEC
REASON_JOB_REJECTED = Reason.JOB_REJECTED
REASON_NOT_ADMITTED = Reason.NAMESPACE_NOT_ADMITTED
REASON_VALID = Reason.SPEC_VALID
WAIT_FOR_SPEC_CHANGE = timedelta(days=365)  # an invalid job's next pass: when its spec changes (the daemon is poked)
LABELS_TTL_SECONDS = 30.0
PLACEHOLDER_UID = "00000000-0000-0000-0000-000000000000"  # a new object's uid may not be assigned at admission

CLUSTERS_TTL_SECONDS = 2.0

_labels_cache: dict[str, tuple[float, dict[str, str]]] = {}
_clusters_cache: tuple[float, list[dict[str, Any]]] | None = None


def facts(caj: CarbonAwareJob) -> JobFacts:
    spec = caj.spec
    overhead, grace, min_run = translate.checkpoint_settings(spec)
    return JobFacts(
        name=str(caj.metadata.name or ""),
        duration=parse_duration(spec.duration),
        deadline=spec.deadline,
        max_delay=parse_duration(spec.max_delay) if spec.max_delay else None,
        interruptible=spec.interruptible,
        overhead=overhead,
        grace_period=grace,
        min_run=min_run,
        clusters=tuple(spec.placement.clusters) if spec.placement else (),
        template=spec.template.model_dump() if spec.template is not None and spec.template.is_job else {},
    )


def api_message(exc: ApiException) -> str:
    """The API server's own message of a refusal."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or exc.reason or f"HTTP {exc.status}")


async def dry_run_problem(state: OperatorState, body: dict[str, Any], *, may_exist: bool) -> str | None:
    """The API server's refusal of the workload built from the template (a dry-run create), or None. `may_exist`:
    the workload may have been created already (an update of a placed job), and then nothing new would be created.
    A kind the cluster does not serve is not the spec's fault: the operator reports it (KindNotInstalled)."""
    meta = body.get("metadata") or {}
    caj = {**body, "metadata": {**meta, "uid": meta.get("uid") or PLACEHOLDER_UID}}
    template = (body.get("spec") or {}).get("template")
    if template is None:
        return None
    try:
        kind = kind_for(str(template.get("apiVersion", "batch/v1")), str(template.get("kind", "Job")))
        if kind.info.kind == "TrainJob":
            return None  # its GPUs may come from a runtime read at creation; the server validates it then
        manifest = kind.build(template, Owner.of(caj, local=False))
        refused = None
    except WorkloadError as exc:
        if not kind.info.builtin:
            return str(exc)
        # A Job the adapter refuses (a negative parallelism): the user reads the API server's own words first.
        manifest, refused = build_job(caj, local=False), str(exc)
    client = state.workloads_for(None)
    try:
        if may_exist and await client.get(kind.info, meta.get("namespace") or "", str(meta.get("name"))) is not None:
            return None
        await client.dry_run_create(manifest)
    except KindNotInstalled:
        return None
    except ApiException as exc:
        if exc.status in (400, 403, 422):
            return f"the {kind.info.kind} it would create is refused by the API server: {api_message(exc)}"
        raise
    return refused


async def author_problem(state: OperatorState, body: dict[str, Any], user: dict[str, Any]) -> str | None:
    """Nobody gets more than they had: a template of kind K needs the author's right to create K in the namespace
    (carbonshift creates it with its own rights); a workloadRef needs the right to patch that object (carbonshift
    suspends and resumes it), and the object must exist."""
    namespace = str((body.get("metadata") or {}).get("namespace") or "")
    spec = body.get("spec") or {}
    ref = spec.get("workloadRef")
    source = ref if ref is not None else (spec.get("template") or {})
    try:
        kind = kind_for(str(source.get("apiVersion", "batch/v1")), str(source.get("kind", "Job")))
    except WorkloadError as exc:
        return str(exc)
    info = kind.info
    verb, name = ("patch", str(ref.get("name") or "")) if ref is not None else ("create", None)
    allowed, reason = await state.local.may(user, verb, info.group, info.plural, namespace, name=name)
    who = user.get("username") or "the requesting user"
    because = f" ({reason})" if reason else ""
    if not allowed and ref is not None:
        return (
            f"{who} may not patch {info.kind} {name} in namespace {namespace}{because}, and carbonshift would suspend "
            f"and resume it with the operator's rights: ask for the permission to patch {info.plural}.{info.group} "
            "there"
        )
    if not allowed:
        what = "Jobs" if info.kind == "Job" else f"{info.kind}s"
        return (
            f"{who} may not create {what} in namespace {namespace}{because}, and a CarbonAwareJob creates its "
            f"{info.kind} with the operator's rights: ask for the permission to create {info.api_version} {what} there"
        )
    if ref is not None:
        try:
            found = await state.workloads_for(None).get(info, namespace, name or "")
        except KindNotInstalled as exc:
            return str(exc)
        if found is None:
            return f"{info.kind} {name} does not exist in namespace {namespace}: create it (suspended) first"
    return None


async def namespace_labels(state: OperatorState, namespace: str, *, cached: bool = True) -> dict[str, str]:
    """A namespace's labels (for tenancy); `cached`: up to LABELS_TTL_SECONDS old will do."""
    known = _labels_cache.get(namespace)
    if cached and known is not None and time.monotonic() - known[0] < LABELS_TTL_SECONDS:
        return known[1]
    labels = await state.local.namespace_labels(namespace)
    _labels_cache[namespace] = (time.monotonic(), labels)
    return labels


async def compute_clusters(state: OperatorState, *, cached: bool) -> list[dict[str, Any]]:
    """The ComputeClusters as the API server has them. `cached`: a listing up to a few seconds old will do (a first
    pass over many jobs lists them once, not once per job); admission always lists afresh."""
    global _clusters_cache
    stale = _clusters_cache is None or time.monotonic() - _clusters_cache[0] > CLUSTERS_TTL_SECONDS
    if not cached or stale or _clusters_cache is None:
        _clusters_cache = (time.monotonic(), await state.local.list_compute_clusters())
    return _clusters_cache[1]


async def tenancy_problems(state: OperatorState, namespace: str, requested: list[str], *, cached: bool) -> list[str]:
    labels = await namespace_labels(state, namespace, cached=cached)
    clusters = []
    for item in await compute_clusters(state, cached=cached):
        try:
            cc = ComputeCluster.model_validate(item)
        except ValidationError:
            continue  # one the webhook would have refused; not a place for work either way
        clusters.append(ClusterFacts(str(cc.metadata.name), cc.spec.admits(labels)))
    return placement_problems(namespace, requested, clusters)


async def caj_problems(
    state: OperatorState, body: dict[str, Any], *, user: dict[str, Any] | None, created: datetime | None
) -> list[tuple[str, str]]:
    """(reason, message) of every check the job fails; empty when it is valid. `user`: the admission request's
    userInfo (None: no author check). `created`: when the job was created, in planning time (None: no time rules,
    for an update that leaves the times alone)."""
    try:
        caj = CarbonAwareJob.model_validate(body)
    except ValidationError as exc:
        return [(REASON_INVALID, str(exc).splitlines()[0])]
    namespace = str(caj.metadata.namespace or "")
    if user is not None:
        problem = await author_problem(state, body, user)
        if problem:
            return [(REASON_INVALID, problem)]  # nothing else matters to someone who may not run it
    problems: list[tuple[str, str]] = []
    rejected = await dry_run_problem(state, body, may_exist=user is not None)
    if rejected:
        problems.append((REASON_JOB_REJECTED, rejected))
    job = facts(caj)
    problems += [(REASON_INVALID, r) for r in job_problems(job, created)]
    if not rejected:  # the dry-run already says so, in the API server's words
        problems += [(REASON_INVALID, r) for r in gpu_problems(job.template)]
    requested = list(caj.spec.placement.clusters) if caj.spec.placement else []
    tenancy = await tenancy_problems(state, namespace, requested, cached=user is None)
    problems += [(REASON_NOT_ADMITTED, p) for p in tenancy]
    return problems


class TickLike(Protocol):
    """What `first_pass` uses of handlers/carbonawarejob.Tick."""

    body: dict[str, Any]
    meta: dict[str, Any]
    st: JobStatus
    conditions: list[Condition]
    generation: int

    def condition(self, type_: str, status: bool, reason: str, message: str, *, event: str | None = None) -> None: ...

    async def flush(self) -> None: ...


async def first_pass(state: OperatorState, tick: TickLike) -> bool:
    """The webhook's checks (less the author's rights), once per generation of a job not yet placed; the outcome is
    the InvalidSpec condition (False: SpecValid). Returns True when the job is invalid: reported once (the condition,
    a Warning Event, phase Pending), and the caller stops until the spec changes."""
    if tick.st.cluster or tick.st.job_name:
        return False  # placed: checked before its Job was created
    flagged = next((c for c in tick.conditions if c.type == ConditionType.INVALID_SPEC), None)
    if flagged is not None and flagged.observed_generation == tick.generation:
        return flagged.status == "True"  # checked for this generation already (invalid: waiting for a change)
    created_wall = parse_time(tick.meta.get("creationTimestamp"))
    created = state.clock.from_wall(created_wall) if created_wall else state.clock.now()
    problems = await caj_problems(state, tick.body, user=None, created=created)
    if problems:
        reason = str(problems[0][0])
        tick.condition(ConditionType.INVALID_SPEC, True, reason, "; ".join(m for _, m in problems), event="Warning")
        tick.st.phase = Phase.PENDING
        await tick.flush()
        return True
    # Recorded with the generation, so a job waiting for capacity is not checked again on every pass.
    tick.condition(ConditionType.INVALID_SPEC, False, REASON_VALID, "the spec passed every check")
    return False


async def admitted(
    state: OperatorState, namespace: str, entries: list[ClusterEntry], placed: str | None
) -> list[ClusterEntry]:
    """The clusters a job of `namespace` may be placed in (a placed job keeps its cluster)."""
    if placed:
        return entries
    labels = await namespace_labels(state, namespace)
    return [e for e in entries if e.admits(labels)]
