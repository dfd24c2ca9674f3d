"""Kueue on the dev cluster: its real manager (built by `hack/install-tools.sh`), CRDs and webhooks, on loopback.

`start_kueue(cluster)` (or `ClusterConfig(kueue=True)`) does what Kueue's release manifests do, adapted to a
control plane whose API server cannot reach Services:

- applies the CRDs of the same release (config/components/crd/bases, copied next to the binary), with the
  conversion webhooks of its kustomize patches (localqueues, clusterqueues, cohorts, workloads,
  multikueueclusters) pointing at `https://127.0.0.1:<port>/convert`;
- applies the webhook configurations of config/components/webhook/manifests.yaml, keeping only Kueue's own
  kinds and batch/v1 Jobs (the integration enabled here), with each `clientConfig.service` turned into a
  loopback URL;
- runs Kueue's internal cert management as in a cluster, but seeds its Secret with a CA and serving certificate
  made here (openssl, like devcluster.pki) that is valid for 127.0.0.1 as well as the webhook Service's name:
  the rotator finds the pair valid and keeps it, injects the CA bundle, and the API server verifies the
  loopback URL. (Kueue's own certificate would name only `kueue-webhook-service.kueue-system.svc`; without
  internal cert management it reads its metrics certificate from a fixed path under /etc.)
- starts the manager with a configuration that manages batch/v1 Jobs carrying `kueue.x-k8s.io/queue-name`
  (`manageJobsWithoutQueueName: false`), and waits until a dry-run request through its webhook succeeds.

The process joins the cluster's processes, so `cluster.stop()` stops it first.
"""

from __future__ import annotations

import base64
import copy
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from carbonshift_dev.devcluster import controllers
from carbonshift_dev.devcluster.binaries import (
    MissingBinaryError,
)
from carbonshift_dev.devcluster.controllers import RunningManager, pinned_dir, release_version
from carbonshift_dev.devcluster.processes import ManagedProcess, free_loopback_port

KUEUE_DIR_ENV = "CARBONSHIFT_KUEUE_DIR"
NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"
SECRET = "kueue-webhook-server-cert"
CA_NAME = "kueue-ca"  # the rotator checks the CA is valid for this name
CONVERTED = ("localqueues", "clusterqueues", "cohorts", "workloads", "multikueueclusters")
WEBHOOK_CONFIGS = {
    "mutating-webhook-configuration": "kueue-mutating-webhook-configuration",
    "validating-webhook-configuration": "kueue-validating-webhook-configuration",
}
FIELD_MANAGER = "carbonshift-devcluster"
CERT_DAYS = 3650  # the rotator renews anything that expires within 90 days


class KueueStartError(RuntimeError):
    """Kueue did not become ready; the message says what was waited for and where its log is."""


@dataclass(frozen=True)
class KueueInstall:
    """The manager binary and the CRDs of one Kueue release."""

    binary: Path
    crd_dir: Path
    version: str


Kueue = RunningManager[KueueInstall]  # a running Kueue manager of a dev cluster


def kueue_dir() -> Path:
    return pinned_dir(KUEUE_DIR_ENV, "KUEUE_VERSION", "kueue")


def find_kueue(directory: Path | None = None) -> KueueInstall:
    where = directory or kueue_dir()
    binary, crds = where / "kueue", where / "crd"
    present = (where / "webhook" / "manifests.yaml").is_file() and any(crds.glob("*.yaml"))
    version = release_version(where, binary, present, "Kueue", "kueue")
    return KueueInstall(binary=binary, crd_dir=crds, version=version)


