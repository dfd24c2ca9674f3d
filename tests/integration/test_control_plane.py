"""Fidelity of the dev cluster: the Job controller, the scheduler, kwok's fake GPU nodes and RBAC are real."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from carbonshift_dev.devcluster import (
    COMPLETE_ANNOTATION,
    FAIL_ANNOTATION,
    GPU_RESOURCE,
    TERMINATION_DELAY_ANNOTATION,
    ZONE_LABEL,
    DevCluster,
)
from carbonshift_dev.devcluster.kubeconfig import read_kubeconfig_token
from carbonshift_dev.devcluster.testing import api_client_from_kubeconfig, token_api_client, wait_for
from tests.integration.conftest import GPUS_PER_NODE, NODES, ZONES

pytestmark = pytest.mark.cluster


def gpu_job(
    name: str, gpus: int, parallelism: int, suspend: bool, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "suspend": suspend,
            "parallelism": parallelism,
            "completions": parallelism,
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "train",
                            "image": "registry.example/train:1",
                            "resources": {"limits": {GPU_RESOURCE: str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


def job_pods(core: client.CoreV1Api, namespace: str, job: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items)


def running_pods(core: client.CoreV1Api, namespace: str, job: str, expected: int) -> list[Any] | None:
    """The job's Running pods once there are exactly `expected` of them, else None."""
    running = [p for p in job_pods(core, namespace, job) if p.status.phase == "Running"]
    return running if len(running) == expected else None


def job_condition(batch: client.BatchV1Api, namespace: str, job: str, condition: str) -> bool:
    status = batch.read_namespaced_job_status(job, namespace).status
    return any(c.type == condition and c.status == "True" for c in status.conditions or [])


def test_fake_nodes_advertise_gpus_and_zones(api_client: client.ApiClient) -> None:
    nodes = client.CoreV1Api(api_client).list_node(label_selector="type=kwok").items
    assert len(nodes) == NODES
    assert {n.metadata.labels[ZONE_LABEL] for n in nodes} == set(ZONES)
    for node in nodes:
        assert node.status.allocatable[GPU_RESOURCE] == str(GPUS_PER_NODE)
        assert node.status.capacity[GPU_RESOURCE] == str(GPUS_PER_NODE)
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True"


def test_suspended_job_runs_only_while_resumed(api_client: client.ApiClient, namespace: str) -> None:
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    batch.create_namespaced_job(namespace, gpu_job("train", gpus=4, parallelism=2, suspend=True))
    # The Job controller has seen the Job once it marks it Suspended; a suspended Job has no pods.
    wait_for(lambda: job_condition(batch, namespace, "train", "Suspended"), "Job train Suspended")
    assert job_pods(core, namespace, "train") == []

    batch.patch_namespaced_job("train", namespace, {"spec": {"suspend": False}})
    running = wait_for(lambda: running_pods(core, namespace, "train", 2), "2 running pods of Job train")
    gpu_nodes = {n.metadata.name for n in core.list_node(label_selector="type=kwok").items}
    for pod in running:
        assert pod.spec.node_name in gpu_nodes
        assert pod.spec.containers[0].resources.limits[GPU_RESOURCE] == "4"
        assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
        assert pod.status.pod_ip

    batch.patch_namespaced_job("train", namespace, {"spec": {"suspend": True}})
    wait_for(lambda: job_pods(core, namespace, "train") == [], "pods of Job train deleted after suspend")
    assert job_condition(batch, namespace, "train", "Suspended")
    assert not batch.read_namespaced_job_status("train", namespace).status.active


def test_suspended_pod_keeps_running_for_its_termination_delay(api_client: client.ApiClient, namespace: str) -> None:
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    delay_seconds = 5
    job = gpu_job("ckpt", 1, 1, False, {TERMINATION_DELAY_ANNOTATION: f"{delay_seconds}s"})
    batch.create_namespaced_job(namespace, job)
    wait_for(lambda: running_pods(core, namespace, "ckpt", 1), "the pod of Job ckpt running")
    batch.patch_namespaced_job("ckpt", namespace, {"spec": {"suspend": True}})
    terminating = wait_for(
        lambda: [p for p in job_pods(core, namespace, "ckpt") if p.metadata.deletion_timestamp], "deletion requested"
    )
    requested_at = time.monotonic()
    assert terminating[0].status.phase == "Running"  # still checkpointing
    wait_for(lambda: job_pods(core, namespace, "ckpt") == [], "the pod removed after its delay")
    assert time.monotonic() - requested_at >= delay_seconds - 1


