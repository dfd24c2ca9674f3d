"""The suite's operator processes run under the installed identity: the helm release's ServiceAccount by default.

Every other e2e test takes its operator kubeconfig from `operator_install`; these tests pin down what that
identity is. In helm mode: the API server authenticates the token as the ServiceAccount the release's Deployment
names, every binding that grants that account anything belongs to the release (so the suite proves the chart's
RBAC, not rules applied beside it), the carbonshift.io CRDs are the release's, and no replica of the Deployment
runs beside the tests' own processes. In rbac mode (E2E_OPERATOR_INSTALL=rbac): the account and its bindings are
exactly carbonshift.api.rbac's, with no Helm involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from carbonshift.api import rbac
from carbonshift_dev.devcluster.operator_process import authenticated_user
from carbonshift_dev.devcluster.testing import InstalledCrd
from e2e.harness import OperatorInstall

HELM_MANAGED = ("app.kubernetes.io/managed-by", "Helm")


def bindings_of(api: client.ApiClient, namespace: str, account: str) -> list[Any]:
    """Every ClusterRoleBinding and RoleBinding (any namespace) with the ServiceAccount among its subjects."""
    rbac_api = client.RbacAuthorizationV1Api(api)
    found = [*rbac_api.list_cluster_role_binding().items, *rbac_api.list_role_binding_for_all_namespaces().items]
    return [
        b for b in found
        if any(s.kind == "ServiceAccount" and s.name == account and s.namespace == namespace for s in b.subjects or [])
    ]  # fmt: skip


def kind_of(obj: Any) -> str:
    """The kind of an object the client returned (list items carry no `kind` field)."""
    return type(obj).__name__.removeprefix("V1")


def role_of(api: client.ApiClient, binding: Any) -> Any:
    rbac_api = client.RbacAuthorizationV1Api(api)
    if binding.role_ref.kind == "ClusterRole":
        return rbac_api.read_cluster_role(binding.role_ref.name)
    return rbac_api.read_namespaced_role(binding.role_ref.name, binding.metadata.namespace)


def test_operator_kubeconfig_authenticates_as_the_installed_service_account(
    api_client: client.ApiClient, operator_install: OperatorInstall, tmp_path: Path
) -> None:
    path = operator_install.kubeconfig(tmp_path / "operator.kubeconfig")
    user = authenticated_user(path)
    assert user == f"system:serviceaccount:{operator_install.namespace}:{operator_install.service_account}"
    assert user != authenticated_user(operator_install.admin_kubeconfig)
    if operator_install.release is None:
        accounts = [
            d["metadata"]["name"] for d in rbac.manifests(operator_install.namespace) if d["kind"] == "ServiceAccount"
        ]
        assert [operator_install.service_account] == accounts
        return
    release = operator_install.release
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment(release.deployment, release.namespace)
    # The account the chart's pods would run as, read from the live Deployment, is the one the tests' processes use.
    assert deployment.spec.template.spec.service_account_name == operator_install.service_account
    assert deployment.metadata.annotations["meta.helm.sh/release-name"] == release.name
    assert deployment.metadata.labels[HELM_MANAGED[0]] == HELM_MANAGED[1]
    account = client.CoreV1Api(api_client).read_namespaced_service_account(release.service_account, release.namespace)
    assert account.metadata.annotations["meta.helm.sh/release-name"] == release.name


def test_every_permission_of_the_operator_comes_from_the_install(
    api_client: client.ApiClient, operator_install: OperatorInstall
) -> None:
    bindings = bindings_of(api_client, operator_install.namespace, operator_install.service_account)
    kinds = sorted({kind_of(b) for b in bindings})
    assert kinds == ["ClusterRoleBinding", "RoleBinding"], kinds
    if operator_install.release is None:
        expected = {
            (d["kind"], d["metadata"]["name"])
            for d in rbac.manifests(operator_install.namespace)
            if d["kind"].endswith("Binding")
        }
        assert {(kind_of(b), b.metadata.name) for b in bindings} == expected
        assert all(HELM_MANAGED[0] not in (b.metadata.labels or {}) for b in bindings)
        return
    release = operator_install.release
    rendered = {(d["kind"], d["metadata"]["name"]) for d in release.objects("ClusterRoleBinding")}
    rendered |= {(d["kind"], d["metadata"]["name"]) for d in release.objects("RoleBinding")}
    assert {(kind_of(b), b.metadata.name) for b in bindings} == rendered
    for obj in [*bindings, *(role_of(api_client, b) for b in bindings)]:
        where = f"{kind_of(obj)} {obj.metadata.name}"
        assert (obj.metadata.labels or {}).get(HELM_MANAGED[0]) == HELM_MANAGED[1], where
        assert (obj.metadata.annotations or {}).get("meta.helm.sh/release-name") == release.name, where
        assert (obj.metadata.annotations or {}).get("meta.helm.sh/release-namespace") == release.namespace, where


def test_the_suite_uses_the_installs_crds_and_nothing_else_acts(
    api_client: client.ApiClient, operator_install: OperatorInstall, installed_crds: dict[str, InstalledCrd]
) -> None:
    ext = client.ApiextensionsV1Api(api_client)
    ours = [crd for crd in installed_crds.values() if crd.group == "carbonshift.io"]
    assert {crd.kind for crd in ours} == {"CarbonAwareJob", "EnergyBudget", "ComputeCluster", "CarbonWindowPolicy"}
    if operator_install.release is None:
        for crd in ours:
            assert ext.read_custom_resource_definition(crd.name).status.accepted_names.kind == crd.kind
        return
    release = operator_install.release
    for crd in ours:
        annotations = ext.read_custom_resource_definition(crd.name).metadata.annotations or {}
        assert annotations.get("meta.helm.sh/release-name") == release.name, crd.name
    apps = client.AppsV1Api(api_client)
    deployment = apps.read_namespaced_deployment(release.deployment, release.namespace)
    assert deployment.spec.replicas == 0
    selector = ",".join(f"{k}={v}" for k, v in deployment.spec.selector.match_labels.items())
    pods = client.CoreV1Api(api_client).list_namespaced_pod(release.namespace, label_selector=selector).items
    assert [p.metadata.name for p in pods] == []
