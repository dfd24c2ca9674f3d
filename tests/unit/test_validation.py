"""The rules CEL cannot express (domain/validation.py), tenancy, and the webhook's certificates (adapters/tls.py)."""

from __future__ import annotations

import re
import ssl
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509

from carbonshift.adapters import tls
from carbonshift.api.computecluster import ComputeClusterSpec
from carbonshift.domain.validation import (
    ClusterFacts,
    JobFacts,
    budget_problems,
    cluster_problems,
    gpu_problems,
    job_problems,
    placement_problems,
)

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
H = timedelta(hours=1)


def job(**kw: object) -> JobFacts:
    base: dict[str, object] = {"name": "train", "duration": 4 * H, "deadline": NOW + 24 * H}
    return JobFacts(**{**base, **kw})  # type: ignore[arg-type]


def template(gpus: object) -> dict[str, object]:
    container = {"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": gpus}}}
    return {"spec": {"template": {"spec": {"containers": [container]}}}}


def test_a_sound_job_breaks_no_rule() -> None:
    assert job_problems(job(template=template(8)), NOW) == []
    sound = job(interruptible=True, overhead=timedelta(minutes=2), min_run=H, clusters=("a", "b"))
    assert job_problems(sound, NOW) == []


@pytest.mark.parametrize(
    ("facts", "message"),
    [
        (job(deadline=NOW - H), "spec.deadline 2030-01-01T11:00:00Z is already past (now 2030-01-01T12:00:00Z)"),
        (job(deadline=NOW + 3 * H), "spec.duration (4h) does not fit before spec.deadline 2030-01-01T15:00:00Z"),
        (job(deadline=None, max_delay=2 * H), "spec.maxDelay (2h) is shorter than spec.duration (4h)"),
        (job(interruptible=True, min_run=5 * H), "spec.checkpoint.minRunDuration (5h) is longer than spec.duration"),
        (job(interruptible=True, overhead=4 * H), "spec.checkpoint.overhead (4h) is not shorter than spec"),
        (
            job(interruptible=True, overhead=timedelta(minutes=20), min_run=timedelta(minutes=15)),
            "spec.checkpoint.overhead (20m) is not shorter than spec.checkpoint.minRunDuration (15m)",
        ),
        (job(clusters=("gpu-de", "gpu-no", "gpu-de")), "spec.placement.clusters names gpu-de more than once"),
        (job(name="x" * 64), "metadata.name is 64 characters; the Job created from it may have at most 63"),
    ],
)
def test_each_rule_names_the_fields_and_the_numbers(facts: JobFacts, message: str) -> None:
    problems = job_problems(facts, NOW)
    assert len(problems) == 1, problems
    assert message in problems[0]


def test_deadline_rules_are_left_out_without_a_creation_time() -> None:
    assert job_problems(job(deadline=NOW - H), None) == []
    assert job_problems(job(deadline=None, max_delay=H), None) != []  # maxDelay counts from creation: still checked


@pytest.mark.parametrize(("gpus", "ok"), [(8, True), ("8", True), ("eight", False), ("0.5", False), (0.5, False)])
def test_gpu_counts_must_be_whole(gpus: object, ok: bool) -> None:
    problems = gpu_problems(template(gpus))
    assert (problems == []) is ok
    if not ok:
        assert "containers[0].resources.limits[nvidia.com/gpu]" in problems[0]
        assert "not a whole number of GPUs" in problems[0]


def test_tenancy_a_named_cluster_must_admit_the_namespace() -> None:
    clusters = [ClusterFacts("local", True), ClusterFacts("gpu-no", False)]
    assert placement_problems("ml", ["local"], clusters) == []
    assert "ComputeCluster gpu-no does not admit namespace ml" in placement_problems("ml", ["gpu-no"], clusters)[0]
    assert placement_problems("ml", [], clusters) == []  # the planner only considers the admitting ones
    refused = placement_problems("ml", [], [ClusterFacts("gpu-no", False)])
    assert "no ComputeCluster admits namespace ml" in refused[0]
    assert placement_problems("ml", [], []) == []  # no ComputeCluster: the local cluster, which admits all


def test_a_remote_cluster_admits_no_namespace_until_its_selector_is_set() -> None:
    ref = {"name": "kc", "namespace": "carbonshift-system"}
    remote = ComputeClusterSpec.model_validate({"zone": "NO", "kubeconfigSecretRef": ref, "targetNamespace": "jobs"})
    assert not remote.admits({"team": "ml"})
    wire = remote.model_dump(by_alias=True, exclude_none=True)
    selected = ComputeClusterSpec.model_validate({**wire, "namespaceSelector": {"matchLabels": {"team": "ml"}}})
    assert selected.admits({"team": "ml"}) and not selected.admits({"team": "web"})
    everyone = ComputeClusterSpec.model_validate({**wire, "namespaceSelector": {}})
    assert everyone.admits({})
    local = ComputeClusterSpec.model_validate({"zone": "DE"})
    assert local.admits({})  # the local cluster: the author's own namespace, checked by RBAC


def test_cluster_and_budget_rules() -> None:
    spec = {"kubeconfigSecretRef": {"name": "kc", "namespace": "default"}}
    assert "must be carbonshift-system" in cluster_problems(spec, "carbonshift-system")[0]
    assert (
        cluster_problems({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}, None) == []
    )
    bad = {"selector": {"matchExpressions": [{"key": "team", "operator": "In"}, {"key": "x", "operator": "Exists",
                                                                                 "values": ["y"]}]}}  # fmt: skip
    assert budget_problems(bad) == [
        "spec.selector.matchExpressions[0]: operator In needs at least one value",
        "spec.selector.matchExpressions[1]: operator Exists takes no values",
    ]


