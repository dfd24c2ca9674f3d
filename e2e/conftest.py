"""Fixtures for the end-to-end suite: any cluster given by E2E_KUBECONFIG, else a local dev cluster.

With `E2E_KUBECONFIG=/path/to/kubeconfig` (kind, a real cluster) the suite uses that cluster as it is and
expects the CRDs to be applied already (hack/e2e-kind.sh does it). Without it, the suite starts a dev cluster
(carbonshift.devcluster: real API server, controller-manager, scheduler, kwok GPU nodes) and installs
crds/*.yaml itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from carbonshift.devcluster import ClusterConfig, DevCluster
from carbonshift.devcluster.testing import (
    InstalledCrd,
    api_client_from_kubeconfig,
    create_namespace,
    delete_namespace,
    install_crds,
    load_crd_documents,
)

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO / "crds"
KUBECONFIG_ENV = "E2E_KUBECONFIG"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every end-to-end test needs a cluster (the hook sees the whole session's items: mark only ours)."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def dev_cluster() -> Iterator[DevCluster | None]:
    """The local dev cluster, or None when E2E_KUBECONFIG names another cluster."""
    if os.environ.get(KUBECONFIG_ENV):
        yield None
        return
    config = ClusterConfig(name="e2e", nodes=2, gpus_per_node=8, zones=("zone-a", "zone-b"))
    with DevCluster.start(config) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kubeconfig(dev_cluster: DevCluster | None) -> Path:
    given = os.environ.get(KUBECONFIG_ENV)
    if dev_cluster is not None:
        return dev_cluster.kubeconfig
    assert given, f"{KUBECONFIG_ENV} is set but empty"
    path = Path(given)
    assert path.is_file(), f"{KUBECONFIG_ENV}={given} is not a file"
    return path


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = api_client_from_kubeconfig(kubeconfig)
    yield api
    api.close()


@pytest.fixture(scope="session")
def installed_crds(api_client: client.ApiClient) -> dict[str, InstalledCrd]:
    """crds/*.yaml, installed (or replaced) and Established, by kind. Idempotent on a kind cluster too."""
    paths = sorted(CRD_DIR.glob("*.yaml"))
    assert paths, f"no CRDs in {CRD_DIR}"
    return install_crds(api_client, load_crd_documents(paths))


@pytest.fixture
def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    name = create_namespace(api_client, f"e2e-{request.node.name}")
    yield name
    delete_namespace(api_client, name)
