"""The workload interface on each kind, without a cluster: building, observing, patches, GPUs, pod selectors.

The batch/v1 Job adapter must agree exactly with what the handler does today (`api.jobs.build_job` and the handler's
`observe`), so the core can switch to it without a change in behaviour.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from carbonshift.adapters.workloads import (
    KINDS,
    BatchJob,
    InvalidWorkload,
    JobSet,
    KindNotInstalled,
    Owner,
    PyTorchJob,
    RayJob,
    TrainJob,
    UnsupportedKind,
    kind_for,
    workload_for,
)
from carbonshift.adapters.workloads.base import pod_gpus
from carbonshift.api.jobs import LABEL_CAJ, LABEL_CAJ_UID, build_job, gpus_requested
from carbonshift.handlers.carbonawarejob import observe as handler_observe
from tests.workloads.manifests import (
    EXPECTED,
    GPU,
    cluster_training_runtime,
    container,
    job_template,
    pod_template,
    template,
)

OWNER = Owner("train", "ml", "0d1f6a2e-uid", local=True)
BY_KIND = {k.info.kind: k for k in KINDS}


def caj(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": OWNER.name, "namespace": OWNER.namespace, "uid": OWNER.uid},
        "spec": {"template": job},
    }


@pytest.mark.parametrize("local", [True, False])
def test_job_is_built_exactly_as_the_handler_builds_it_today(local: bool) -> None:
    template = job_template(gpus=2, parallelism=3)
    assert BatchJob.build(template, Owner.of(caj(template), local=local)) == build_job(caj(template), local=local)


JOB_STATES: list[dict[str, Any]] = [
    {"spec": {"suspend": True}},
    {"spec": {"suspend": False}, "status": {"active": 3, "ready": 1}},
    {
        "metadata": {"annotations": {"carbonshift.io/suspend-at": "2026-05-01T10:00:00Z"}},
        "spec": {"suspend": False},
        "status": {"active": 2, "ready": 2},
    },
    {"spec": {}, "status": {"conditions": [{"type": "Complete", "status": "True"}]}},
    {
        "spec": {"suspend": False},
        "status": {
            "conditions": [
                {"type": "Suspended", "status": "False"},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "too many"},
            ]
        },
    },
    {"spec": {}, "status": {"conditions": [{"type": "Failed", "status": "False", "reason": "Nope"}]}},
]


# (suspended, active, ready, complete, failed, failure reason) of each state, as the Job controller means them.
JOB_READINGS = [
    (True, 0, 0, False, False, None),
    (False, 3, 1, False, False, None),
    (False, 2, 2, False, False, None),
    (False, 0, 0, True, False, None),
    (False, 0, 0, False, True, "BackoffLimitExceeded"),
    (False, 0, 0, False, False, None),
]


@pytest.mark.parametrize(("state", "reading"), list(zip(JOB_STATES, JOB_READINGS, strict=True)))
def test_job_is_observed_by_the_adapter_and_the_handler_passes_it_to_the_core_unchanged(
    state: dict[str, Any], reading: tuple[Any, ...]
) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, **copy.deepcopy(state)}
    job["spec"] = {**job_template()["spec"], **state["spec"]}
    ours, theirs = BatchJob(job).observe(), handler_observe(BatchJob(job))
    assert (ours.suspended, ours.active_pods, ours.ready_pods, ours.complete, ours.failed, ours.failure_reason) == (
        reading
    )
    for field in ("exists", "suspended", "active_pods", "ready_pods", "complete", "failed"):
        assert getattr(ours, field) == getattr(theirs, field), field
    assert (ours.failure_reason, ours.failure_message) == (theirs.failure_reason, theirs.failure_message)
    assert ours.suspend_at_annotation == theirs.suspend_at_annotation
    assert ours.kind == "Job"
    assert ours.desired_pods == 2


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_gpus_held_at_once_per_role(kind: str) -> None:
    _, total, pods, roles = EXPECTED[kind]
    demand = BY_KIND[kind](BY_KIND[kind].build(template(kind), OWNER)).gpu_demand()
    assert {r.role: (r.pods, r.gpus_per_pod) for r in demand.roles} == roles
    assert (demand.total, demand.pods) == (total, pods)
    assert demand.largest_pod == max(g for p, g in roles.values() if p)


def test_job_gpus_agree_with_todays_count_and_respect_completions() -> None:
    template = job_template(gpus=3, parallelism=4)
    assert BatchJob({"spec": template["spec"]}).gpu_demand().total == gpus_requested(template) == 12
    template["spec"]["completions"] = 2  # a Job never runs more pods at once than it has completions left to make
    assert BatchJob({"spec": template["spec"]}).gpu_demand().total == 6


def test_pod_gpus_counts_sidecars_and_the_largest_one_off_init_container() -> None:
    sidecar = {**container("proxy", 1), "restartPolicy": "Always"}
    assert pod_gpus({"containers": [container("a", 2), container("b", 1)]}) == 3
    assert pod_gpus({"initContainers": [container("warm", 8)], "containers": [container("a", 2)]}) == 8
    assert pod_gpus({"initContainers": [sidecar, container("warm", 1)], "containers": [container("a", 2)]}) == 3
    requests_only = {"name": "r", "resources": {"requests": {GPU: "4"}}}
    assert pod_gpus({"containers": [requests_only]}) == 4
    with pytest.raises(InvalidWorkload, match="whole number of GPUs"):
        pod_gpus({"containers": [{"name": "x", "resources": {"limits": {GPU: "500m"}}}]})


def test_elastic_and_autoscaled_workloads_count_the_most_they_may_grow_to() -> None:
    pytorch = template("PyTorchJob")
    pytorch["spec"]["elasticPolicy"] = {"minReplicas": 1, "maxReplicas": 5}
    assert PyTorchJob(pytorch).gpu_demand().total == 4 + 5 * 8
    ray = template("RayJob")
    ray["spec"]["rayClusterSpec"]["enableInTreeAutoscaling"] = True
    ray["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplicas"] = 3
    assert RayJob(ray).gpu_demand().total == 3 * 2 * 4
    ray["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["suspend"] = True  # a suspended worker group runs no pods
    assert RayJob(ray).gpu_demand().total == 0


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_built_workload_is_suspended_labelled_annotated_and_owned(kind: str) -> None:
    source = template(kind)
    manifest = BY_KIND[kind].build(source, OWNER)
    assert source == template(kind)  # the CarbonAwareJob's template is not changed
    workload = workload_for(manifest)
    assert type(workload) is BY_KIND[kind]
    assert workload.suspended
    meta = manifest["metadata"]
    assert (meta["name"], meta["namespace"]) == ("train", "ml")
    assert meta["labels"][LABEL_CAJ_UID] == OWNER.uid
    assert meta["labels"]["team"]  # the template's own labels are kept
    assert meta["annotations"]["carbonshift.io/owner"] == "ml/train"
    assert meta["ownerReferences"][0]["uid"] == OWNER.uid
    for pod_set in workload.pod_sets():
        if kind != "TrainJob":  # a TrainJob has no pod template: its runtime has
            assert pod_set.template["metadata"]["labels"][LABEL_CAJ] == "train"
            assert pod_set.template["metadata"]["labels"]["app"] == "train"
    assert "ownerReferences" not in BY_KIND[kind].build(source, Owner("train", "ml", "u", local=False))["metadata"]


def test_trainjob_labels_reach_its_jobset_and_a_pytorchjob_suspends_through_its_run_policy() -> None:
    train = TrainJob.build(template("TrainJob"), OWNER)
    assert train["spec"]["labels"][LABEL_CAJ_UID] == OWNER.uid
    assert train["spec"]["suspend"] is True
    pytorch = PyTorchJob.build(template("PyTorchJob"), OWNER)
    assert pytorch["spec"]["runPolicy"] == {"cleanPodPolicy": "None", "suspend": True}
    assert "suspend" not in pytorch["spec"]


@pytest.mark.parametrize(
    ("kind", "suspend"),
    [
        (BatchJob, {"spec": {"suspend": True}}),
        (JobSet, {"spec": {"suspend": True}}),
        (TrainJob, {"spec": {"suspend": True}}),
        (RayJob, {"spec": {"suspend": True}}),
        (PyTorchJob, {"spec": {"runPolicy": {"suspend": True}}}),
    ],
)
def test_suspend_and_resume_are_merge_patches_on_the_kinds_own_field(kind: Any, suspend: dict[str, Any]) -> None:
    workload = kind({"metadata": {"name": "w"}, "spec": {}})
    assert workload.suspend_patch() == suspend
    resume = workload.resume_patch()
    assert str(resume).replace("False", "True") == str(suspend)
    assert workload.announce_patch("2026-05-01T10:00:00Z") == {
        "metadata": {"annotations": {"carbonshift.io/suspend-at": "2026-05-01T10:00:00Z"}}
    }
    assert workload.announce_patch(None)["metadata"]["annotations"]["carbonshift.io/suspend-at"] is None


def test_pod_selectors_are_the_labels_each_controller_sets_on_its_pods() -> None:
    assert BatchJob({"metadata": {"name": "j", "uid": "u1"}}).pod_selector() == {
        "batch.kubernetes.io/controller-uid": "u1"
    }
    assert BatchJob({"metadata": {"name": "j"}}).pod_selector() == {"batch.kubernetes.io/job-name": "j"}
    assert JobSet({"metadata": {"name": "js"}}).pod_selector() == {"jobset.sigs.k8s.io/jobset-name": "js"}
    # The trainer creates a JobSet named after the TrainJob: its pods carry the JobSet's name.
    assert TrainJob({"metadata": {"name": "tj"}}).pod_selector() == {"jobset.sigs.k8s.io/jobset-name": "tj"}
    assert PyTorchJob({"metadata": {"name": "pt"}}).pod_selector() == {
        "training.kubeflow.org/job-name": "pt",
        "training.kubeflow.org/operator-name": "pytorchjob-controller",
    }
    # A RayJob's pods are its current Ray cluster's (a new one, with a new name, after each resume).
    assert RayJob({"metadata": {"name": "rj"}}).pod_selector() is None
    ray = RayJob({"metadata": {"name": "rj"}, "status": {"rayClusterName": "rj-x7k2p"}})
    assert ray.pod_selector() == {"ray.io/cluster": "rj-x7k2p"}


def test_jobset_and_trainjob_report_jobs_which_become_pods() -> None:
    jobset = JobSet.build(template("JobSet"), OWNER)
    jobset["spec"]["suspend"] = False
    jobset["status"] = {
        "replicatedJobsStatus": [
            {"name": "driver", "ready": 1, "active": 1, "succeeded": 0, "failed": 0, "suspended": 0},
            {"name": "workers", "ready": 1, "active": 2, "succeeded": 0, "failed": 0, "suspended": 0},
        ]
    }
    seen = JobSet(jobset).observe()
    assert (seen.suspended, seen.desired_pods, seen.active_pods, seen.ready_pods) == (False, 9, 1 + 2 * 4, 1 + 4)
    jobset["status"]["conditions"] = [{"type": "Failed", "status": "True", "reason": "FailedJobs", "message": "w-0"}]
    assert (JobSet(jobset).observe().failure_reason, JobSet(jobset).observe().finished) == ("FailedJobs", True)

    train = TrainJob.build(template("TrainJob"), OWNER)
    train["status"] = {
        "jobsStatus": [{"name": "node", "ready": 1, "active": 1, "succeeded": 0, "failed": 0, "suspended": 0}],
        "conditions": [{"type": "Suspended", "status": "True", "reason": "Suspended"}],
    }
    seen = TrainJob(train).observe()
    assert (seen.suspended, seen.active_pods, seen.ready_pods, seen.complete) == (True, 4, 4, False)
    train["status"]["conditions"].append({"type": "Complete", "status": "True", "reason": "JobsCompleted"})
    assert TrainJob(train).observe().complete


def test_a_trainjob_without_jobs_status_counts_its_jobsets_pods() -> None:
    """Trainer v2.0.0 never fills `status.jobsStatus`: its JobSet's replicated Jobs' counts stand in for it."""
    train = TrainJob.build(template("TrainJob"), OWNER)
    train["spec"]["suspend"] = False
    assert (TrainJob(train).observe().active_pods, TrainJob(train).observe().ready_pods) == (0, 0)
    seen = TrainJob(train)
    seen.jobset_status = {"replicatedJobsStatus": [{"name": "node", "ready": 1, "active": 1, "succeeded": 0}]}
    assert (seen.observe().active_pods, seen.observe().ready_pods) == (4, 4)  # 1 Job of numNodes (4) pods
    train["status"] = {"jobsStatus": [{"name": "node", "ready": 0, "active": 1}]}
    own = TrainJob(train)
    own.jobset_status = seen.jobset_status
    assert (own.observe().active_pods, own.observe().ready_pods) == (4, 0)  # its own status wins when filled


def test_pytorchjob_counts_ready_pods_only_once_running() -> None:
    job = PyTorchJob.build(template("PyTorchJob"), OWNER)
    job["spec"]["runPolicy"]["suspend"] = False
    job["status"] = {
        "replicaStatuses": {"Master": {"active": 1}, "Worker": {"active": 3}},
        "conditions": [{"type": "Created", "status": "True"}],
    }
    assert (PyTorchJob(job).observe().active_pods, PyTorchJob(job).observe().ready_pods) == (4, 0)
    job["status"]["conditions"].append({"type": "Running", "status": "True"})
    assert PyTorchJob(job).observe().ready_pods == 4
    job["status"]["conditions"].append({"type": "Succeeded", "status": "True"})
    assert PyTorchJob(job).observe().complete


def test_rayjob_is_observed_from_its_deployment_status_and_cluster() -> None:
    job = RayJob.build(template("RayJob"), OWNER)
    job["spec"]["suspend"] = False
    job["status"] = {
        "jobDeploymentStatus": "Running",
        "jobStatus": "RUNNING",
        "rayClusterName": "train-abcde",
        "rayClusterStatus": {
            "desiredWorkerReplicas": 5,
            "readyWorkerReplicas": 3,
            "conditions": [{"type": "HeadPodReady", "status": "True", "reason": "HeadPodRunningAndReady"}],
        },
    }
    seen = RayJob(job).observe()
    assert (seen.running, seen.desired_pods, seen.active_pods, seen.ready_pods) == (True, 6, 6, 4)
    job["status"].update(jobDeploymentStatus="Failed", reason="AppFailed", message="exit 1")
    seen = RayJob(job).observe()
    assert (seen.failed, seen.failure_reason, seen.failure_message, seen.active_pods) == (
        True,
        "AppFailed",
        "exit 1",
        0,
    )
    job["status"].update(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED", reason=None)
    assert RayJob(job).observe().complete


def test_workloads_kuberay_or_carbonshift_could_not_suspend_are_refused_when_built() -> None:
    ray = template("RayJob")
    ray["spec"]["shutdownAfterJobFinishes"] = False
    with pytest.raises(InvalidWorkload, match="shutdownAfterJobFinishes: true") as refused:
        RayJob.build(ray, OWNER)
    assert refused.value.reason == "InvalidWorkload"
    train = template("TrainJob")
    del train["spec"]["trainer"]["resourcesPerNode"]
    with pytest.raises(InvalidWorkload, match=r"set spec\.trainer\.resourcesPerNode"):
        TrainJob.build(train, OWNER)
    with pytest.raises(InvalidWorkload, match="parallelism must be a non-negative integer"):
        BatchJob.build({"spec": {"parallelism": "2", "template": pod_template()}}, OWNER)
    with pytest.raises(UnsupportedKind, match=r"cannot be ray\.io/v1 RayJob"):
        BatchJob.build(template("RayJob"), OWNER)


def test_registry_picks_the_kind_and_names_the_supported_ones() -> None:
    assert kind_for("kubeflow.org/v1", "PyTorchJob") is PyTorchJob
    assert type(workload_for(job_template())) is BatchJob  # a CarbonAwareJob template today: no apiVersion/kind
    with pytest.raises(UnsupportedKind, match=r"kubeflow.org/v1 MPIJob; it drives batch/v1 Job, .*RayJob") as err:
        kind_for("kubeflow.org/v1", "MPIJob")
    assert err.value.reason == "UnsupportedKind"


def test_kind_not_installed_names_the_crd_and_its_installer() -> None:
    error = KindNotInstalled(RayJob.info, "gpu-west")
    assert error.reason == "KindNotInstalled"
    message = str(error)
    assert "RayJob (ray.io/v1) is not served by cluster gpu-west" in message
    assert "rayjobs.ray.io is not installed" in message
    assert "install the KubeRay operator" in message


def test_missing_workload_observation_and_suspend_annotation() -> None:
    job = BatchJob.build(job_template(), OWNER)
    job["metadata"]["annotations"]["carbonshift.io/suspend-at"] = "2026-05-01T10:00:00Z"
    assert BatchJob(job).observe().suspend_at_annotation == datetime(2026, 5, 1, 10, tzinfo=UTC)
    assert not BatchJob(job).observe().running


async def test_a_crd_being_deleted_refusing_creation_is_reported_as_not_installed() -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from carbonshift.adapters.kube import Kube
    from carbonshift.adapters.workloads.client import WorkloadClient

    workloads = WorkloadClient(Kube("gpu-west", client.ApiClient()))
    terminating = ApiException(status=403, reason="Forbidden")
    terminating.body = (
        '{"message":"rayjobs.ray.io \\"t\\" is forbidden: create not allowed while custom resource definition is '
        'terminating"}'
    )
    with pytest.raises(KindNotInstalled, match=r"rayjobs\.ray\.io is not installed"):
        await workloads._not_found(RayJob.info, terminating)
    denied = ApiException(status=403, reason="Forbidden")  # a plain permission denial stays what it is
    denied.body = '{"message":"rayjobs.ray.io is forbidden: User \\"x\\" cannot create resource"}'
    with pytest.raises(ApiException) as raised:
        await workloads._not_found(RayJob.info, denied)
    assert not isinstance(raised.value, KindNotInstalled)


def test_trainjob_leaving_nodes_and_gpus_to_its_runtime_is_counted_from_the_runtime() -> None:
    runtime = cluster_training_runtime()
    untouched = copy.deepcopy(runtime)
    bare = template("TrainJob")
    bare["spec"]["runtimeRef"] = {"name": "torch-distributed-gpu"}
    del bare["spec"]["trainer"]["numNodes"], bare["spec"]["trainer"]["resourcesPerNode"]
    with pytest.raises(InvalidWorkload, match="let carbonshift read its runtime"):
        TrainJob.build(bare, OWNER)
    built = TrainJob.build(bare, OWNER, runtime=runtime)
    assert runtime == untouched  # building labels the TrainJob, never the shared runtime
    assert TrainJob(built, runtime).gpu_demand().total == 2 * 8  # mlPolicy.numNodes x the node container's GPUs
    assert TrainJob(built, runtime).runtime_ref() == ("ClusterTrainingRuntime", "torch-distributed-gpu")
    bare["spec"]["trainer"]["numNodes"] = 5  # the TrainJob's own values win over the runtime's
    assert TrainJob(bare, runtime).gpu_demand().total == 5 * 8
    bare["spec"]["trainer"]["resourcesPerNode"] = {"limits": {GPU: "2"}}
    assert TrainJob(bare, runtime).gpu_demand().total == 5 * 2
    no_trainer_step = copy.deepcopy(runtime)
    no_trainer_step["spec"]["template"]["spec"]["replicatedJobs"][0]["name"] = "launcher"
    del no_trainer_step["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["metadata"]
    del bare["spec"]["trainer"]["resourcesPerNode"]
    assert TrainJob(bare, no_trainer_step).problems() == [
        "its runtime has no trainer step (a replicated Job named node) to count GPUs from"
    ]


def test_crd_directory_is_the_one_the_install_script_prints_and_a_missing_crd_names_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import subprocess
    from pathlib import Path

    from carbonshift_dev.devcluster import workload_crds

    repo = Path(__file__).resolve().parents[2]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CARBONSHIFT_CACHE": str(tmp_path / "cache")}
    printed = subprocess.run(
        ["bash", str(repo / "hack" / "install-crds.sh"), "--print-dir"], env=env, capture_output=True, text=True
    )
    assert printed.returncode == 0, printed.stderr
    monkeypatch.setenv("CARBONSHIFT_CACHE", str(tmp_path / "cache"))
    assert Path(printed.stdout.strip()) == workload_crds.crd_dir()
    with pytest.raises(workload_crds.MissingCrdError) as missing:
        workload_crds.crd_path("RayJob")
    assert str(missing.value).endswith("ray.io_rayjobs.yaml is missing); run hack/install-crds.sh")
    assert set(workload_crds.CRD_FILES) >= {k.info.kind for k in KINDS if not k.info.builtin}


def test_observation_carries_every_field_the_core_reads_today() -> None:
    """The core can take a WorkloadObservation where it takes lifecycle.Observed (docs/workloads.md, wiring step 1)."""
    from dataclasses import fields

    from carbonshift.domain.lifecycle import Observed
    from carbonshift.domain.workload import WorkloadObservation

    ours = {f.name: f.type for f in fields(WorkloadObservation)}
    assert {f.name: f.type for f in fields(Observed)}.items() <= ours.items()
