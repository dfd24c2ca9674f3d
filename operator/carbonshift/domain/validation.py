"""The rules of a CarbonAwareJob that CEL in the CRD cannot express: pure functions, one message per broken rule.

The admission webhook (handlers/admission.py) refuses a manifest that breaks any of them at `kubectl apply`; without
the webhook the operator checks the same on its first pass and reports `InvalidSpec` (handlers/validation.py).
What they need is passed in (`now`, the template as a plain dict), so they are tested without a cluster.

CEL cannot compare two durations given as strings with our units in every case, knows no "now" (a deadline already
past), cannot look for duplicates in a list of strings cheaply, and cannot parse a Kubernetes quantity; the API
server's own validation of the Job (a server-side dry-run) covers the rest of the template.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
JOB_NAME_MAX = 63  # a Job's name becomes its pods' `job-name` label value, which may have at most 63 characters
_WHOLE_NUMBER = re.compile(r"^[0-9]+$")


@dataclass(frozen=True)
class JobFacts:
    """What the rules read of one CarbonAwareJob (durations parsed, the template as sent)."""

    name: str
    duration: timedelta
    deadline: datetime | None = None  # spec.deadline
    max_delay: timedelta | None = None  # spec.maxDelay
    interruptible: bool = False
    overhead: timedelta = timedelta(0)  # per suspend/resume cycle; zero for a job that is never interrupted
    grace_period: timedelta = timedelta(0)
    min_run: timedelta = timedelta(0)
    clusters: Sequence[str] = ()
    template: dict[str, Any] = field(default_factory=dict)


def job_problems(job: JobFacts, created: datetime | None) -> list[str]:
    """Every rule the job breaks, as it was (or is being) created at `created` (None: leave out the rules about
    the deadline, for an update that does not change the times). Empty: valid."""
    problems: list[str] = []
    if len(job.name) > JOB_NAME_MAX:
        problems.append(
            f"metadata.name is {len(job.name)} characters; the Job created from it may have at most {JOB_NAME_MAX}"
        )
    if job.interruptible:
        if job.min_run > job.duration:
            problems.append(
                f"spec.checkpoint.minRunDuration ({_text(job.min_run)}) is longer than spec.duration "
                f"({_text(job.duration)}): no run chunk would ever be long enough to resume for"
            )
        if job.overhead >= job.duration:
            problems.append(
                f"spec.checkpoint.overhead ({_text(job.overhead)}) is not shorter than spec.duration "
                f"({_text(job.duration)}): every suspension would cost more than the whole run"
            )
        if job.overhead >= job.min_run > timedelta(0):
            problems.append(
                f"spec.checkpoint.overhead ({_text(job.overhead)}) is not shorter than "
                f"spec.checkpoint.minRunDuration ({_text(job.min_run)}): a minimal run chunk would do no work"
            )
    if job.deadline is not None and created is not None:
        if job.deadline <= created:
            problems.append(f"spec.deadline {_iso(job.deadline)} is already past (now {_iso(created)})")
        elif job.deadline - created < job.duration:
            problems.append(
                f"spec.duration ({_text(job.duration)}) does not fit before spec.deadline {_iso(job.deadline)} "
                f"({_text(job.deadline - created)} from now)"
            )
    if job.max_delay is not None and job.max_delay < job.duration:
        problems.append(
            f"spec.maxDelay ({_text(job.max_delay)}) is shorter than spec.duration ({_text(job.duration)}): "
            "the job could never finish in time"
        )
    duplicates = sorted({c for c in job.clusters if list(job.clusters).count(c) > 1})
    if duplicates:
        problems.append(f"spec.placement.clusters names {', '.join(duplicates)} more than once")
    problems += gpu_problems(job.template)
    return problems


def gpu_problems(template: dict[str, Any]) -> list[str]:
    """GPU counts must be whole numbers: the planner and the scheduler count whole devices."""
    problems = []
    pod_spec = ((template.get("spec") or {}).get("template") or {}).get("spec") or {}
    for key in ("initContainers", "containers"):
        for i, container in enumerate(pod_spec.get(key) or []):
            if not isinstance(container, dict):
                continue
            resources = container.get("resources") or {}
            for kind in ("limits", "requests"):
                value = (resources.get(kind) or {}).get(GPU_RESOURCE) if isinstance(resources, dict) else None
                if value is not None and not _WHOLE_NUMBER.match(str(value)):
                    where = f"spec.template.spec.template.spec.{key}[{i}].resources.{kind}[{GPU_RESOURCE}]"
                    problems.append(f"{where}: {value!r} is not a whole number of GPUs")
    return problems


@dataclass(frozen=True)
class ClusterFacts:
    """A ComputeCluster as tenancy sees it."""

    name: str
    admits_namespace: bool  # by its spec.namespaceSelector (absent: local all, remote none)


def placement_problems(namespace: str, requested: Sequence[str], clusters: Sequence[ClusterFacts]) -> list[str]:
    """A job may name only clusters that admit its namespace; with none named, at least one must admit it.

    No ComputeCluster at all means the local cluster, which admits every namespace."""
    if not clusters:
        return []
    by_name = {c.name: c for c in clusters}
    if requested:
        refused = [n for n in dict.fromkeys(requested) if n in by_name and not by_name[n].admits_namespace]
        if refused:
            return [
                f"ComputeCluster {', '.join(refused)} does not admit namespace {namespace} (its "
                "spec.namespaceSelector, set by the cluster's administrator, does not select it)"
            ]
        return []
    if not any(c.admits_namespace for c in clusters):
        return [
            f"no ComputeCluster admits namespace {namespace}: ask an administrator to select it in a cluster's "
            "spec.namespaceSelector"
        ]
    return []


def selector_problems(selector: dict[str, Any] | None, where: str) -> list[str]:
    """A label selector's requirements must be consistent (the API server checks this for its own selectors)."""
    problems = []
    for i, req in enumerate((selector or {}).get("matchExpressions") or []):
        operator, values = req.get("operator"), req.get("values") or []
        if operator in ("In", "NotIn") and not values:
            problems.append(f"{where}.matchExpressions[{i}]: operator {operator} needs at least one value")
        if operator in ("Exists", "DoesNotExist") and values:
            problems.append(f"{where}.matchExpressions[{i}]: operator {operator} takes no values")
    return problems


def cluster_problems(spec: dict[str, Any], operator_namespace: str | None) -> list[str]:
    """A ComputeCluster's kubeconfig must be where the operator may read it; its selector must be consistent."""
    problems = selector_problems(spec.get("namespaceSelector"), "spec.namespaceSelector")
    ref = spec.get("kubeconfigSecretRef") or {}
    if ref and operator_namespace and ref.get("namespace") != operator_namespace:
        problems.append(
            f"spec.kubeconfigSecretRef.namespace must be {operator_namespace}: the operator reads Secrets only in "
            "its own namespace"
        )
    return problems


def budget_problems(spec: dict[str, Any]) -> list[str]:
    return selector_problems(spec.get("selector"), "spec.selector")


def _iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _text(delta: timedelta) -> str:
    total = round(delta.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours}h" * bool(hours) + f"{minutes}m" * bool(minutes) + f"{seconds}s" * bool(seconds)
    return text or "0s"
