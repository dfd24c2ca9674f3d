"""`helm install` of charts/carbonshift on the real control plane, and the operator running under the chart's RBAC.

The release installs (adopting the CRDs the session already applied, as an upgrade from plain manifests would); its
objects exist; the API server's own authorizer grants the chart's ServiceAccount every permission of
operator/carbonshift/api/rbac.py and no more of what matters (Secrets elsewhere); then `carbonshift run` runs as a
local process with exactly the flags of the installed Deployment, authenticated by that ServiceAccount's token,
peering through the chart's peering object, and plans a CarbonAwareJob. No image exists, so the Deployment's pods
run only as kwok's fake pods; the local process stands in for them. Uninstalling keeps the CRDs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.harness import Cluster, OperatorProcess, caj_manifest, free_port, write_trace
from kubernetes import client

from carbonshift.api import rbac
from carbonshift_dev.devcluster.binaries import require
from carbonshift_dev.devcluster.kueue import find_kueue
from carbonshift_dev.devcluster.operator_process import service_account_kubeconfig
from carbonshift_dev.devcluster.testing import create_namespace, delete_namespace, load_crd_documents, wait_for
from carbonshift_dev.devcluster.workload_crds import CRD_FILES, crd_path
from tests.chart.helm import CHART, load_gen_chart

pytestmark = pytest.mark.cluster

RELEASE = "carbonshift-it"  # contains the chart name, so it is also the objects' full name
PEERING = "carbonshift-it"
SLOT = timedelta(minutes=15)


@dataclass
class Release:
    namespace: str
    fullname: str
    install_output: str
    kubeconfig: Path


def helm(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(require("helm")), "--kubeconfig", str(kubeconfig), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=240)


@pytest.fixture(scope="module")
def release(
    api_client: client.ApiClient, kubeconfig: Path, installed_crds: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    namespace = create_namespace(api_client, "helm")
    secret = {"metadata": {"name": "grid-keys"}, "stringData": {"em-token": "not-a-real-token"}}
    client.CoreV1Api(api_client).create_namespaced_secret(namespace, secret)
    values = {
        "image": {"repository": "example.invalid/carbonshift"},
        "operator": {"zone": "TEST", "peeringName": PEERING, "forecast": "oracle", "tick": "15m"},
        "providerSecret": {"name": "grid-keys", "keys": {"ELECTRICITYMAPS_API_TOKEN": "em-token"}},
    }
    values_path = tmp_path_factory.mktemp("helm") / "values.yaml"
    values_path.write_text(json.dumps(values))
    # --take-ownership: the session applied crds/ with kubectl-like calls; the release adopts them, as a cluster
    # moving from plain manifests to Helm would.
    done = helm(kubeconfig, "install", RELEASE, str(CHART), "--namespace", namespace, "--values", str(values_path),
                "--take-ownership", "--wait", "--timeout", "180s")  # fmt: skip
    assert done.returncode == 0, done.stderr
    yield Release(namespace, RELEASE, done.stdout, kubeconfig)
    helm(kubeconfig, "uninstall", RELEASE, "--namespace", namespace, "--wait")
    delete_namespace(api_client, namespace)


def test_release_installs_with_its_notes(release: Release) -> None:
    assert "STATUS: deployed" in release.install_output
    assert f"rollout status deployment/{release.fullname}" in release.install_output
    assert "watching all namespaces" in release.install_output


def test_release_objects_exist_and_the_deployment_is_available(api_client: client.ApiClient, release: Release) -> None:
    apps = client.AppsV1Api(api_client)
    deployment = apps.read_namespaced_deployment(release.fullname, release.namespace)
    assert deployment.spec.replicas == 2
    assert deployment.status.available_replicas == 2  # kwok's fake pods, but the API objects are real
    core = client.CoreV1Api(api_client)
    assert core.read_namespaced_service_account(release.fullname, release.namespace)
    service = core.read_namespaced_service(f"{release.fullname}-metrics", release.namespace)
    assert service.spec.ports[0].port == 9090
    dashboards = core.list_namespaced_config_map(release.namespace, label_selector="grafana_dashboard=1").items
    assert [c.metadata.name for c in dashboards] == [f"{release.fullname}-dashboard"]
    assert json.loads(dashboards[0].data["carbonshift.json"])["panels"]
    rbac_api = client.RbacAuthorizationV1Api(api_client)
    assert rbac_api.read_cluster_role(release.fullname).rules
    assert rbac_api.read_namespaced_role(f"{release.fullname}-secrets", release.namespace).rules
    peering = client.CustomObjectsApi(api_client).get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", PEERING
    )
    assert peering["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    # The CRDs now belong to the release, and are kept when it goes.
    ext = client.ApiextensionsV1Api(api_client)
    crd = ext.read_custom_resource_definition("carbonawarejobs.carbonshift.io")
    assert crd.metadata.annotations["meta.helm.sh/release-name"] == RELEASE
    assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"


def can(api_client: client.ApiClient, release: Release, verb: str, group: str, resource: str, namespace: str) -> bool:
    plural, _, sub = resource.partition("/")
    sar = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=f"system:serviceaccount:{release.namespace}:{release.fullname}",
            groups=["system:serviceaccounts", f"system:serviceaccounts:{release.namespace}", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, group=group, resource=plural, subresource=sub or None, namespace=namespace or None
            ),
        )
    )
    answer = client.AuthorizationV1Api(api_client).create_subject_access_review(sar)
    return bool(answer.status.allowed)


def test_service_account_may_do_everything_rbac_py_grants(api_client: client.ApiClient, release: Release) -> None:
    gen = load_gen_chart()
    scopes = gen.crd_scopes()
    denied = []
    for rule in rbac.CLUSTER_RULES:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                namespace = "" if gen.is_cluster_scoped(resource, scopes) else "some-team"
                denied += [(verb, resource) for verb in rule["verbs"]
                           if not can(api_client, release, verb, group, resource, namespace)]  # fmt: skip
    for rule in rbac.NAMESPACE_RULES:
        for resource in rule["resources"]:
            denied += [
                (v, resource) for v in rule["verbs"] if not can(api_client, release, v, "", resource, release.namespace)
            ]
    assert denied == []


@pytest.mark.parametrize(
    ("verb", "group", "resource", "where"),
    [
        ("get", "", "secrets", "some-team"),
        ("list", "", "secrets", ""),
        ("delete", "", "pods", "some-team"),
        ("create", "", "pods", "some-team"),
        ("delete", "carbonshift.io", "energybudgets", "some-team"),
        ("delete", "kueue.x-k8s.io", "workloads", "some-team"),
        ("update", "apiextensions.k8s.io", "customresourcedefinitions", ""),
        ("create", "rbac.authorization.k8s.io", "clusterrolebindings", ""),
    ],
)
def test_service_account_may_not_do_more(
    api_client: client.ApiClient, release: Release, verb: str, group: str, resource: str, where: str
) -> None:
    assert not can(api_client, release, verb, group, resource, where)


def test_the_chart_splits_rules_by_the_scope_the_api_server_reports(kubeconfig: Path, release: Release) -> None:
    """The namespace-scoped mode binds cluster-scoped and namespaced rules apart; the split must match the server."""
    kubectl = str(require("kubectl"))
    command = [kubectl, "--kubeconfig", str(kubeconfig), "api-resources", "--namespaced=false", "-o", "name"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    cluster_scoped = {(name.partition(".")[2], name.partition(".")[0]) for name in out.split()}
    # Kueue's kinds (the carbon-window AdmissionCheck) are not served by this cluster: their scope comes from the
    # real CRDs of the pinned Kueue release that the project's set-up installs.
    for path in sorted(find_kueue().crd_dir.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if crd and crd["spec"]["scope"] == "Cluster":
                cluster_scoped.add((crd["spec"]["group"], crd["spec"]["names"]["plural"]))
    # Likewise the workload kinds' real CRDs (hack/install-crds.sh): ClusterTrainingRuntime is cluster-scoped.
    for crd in load_crd_documents(crd_path(kind) for kind in CRD_FILES):
        if crd["spec"]["scope"] == "Cluster":
            cluster_scoped.add((crd["spec"]["group"], crd["spec"]["names"]["plural"]))
    gen = load_gen_chart()
    scopes = gen.crd_scopes()
    for rule in rbac.CLUSTER_RULES:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                plural = resource.split("/")[0]
                assert gen.is_cluster_scoped(resource, scopes) == ((group, plural) in cluster_scoped), resource


class DeployedOperator(OperatorProcess):
    """`carbonshift run` with the installed Deployment's arguments (peering, no --standalone), run locally."""

    def __init__(self, deployment_args: list[str], liveness_port: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.deployment_args = deployment_args
        self.liveness_port = liveness_port

    def start(self) -> None:
        self.starts += 1
        self._close_log()
        self.log = log = (self.workdir / f"operator-{self.starts}.log").open("wb")
        local = ("--liveness=", "--metrics-port=", "--webhook-service=", "--webhook-port=")
        args = [a for a in self.deployment_args if not a.startswith(local)]
        args += [f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz", f"--metrics-port={self.metrics_port}"]
        # A local process cannot sit behind the chart's Service: the API server reaches its webhook on the loopback
        # address instead. Everything else (the TLS Secret, the configuration's name) is the chart's.
        args += ["--webhook-address=127.0.0.1", "--webhook-host=127.0.0.1", f"--webhook-port={free_port()}"]
        command = [sys.executable, "-m", "carbonshift.cli", "run", "--kubeconfig", str(self.kubeconfig), *args]
        command += ["--clock", self.clock, *self.extra]
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def deployed_operator(
    api_client: client.ApiClient, release: Release, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DeployedOperator]:
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment(release.fullname, release.namespace)
    container = deployment.spec.template.spec.containers[0]
    assert "--standalone" not in container.args
    # The provider key reaches the process as the chart wires it: a file named by ELECTRICITYMAPS_API_TOKEN_FILE.
    env = {e.name: e.value for e in container.env}
    assert env["ELECTRICITYMAPS_API_TOKEN_FILE"].endswith("/em-token")
    epoch = datetime.now(UTC).replace(microsecond=0)
    start = epoch - timedelta(hours=2)
    values = [80.0 if 3 <= (start + i * SLOT - epoch).total_seconds() / 3600 < 5 else 450.0 for i in range(96 * 4)]
    trace = write_trace(tmp_path / "trace.csv", start, values, SLOT)
    proc = DeployedOperator(
        container.args,
        free_port(),
        kubeconfig=service_account_kubeconfig(
            api_client, release.kubeconfig, release.namespace, release.fullname, tmp_path / "sa.kubeconfig"
        ),
        workdir=tmp_path,
        speed=60.0,
        epoch=epoch,
        extra=["--trace", f"TEST={trace}"],
    )
    proc.start()
    yield proc
    proc.stop()


def test_operator_under_the_chart_service_account_plans_a_job(
    api_client: client.ApiClient, release: Release, deployed_operator: DeployedOperator
) -> None:
    namespace = create_namespace(api_client, "helm-job")
    try:
        k = Cluster(api_client)
        k.create_caj(namespace, caj_manifest("finetune", duration="2h", max_delay="20h"))
        status = wait_for(lambda: (s := k.status(namespace, "finetune")).get("phase") == "Waiting" and s,
                          "the CarbonAwareJob planned and Waiting", timeout_seconds=60)  # fmt: skip
        window = status["plan"]["windows"][0]
        assert window["gPerKWh"] < 200, window  # the low-carbon window of the trace
        planned = next(c for c in status["conditions"] if c["type"] == "Planned")
        assert planned["status"] == "True"
        job = wait_for(lambda: k.job(namespace, "finetune"), "the Job")
        assert job.spec.suspend is True
        # It acted as a peer: its keep-alive record is in the chart's peering object.
        peering = client.CustomObjectsApi(api_client).get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", PEERING
        )
        assert peering.get("status"), "the operator never announced itself in the peering object"
        # The webhook is on, as the chart sets it: kopf filled the chart's configuration, and the operator wrote
        # the TLS Secret the chart names (with the ServiceAccount's rights).
        args = {a.partition("=")[0]: a.partition("=")[2] for a in deployed_operator.deployment_args}
        assert "--webhook" in args
        admission = client.AdmissionregistrationV1Api(api_client)
        config = admission.read_validating_webhook_configuration(args["--webhook-configuration"])
        assert len(config.webhooks) == 3 and all(h.failure_policy == "Fail" for h in config.webhooks)
        secret_namespace, _, secret_name = args["--webhook-tls-secret"].partition("/")
        tls = client.CoreV1Api(api_client).read_namespaced_secret(secret_name, secret_namespace)
        assert set(tls.data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
        # The probes' endpoint answers.
        url = f"http://127.0.0.1:{deployed_operator.liveness_port}/healthz"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
        deployed_operator.assert_alive()
        # No RBAC denial anywhere (the operator watches every namespace; other tests' namespaces being deleted may
        # refuse new objects with NamespaceTerminating, which is not a permission problem).
        denials = re.findall(r"is forbidden: User .{1,200}? cannot \w+ resource", deployed_operator.logs())
        assert not denials, denials
    finally:
        delete_namespace(api_client, namespace)


def test_uninstall_removes_the_release_and_keeps_the_crds(api_client: client.ApiClient, release: Release) -> None:
    done = helm(release.kubeconfig, "uninstall", RELEASE, "--namespace", release.namespace, "--wait")
    assert done.returncode == 0, done.stderr
    assert "These resources were kept due to the resource policy" in done.stdout + done.stderr
    apps = client.AppsV1Api(api_client)
    with pytest.raises(client.ApiException) as gone:
        apps.read_namespaced_deployment(release.fullname, release.namespace)
    assert gone.value.status == 404
    names = {c.metadata.name for c in client.ApiextensionsV1Api(api_client).list_custom_resource_definition().items}
    assert {"carbonawarejobs.carbonshift.io", "energybudgets.carbonshift.io", "computeclusters.carbonshift.io"} <= names
    # The webhook configuration is the chart's, so it goes too: no Fail-policy webhook is left pointing nowhere.
    admission = client.AdmissionregistrationV1Api(api_client)
    with pytest.raises(client.ApiException) as gone:
        admission.read_validating_webhook_configuration(f"{release.fullname}.carbonshift.io")
    assert gone.value.status == 404
