"""Fixtures for the end-to-end suite: any cluster given by E2E_KUBECONFIG, else a local dev cluster.

Without E2E_KUBECONFIG the suite starts a dev cluster (carbonshift_dev.devcluster: real API server,
controller-manager, scheduler, kwok GPU nodes). With `E2E_KUBECONFIG=/path/to/kubeconfig` (kind, a real cluster)
it uses that cluster as it is (hack/e2e-kind.sh applies crds/ first; the release adopts them).

The operator's identity (`operator_install`, once per session), chosen by E2E_OPERATOR_INSTALL:
- `helm` (default): `helm upgrade --install carbonshift charts/carbonshift` in carbonshift-system, CRDs included,
  as docs/install.md does; its Deployment is then scaled to zero (the tests start, kill and restart their own
  operator processes, and a replica of the release must not act beside them). The tests' processes run under
  the release's ServiceAccount: `operator_install.kubeconfig(path)` issues a token for it. `installed_crds`
  applies nothing: it checks the release's CRDs equal crds/ and are Established. On E2E_KUBECONFIG clusters the
  release is uninstalled at the end (the CRDs stay, as the chart keeps them); E2E_IMAGE, when set, is its image.
- `rbac`: no Helm; the ServiceAccount, roles and bindings of carbonshift.api.rbac are applied, and
  `installed_crds` applies crds/*.yaml.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from carbonshift_dev.devcluster import ClusterConfig, DevCluster
from carbonshift_dev.devcluster.helm_release import install_release, scale_to_zero, uninstall_release
from carbonshift_dev.devcluster.operator_process import OPERATOR_NAMESPACE, install_rbac
from carbonshift_dev.devcluster.testing import (
    InstalledCrd,
    api_client_from_kubeconfig,
    crd_established,
    create_namespace,
    delete_namespace,
    install_crds,
    load_crd_documents,
    wait_for,
)
from e2e.harness import OperatorInstall, release_carbonawarejobs

REPO = Path(__file__).resolve().parents[1]
CRD_DIR = REPO / "crds"
CHART = REPO / "charts" / "carbonshift"
KUBECONFIG_ENV = "E2E_KUBECONFIG"
INSTALL_ENV = "E2E_OPERATOR_INSTALL"
IMAGE_ENV = "E2E_IMAGE"
RELEASE = "carbonshift"  # the name docs/install.md uses; the chart's objects are then named "carbonshift"


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


def install_mode() -> str:
    mode = os.environ.get(INSTALL_ENV, "helm") or "helm"
    assert mode in {"helm", "rbac"}, f"{INSTALL_ENV}={mode}: expected helm (the default) or rbac"
    return mode


def image_values(image: str) -> dict[str, Any]:
    """`registry[:port]/name[:tag]` as the chart's image values (a registry's port is not a tag)."""
    if ":" not in image.rsplit("/", 1)[-1]:
        return {"image": {"repository": image}}
    repository, _, tag = image.rpartition(":")
    return {"image": {"repository": repository, "tag": tag}}


@pytest.fixture(scope="session")
def operator_install(
    api_client: client.ApiClient, kubeconfig: Path, dev_cluster: DevCluster | None
) -> Iterator[OperatorInstall]:
    """The identity every operator process of the session runs as (see the module docstring)."""
    if install_mode() == "rbac":
        account = install_rbac(api_client, OPERATOR_NAMESPACE)
        yield OperatorInstall("rbac", api_client, kubeconfig, OPERATOR_NAMESPACE, account, None)
        return
    image = os.environ.get(IMAGE_ENV)
    values = image_values(image) if image else {}
    release = install_release(api_client, kubeconfig, CHART, name=RELEASE, namespace=OPERATOR_NAMESPACE, values=values)
    scale_to_zero(api_client, release)
    yield OperatorInstall("helm", api_client, kubeconfig, release.namespace, release.service_account, release)
    if dev_cluster is None:  # someone else's cluster: leave it as found (a dev cluster goes with the session)
        uninstall_release(kubeconfig, release.name, release.namespace)


@pytest.fixture(scope="session")
def installed_crds(api_client: client.ApiClient, operator_install: OperatorInstall) -> dict[str, InstalledCrd]:
    """The CRDs of crds/*.yaml, Established, by kind: the release's in helm mode, applied here in rbac mode."""
    paths = sorted(CRD_DIR.glob("*.yaml"))
    assert paths, f"no CRDs in {CRD_DIR}"
    documents = load_crd_documents(paths)
    if operator_install.mode == "rbac":
        return install_crds(api_client, documents)
    assert operator_install.release is not None
    rendered = {d["metadata"]["name"]: d for d in operator_install.release.objects("CustomResourceDefinition")}
    ext = client.ApiextensionsV1Api(api_client)
    served: dict[str, InstalledCrd] = {}
    for doc in documents:
        name = doc["metadata"]["name"]
        if name in rendered:  # the carbonshift.io CRDs (kopf's come from the chart's crds/, outside the manifest)
            assert rendered[name]["spec"] == doc["spec"], f"chart CRD {name} differs from crds/: hack/gen_chart.py"
        wait_for(lambda name=name: crd_established(ext, name), f"CRD {name} Established", timeout_seconds=60)
        spec = ext.read_custom_resource_definition(name).spec
        storage = next(v.name for v in spec.versions if v.storage)
        served[spec.names.kind] = InstalledCrd(
            name=name,
            group=spec.group,
            version=storage,
            plural=spec.names.plural,
            kind=spec.names.kind,
            namespaced=spec.scope == "Namespaced",
        )
    return served


@pytest.fixture
def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    name = create_namespace(api_client, f"e2e-{request.node.name}")
    yield name
    release_carbonawarejobs(api_client, name)  # (the test's operator is gone: nobody else would)
    delete_namespace(api_client, name)
