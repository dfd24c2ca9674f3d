"""The admission webhook on the real API server: what `kubectl apply` says to a bad manifest, an author without the
right to create Jobs, and a namespace a ComputeCluster does not admit.

The operator runs as a local process under the installed ServiceAccount (the chart's, by default), serving the
webhook on the loopback address; kopf registers it in a ValidatingWebhookConfiguration of this module's own name,
removed at the end (the webhooks stay registered when the operator stops: failure policy Fail).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from tests.catalogue import InvalidCase, load_catalogue

from carbonshift_dev.devcluster.binaries import require
from carbonshift_dev.devcluster.operator_process import OPERATOR_NAMESPACE
from carbonshift_dev.devcluster.testing import create_namespace, delete_namespace
from e2e.harness import Cluster, OperatorInstall, OperatorProcess, caj_manifest, free_port, wait_until

CONFIGURATION = "e2e-admission.carbonshift.io"
TLS_SECRET = "e2e-admission-webhook-tls"
CASES = load_catalogue("webhook")
DENIED = "denied the request"


def kubectl(kubeconfig: Path, manifest: dict[str, Any], namespace: str | None, *args: str) -> tuple[int, str]:
    """`kubectl apply -f -` as a user would run it; (exit code, stdout+stderr)."""
    command = [str(require("kubectl")), "--kubeconfig", str(kubeconfig), *args, "apply", "-f", "-"]
    if namespace:
        command += ["--namespace", namespace]
    done = subprocess.run(
        command, input=yaml.safe_dump(manifest), capture_output=True, text=True, check=False, timeout=60
    )
    return done.returncode, done.stdout + done.stderr


def run_kubectl(kubeconfig: Path, *args: str) -> tuple[int, str]:
    command = [str(require("kubectl")), "--kubeconfig", str(kubeconfig), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    return done.returncode, done.stdout + done.stderr


def webhook_ready(api: client.ApiClient) -> bool:
    try:
        config = client.AdmissionregistrationV1Api(api).read_validating_webhook_configuration(CONFIGURATION)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    hooks = config.webhooks or []
    return len(hooks) == 3 and all(h.client_config.ca_bundle and h.client_config.url for h in hooks)


def delete_configuration(api: client.ApiClient) -> None:
    try:
        client.AdmissionregistrationV1Api(api).delete_validating_webhook_configuration(CONFIGURATION)
    except client.ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture(scope="module")
def webhook_operator(
    api_client: client.ApiClient,
    operator_install: OperatorInstall,
    installed_crds: object,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    workdir = tmp_path_factory.mktemp("admission")
    config = operator_install.kubeconfig(workdir / "operator.kubeconfig")
    port = free_port()
    extra = ["--webhook", "--webhook-address", "127.0.0.1", "--webhook-host", "127.0.0.1"]
    extra += ["--webhook-port", str(port), "--webhook-configuration", CONFIGURATION]
    extra += ["--operator-namespace", operator_install.namespace, "--tick", "5m", "--demo-traces"]
    # The TLS in a Secret, as the chart has it: the operator makes it (under the installed ServiceAccount's rights)
    # and a restarted operator serves the same certificate.
    extra += ["--webhook-tls-secret", f"{operator_install.namespace}/{TLS_SECRET}"]
    proc = OperatorProcess(config, workdir, speed=1.0, epoch=datetime.now(UTC), extra=extra)
    proc.start()
    try:
        wait_until(lambda: webhook_ready(api_client), "kopf to register the webhooks", timeout=60, interval=0.2)
        yield proc
    finally:
        proc.stop()
        delete_configuration(api_client)
        with contextlib.suppress(client.ApiException):  # absent when the operator never started
            client.CoreV1Api(api_client).delete_namespaced_secret(TLS_SECRET, operator_install.namespace)
    assert "Traceback" not in proc.logs(), proc.logs()[-4000:]


@pytest.fixture(scope="module")
def team(api_client: client.ApiClient) -> Iterator[str]:
    name = create_namespace(api_client, "admission-team")
    yield name
    delete_namespace(api_client, name)


def probe_until_served(kubeconfig: Path, namespace: str) -> None:
    """The configuration is registered a moment before the endpoint answers: wait for a first refusal."""
    bad = next(c for c in CASES if c.name == "restart-policy-always").manifest
    bad = {**bad, "metadata": {"name": "probe"}}
    wait_until(lambda: DENIED in kubectl(kubeconfig, bad, namespace)[1], "the webhook to answer", timeout=30)


def read_object(custom: client.CustomObjectsApi, plural: str | None, namespace: str, name: str) -> object:
    if plural:
        return custom.get_namespaced_custom_object("carbonshift.io", "v1alpha1", namespace, plural, name)
    return custom.get_cluster_custom_object("carbonshift.io", "v1alpha1", "computeclusters", name)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kubectl_apply_refuses_the_invalid_manifest_with_its_reason(
    case: InvalidCase, kubeconfig: Path, team: str, webhook_operator: OperatorProcess, api_client: client.ApiClient
) -> None:
    probe_until_served(kubeconfig, team)
    namespaced = case.kind != "ComputeCluster"
    code, out = kubectl(kubeconfig, case.manifest, team if namespaced else None)
    assert code != 0, out
    assert DENIED in out, out
    assert case.expected_error in out, out
    # Refused means not stored.
    crd_plural = {"CarbonAwareJob": "carbonawarejobs", "EnergyBudget": "energybudgets"}.get(case.kind)
    custom = client.CustomObjectsApi(api_client)
    name = case.manifest["metadata"]["name"]
    with pytest.raises(client.ApiException) as missing:
        read_object(custom, crd_plural, team, name)
    assert missing.value.status == 404


def test_a_valid_job_is_admitted_and_the_operator_creates_its_job(
    kubeconfig: Path, team: str, webhook_operator: OperatorProcess, api_client: client.ApiClient
) -> None:
    # Threshold at 1 g/kWh, below every slot of the replayed DE trace: the job waits for its forced start whatever
    # the time of day the test runs at, so it has a next transition to show. (With Optimal on the trace replayed
    # at the wall clock, the plan depended on the hour: at 18:37 UTC it ran at once, to completion, with no next
    # transition, and the columns check below could never pass.)
    manifest = caj_manifest("valid", duration="1h", max_delay="20h", policy="Threshold", extra_spec={"maxIntensity": 1})
    code, out = kubectl(kubeconfig, manifest, team)
    assert code == 0 and "created" in out, out
    k = Cluster(api_client)
    wait_until(lambda: k.job(team, "valid"), "the operator to create the Job", timeout=60)

    # Created suspended, and kept suspended while the job waits: the Job's suspend field agrees with the phase.
    def suspend_agrees_with_phase() -> str | None:
        phase = k.status(team, "valid").get("phase")
        job = k.job(team, "valid")
        return phase if job is not None and phase == "Waiting" and job.spec.suspend is True else None

    wait_until(suspend_agrees_with_phase, "the Job created suspended and the job Waiting", timeout=60)
    # `kubectl get caj` shows the deadline and the next transition as UTC times (a date column showed <invalid>).

    def columns_show_the_status() -> str | None:
        # Status and table are read one after the other; a re-plan in between moves the next transition, so the
        # pair is read again until they agree.
        status = k.status(team, "valid")
        out = run_kubectl(kubeconfig, "get", "carbonawarejob", "valid", "--namespace", team)[1]
        row = out.splitlines()[1] if len(out.splitlines()) > 1 else ""
        nxt = status.get("nextTransitionTime")
        return out if nxt and status.get("deadline") and status["deadline"] in row and nxt in row else None

    out = wait_until(columns_show_the_status, "kubectl get caj to show the planned times", timeout=60)
    assert out.splitlines()[0].split()[:5] == ["NAME", "PHASE", "CLUSTER", "NEXT", "DEADLINE"], out
    assert "<invalid>" not in out, out
    # `kubectl get eb` shows use against the limits first.
    budget = {"apiVersion": "carbonshift.io/v1alpha1", "kind": "EnergyBudget", "metadata": {"name": "team"},
              "spec": {"limits": {"energyKWh": 500, "emissionsKg": 120}, "action": "Notify"}}  # fmt: skip
    assert kubectl(kubeconfig, budget, team)[0] == 0
    code, out = run_kubectl(kubeconfig, "get", "energybudget", "team", "--namespace", team)
    assert out.splitlines()[0].split()[:3] == ["NAME", "EXCEEDED", "USED"], out
    assert "KWH LIMIT" in out.splitlines()[0] and "500" in out.splitlines()[1] and "120" in out.splitlines()[1], out
    # An update the operator makes itself (finalizer, kopf's annotations) and a spec change both pass the webhook.
    code, out = kubectl(kubeconfig, {**manifest, "spec": {**manifest["spec"], "duration": "2h"}}, team)
    assert code == 0 and "configured" in out, out


def role(api: client.ApiClient, namespace: str, name: str, user: str, resources: list[tuple[str, str]]) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    rules = [{"apiGroups": [g], "resources": [r], "verbs": ["create", "get", "patch"]} for g, r in resources]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": name}, "rules": rules})
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    rbac.create_namespaced_role_binding(namespace, binding)


def test_an_author_who_may_not_create_jobs_is_refused(
    kubeconfig: Path, api_client: client.ApiClient, webhook_operator: OperatorProcess
) -> None:
    namespace = create_namespace(api_client, "admission-rbac")
    try:
        role(api_client, namespace, "caj-only", "alice", [("carbonshift.io", "carbonawarejobs")])
        role(api_client, namespace, "caj-and-jobs", "bob", [("carbonshift.io", "carbonawarejobs"), ("batch", "jobs")])
        probe_until_served(kubeconfig, namespace)
        manifest = caj_manifest("escalate", duration="1h", max_delay="20h")
        pod_spec = manifest["spec"]["template"]["spec"]["template"]["spec"]
        pod_spec["serviceAccountName"] = "default"
        code, out = kubectl(kubeconfig, manifest, namespace, "--as", "alice")
        assert code != 0, out
        assert DENIED in out and f"alice may not create Jobs in namespace {namespace}" in out, out
        assert Cluster(api_client).job(namespace, "escalate") is None
        # The same manifest from someone who may create Jobs there is admitted.
        code, out = kubectl(kubeconfig, manifest, namespace, "--as", "bob")
        assert code == 0 and "created" in out, out
        # Groups count as the API server's authorizer counts them: a Role bound to alice's group lets her.
        client.RbacAuthorizationV1Api(api_client).patch_namespaced_role_binding(
            "caj-and-jobs", namespace,
            {"subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "trainers"}]},
        )  # fmt: skip
        second = {**manifest, "metadata": {"name": "with-group"}}
        code, out = kubectl(kubeconfig, second, namespace, "--as", "alice", "--as-group", "trainers")
        assert code == 0 and "created" in out, out
    finally:
        delete_namespace(api_client, namespace)


def test_a_workload_ref_needs_the_right_to_patch_that_workload(
    kubeconfig: Path, api_client: client.ApiClient, webhook_operator: OperatorProcess
) -> None:
    """Nobody gets more than they had: carbonshift suspends and resumes a referenced workload with its own rights,
    so the author must be allowed to patch that very object (and it must exist)."""
    namespace = create_namespace(api_client, "admission-ref")
    try:
        role(api_client, namespace, "caj-only", "carol", [("carbonshift.io", "carbonawarejobs")])
        role(api_client, namespace, "caj-and-jobs", "dave", [("carbonshift.io", "carbonawarejobs"), ("batch", "jobs")])
        probe_until_served(kubeconfig, namespace)
        job = caj_manifest("theirs", duration="1h")["spec"]["template"]
        body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "theirs"},
                "spec": {**job["spec"], "suspend": True}}  # fmt: skip
        for container in body["spec"]["template"]["spec"]["containers"]:  # the client wants quantities as strings
            limits = container["resources"]["limits"]
            limits["nvidia.com/gpu"] = str(limits["nvidia.com/gpu"])
        client.BatchV1Api(api_client).create_namespaced_job(namespace, body)
        manifest = caj_manifest("drive-theirs", duration="1h", max_delay="20h")
        del manifest["spec"]["template"]
        manifest["spec"]["workloadRef"] = {"apiVersion": "batch/v1", "kind": "Job", "name": "theirs"}
        code, out = kubectl(kubeconfig, manifest, namespace, "--as", "carol")
        assert code != 0, out
        assert DENIED in out and f"carol may not patch Job theirs in namespace {namespace}" in out, out
        # A reference to a Job that does not exist is refused too, even for someone who may patch Jobs.
        missing = {**manifest, "spec": {**manifest["spec"], "workloadRef": {**manifest["spec"]["workloadRef"],
                                                                            "name": "nobodys"}}}  # fmt: skip
        code, out = kubectl(kubeconfig, missing, namespace, "--as", "dave")
        assert code != 0 and "Job nobodys does not exist" in out, out
        code, out = kubectl(kubeconfig, manifest, namespace, "--as", "dave")
        assert code == 0 and "created" in out, out
    finally:
        delete_namespace(api_client, namespace)


def test_a_namespace_the_compute_cluster_does_not_admit_is_refused(
    kubeconfig: Path, api_client: client.ApiClient, webhook_operator: OperatorProcess
) -> None:
    custom = client.CustomObjectsApi(api_client)
    outside = create_namespace(api_client, "admission-outside")
    inside = create_namespace(api_client, "admission-inside")
    client.CoreV1Api(api_client).patch_namespace(inside, {"metadata": {"labels": {"carbonshift-e2e/team": "ml"}}})
    remote = {
        "apiVersion": "carbonshift.io/v1alpha1",
        "kind": "ComputeCluster",
        "metadata": {"name": "e2e-far"},
        "spec": {
            "zone": "NO",
            "kubeconfigSecretRef": {"name": "e2e-far-kubeconfig", "namespace": OPERATOR_NAMESPACE},
            "targetNamespace": "ml-jobs",
        },
    }
    try:
        code, out = kubectl(kubeconfig, remote, None)
        assert code == 0, out
        code, out = run_kubectl(kubeconfig, "get", "computecluster", "e2e-far")
        assert out.splitlines()[0].split()[:4] == ["NAME", "READY", "ZONE", "FREE"], out
        assert "TARGET NAMESPACE" in out.splitlines()[0] and "ml-jobs" in out.splitlines()[1], out
        probe_until_served(kubeconfig, outside)
        pinned = caj_manifest(
            "pinned", duration="1h", max_delay="20h", extra_spec={"placement": {"clusters": ["e2e-far"]}}
        )
        # A remote cluster admits no namespace until its administrator sets namespaceSelector.
        code, out = kubectl(kubeconfig, pinned, inside)
        assert code != 0 and "ComputeCluster e2e-far does not admit namespace" in out, out
        code, out = kubectl(kubeconfig, caj_manifest("anywhere", duration="1h", max_delay="20h"), inside)
        assert code != 0 and f"no ComputeCluster admits namespace {inside}" in out, out
        selector = {"spec": {"namespaceSelector": {"matchLabels": {"carbonshift-e2e/team": "ml"}}}}
        custom.patch_cluster_custom_object("carbonshift.io", "v1alpha1", "computeclusters", "e2e-far", selector)
        code, out = kubectl(kubeconfig, pinned, outside)
        assert code != 0 and f"ComputeCluster e2e-far does not admit namespace {outside}" in out, out
        code, out = kubectl(kubeconfig, pinned, inside)
        assert code == 0 and "created" in out, out
    finally:
        for namespace in (inside, outside):
            delete_namespace(api_client, namespace)
        try:
            custom.delete_cluster_custom_object("carbonshift.io", "v1alpha1", "computeclusters", "e2e-far")
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        wait_until(
            lambda: not custom.list_cluster_custom_object("carbonshift.io", "v1alpha1", "computeclusters")["items"],
            "the ComputeCluster to go (later tests plan on the local cluster)",
            timeout=30,
        )


def test_while_the_operator_is_down_changes_are_refused_not_let_through(
    kubeconfig: Path, api_client: client.ApiClient, team: str, webhook_operator: OperatorProcess
) -> None:
    """Failure policy Fail, persistent webhooks: nothing unchecked is admitted during an outage. Runs last here."""
    admission = client.AdmissionregistrationV1Api(api_client)
    bundle = admission.read_validating_webhook_configuration(CONFIGURATION).webhooks[0].client_config.ca_bundle
    webhook_operator.stop()
    assert webhook_ready(api_client), "the webhooks must stay registered when the operator stops"
    code, out = kubectl(kubeconfig, caj_manifest("during-outage", duration="1h", max_delay="20h"), team)
    assert code != 0 and "failed calling webhook" in out, out
    # The operator's own writes are not sent to its webhook (matchConditions): it never waits on itself.
    touch = ["annotate", "carbonawarejob", "valid", "--namespace", team, "--overwrite"]
    code, out = run_kubectl(kubeconfig, *touch, "carbonshift-e2e/touched=admin")
    assert code != 0 and "failed calling webhook" in out, out
    code, out = run_kubectl(webhook_operator.kubeconfig, *touch, "carbonshift-e2e/touched=operator")
    assert code == 0, out
    webhook_operator.start()
    time.sleep(0.5)
    wait_until(
        lambda: kubectl(kubeconfig, caj_manifest("after-outage", duration="1h", max_delay="20h"), team)[0] == 0,
        "the restarted operator to admit again",
        timeout=60,
        interval=1.0,
    )
    # It served the certificate it kept in the Secret: the API server's trust did not have to change.
    assert admission.read_validating_webhook_configuration(CONFIGURATION).webhooks[0].client_config.ca_bundle == bundle
