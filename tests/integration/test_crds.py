"""The generated CRDs install on a real API server, and the server enforces what the catalogue says.

Every crds/*.yaml becomes Established; each invalid manifest in tests/catalogue is refused with its expected
message; every examples/*.yaml object is accepted and stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from carbonshift_dev.devcluster.testing import (
    InstalledCrd,
    crd_established,
    create_custom_object,
    create_namespace,
    delete_custom_object,
    delete_namespace,
    load_crd_documents,
)
from tests.catalogue import InvalidCase, load_catalogue, load_examples
from tests.integration.conftest import CRD_DIR

pytestmark = pytest.mark.cluster

CASES = load_catalogue()
EXAMPLES = load_examples()


@pytest.fixture(scope="module")
def catalogue_namespace(api_client: client.ApiClient) -> Iterator[str]:
    name = create_namespace(api_client, "catalogue")
    yield name
    delete_namespace(api_client, name)


def test_every_crd_file_installs_and_becomes_established(
    api_client: client.ApiClient, installed_crds: dict[str, InstalledCrd]
) -> None:
    documents = load_crd_documents(sorted(CRD_DIR.glob("*.yaml")))
    assert {d["metadata"]["name"] for d in documents} == {c.name for c in installed_crds.values()}
    ext = client.ApiextensionsV1Api(api_client)
    for crd in installed_crds.values():
        assert crd_established(ext, crd.name)
        served = ext.read_custom_resource_definition(crd.name)
        assert served.status.accepted_names.kind == crd.kind


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_server_refuses_invalid_manifest(
    case: InvalidCase, api_client: client.ApiClient, installed_crds: dict[str, InstalledCrd], catalogue_namespace: str
) -> None:
    crd = installed_crds[case.kind]
    with pytest.raises(ApiException) as refused:
        create_custom_object(api_client, crd, case.manifest, catalogue_namespace)
    assert refused.value.status in (400, 422), refused.value.body
    message = json.loads(refused.value.body)["message"]
    assert case.expected_error in message


@pytest.mark.parametrize(("path", "manifest"), EXAMPLES, ids=[f"{p.name}:{m['metadata']['name']}" for p, m in EXAMPLES])
def test_server_accepts_example(
    path: Path,
    manifest: dict[str, object],
    api_client: client.ApiClient,
    installed_crds: dict[str, InstalledCrd],
    catalogue_namespace: str,
) -> None:
    kind = str(manifest["kind"])
    crd = installed_crds[kind]
    created = create_custom_object(api_client, crd, manifest, catalogue_namespace)
    try:
        assert created["metadata"]["uid"]
        missing = not_preserved(manifest["spec"], created["spec"])
        assert not missing, f"{path.name}: the server pruned or changed {missing}"
    finally:
        # Cluster-scoped examples (ComputeClusters) would outlive the namespace and leak into later tests.
        delete_custom_object(api_client, crd, created["metadata"]["name"], catalogue_namespace)


def not_preserved(sent: object, stored: object, where: str = "spec") -> list[str]:
    """Paths of what was sent but not stored as sent (server-side defaults may add fields)."""
    if isinstance(sent, dict) and isinstance(stored, dict):
        return [p for k, v in sent.items() for p in not_preserved(v, stored.get(k), f"{where}.{k}")]
    if isinstance(sent, list) and isinstance(stored, list) and len(sent) == len(stored):
        pairs = enumerate(zip(sent, stored, strict=True))
        return [p for i, (a, b) in pairs for p in not_preserved(a, b, f"{where}[{i}]")]
    return [] if sent == stored else [where]
