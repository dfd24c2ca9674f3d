"""The batch/v1 Job a CarbonAwareJob owns: how it is built from the template, and how it is read back.

Pure functions over plain dicts (the shape the API server sends), so the handlers stay thin and the rules are tested
without a cluster.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from carbonshift.api.base import API_VERSION

LABEL_MANAGED = "carbonshift.io/managed"
LABEL_CAJ = "carbonshift.io/carbonawarejob"
LABEL_CAJ_UID = "carbonshift.io/carbonawarejob-uid"
LABEL_CAJ_NAMESPACE = "carbonshift.io/namespace"  # the CarbonAwareJob's namespace (a remote cluster's may differ)
ANNOTATION_OWNER = "carbonshift.io/owner"
ANNOTATION_SUSPEND_AT = "carbonshift.io/suspend-at"
GPU_RESOURCE = "nvidia.com/gpu"


def job_labels(name: str, uid: str) -> dict[str, str]:
    """Labels on the Job and its pods: how pods are attributed to their CarbonAwareJob (DCGM, accounting)."""
    return {LABEL_MANAGED: "true", LABEL_CAJ: name, LABEL_CAJ_UID: uid}


def source_labels(namespace: str) -> dict[str, str]:
    """Where the CarbonAwareJob of a Job's pods lives: a remote cluster's target namespace may be another."""
    return {LABEL_CAJ_NAMESPACE: namespace}


def build_job(caj: dict[str, Any], *, local: bool) -> dict[str, Any]:
    """The Job for `caj`: its template, always created suspended, labelled, and owned (when in the same cluster)."""
    meta = caj["metadata"]
    template = copy.deepcopy(caj["spec"]["template"])
    job_meta = template.get("metadata") or {}
    labels = {**(job_meta.get("labels") or {}), **job_labels(meta["name"], meta["uid"])}
    annotations = {**(job_meta.get("annotations") or {}), ANNOTATION_OWNER: f"{meta['namespace']}/{meta['name']}"}
    spec = template["spec"]
    spec["suspend"] = True
    pod_template = spec["template"]
    pod_meta = pod_template.setdefault("metadata", {})
    pod_meta["labels"] = {
        **(pod_meta.get("labels") or {}),
        **job_labels(meta["name"], meta["uid"]),
        **source_labels(meta["namespace"]),
    }
    _quantities_as_strings(pod_template.get("spec") or {})
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
        },
        "spec": spec,
    }
    if local:
        job["metadata"]["ownerReferences"] = [
            {
                "apiVersion": API_VERSION,
                "kind": "CarbonAwareJob",
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return job


def _quantities_as_strings(pod_spec: dict[str, Any]) -> None:
    """`nvidia.com/gpu: 2` is a valid quantity in YAML; the API's typed clients want the string form "2"."""
    for key in ("containers", "initContainers"):
        for container in pod_spec.get(key) or []:
            resources = container.get("resources") or {}
            for kind in ("limits", "requests"):
                if isinstance(resources.get(kind), dict):
                    resources[kind] = {name: str(value) for name, value in resources[kind].items()}


def gpus_per_pod(template: dict[str, Any]) -> int:
    """GPUs one pod of the Job asks for (limits, else requests, summed over containers)."""
    pod_spec = ((template.get("spec") or {}).get("template") or {}).get("spec") or {}
    per_pod = 0
    for container in pod_spec.get("containers") or []:
        resources = container.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        per_pod += int(limits.get(GPU_RESOURCE) or requests.get(GPU_RESOURCE) or 0)
    return per_pod


def gpus_requested(template: dict[str, Any]) -> int:
    """GPUs the Job needs at once: per pod x parallelism (at least 1, for power estimates)."""
    parallelism = int((template.get("spec") or {}).get("parallelism") or 1)
    return max(gpus_per_pod(template), 1) * max(parallelism, 1)


def owned_by(job: dict[str, Any], uid: str) -> bool:
    """Whether `job` was created for the CarbonAwareJob with this uid (never adopt someone else's Job)."""
    return bool((job.get("metadata", {}).get("labels") or {}).get(LABEL_CAJ_UID) == uid)


def job_condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_ and cond.get("status") == "True":
            return dict(cond)
    return None


def parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
