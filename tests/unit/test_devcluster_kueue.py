"""The dev cluster's Kueue set-up, without a cluster: certificates the rotator accepts, webhooks kept, config."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from carbonshift_dev.devcluster.kueue import KueueInstall, crd_documents, make_certs, manager_config, webhook_documents


def test_certificates_verify_for_loopback_and_the_service_name_with_pkcs1_keys(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    assert certs["ca.key"].startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # the rotator parses PKCS#1 only
    assert certs["tls.key"].startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    for check in (["-verify_ip", "127.0.0.1"], ["-verify_hostname", "kueue-webhook-service.kueue-system.svc"]):
        result = subprocess.run(
            ["openssl", "verify", "-CAfile", "ca.crt", "-purpose", "sslserver", *check, "tls.crt"],
            cwd=tmp_path, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
    # Valid well beyond the rotator's 90-day look-ahead, or it would replace them with certificates for the Service.
    result = subprocess.run(
        ["openssl", "x509", "-in", "tls.crt", "-checkend", str(400 * 86400)], cwd=tmp_path, check=False
    )
    assert result.returncode == 0


def fake_install(tmp_path: Path) -> KueueInstall:
    crd_dir, hooks = tmp_path / "crd", tmp_path / "webhook"
    crd_dir.mkdir()
    hooks.mkdir()
    for plural in ("workloads", "resourceflavors"):
        crd = {"kind": "CustomResourceDefinition", "metadata": {"name": f"{plural}.kueue.x-k8s.io"},
               "spec": {"names": {"plural": plural}}}  # fmt: skip
        (crd_dir / f"{plural}.yaml").write_text(yaml.safe_dump(crd))

    def hook(name: str, group: str, resource: str) -> dict[str, object]:
        return {"name": name, "clientConfig": {"service": {"name": "webhook-service", "path": f"/mutate-{resource}"}},
                "rules": [{"apiGroups": [group], "resources": [resource]}]}  # fmt: skip

    doc = {"kind": "MutatingWebhookConfiguration", "metadata": {"name": "mutating-webhook-configuration"},
           "webhooks": [hook("mjob", "batch", "jobs"), hook("mpod", "", "pods"),
                        hook("mwl", "kueue.x-k8s.io", "workloads")]}  # fmt: skip
    (hooks / "manifests.yaml").write_text(yaml.safe_dump(doc))
    return KueueInstall(tmp_path / "kueue", crd_dir, "v0.17.0")


def test_webhooks_point_at_loopback_and_only_jobs_and_kueue_kinds_are_kept(tmp_path: Path) -> None:
    docs = webhook_documents(fake_install(tmp_path), 9443, "Q0E=")
    assert [d["metadata"]["name"] for d in docs] == ["kueue-mutating-webhook-configuration"]
    hooks = docs[0]["webhooks"]
    assert [h["name"] for h in hooks] == ["mjob", "mwl"]  # a pods webhook would refuse every pod: not enabled here
    assert hooks[0]["clientConfig"] == {"url": "https://127.0.0.1:9443/mutate-jobs", "caBundle": "Q0E="}


def test_converted_crds_get_a_loopback_conversion_webhook(tmp_path: Path) -> None:
    by_plural = {d["spec"]["names"]["plural"]: d for d in crd_documents(fake_install(tmp_path), 9443, "Q0E=")}
    conversion = by_plural["workloads"]["spec"]["conversion"]
    assert conversion["webhook"]["clientConfig"]["url"] == "https://127.0.0.1:9443/convert"
    assert "conversion" not in by_plural["resourceflavors"]["spec"]


def test_manager_config_manages_only_labelled_batch_jobs(tmp_path: Path) -> None:
    config = manager_config(tmp_path, 9443, 8081, tmp_path / "certs")
    assert config["manageJobsWithoutQueueName"] is False
    assert config["integrations"] == {"frameworks": ["batch/job"]}
    assert config["webhook"] == {"host": "127.0.0.1", "port": 9443, "certDir": str(tmp_path / "certs")}