def test_pod_asking_for_more_gpus_than_any_node_stays_unschedulable(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "too-big"},
        "spec": {
            "containers": [
                {"name": "train", "image": "x", "resources": {"limits": {GPU_RESOURCE: str(GPUS_PER_NODE + 1)}}}
            ]
        },
    }
    core.create_namespaced_pod(namespace, pod)

    def unschedulable() -> Any:
        status = core.read_namespaced_pod_status("too-big", namespace).status
        return next(
            (c for c in status.conditions or [] if c.type == "PodScheduled" and c.reason == "Unschedulable"), None
        )

    condition = wait_for(unschedulable, "pod too-big marked Unschedulable")
    assert f"Insufficient {GPU_RESOURCE}" in condition.message
    current = core.read_namespaced_pod("too-big", namespace)
    assert current.status.phase == "Pending"
    assert current.spec.node_name is None


def test_job_finishes_only_when_its_pods_are_annotated(api_client: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(namespace, gpu_job("done", 1, 1, False, {COMPLETE_ANNOTATION: "true"}))
    batch.create_namespaced_job(namespace, gpu_job("broken", 1, 1, False, {FAIL_ANNOTATION: "true"}))
    batch.create_namespaced_job(namespace, gpu_job("forever", 1, 1, False))
    wait_for(lambda: job_condition(batch, namespace, "done", "Complete"), "Job done Complete")
    wait_for(lambda: job_condition(batch, namespace, "broken", "Failed"), "Job broken Failed")
    forever = batch.read_namespaced_job_status("forever", namespace).status
    assert forever.active == 1
    assert not forever.succeeded
    assert not any(c.status == "True" for c in forever.conditions or [])


def test_service_account_token_without_rights_is_forbidden(api_client: client.ApiClient, namespace: str) -> None:
    core, rbac = client.CoreV1Api(api_client), client.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "nobody"}})
    request = {"spec": {"audiences": [], "expirationSeconds": 600}}
    token = core.create_namespaced_service_account_token("nobody", namespace, request).status.token
    as_nobody = client.CoreV1Api(token_api_client(api_client, token))
    with pytest.raises(ApiException) as refused:
        as_nobody.list_namespaced_pod(namespace)
    assert refused.value.status == 403  # authenticated (not 401) but not authorised
    assert f"system:serviceaccount:{namespace}:nobody" in str(refused.value.body)

    rbac.create_namespaced_role(
        namespace,
        {"metadata": {"name": "pod-reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]},
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "nobody-reads-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": namespace}],
        },
    )

    def allowed() -> bool:
        try:
            as_nobody.list_namespaced_pod(namespace)
        except ApiException as exc:
            if exc.status == 403:
                return False
            raise
        return True

    wait_for(allowed, "the RoleBinding to take effect")
    with pytest.raises(ApiException) as still_refused:
        as_nobody.list_namespaced_secret(namespace)
    assert still_refused.value.status == 403


@pytest.mark.slow
def test_two_clusters_run_side_by_side_independently(
    dev_cluster: DevCluster, second_cluster: DevCluster, api_client: client.ApiClient, namespace: str
) -> None:
    assert dev_cluster.server_url != second_cluster.server_url
    other = api_client_from_kubeconfig(second_cluster.kubeconfig)
    try:
        other_core = client.CoreV1Api(other)
        other_nodes = other_core.list_node().items
        assert [n.metadata.labels[ZONE_LABEL] for n in other_nodes] == ["zone-c"]
        assert other_nodes[0].status.allocatable[GPU_RESOURCE] == "4"
        other_names = {ns.metadata.name for ns in other_core.list_namespace().items}
        assert namespace not in other_names
        with pytest.raises(ApiException) as unknown:  # one cluster's token means nothing to the other
            client.CoreV1Api(token_api_client(other, read_kubeconfig_token(dev_cluster.kubeconfig))).list_node()
        assert unknown.value.status == 401
    finally:
        other.close()
    dev_cluster.check_running()
    second_cluster.check_running()


