"""With the admission webhook off, the operator flags each invalid CarbonAwareJob on its first pass: an InvalidSpec
condition with the API server's (or the rule's) message, one Warning Event, no Job, and no retry loop or traceback
in its log. Fixing the spec lets the job go on.

The same catalogue cases as the webhook's (tests/catalogue, `via: webhook`), for the CarbonAwareJob ones.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kubernetes import client
from tests.catalogue import load_catalogue

from e2e.harness import Cluster, OperatorInstall, OperatorProcess, wait_until

SPEED = 60.0  # a 5-minute tick every 5 s: several passes over each job while the test watches
CASES = [c for c in load_catalogue("webhook") if c.kind == "CarbonAwareJob"]


@pytest.fixture
def operator(
    api_client: client.ApiClient, operator_install: OperatorInstall, installed_crds: object, tmp_path: Path
) -> Iterator[OperatorProcess]:
    webhooks = client.AdmissionregistrationV1Api(api_client).list_validating_webhook_configuration()
    registered = [w.metadata.name for w in webhooks.items if "carbonshift" in (w.metadata.name or "") and w.webhooks]
    assert not registered, f"webhooks are registered in {registered}"  # (the chart's configuration stays empty)
    config = operator_install.kubeconfig(tmp_path / "operator.kubeconfig")
    proc = OperatorProcess(
        config, tmp_path, speed=SPEED, epoch=datetime.now(UTC), extra=["--tick", "5m", "--demo-traces"]
    )
    proc.start()
    try:
        wait_until(proc.serving, "the operator to start", timeout=30, interval=0.05)
        yield proc
    finally:  # also when it never started: its process and log file are not left to the next test
        proc.stop()


def invalid_spec(k: Cluster, namespace: str, name: str) -> dict[str, str] | None:
    for cond in k.status(namespace, name).get("conditions") or []:
        if cond["type"] == "InvalidSpec" and cond["status"] == "True":
            return dict(cond)
    return None


def test_each_invalid_template_is_flagged_once_without_a_retry_loop(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client)
    for case in CASES:
        k.create_caj(namespace, case.manifest)
    for case in CASES:
        name = case.manifest["metadata"]["name"]
        cond = wait_until(lambda name=name: invalid_spec(k, namespace, name), f"InvalidSpec on {name}", timeout=60)
        assert case.expected_error in cond["message"], (case.name, cond)
        assert cond["reason"] in ("InvalidSpec", "JobRejected"), cond
        assert k.status(namespace, name)["phase"] == "Pending"
    time.sleep(3 * 300 / SPEED)  # three more ticks of the operator
    operator.assert_alive()
    for case in CASES:
        name = case.manifest["metadata"]["name"]
        warnings = [e for e in k.events(namespace, name) if e.type == "Warning"]
        assert len(warnings) == 1 and (warnings[0].count or 1) == 1, (name, [(e.reason, e.count) for e in warnings])
        assert warnings[0].message == invalid_spec(k, namespace, name)["message"]  # type: ignore[index]
        assert k.job(namespace, name) is None, f"{name}: a Job was created"
    log = operator.logs()
    assert "Traceback" not in log, log[-4000:]
    assert "reconcile failed" not in log, log[-4000:]


def test_a_fixed_spec_goes_on_to_its_job(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client)
    case = next(c for c in CASES if c.name == "restart-policy-always")
    k.create_caj(namespace, case.manifest)
    wait_until(lambda: invalid_spec(k, namespace, case.name), "InvalidSpec", timeout=60)
    fix = {"spec": {"template": {"spec": {"template": {"spec": {"restartPolicy": "Never"}}}}}}
    k.custom.patch_namespaced_custom_object("carbonshift.io", "v1alpha1", namespace, "carbonawarejobs", case.name, fix)
    job = wait_until(lambda: k.job(namespace, case.name), "the Job once the spec is fixed", timeout=60)
    assert job.spec.template.spec.restart_policy == "Never"
    assert invalid_spec(k, namespace, case.name) is None
