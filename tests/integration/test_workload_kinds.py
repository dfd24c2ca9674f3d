"""Each workload kind on the real API server, with its project's real CRD (hack/install-crds.sh).

For every kind: the adapter builds it from a template, the server accepts it with strict field validation, created
suspended; the adapter's resume, suspend and announce patches are applied through the server and the object read back.
The kinds' own controllers do not run here (no images; see docs/workloads.md), except the batch/v1 Job's: a Job runs
through the real Job controller and scheduler onto kwok nodes, and its pods are observed. A kind whose CRD is not
installed gives `KindNotInstalled`.
"""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from carbonshift.adapters.kube import Kube
from carbonshift.adapters.workloads import KINDS, BatchJob, KindNotInstalled, Owner, PyTorchJob, TrainJob, Workload
from carbonshift.adapters.workloads.base import selector_string
from carbonshift.adapters.workloads.client import WorkloadClient
from carbonshift.api.jobs import LABEL_CAJ_UID
from carbonshift_dev.devcluster.testing import (
    InstalledCrd,
    create_custom_object,
    delete_custom_object,
    install_crds,
    load_crd_documents,
    wait_for,
)
from carbonshift_dev.devcluster.workload_crds import CRD_FILES, crd_path
from tests.workloads.manifests import EXPECTED, cluster_training_runtime, job_template, template

pytestmark = pytest.mark.cluster
BY_KIND = {k.info.kind: k for k in KINDS}
WHEN = "2026-05-01T10:00:00Z"


@pytest.fixture(scope="module")
def workload_crds(api_client: client.ApiClient) -> dict[str, InstalledCrd]:
    return install_crds(api_client, load_crd_documents([crd_path(kind) for kind in CRD_FILES]))


@pytest.fixture
def workloads(api_client: client.ApiClient) -> WorkloadClient:
    return WorkloadClient(Kube("local", api_client))


def owner(namespace: str, name: str = "train") -> Owner:
    # Not local: no CarbonAwareJob exists here, and an owner reference to a missing one would be garbage-collected.
    return Owner(name, namespace, f"uid-{name}", local=False)


def test_each_kinds_real_crd_is_served_as_its_adapter_expects(workload_crds: dict[str, InstalledCrd]) -> None:
    for kind in KINDS:
        if kind.info.builtin:
            continue
        crd = workload_crds[kind.info.kind]
        assert (crd.group, crd.version, crd.plural, crd.namespaced) == (
            kind.info.group,
            kind.info.version,
            kind.info.plural,
            True,
        )
        assert crd.name == kind.info.crd_name


# Before the kinds' tests: a CRD without objects is deleted at once (with objects, its finalizer deletes them first).
def _crd_gone(ext: client.ApiextensionsV1Api, name: str) -> bool:
    try:
        ext.read_custom_resource_definition(name)
    except ApiException as exc:
        return exc.status == 404
    return False


@pytest.mark.parametrize(
    "kind",
    [
        "PyTorchJob",  # the last CRD of its group: the group kubeflow.org/v1 is no longer served at all
        "TrainJob",  # trainer.kubeflow.org/v1alpha1 still serves TrainingRuntime: the group is there, the kind is not
    ],
)
async def test_a_kind_whose_crd_is_not_installed_is_a_typed_error_naming_it(
    kind: str, workload_crds: dict[str, InstalledCrd], api_client: client.ApiClient, namespace: str
) -> None:
    adapter = BY_KIND[kind]
    ext = client.ApiextensionsV1Api(api_client)
    ext.delete_custom_resource_definition(adapter.info.crd_name)
    try:
        wait_for(lambda: _crd_gone(ext, adapter.info.crd_name), f"CRD {adapter.info.crd_name} deleted")
        workloads = WorkloadClient(Kube("gpu-west", api_client))
        manifest = adapter.build(template(kind), owner(namespace))
        for _ in range(600):  # discovery may serve the kind for a moment after its CRD is gone
            if not await workloads.served(adapter.info):
                break
            await _sleep()
        with pytest.raises(KindNotInstalled) as refused:
            await workloads.create(manifest)
        error = refused.value
        assert error.reason == "KindNotInstalled"
        info = adapter.info
        assert f"{kind} ({info.api_version}) is not served by cluster gpu-west" in str(error)
        assert f"{info.crd_name} is not installed; install {info.product}" in str(error)
        with pytest.raises(KindNotInstalled):
            await workloads.get(info, namespace, "train")
        with pytest.raises(KindNotInstalled):
            await workloads.patch(adapter(manifest), adapter(manifest).resume_patch())
    finally:
        install_crds(api_client, load_crd_documents([crd_path(kind)]))