def _openssl(args: list[str], cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise MissingBinaryError("openssl not found on PATH: install it (Debian package `openssl`)")
    result = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KueueStartError(f"openssl {args[0]} failed in {cwd}: {result.stderr.strip()}")


def make_certs(directory: Path) -> dict[str, bytes]:
    """A CA and a serving certificate in the shapes Kueue's cert rotator accepts (RSA, PKCS#1 keys)."""
    directory.mkdir(parents=True, exist_ok=True)
    rsa = ["-newkey", "rsa:2048", "-nodes"]
    (directory / "ca.ext").write_text(
        f"basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,digitalSignature,keyEncipherment\n"
        f"subjectAltName=DNS:{CA_NAME}\n",
        encoding="utf-8",
    )
    _openssl(
        ["req", "-new", *rsa, "-keyout", "ca.pkcs8", "-out", "ca.csr", "-subj", f"/O=kueue/CN={CA_NAME}"], directory
    )
    _openssl(["rsa", "-in", "ca.pkcs8", "-traditional", "-out", "ca.key"], directory)
    _openssl(
        ["x509", "-req", "-in", "ca.csr", "-signkey", "ca.key", "-days", str(CERT_DAYS), "-extfile", "ca.ext",
         "-out", "ca.crt"],
        directory,
    )  # fmt: skip
    (directory / "tls.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        f"subjectAltName=DNS:{SERVICE}.{NAMESPACE}.svc,IP:127.0.0.1,DNS:localhost\n",
        encoding="utf-8",
    )
    _openssl(
        ["req", "-new", *rsa, "-keyout", "tls.pkcs8", "-out", "tls.csr", "-subj", f"/CN={SERVICE}.{NAMESPACE}.svc"],
        directory,
    )
    _openssl(["rsa", "-in", "tls.pkcs8", "-traditional", "-out", "tls.key"], directory)
    _openssl(
        ["x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", str(CERT_DAYS), "-extfile", "tls.ext", "-out", "tls.crt"],
        directory,
    )  # fmt: skip
    for key in ("ca.key", "tls.key", "ca.pkcs8", "tls.pkcs8"):
        (directory / key).chmod(0o600)
    return {name: (directory / name).read_bytes() for name in ("ca.crt", "ca.key", "tls.crt", "tls.key")}


def _apply(client: httpx.Client, path: str, obj: dict[str, Any]) -> None:
    """Server-side apply (create or update) of one object."""
    response = client.patch(
        f"{path}/{obj['metadata']['name']}",
        params={"fieldManager": FIELD_MANAGER, "force": "true"},
        content=yaml.safe_dump(obj).encode(),
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    if response.status_code not in (200, 201):
        raise KueueStartError(
            f"applying {obj['kind']} {obj['metadata']['name']}: HTTP {response.status_code} {response.text[:300]}"
        )


def crd_documents(install: KueueInstall, webhook_port: int, ca_bundle: str) -> list[dict[str, Any]]:
    documents = []
    for path in sorted(install.crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not doc:
                continue
            if doc["spec"]["names"]["plural"] in CONVERTED:
                doc["spec"]["conversion"] = {
                    "strategy": "Webhook",
                    "webhook": {
                        "clientConfig": {"url": f"https://127.0.0.1:{webhook_port}/convert", "caBundle": ca_bundle},
                        "conversionReviewVersions": ["v1"],
                    },
                }
            documents.append(doc)
    return documents


def _kept(hook: dict[str, Any]) -> bool:
    """Kueue's own kinds and batch/v1 Jobs; webhooks of integrations not enabled here would reject everything."""
    for rule in hook.get("rules") or []:
        groups = set(rule.get("apiGroups") or [])
        if "kueue.x-k8s.io" in groups or ("batch" in groups and "jobs" in (rule.get("resources") or [])):
            return True
    return False


def webhook_documents(install: KueueInstall, webhook_port: int, ca_bundle: str) -> list[dict[str, Any]]:
    source = install.crd_dir.parent / "webhook" / "manifests.yaml"
    documents = []
    for doc in yaml.safe_load_all(source.read_text(encoding="utf-8")):
        if not doc:
            continue
        doc = copy.deepcopy(doc)
        doc["metadata"] = {"name": WEBHOOK_CONFIGS[doc["metadata"]["name"]]}
        hooks = []
        for hook in doc.get("webhooks") or []:
            if not _kept(hook):
                continue
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{webhook_port}{path}", "caBundle": ca_bundle}
            hooks.append(hook)
        doc["webhooks"] = hooks
        documents.append(doc)
    return documents


def manager_config(workdir: Path, webhook_port: int, health_port: int, cert_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},  # off: nothing scrapes it here
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": True, "webhookServiceName": SERVICE, "webhookSecretName": SECRET},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": ["batch/job"]},
        "featureGates": {"VisibilityOnDemand": False},  # its API server would bind a fixed port
        "clientConnection": {"qps": 50, "burst": 100},
    }


def start_kueue(
    server_client: httpx.Client,
    kubeconfig: Path,
    workdir: Path,
    processes: list[ManagedProcess],
    *,
    install: KueueInstall | None = None,
    timeout_seconds: float = 120.0,
) -> Kueue:
    """Install Kueue's CRDs and webhooks into the cluster `server_client` talks to, start the manager, wait."""
    install = install or find_kueue()
    directory = workdir / "kueue"
    cert_dir = directory / "certs"
    certs = make_certs(cert_dir)
    ca_bundle = base64.b64encode(certs["ca.crt"]).decode()
    webhook_port, health_port = free_loopback_port(), free_loopback_port()

    _apply(
        server_client, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    )
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NAMESPACE},
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in certs.items()},
    }
    _apply(server_client, f"/api/v1/namespaces/{NAMESPACE}/secrets", secret)
    for crd in crd_documents(install, webhook_port, ca_bundle):
        _apply(server_client, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    for hook in webhook_documents(install, webhook_port, ca_bundle):
        plural = (
            "mutatingwebhookconfigurations"
            if hook["kind"].startswith("Mutating")
            else "validatingwebhookconfigurations"
        )
        _apply(server_client, f"/apis/admissionregistration.k8s.io/v1/{plural}", hook)

    config_path = directory / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(manager_config(workdir, webhook_port, health_port, cert_dir)), encoding="utf-8"
    )
    process = ManagedProcess.start(
        "kueue",
        [str(install.binary), f"--config={config_path}", f"--kubeconfig={kubeconfig}", "--zap-log-level=2"],
        workdir / "logs" / "kueue.log",
        workdir,
    )
    processes.append(process)
    kueue = Kueue(process, webhook_port, health_port, install)
    wait_ready(server_client, kueue, timeout_seconds)
    return kueue


def _webhook_answers(server_client: httpx.Client) -> bool:
    """A dry-run ResourceFlavor create goes through Kueue's webhooks: 201 once they serve."""
    flavor = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "readiness-probe"}}
    response = server_client.post("/apis/kueue.x-k8s.io/v1beta2/resourceflavors", params={"dryRun": "All"}, json=flavor)
    return response.status_code in (201, 409)


def wait_ready(server_client: httpx.Client, kueue: Kueue, timeout_seconds: float) -> None:
    def answers() -> bool:
        return _webhook_answers(server_client)

    controllers.wait_ready("Kueue", kueue.process, kueue.health_port, answers, timeout_seconds, KueueStartError)