async def test_gpu_capacity_counts_every_unfinished_pod_across_pages(
    api_client: client.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's free-GPU count reads the pod list in pages (bounded memory on large clusters): with one pod a
    page it must still count every pod's GPUs, Pending ones included, and the nodes' allocatable GPUs."""
    from carbonshift.adapters import kube as kube_adapter

    core = client.CoreV1Api(api_client)
    for i, gpus in enumerate((1, 2, 3, GPUS_PER_NODE + 1)):  # the last stays Pending: it still asks for GPUs
        container = {"name": "train", "image": "x", "resources": {"limits": {GPU_RESOURCE: str(gpus)}}}
        labels = {"carbonshift.io/carbonawarejob": "train"} if i < 2 else {}  # p0 and p1 belong to CAJ "train"
        meta = {"name": f"p{i}", "labels": labels}
        core.create_namespaced_pod(namespace, {"metadata": meta, "spec": {"containers": [container]}})

    def requested() -> int:
        unfinished = core.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded,status.phase!=Failed")
        return sum(
            int((c.resources.limits or {}).get(GPU_RESOURCE, 0)) for p in unfinished.items for c in p.spec.containers
        )

    monkeypatch.setattr(kube_adapter, "POD_PAGE", 1)
    # Earlier tests' namespaces may still be emptying: the cluster's pods can only go away meanwhile, so the count
    # lies between two listings taken around it.
    before = requested()
    capacity = await kube_adapter.Kube("local", api_client).gpu_capacity()
    after = requested()
    total, used, largest = capacity.total, capacity.used, capacity.largest_node
    assert capacity.by_job[(namespace, "train")] == 1 + 2  # its pods' GPUs, from the same listing
    assert before >= used >= after >= 1 + 2 + 3 + GPUS_PER_NODE + 1  # every page read, this namespace's pods too
    assert (total, largest) == (NODES * GPUS_PER_NODE, GPUS_PER_NODE)


async def test_create_in_a_terminating_namespace_is_told_apart_from_a_permission_denial(
    api_client: client.ApiClient, namespace: str
) -> None:
    """The operator watches every namespace; one being deleted refuses new Jobs with 403. That 403 must be recognised
    (the daemon waits quietly for its object to go) and never confused with an RBAC denial, which it must report."""
    from carbonshift.adapters import kube as kube_adapter

    core = client.CoreV1Api(api_client)
    request = {"spec": {"audiences": [], "expirationSeconds": 600}}
    token = core.create_namespaced_service_account_token("default", namespace, request).status.token
    held = {"metadata": {"name": "held", "finalizers": ["carbonshift.io/test-hold"]}}
    core.create_namespaced_config_map(namespace, held)  # keeps the namespace in Terminating while we look
    pod = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
    job = {"metadata": {"name": "late", "namespace": namespace}, "spec": {"template": {"spec": pod}}}
    try:
        core.delete_namespace(namespace)
        with pytest.raises(ApiException) as refused:
            await kube_adapter.Kube("local", api_client).create_job(job)
        assert refused.value.status == 403
        assert kube_adapter.namespace_terminating(refused.value)
        with pytest.raises(ApiException) as denied:  # the default ServiceAccount may not create Jobs
            client.BatchV1Api(token_api_client(api_client, token)).create_namespaced_job(namespace, job)
        assert denied.value.status == 403
        assert not kube_adapter.namespace_terminating(denied.value)
    finally:
        core.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})


async def test_creating_a_job_that_exists_returns_it_without_retrying(
    api_client: client.ApiClient, namespace: str
) -> None:
    """A restarted operator creates its Job again: the API server answers 409 AlreadyExists, which no retry can
    change. The adapter returns the existing Job after one create (it used to retry five times, then report the
    API server as unavailable, treating it like a 409 Conflict on an update, which a retry can resolve)."""
    from carbonshift.adapters import kube as kube_adapter

    pod = {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
    job = {"metadata": {"name": "twice", "namespace": namespace}, "spec": {"suspend": True, "template": {"spec": pod}}}
    kube = kube_adapter.Kube("local", api_client, attempts=3, base_delay=0.01)
    first = await kube.create_job(copy.deepcopy(job))
    creates = 0
    create = kube.batch.create_namespaced_job

    def counting_create(*args: Any, **kwargs: Any) -> Any:
        nonlocal creates
        creates += 1
        return create(*args, **kwargs)

    kube.batch.create_namespaced_job = counting_create  # type: ignore[method-assign]
    second = await kube.create_job(copy.deepcopy(job))
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    assert creates == 1