@pytest.mark.parametrize("kind", sorted(set(EXPECTED) - {"Job"}))
async def test_kind_is_created_suspended_resumed_suspended_and_announced_through_the_api_server(
    kind: str, workload_crds: dict[str, InstalledCrd], workloads: WorkloadClient, namespace: str
) -> None:
    adapter = BY_KIND[kind]
    manifest = adapter.build(template(kind), owner(namespace))
    created = await workloads.create(manifest)  # strict field validation: the server knows every field we send
    assert type(created) is adapter
    assert created.meta["uid"]
    seen = created.observe()
    assert (seen.exists, seen.suspended, seen.complete, seen.failed) == (True, True, False, False)
    assert seen.desired_pods == EXPECTED[kind][2]
    assert created.gpu_demand().total == EXPECTED[kind][1]  # counted from what the server stored
    assert created.meta["labels"][LABEL_CAJ_UID] == "uid-train"

    again = await workloads.create(manifest)  # a restarted operator: the existing object, not an error
    assert again.meta["uid"] == created.meta["uid"]

    resumed = await workloads.resume(created)
    read = await workloads.get(adapter.info, namespace, "train")
    assert read is not None
    assert not resumed.suspended
    assert not read.suspended
    assert read.observe().running

    suspended = await workloads.suspend(read)
    assert suspended.suspended
    read = await workloads.get(adapter.info, namespace, "train")
    assert read is not None
    assert read.suspended

    announced = await workloads.announce(suspended, WHEN)
    read = await workloads.get(adapter.info, namespace, "train")
    assert read is not None
    assert read.meta["annotations"]["carbonshift.io/suspend-at"] == WHEN
    assert read.observe().suspend_at_annotation == announced.observe().suspend_at_annotation is not None
    withdrawn = await workloads.announce(read, None)
    assert "carbonshift.io/suspend-at" not in withdrawn.meta["annotations"]
    assert await workloads.get(adapter.info, namespace, "absent") is None


async def test_pytorchjob_suspend_lands_in_its_run_policy(
    workload_crds: dict[str, InstalledCrd], workloads: WorkloadClient, namespace: str
) -> None:
    created = await workloads.create(PyTorchJob.build(template("PyTorchJob"), owner(namespace)))
    assert created.spec["runPolicy"]["suspend"] is True
    assert created.spec["runPolicy"]["cleanPodPolicy"] == "None"  # a merge patch keeps the rest of runPolicy
    resumed = await workloads.resume(created)
    assert resumed.spec["runPolicy"] == {"cleanPodPolicy": "None", "suspend": False}
    assert "suspend" not in resumed.spec


async def test_trainjob_gpus_left_to_its_runtime_are_read_from_the_real_runtime(
    workload_crds: dict[str, InstalledCrd], api_client: client.ApiClient, workloads: WorkloadClient, namespace: str
) -> None:
    runtime = cluster_training_runtime(f"gpu-{namespace}")
    crd = workload_crds["ClusterTrainingRuntime"]
    create_custom_object(api_client, crd, runtime, namespace)
    try:
        bare = template("TrainJob")
        bare["spec"]["runtimeRef"] = {"name": runtime["metadata"]["name"]}
        del bare["spec"]["trainer"]["numNodes"], bare["spec"]["trainer"]["resourcesPerNode"]
        stored_runtime = await workloads.runtime_of(TrainJob(bare))
        assert stored_runtime is not None
        created = await workloads.create(TrainJob.build(bare, owner(namespace), runtime=stored_runtime))
        assert TrainJob(created.obj, stored_runtime).gpu_demand().total == 2 * 8
        missing = template("TrainJob")
        missing["spec"]["runtimeRef"] = {"name": "no-such-runtime"}
        assert await workloads.runtime_of(TrainJob(missing)) is None
    finally:
        delete_custom_object(api_client, crd, runtime["metadata"]["name"], namespace)


async def test_job_runs_through_the_job_controller_and_its_pods_are_observed_announced_and_suspended(
    api_client: client.ApiClient, workloads: WorkloadClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    job = await workloads.create(BatchJob.build(job_template(gpus=2), owner(namespace)))
    selector = selector_string(job.pod_selector() or {})
    assert selector.startswith("batch.kubernetes.io/controller-uid=")
    info = job.info

    async def observe() -> Workload:
        read = await workloads.get(info, namespace, "train")
        assert read is not None
        return read

    job = await workloads.resume(job)
    for _ in range(600):  # the Job controller, the scheduler and kwok: two pods Running and Ready
        job = await observe()
        if job.observe().ready_pods == 2:
            break
        await _sleep()
    seen = job.observe()
    assert (seen.running, seen.active_pods, seen.ready_pods, seen.desired_pods) == (True, 2, 2, 2)
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    assert len(pods) == 2  # the selector finds exactly the Job's pods
    assert sum(int(c.resources.limits["nvidia.com/gpu"]) for p in pods for c in p.spec.containers) == (
        job.gpu_demand().total
    )

    await workloads.announce(job, WHEN)
    annotated = core.list_namespaced_pod(namespace, label_selector=selector).items
    assert [p.metadata.annotations.get("carbonshift.io/suspend-at") for p in annotated] == [WHEN, WHEN]

    await workloads.suspend(job)
    wait_for(lambda: not core.list_namespaced_pod(namespace, label_selector=selector).items, "pods deleted")
    for _ in range(600):
        job = await observe()
        if job.observe().active_pods == 0:
            break
        await _sleep()
    seen = job.observe()
    assert (seen.suspended, seen.active_pods, seen.ready_pods) == (True, 0, 0)


async def _sleep() -> None:
    await asyncio.sleep(0.1)
