"""The supported kinds: batch/v1 Job, JobSet, Kubeflow TrainJob (trainer v2), PyTorchJob (training-operator v1), and
KubeRay RayJob. Each kind's suspend semantics are written in docs/workloads.md; the rules here follow each project's
own controller at the versions pinned in hack/versions.env."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from carbonshift.adapters.workloads.base import (
    KindInfo,
    Owner,
    PodSet,
    Workload,
    condition,
    count,
    failure,
    job_pods,
    quantities_as_strings,
)
from carbonshift.api.jobs import job_labels, parse_time
from carbonshift.domain.workload import WorkloadObservation

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
JOB_UID_LABEL = "batch.kubernetes.io/controller-uid"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
TRAINING_JOB_NAME_LABEL = "training.kubeflow.org/job-name"
TRAINING_OPERATOR_LABEL = "training.kubeflow.org/operator-name"
RAY_CLUSTER_LABEL = "ray.io/cluster"


class BatchJob(Workload):
    """batch/v1 Job: `spec.suspend`. Suspending deletes its active pods; resuming creates them again (a Job's
    progress is its completed pods; a pod's own work is lost unless it checkpoints)."""

    info = KindInfo("batch", "v1", "Job", "jobs", "Kubernetes", "built in")

    def pod_sets(self) -> list[PodSet]:
        return [PodSet("job", job_pods(self.spec, "spec"), self.spec.get("template") or {})]

    def pod_selector(self) -> dict[str, str]:
        uid = self.meta.get("uid")
        return {JOB_UID_LABEL: str(uid)} if uid else {JOB_NAME_LABEL: self.name}

    def observe(self) -> WorkloadObservation:
        return self._observation(
            active_pods=int(self.status.get("active") or 0),
            ready_pods=int(self.status.get("ready") or 0),
            complete=condition(self.obj, "Complete") is not None,
            completed_at=parse_time(self.status.get("completionTime")),
            **failure(condition(self.obj, "Failed")),
        )


def _jobs_to_pods(statuses: list[dict[str, Any]], pods_per_job: dict[str, int]) -> tuple[int, int]:
    """(active pods, ready pods) from per-replicated-job counts of Jobs: a JobSet reports Jobs, not pods. A Job is
    "ready" there when all its pods are ready or done, so ready Jobs x pods per Job is what runs."""
    active = ready = 0
    for status in statuses:
        per_job = pods_per_job.get(str(status.get("name")), 1)
        active += int(status.get("active") or 0) * per_job
        ready += int(status.get("ready") or 0) * per_job
    return active, ready


class JobSet(Workload):
    """JobSet (jobset.x-k8s.io/v1alpha2): `spec.suspend`. Its controller creates its Jobs even when the JobSet is
    created suspended (the Jobs suspended); resuming unsuspends them, suspending suspends them (pods deleted)."""

    info = KindInfo(
        "jobset.x-k8s.io",
        "v1alpha2",
        "JobSet",
        "jobsets",
        "JobSet",
        "kubectl apply --server-side -f the JobSet release manifests.yaml",
    )

    def _replicated(self) -> list[dict[str, Any]]:
        return [r for r in self.spec.get("replicatedJobs") or [] if isinstance(r, dict)]

    def _pods_per_job(self) -> dict[str, int]:
        return {
            str(r.get("name")): job_pods(((r.get("template") or {}).get("spec") or {}), f"replicatedJobs[{i}]")
            for i, r in enumerate(self._replicated())
        }

    def pod_sets(self) -> list[PodSet]:
        sets = []
        for i, rj in enumerate(self._replicated()):
            job_spec = (rj.get("template") or {}).get("spec") or {}
            replicas = count(rj.get("replicas"), 1, f"replicatedJobs[{i}].replicas")
            per_job = job_pods(job_spec, f"replicatedJobs[{i}]")
            sets.append(PodSet(str(rj.get("name")), replicas * per_job, job_spec.get("template") or {}))
        return sets

    def pod_selector(self) -> dict[str, str]:
        return {JOBSET_NAME_LABEL: self.name}

    def observe(self) -> WorkloadObservation:
        active, ready = _jobs_to_pods(self.status.get("replicatedJobsStatus") or [], self._pods_per_job())
        return self._observation(
            active_pods=active,
            ready_pods=ready,
            complete=condition(self.obj, "Completed") is not None,
            **failure(condition(self.obj, "Failed")),
        )


TRAINER_STEP_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"


class TrainJob(Workload):
    """Kubeflow TrainJob (trainer.kubeflow.org/v1alpha1, trainer v2): `spec.suspend`, handed to the JobSet the
    trainer creates (same name), which suspends its Jobs. Its trainer nodes run `spec.trainer.numNodes` pods (else the
    runtime's `mlPolicy.numNodes`) with `spec.trainer.resourcesPerNode` (else the runtime's `node` container). Without
    the (Cluster)TrainingRuntime (`runtime`), both must be set on the TrainJob for carbonshift to count its GPUs."""

    info = KindInfo(
        "trainer.kubeflow.org",
        "v1alpha1",
        "TrainJob",
        "trainjobs",
        "Kubeflow Trainer v2",
        "kubectl apply --server-side -k the trainer's manifests/overlays/manager, which also installs JobSet",
    )
    jobset_status: dict[str, Any] | None = None  # the status of the JobSet it controls (WorkloadClient.get)

    def _trainer(self) -> dict[str, Any]:
        trainer = self.spec.get("trainer")
        return trainer if isinstance(trainer, dict) else {}

    def _runtime_spec(self) -> dict[str, Any]:
        spec = (self.runtime or {}).get("spec")
        return spec if isinstance(spec, dict) else {}

    def _runtime_node_pod(self) -> dict[str, Any] | None:
        """The pod template of the runtime's trainer step (the replicated Job labelled as the trainer, or `node`)."""
        replicated = ((self._runtime_spec().get("template") or {}).get("spec") or {}).get("replicatedJobs") or []
        for rj in replicated:
            labels = ((rj.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if labels.get(TRAINER_STEP_LABEL) == "trainer" or rj.get("name") == "node":
                pod = ((rj.get("template") or {}).get("spec") or {}).get("template")
                return pod if isinstance(pod, dict) else None
        return None

    def _nodes(self) -> int:
        runtime_nodes = (self._runtime_spec().get("mlPolicy") or {}).get("numNodes")
        return count(self._trainer().get("numNodes", runtime_nodes), 1, "spec.trainer.numNodes")

    def pod_sets(self) -> list[PodSet]:
        resources = self._trainer().get("resourcesPerNode")
        runtime_pod = self._runtime_node_pod()
        if resources is None and runtime_pod is not None:  # a copy: building must not label the runtime's pods
            return [PodSet("node", self._nodes(), copy.deepcopy(runtime_pod))]
        # The trainer node's pod, as far as the TrainJob states it: one container with `resourcesPerNode`.
        template = {"spec": {"containers": [{"name": "node", "resources": resources or {}}]}}
        return [PodSet("node", self._nodes(), template)]

    def problems(self) -> list[str]:
        if self.runtime is not None:
            if self._trainer().get("resourcesPerNode") is None and self._runtime_node_pod() is None:
                return ["its runtime has no trainer step (a replicated Job named node) to count GPUs from"]
            return []
        trainer = self._trainer()
        missing = [f"spec.trainer.{f}" for f in ("numNodes", "resourcesPerNode") if trainer.get(f) is None]
        if missing:
            return [
                f"set {' and '.join(missing)}, or let carbonshift read its runtime: without it, carbonshift counts "
                "a TrainJob's GPUs from the TrainJob itself"
            ]
        return []

    def runtime_ref(self) -> tuple[str, str]:
        """(kind, name) of the runtime it references (ClusterTrainingRuntime unless it says TrainingRuntime)."""
        ref = self.spec.get("runtimeRef") or {}
        return str(ref.get("kind") or "ClusterTrainingRuntime"), str(ref.get("name") or "")

    def prepare(self, owner: Owner) -> None:
        # The TrainJob's own labels reach its JobSet and Jobs (its pods carry the JobSet's name label).
        spec = self.obj["spec"]
        spec["labels"] = {**(spec.get("labels") or {}), **job_labels(owner.name, owner.uid)}
        resources = self._trainer().get("resourcesPerNode")
        if isinstance(resources, dict):
            quantities_as_strings({"containers": [{"resources": resources}]})

    def pod_selector(self) -> dict[str, str]:
        return {JOBSET_NAME_LABEL: self.name}

    def observe(self) -> WorkloadObservation:
        # Trainer v2.0.0 declares `status.jobsStatus` but never fills it: then its JobSet's counts (same replicated
        # Jobs), which WorkloadClient.get attaches as `jobset_status`.
        statuses = self.status.get("jobsStatus") or (self.jobset_status or {}).get("replicatedJobsStatus") or []
        active, ready = _jobs_to_pods(statuses, {"node": self._nodes()})
        return self._observation(
            active_pods=active,
            ready_pods=ready,
            complete=condition(self.obj, "Complete") is not None,
            **failure(condition(self.obj, "Failed")),
        )


class PyTorchJob(Workload):
    """Kubeflow PyTorchJob (kubeflow.org/v1, training-operator v1): `spec.runPolicy.suspend`. Suspending deletes its
    pods and services and resets its start time; resuming starts every replica again."""

    info = KindInfo(
        "kubeflow.org",
        "v1",
        "PyTorchJob",
        "pytorchjobs",
        "the Kubeflow training-operator v1",
        "kubectl apply --server-side -k the training-operator's manifests/overlays/standalone",
    )
    suspend_path: ClassVar[tuple[str, ...]] = ("spec", "runPolicy", "suspend")

    def _replica_specs(self) -> dict[str, dict[str, Any]]:
        specs = self.spec.get("pytorchReplicaSpecs") or {}
        return {str(k): v for k, v in specs.items() if isinstance(v, dict)}

    def pod_sets(self) -> list[PodSet]:
        elastic = self.spec.get("elasticPolicy") or {}
        sets = []
        for role, replica in self._replica_specs().items():
            replicas = count(replica.get("replicas"), 1, f"pytorchReplicaSpecs.{role}.replicas")
            if role == "Worker" and elastic.get("maxReplicas") is not None:  # elastic: it may grow to maxReplicas
                replicas = count(elastic.get("maxReplicas"), replicas, "elasticPolicy.maxReplicas")
            sets.append(PodSet(role, replicas, replica.get("template") or {}))
        return sets

    def pod_selector(self) -> dict[str, str]:
        return {TRAINING_JOB_NAME_LABEL: self.name, TRAINING_OPERATOR_LABEL: "pytorchjob-controller"}

    def observe(self) -> WorkloadObservation:
        replicas = self.status.get("replicaStatuses") or {}
        active = sum(int((s or {}).get("active") or 0) for s in replicas.values())
        # The training-operator counts no ready pods; its Running condition means every replica is running.
        ready = active if condition(self.obj, "Running") is not None else 0
        return self._observation(
            active_pods=active,
            ready_pods=ready,
            complete=condition(self.obj, "Succeeded") is not None,
            **failure(condition(self.obj, "Failed")),
        )


RAY_FAILED = {"Failed", "ValidationFailed"}


class RayJob(Workload):
    """KubeRay RayJob (ray.io/v1): `spec.suspend`. Suspending deletes its Ray cluster and submitter (all its pods);
    resuming creates a new cluster and runs the entrypoint again from the start (checkpoint to keep progress). KubeRay
    refuses to suspend a RayJob without `shutdownAfterJobFinishes: true` or with a `clusterSelector`, and only moves
    an Initializing or Running RayJob to Suspending."""

    info = KindInfo(
        "ray.io",
        "v1",
        "RayJob",
        "rayjobs",
        "the KubeRay operator",
        "helm install kuberay-operator from the KubeRay chart",
    )

    def _cluster(self) -> dict[str, Any]:
        cluster = self.spec.get("rayClusterSpec")
        return cluster if isinstance(cluster, dict) else {}

    def pod_sets(self) -> list[PodSet]:
        cluster = self._cluster()
        if not cluster:
            return []
        autoscaling = bool(cluster.get("enableInTreeAutoscaling"))
        sets = [PodSet("head", 1, (cluster.get("headGroupSpec") or {}).get("template") or {})]
        for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
            what = f"rayClusterSpec.workerGroupSpecs[{i}]"
            replicas = count(group.get("replicas"), 0, f"{what}.replicas")
            if autoscaling:  # the autoscaler may grow it to maxReplicas
                replicas = max(replicas, count(group.get("maxReplicas"), replicas, f"{what}.maxReplicas"))
            if group.get("suspend"):
                replicas = 0
            hosts = count(group.get("numOfHosts"), 1, f"{what}.numOfHosts")
            name = str(group.get("groupName", f"group-{i}"))
            sets.append(PodSet(name, replicas * hosts, group.get("template") or {}))
        submitter = self.spec.get("submitterPodTemplate")
        if isinstance(submitter, dict) and self.spec.get("submissionMode", "K8sJobMode") == "K8sJobMode":
            sets.append(PodSet("submitter", 1, submitter))
        return sets

    def problems(self) -> list[str]:
        problems = []
        if not self.spec.get("shutdownAfterJobFinishes"):
            problems.append("KubeRay suspends a RayJob only with spec.shutdownAfterJobFinishes: true")
        if self.spec.get("clusterSelector"):
            problems.append("KubeRay cannot suspend a RayJob that runs on an existing cluster (spec.clusterSelector)")
        if not self._cluster():
            problems.append("spec.rayClusterSpec is required: carbonshift counts the GPUs of the cluster it creates")
        return problems

    def pod_selector(self) -> dict[str, str] | None:
        cluster = self.status.get("rayClusterName")
        return {RAY_CLUSTER_LABEL: str(cluster)} if cluster else None

    def observe(self) -> WorkloadObservation:
        deployment = str(self.status.get("jobDeploymentStatus") or "")
        cluster = self.status.get("rayClusterStatus") or {}
        active = ready = 0
        if self.status.get("rayClusterName") and deployment in ("Initializing", "Running", "Suspending"):
            head_ready = condition({"status": cluster}, "HeadPodReady") is not None
            active = 1 + int(cluster.get("desiredWorkerReplicas") or 0)
            ready = int(head_ready) + int(cluster.get("readyWorkerReplicas") or 0)
        failed = deployment in RAY_FAILED
        return self._observation(
            active_pods=active,
            ready_pods=ready,
            complete=deployment == "Complete",
            failed=failed,
            failure_reason=(self.status.get("reason") or deployment) if failed else None,
            failure_message=self.status.get("message") if failed else None,
        )
