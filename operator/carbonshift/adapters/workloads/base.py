"""The interface every suspendable workload kind implements, after Kueue's jobframework `GenericJob`.

A `Workload` wraps one object of its kind as plain JSON (the API server's spelling) and answers, without I/O:
- `build(template, owner)`: the object carbonshift creates for a CarbonAwareJob, always suspended, labelled;
- `observe()`: a kind-neutral `WorkloadObservation` (suspended; pods expected, active, ready; complete; failed);
- `suspend_patch()`, `resume_patch()`, `announce_patch(when)`: JSON merge-patch bodies the kube adapter sends;
- `gpu_demand()`: the GPUs it holds at once, per role (parallelism x per-pod GPUs, replicas, worker groups);
- `pod_selector()`: the labels its kind's controller puts on its pods (capacity and energy attribution).
Kueue's names, for orientation: IsSuspended -> `suspended`, Suspend -> `suspend_patch`, RunWithPodSetsInfo ->
`resume_patch`, Finished/IsActive/PodsReady -> `observe`, PodSets -> `pod_sets`, GVK -> `info`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from carbonshift.api.base import API_VERSION
from carbonshift.api.jobs import (
    ANNOTATION_OWNER,
    ANNOTATION_SUSPEND_AT,
    GPU_RESOURCE,
    job_labels,
    parse_time,
    source_labels,
)
from carbonshift.domain.workload import GpuDemand, RoleGpus, WorkloadObservation


@dataclass(frozen=True)
class KindInfo:
    """Where the API server serves a kind, and what installs it."""

    group: str
    version: str
    kind: str
    plural: str
    product: str  # what a user installs to get this kind, e.g. "Kubeflow Trainer v2"
    install: str  # one line: how to install it

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def builtin(self) -> bool:
        """Served by every API server (no CRD)."""
        return self.group == "batch"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"


@dataclass(frozen=True)
class Owner:
    """The CarbonAwareJob a built workload belongs to. `local`: in the same cluster (so it can own the workload)."""

    name: str
    namespace: str
    uid: str
    local: bool = True

    @classmethod
    def of(cls, caj: dict[str, Any], *, local: bool) -> Owner:
        meta = caj["metadata"]
        return cls(str(meta["name"]), str(meta["namespace"]), str(meta["uid"]), local)


@dataclass(frozen=True)
class PodSet:
    """Pods of one role: how many run at once, and their pod template (a live reference into the object)."""

    role: str
    pods: int
    template: dict[str, Any]


class WorkloadError(Exception):
    """A workload carbonshift cannot drive; `reason` is the CamelCase reason a handler puts on its condition."""

    reason: ClassVar[str] = "InvalidWorkload"


class InvalidWorkload(WorkloadError):  # noqa: N818 - the reason users see
    """The object cannot be driven as it is (for example a RayJob KubeRay would refuse to suspend)."""

    reason = "InvalidWorkload"


class UnsupportedKind(WorkloadError):  # noqa: N818
    """carbonshift has no adapter for this apiVersion and kind."""

    reason = "UnsupportedKind"


class KindNotInstalled(WorkloadError):  # noqa: N818
    """The cluster does not serve the kind (its CRD is not installed); the message names the CRD and its installer."""

    reason = "KindNotInstalled"

    def __init__(self, info: KindInfo, cluster: str) -> None:
        self.info = info
        self.cluster = cluster
        super().__init__(
            f"{info.kind} ({info.api_version}) is not served by cluster {cluster}: the CustomResourceDefinition "
            f"{info.crd_name} is not installed; install {info.product} ({info.install})"
        )


class Workload(ABC):
    """One object of a suspendable kind, as plain JSON. Subclasses set `info` and the kind's rules."""

    info: ClassVar[KindInfo]
    suspend_path: ClassVar[tuple[str, ...]] = ("spec", "suspend")

    def __init__(self, obj: dict[str, Any], runtime: dict[str, Any] | None = None) -> None:
        self.obj = obj
        self.runtime = runtime  # TrainJob only: its (Cluster)TrainingRuntime, where its pods come from
        # Set by the client on the object a write returns: this version is our write alone (a create, or a patch
        # that changed the object we held and found nobody else's change beside it), so its watch event tells the
        # writer nothing new. False for a patch that changed nothing (the server answers with the object as it is,
        # at a version that may be someone else's change) and for an existing object a create found.
        self.own_write = False

    # -- identity ----------------------------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.obj.get("metadata") or {})

    @property
    def name(self) -> str:
        return str(self.meta.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.meta.get("namespace", ""))

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.obj.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def status(self) -> dict[str, Any]:
        status = self.obj.get("status")
        return status if isinstance(status, dict) else {}

    # -- suspension --------------------------------------------------------------------------------------------
    @property
    def suspended(self) -> bool:
        node: Any = self.obj
        for key in self.suspend_path:
            node = node.get(key) if isinstance(node, dict) else None
        return bool(node)

    def _suspend_body(self, suspend: bool) -> dict[str, Any]:
        body: dict[str, Any] = {}
        node = body
        for key in self.suspend_path[:-1]:
            node = node.setdefault(key, {})
        node[self.suspend_path[-1]] = suspend
        return body

    def suspend_patch(self) -> dict[str, Any]:
        """The JSON merge patch that suspends this workload."""
        return self._suspend_body(True)

    def resume_patch(self) -> dict[str, Any]:
        """The JSON merge patch that resumes it."""
        return self._suspend_body(False)

    @staticmethod
    def announce_patch(when: str | None) -> dict[str, Any]:
        """The merge patch announcing a planned suspension (an RFC 3339 time; None withdraws it), for the workload
        and for each of its pods."""
        return {"metadata": {"annotations": {ANNOTATION_SUSPEND_AT: when}}}

    # -- reading -----------------------------------------------------------------------------------------------
    @abstractmethod
    def pod_sets(self) -> list[PodSet]:
        """Its roles, each with the pods it runs at once and their pod template."""

    @abstractmethod
    def pod_selector(self) -> dict[str, str] | None:
        """Labels its kind's controller sets on all its pods (None: it has no pods yet to select)."""

    @abstractmethod
    def observe(self) -> WorkloadObservation:
        """The workload as the API server shows it."""

    def problems(self) -> list[str]:
        """Why carbonshift could not drive it as it is (empty when it can)."""
        return []

    def gpu_demand(self) -> GpuDemand:
        sets = self.pod_sets()
        return GpuDemand(tuple(RoleGpus(s.role, s.pods, pod_gpus(s.template.get("spec") or {})) for s in sets))

    def suspend_at(self) -> datetime | None:
        return parse_time((self.meta.get("annotations") or {}).get(ANNOTATION_SUSPEND_AT))

    def _observation(self, **fields: Any) -> WorkloadObservation:
        return WorkloadObservation(
            kind=self.info.kind,
            exists=True,
            suspended=self.suspended,
            desired_pods=sum(s.pods for s in self.pod_sets()),
            suspend_at_annotation=self.suspend_at(),
            **fields,
        )

    # -- building ----------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, template: dict[str, Any], owner: Owner, *, runtime: dict[str, Any] | None = None) -> dict[str, Any]:
        """The object for `owner`: the template's spec, always created suspended, labelled for attribution on the
        object and on every pod template, annotated with its owner, and owned by it when in the same cluster.
        `runtime`: a TrainJob's (Cluster)TrainingRuntime, when the TrainJob leaves its GPUs to it."""
        template = copy.deepcopy(template)
        api_version = template.get("apiVersion", cls.info.api_version)
        kind = template.get("kind", cls.info.kind)
        if (api_version, kind) != (cls.info.api_version, cls.info.kind):
            raise UnsupportedKind(f"a {cls.info.kind} template cannot be {api_version} {kind}")
        meta = template.get("metadata") or {}
        labels = {**(meta.get("labels") or {}), **job_labels(owner.name, owner.uid)}
        annotations = {**(meta.get("annotations") or {}), ANNOTATION_OWNER: f"{owner.namespace}/{owner.name}"}
        spec = template.get("spec")
        if not isinstance(spec, dict):
            raise InvalidWorkload(f"the {kind} template has no spec")
        manifest: dict[str, Any] = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {
                "name": owner.name,
                "namespace": owner.namespace,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": spec,
        }
        workload = cls(manifest, runtime)
        node = spec
        for key in cls.suspend_path[1:-1]:
            node = node.setdefault(key, {})
        node[cls.suspend_path[-1]] = True
        for pod_set in workload.pod_sets():
            pod_meta = pod_set.template.setdefault("metadata", {})
            pod_meta["labels"] = {
                **(pod_meta.get("labels") or {}),
                **job_labels(owner.name, owner.uid),
                **source_labels(owner.namespace),
            }
            quantities_as_strings(pod_set.template.get("spec") or {})
        workload.prepare(owner)
        if owner.local:
            manifest["metadata"]["ownerReferences"] = [
                {
                    "apiVersion": API_VERSION,
                    "kind": "CarbonAwareJob",
                    "name": owner.name,
                    "uid": owner.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        problems = workload.problems()
        if problems:
            raise InvalidWorkload(f"{kind} {owner.namespace}/{owner.name}: " + "; ".join(problems))
        return manifest

    def prepare(self, owner: Owner) -> None:  # noqa: B027 - most kinds add nothing
        """Kind-specific additions to a built object (default: none)."""


# Set by the API server on every write, whoever made it: not a change anybody asked for.
_SERVER_WRITTEN = ("resourceVersion", "generation", "managedFields")


def merge_patch(target: Any, patch: Any) -> Any:
    """`target` with a JSON merge patch (RFC 7386) applied, as the API server applies one; `target` is not changed."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _comparable(node: Any, *, top: bool = True) -> Any:
    """The object as compared for `patched_alone`: without what the server sets on every write, and without empty
    maps (the server drops an annotations map whose last key a patch removed)."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if top and key == "metadata" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in _SERVER_WRITTEN}
        value = _comparable(value, top=False)
        if value != {}:
            out[key] = value
    return out


def patched_alone(before: dict[str, Any], patch: dict[str, Any], after: dict[str, Any]) -> bool:
    """Whether `after`, what the API server answered to a merge patch of `before`, is `before` changed by that
    patch and by nothing else. False when the patch changed nothing: the server then answers with the object as it
    is, whose version may be someone else's change made since `before` was read."""
    expected = _comparable(merge_patch(before, patch))
    return bool(expected != _comparable(before) and _comparable(after) == expected)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The status condition of this type when its status is True."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == type_ and cond.get("status") == "True":
            return cond
    return None


def count(value: Any, default: int, what: str) -> int:
    """A replica count or parallelism from a spec (absent: its default)."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidWorkload(f"{what} must be a non-negative integer, not {value!r}")
    return value


def _container_gpus(container: dict[str, Any]) -> int:
    resources = container.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    value = limits.get(GPU_RESOURCE, requests.get(GPU_RESOURCE, 0))
    try:
        return int(str(value))
    except ValueError:
        raise InvalidWorkload(f"{GPU_RESOURCE} must be a whole number of GPUs, not {value!r}") from None


def pod_gpus(pod_spec: dict[str, Any]) -> int:
    """GPUs one pod holds, as the scheduler counts them: its containers and sidecars (init containers that keep
    running) together, or its largest one-off init container if that is more. Limits, else requests."""
    sidecars = one_off = 0
    for init in pod_spec.get("initContainers") or []:
        gpus = _container_gpus(init)
        if init.get("restartPolicy") == "Always":
            sidecars += gpus
        else:
            one_off = max(one_off, sidecars + gpus)
    running = sidecars + sum(_container_gpus(c) for c in pod_spec.get("containers") or [])
    return max(running, one_off)


def quantities_as_strings(pod_spec: dict[str, Any]) -> None:
    """`nvidia.com/gpu: 2` is a valid quantity in YAML; typed clients want the string form "2"."""
    for key in ("containers", "initContainers"):
        for container in pod_spec.get(key) or []:
            resources = container.get("resources") or {}
            for part in ("limits", "requests"):
                if isinstance(resources.get(part), dict):
                    resources[part] = {name: str(value) for name, value in resources[part].items()}


def job_pods(job_spec: dict[str, Any], what: str) -> int:
    """Pods a batch/v1 Job spec runs at once: its parallelism (default 1), at most its completions."""
    parallelism = count(job_spec.get("parallelism"), 1, f"{what}.parallelism")
    completions = job_spec.get("completions")
    return min(parallelism, count(completions, parallelism, f"{what}.completions"))


def failure(cond: dict[str, Any] | None) -> dict[str, Any]:
    if cond is None:
        return {"failed": False}
    return {"failed": True, "failure_reason": cond.get("reason"), "failure_message": cond.get("message")}


def selector_string(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