# -- certificates -------------------------------------------------------------------------------------------------
def test_serving_certificate_is_signed_by_the_ca_and_names_the_service_and_the_loopback(tmp_path: object) -> None:
    names = ["carbonshift-webhook.carbonshift-system.svc", "127.0.0.1"]
    bundle = tls.new_bundle(names, NOW)
    assert bundle.names() == set(names)
    cert = x509.load_pem_x509_certificate(bundle.cert)
    ca = x509.load_pem_x509_certificate(bundle.ca_cert)
    cert.verify_directly_issued_by(ca)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == tls.SERVING_LIFETIME + timedelta(minutes=5)
    # An SSL context accepts the pair, as kopf's server loads it.
    from pathlib import Path

    base = Path(str(tmp_path))
    (base / "c.pem").write_bytes(bundle.cert)
    (base / "k.pem").write_bytes(bundle.key)
    ssl.create_default_context(purpose=ssl.Purpose.CLIENT_AUTH).load_cert_chain(base / "c.pem", base / "k.pem")


def test_renewal_keeps_the_ca_and_replaces_the_serving_certificate_when_a_third_of_its_life_is_left() -> None:
    names = ["127.0.0.1"]
    bundle = tls.new_bundle(names, NOW)
    assert tls.renewed(bundle, names, NOW + timedelta(days=59)) is None
    fresh = tls.renewed(bundle, names, NOW + timedelta(days=61))
    assert fresh is not None and fresh.ca_cert == bundle.ca_cert and fresh.cert != bundle.cert
    x509.load_pem_x509_certificate(fresh.cert).verify_directly_issued_by(x509.load_pem_x509_certificate(fresh.ca_cert))
    # A new name the webhook is reached by (another Service) gets a new certificate at once, same CA.
    more = tls.renewed(bundle, [*names, "svc.ns.svc"], NOW)
    assert more is not None and more.ca_cert == bundle.ca_cert and "svc.ns.svc" in more.names()
    # Near the CA's own end, everything is new.
    late = tls.renewed(bundle, names, NOW + tls.CA_LIFETIME - timedelta(days=30))
    assert late is not None and late.ca_cert != bundle.ca_cert
    assert tls.renewed(None, names, NOW) is not None


# -- the webhook configuration and flags ------------------------------------------------------------------------------
def test_each_kind_has_a_fail_closed_webhook_at_its_handlers_path_that_skips_the_operators_own_requests() -> None:
    from carbonshift.handlers.admission import webhooks

    user = "system:serviceaccount:carbonshift-system:carbonshift"
    service = {"service": {"namespace": "carbonshift-system", "name": "cs-webhook", "port": 443, "path": ""},
               "caBundle": "Q0E="}  # fmt: skip
    hooks = webhooks("cs.carbonshift.io", service, user)
    assert [h["name"] for h in hooks] == [
        "carbonawarejob.cs.carbonshift.io", "energybudget.cs.carbonshift.io", "computecluster.cs.carbonshift.io"
    ]  # fmt: skip
    assert [h["clientConfig"]["service"]["path"] for h in hooks] == [
        "/carbonawarejob",
        "/energybudget",
        "/computecluster",
    ]
    assert service["service"]["path"] == ""  # the caller's config is not changed
    for hook, plural in zip(hooks, ["carbonawarejobs", "energybudgets", "computeclusters"], strict=True):
        assert hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
        assert hook["rules"][0]["resources"] == [plural] and hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
        assert hook["clientConfig"]["caBundle"] == "Q0E="
        assert hook["matchConditions"] == [
            {"name": "not-the-operator", "expression": f'request.userInfo.username != "{user}"'}
        ]
    by_url = webhooks("x", {"url": "https://127.0.0.1:9443/"}, user)
    assert by_url[0]["clientConfig"]["url"] == "https://127.0.0.1:9443/carbonawarejob"


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        (["--webhook-service", "carbonshift-webhook"], "expected NAMESPACE/NAME[:PORT]"),
        (["--webhook-service", "ns/name:https"], "expected NAMESPACE/NAME[:PORT]"),
        (["--webhook-tls-secret", "only-a-name"], "expected NAMESPACE/NAME"),
    ],
)
def test_malformed_webhook_flags_are_refused_by_name(flags: list[str], complaint: str) -> None:
    import argparse

    from carbonshift.commands import run

    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    with pytest.raises(ValueError, match=re.escape(complaint)):
        run.webhook_options(parser.parse_args(["--webhook", *flags]))
    good = run.webhook_options(
        parser.parse_args(["--webhook", "--webhook-service", "ns/svc", "--webhook-tls-secret", "ns/tls"])
    )
    assert good.service == ("ns", "svc", 443) and good.tls_secret == ("ns", "tls")


def test_every_example_job_passes_the_rules_cel_cannot_express() -> None:
    from carbonshift.api.carbonawarejob import CarbonAwareJob
    from carbonshift.handlers.validation import facts
    from tests.catalogue import load_examples

    jobs = [doc for _, doc in load_examples() if doc["kind"] == "CarbonAwareJob"]
    assert jobs
    for doc in jobs:
        assert job_problems(facts(CarbonAwareJob.model_validate(doc)), datetime.now(UTC)) == [], doc["metadata"]
