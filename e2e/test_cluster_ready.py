"""The cluster under test is usable: GPU nodes are schedulable and the carbonshift CRDs are served."""

from __future__ import annotations

from kubernetes import client

from carbonshift_dev.devcluster import GPU_RESOURCE
from carbonshift_dev.devcluster.testing import InstalledCrd


def test_cluster_has_schedulable_gpu_capacity(api_client: client.ApiClient) -> None:
    nodes = client.CoreV1Api(api_client).list_node().items
    gpus = sum(int(n.status.allocatable.get(GPU_RESOURCE, "0")) for n in nodes if not n.spec.unschedulable)
    assert gpus > 0, "no node advertises nvidia.com/gpu"


def test_carbonshift_resources_are_served(
    api_client: client.ApiClient, installed_crds: dict[str, InstalledCrd], namespace: str
) -> None:
    resources = client.CustomObjectsApi(api_client)
    for crd in installed_crds.values():
        if crd.namespaced:
            listing = resources.list_namespaced_custom_object(crd.group, crd.version, namespace, crd.plural)
        else:
            listing = resources.list_cluster_custom_object(crd.group, crd.version, crd.plural)
        assert listing["kind"] == f"{crd.kind}List"
