"""Reading and changing workloads of any supported kind through one cluster's API (the `Kube` adapter's client,
retries and worker threads). Every change is a JSON merge patch a `Workload` produced.

A kind the cluster does not serve raises `KindNotInstalled` (checked through API discovery, which every
authenticated user may read), never a bare 404: a handler turns it into a condition and stops retrying.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException

from carbonshift.adapters.kube import Kube, KubeUnavailableError, already_exists
from carbonshift.adapters.workloads.base import KindInfo, KindNotInstalled, Workload, patched_alone, selector_string
from carbonshift.adapters.workloads.kinds import TrainJob
from carbonshift.adapters.workloads.registry import workload_for

MERGE_PATCH = "application/merge-patch+json"


class WorkloadClient:
    """Workloads on one cluster. Remembers which kinds the cluster serves once it has seen them."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._served: set[str] = set()

    async def served(self, info: KindInfo) -> bool:
        """Whether the API server serves this kind (discovery of its group and version)."""
        if info.builtin or info.crd_name in self._served:
            return True
        try:
            found = await self.kube._raw(
                f"discover {info.api_version}", self.kube.custom.get_api_resources, info.group, info.version
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        if any(r.get("name") == info.plural for r in found.get("resources") or []):
            self._served.add(info.crd_name)
            return True
        return False

    async def require(self, info: KindInfo) -> None:
        """Raise KindNotInstalled when the cluster does not serve this kind."""
        if not await self.served(info):
            raise KindNotInstalled(info, self.kube.name)

    async def _not_found(self, info: KindInfo, exc: ApiException) -> None:
        """A 404 is either a missing object (return) or a missing kind (KindNotInstalled); a CRD being deleted refuses
        creation with a 403 until it is gone: the kind is being uninstalled."""
        if exc.status == 403 and "custom resource definition is terminating" in str(exc.body or ""):
            self._served.discard(info.crd_name)
            raise KindNotInstalled(info, self.kube.name) from exc
        if exc.status != 404:
            raise exc
        self._served.discard(info.crd_name)  # the CRD may have been deleted since
        await self.require(info)

    async def get(self, info: KindInfo, namespace: str, name: str) -> Workload | None:
        namespace = self.kube.ns(namespace)
        try:
            obj = await self.kube._raw(
                f"read {info.kind}",
                self.kube.custom.get_namespaced_custom_object,
                info.group,
                info.version,
                namespace,
                info.plural,
                name,
            )
        except ApiException as exc:
            await self._not_found(info, exc)
            return None
        workload = workload_for(obj)
        if isinstance(workload, TrainJob) and not workload.status.get("jobsStatus"):
            workload.jobset_status = await self._jobset_status_of(workload)
        return workload

    async def _jobset_status_of(self, workload: TrainJob) -> dict[str, Any] | None:
        """The status of the JobSet a TrainJob controls (same name): where its pods' counts are when the trainer
        leaves `status.jobsStatus` empty (v2.0.0 does). None when there is none (yet)."""
        try:
            jobset = await self.kube._raw(
                "read JobSet",
                self.kube.custom.get_namespaced_custom_object,
                "jobset.x-k8s.io",
                "v1alpha2",
                workload.namespace,
                "jobsets",
                workload.name,
            )
        except ApiException as exc:
            if exc.status == 404:  # none yet (or JobSet not installed): nothing counted
                return None
            raise
        owners = (jobset.get("metadata") or {}).get("ownerReferences") or []
        if not any(o.get("controller") and o.get("uid") == workload.meta.get("uid") for o in owners):
            return None  # a JobSet of the same name that is not this TrainJob's
        status = jobset.get("status")
        return status if isinstance(status, dict) else None

    async def create(self, manifest: dict[str, Any]) -> Workload:
        """Create the workload; if it already exists (a restarted operator), return the existing one.

        Created first, read only when the API server says it exists (409 AlreadyExists, which the kube adapter
        raises at once): the caller has just read it as absent, and a read before every create cost one more
        request per job (1,000 at the operator benchmark)."""
        info = workload_for(manifest).info
        manifest["metadata"]["namespace"] = self.kube.ns(manifest["metadata"]["namespace"])
        namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
        try:
            obj = await self.kube._raw(
                f"create {info.kind}",
                self.kube.custom.create_namespaced_custom_object,
                info.group,
                info.version,
                namespace,
                info.plural,
                manifest,
            )
            created = workload_for(obj)
            created.own_write = True  # nobody else's change can precede its creation
            return created
        except ApiException as exc:
            if not already_exists(exc):
                await self._not_found(info, exc)
                raise
        except KubeUnavailableError as exc:  # the kube adapter retries conflicts, then gives up with this
            if not (isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 409):
                raise
        existing = await self.get(info, namespace, name)
        if existing is None:
            raise KubeUnavailableError(f"{info.kind} {namespace}/{name} reported as existing but not found")
        return existing

    async def dry_run_create(self, manifest: dict[str, Any]) -> None:
        """A server-side dry-run create: the API server's own validation of the object (ApiException 400/403/422
        when it refuses it; KindNotInstalled when it does not serve the kind)."""
        info = workload_for(manifest).info
        try:
            await self.kube._raw(
                f"dry-run create {info.kind}",
                self.kube.custom.create_namespaced_custom_object,
                info.group,
                info.version,
                self.kube.ns(manifest["metadata"]["namespace"]),
                info.plural,
                manifest,
                dry_run="All",
            )
        except ApiException as exc:
            if exc.status == 404 or (
                exc.status == 403 and "custom resource definition is terminating" in str(exc.body or "")
            ):
                await self._not_found(info, exc)
                return
            raise

    async def delete(self, info: KindInfo, namespace: str, name: str) -> None:
        """Delete the workload and, in the background, what it owns (a missing object is not an error)."""
        try:
            await self.kube._raw(
                f"delete {info.kind}",
                self.kube.custom.delete_namespaced_custom_object,
                info.group,
                info.version,
                self.kube.ns(namespace),
                info.plural,
                name,
                propagation_policy="Background",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def patch(self, workload: Workload, body: dict[str, Any]) -> Workload:
        """Apply a merge patch to the workload; returns the object the server stored (its `own_write`: whether
        that is `workload` changed by this patch alone)."""
        info = workload.info
        try:
            obj = await self.kube._raw(
                f"patch {info.kind}",
                self.kube.custom.patch_namespaced_custom_object,
                info.group,
                info.version,
                workload.namespace,
                info.plural,
                workload.name,
                body,
                _content_type=MERGE_PATCH,
            )
        except ApiException as exc:
            await self._not_found(info, exc)
            raise
        patched = workload_for(obj)
        patched.own_write = patched_alone(workload.obj, body, obj)
        return patched

    async def runtime_of(self, workload: TrainJob) -> dict[str, Any] | None:
        """A TrainJob's (Cluster)TrainingRuntime (None when it does not exist); pass it to `TrainJob.build` or
        `TrainJob(obj, runtime)` to count GPUs the TrainJob leaves to its runtime."""
        kind, name = workload.runtime_ref()
        group, version = TrainJob.info.group, TrainJob.info.version
        try:
            if kind == "TrainingRuntime":
                return await self.kube._raw(
                    "read TrainingRuntime",
                    self.kube.custom.get_namespaced_custom_object,
                    group,
                    version,
                    workload.namespace,
                    "trainingruntimes",
                    name,
                )
            return await self.kube._raw(
                "read ClusterTrainingRuntime",
                self.kube.custom.get_cluster_custom_object,
                group,
                version,
                "clustertrainingruntimes",
                name,
            )
        except ApiException as exc:
            await self._not_found(TrainJob.info, exc)
            return None

    async def suspend(self, workload: Workload) -> Workload:
        return await self.patch(workload, workload.suspend_patch())

    async def resume(self, workload: Workload) -> Workload:
        return await self.patch(workload, workload.resume_patch())

    async def announce(self, workload: Workload, when: str | None) -> Workload:
        """Annotate the workload and its pods with the planned suspension time (None withdraws it)."""
        body = workload.announce_patch(when)
        patched = await self.patch(workload, body)
        selector = patched.pod_selector()
        if not selector:
            return patched
        pods = await self.kube._raw(
            "list pods",
            self.kube.core.list_namespaced_pod,
            workload.namespace,
            label_selector=selector_string(selector),
        )
        namespace = workload.namespace
        for pod in pods.get("items") or []:
            name = (pod.get("metadata") or {}).get("name")
            if not name:
                continue
            try:
                await self.kube._call("annotate pod", self.kube.core.patch_namespaced_pod, name, namespace, body)
            except ApiException as exc:
                if exc.status != 404:  # a pod that just went away needs no warning
                    raise
        return patched
