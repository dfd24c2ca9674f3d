"""Kubeflow Trainer v2 on the dev cluster: its real controller manager (built by `hack/install-tools.sh trainer`),
CRDs and validating webhooks. Needs JobSet (`ClusterConfig(jobset=True)`): a TrainJob becomes a JobSet.

`start_trainer(...)` (or `ClusterConfig(trainer=True)`) does what the trainer's manifests/base does, adapted to a
control plane whose API server cannot reach Services, in the way devcluster.jobset runs JobSet:

- applies the TrainJob, TrainingRuntime and ClusterTrainingRuntime CRDs of the same release (hack/install-crds.sh's
  copies, `workload_crds.crd_path`);
- applies the webhook configuration of manifests/base/webhook (named `validator.trainer.kubeflow.org`, as its
  kustomize patch names it), each `clientConfig.service` turned into a loopback URL with our CA as its caBundle;
- the manager's cert rotator (open-policy-agent/cert-controller) cannot be turned off: it reads the Secret
  `kubeflow-trainer-webhook-cert` of its namespace, keeps the CA and serving certificate there when they are valid
  (for its CA name and Service DNS name, 90 days ahead), injects the CA into the webhook configuration, and waits
  until a fixed /tmp/k8s-webhook-server/serving-certs/tls.crt exists (where a pod mounts the Secret). So the Secret
  is made here with an RSA CA (it reads the CA key as PKCS#1) and a certificate valid for the Service name *and*
  127.0.0.1 (one year: the rotator wants more than its 90-day lookahead, which carbonshift's own adapters.tls
  certificates do not have); that fixed file is created with the certificate when missing (the rotator only checks
  that it exists; no key is written there), and the manager runs with a TMPDIR of this cluster's own, where
  controller-runtime's webhook server reads its certificate and key: clusters side by side never share them;
- starts the manager with leader election and metrics off, and waits until `/readyz` answers (certificates in
  place) and a dry-run ClusterTrainingRuntime create goes through its webhook (registered once the certificates are).

The trainer then makes each TrainJob's JobSet (suspended while the TrainJob is), JobSet's controller the Jobs, the
Job controller their pods, and kwok runs them. The process joins the cluster's processes; `cluster.stop()` stops it.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from carbonshift_dev.devcluster import controllers
from carbonshift_dev.devcluster.controllers import RunningManager, pinned_dir, release_version
from carbonshift_dev.devcluster.jobset import FIELD_MANAGER, wait_established
from carbonshift_dev.devcluster.processes import ManagedProcess, free_loopback_port
from carbonshift_dev.devcluster.workload_crds import crd_path

TRAINER_DIR_ENV = "CARBONSHIFT_TRAINER_DIR"
GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
KINDS = ("TrainJob", "TrainingRuntime", "ClusterTrainingRuntime")
WEBHOOK_CONFIGURATION = "validator.trainer.kubeflow.org"  # the manager's --webhook-configuration is fixed to it
SERVICE = "kubeflow-trainer-controller-manager"  # its --webhook-service-name default
SECRET = "kubeflow-trainer-webhook-cert"  # its --webhook-secret-name default
CA_NAME = "kubeflow-trainer-ca"  # the rotator checks the CA for this DNS name
DEFAULT_NAMESPACE = "kubeflow-system"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
CERT_LIFETIME = timedelta(days=365)
# The rotator's fixed certificate directory: it waits until tls.crt exists there (a mounted Secret, in a pod) before
# the manager reports ready and registers its webhooks; it only checks that the file is there.
ROTATOR_CERT = Path("/tmp/k8s-webhook-server/serving-certs/tls.crt")


class TrainerStartError(RuntimeError):
    """The trainer did not become ready; the message says what was waited for and where its log is."""


@dataclass(frozen=True)
class TrainerInstall:
    """The manager binary and webhook manifest of one Kubeflow Trainer release (its CRDs: hack/install-crds.sh)."""

    binary: Path
    webhook_dir: Path
    version: str


Trainer = RunningManager[TrainerInstall]  # a running Kubeflow Trainer controller manager of a dev cluster


def trainer_dir() -> Path:
    return pinned_dir(TRAINER_DIR_ENV, "TRAINER_VERSION", "trainer")


def find_trainer(directory: Path | None = None) -> TrainerInstall:
    where = directory or trainer_dir()
    binary, webhook = where / "trainer-controller-manager", where / "webhook"
    version = release_version(where, binary, (webhook / "manifests.yaml").is_file(), "Kubeflow Trainer", "trainer")
    return TrainerInstall(binary=binary, webhook_dir=webhook, version=version)


def manager_namespace() -> str:
    """Where the manager looks for its Secret: its pod's namespace when it has one (as the manager reads it)."""
    try:
        found = SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
    except OSError:
        found = ""
    return found or DEFAULT_NAMESPACE


def _apply(client: httpx.Client, path: str, obj: dict[str, Any]) -> None:
    """Server-side apply (create or update) of one object."""
    response = client.patch(
        f"{path}/{obj['metadata']['name']}",
        params={"fieldManager": FIELD_MANAGER, "force": "true"},
        content=yaml.safe_dump(obj).encode(),
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    if response.status_code not in (200, 201):
        raise TrainerStartError(
            f"applying {obj['kind']} {obj['metadata']['name']}: HTTP {response.status_code} {response.text[:300]}"
        )


@dataclass(frozen=True)
class Certificates:
    """PEM: a CA (its key too: the rotator checks it) and a serving certificate signed by it; RSA keys, as the
    rotator's own."""

    ca_cert: bytes
    ca_key: bytes
    cert: bytes
    key: bytes


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    """PKCS#1: the rotator parses its CA key with x509.ParsePKCS1PrivateKey (RSA only)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def make_certificates(service_dns: str, now: datetime | None = None) -> Certificates:
    """What the rotator accepts as valid (CA for CA_NAME, serving certificate for `service_dns`, both past its
    90-day lookahead), the serving one also valid for 127.0.0.1, where the API server calls it."""
    now = now or datetime.now(UTC)
    before, after = now - timedelta(minutes=5), now + CERT_LIFETIME
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(before)
        .not_valid_after(after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )  # digital signature, cert sign, CRL sign
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(CA_NAME)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names: list[x509.GeneralName] = [
        x509.DNSName(service_dns),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service_dns)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(before)
        .not_valid_after(after)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Certificates(
        ca_cert=ca.public_bytes(serialization.Encoding.PEM),
        ca_key=_pem_key(ca_key),
        cert=cert.public_bytes(serialization.Encoding.PEM),
        key=_pem_key(key),
    )


def write_serving_certs(tmpdir: Path, certs: Certificates) -> None:
    """Where controller-runtime's webhook server reads them by default: $TMPDIR/k8s-webhook-server/serving-certs."""
    directory = tmpdir / "k8s-webhook-server" / "serving-certs"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(certs.cert)
    key = directory / "tls.key"
    key.touch(mode=0o600)
    key.write_bytes(certs.key)


def mark_rotator_cert(certs: Certificates, marker: Path = ROTATOR_CERT) -> None:
    """The file the rotator waits for, created (atomically) when missing; another cluster's is as good."""
    if marker.is_file():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    partial = marker.with_name(f".{marker.name}.{os.getpid()}")
    partial.write_bytes(certs.cert)
    partial.replace(marker)


def secret_document(namespace: str, certs: Certificates) -> dict[str, Any]:
    data = {"ca.crt": certs.ca_cert, "ca.key": certs.ca_key, "tls.crt": certs.cert, "tls.key": certs.key}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": namespace},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def webhook_document(install: TrainerInstall, webhook_port: int, ca_bundle: str) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((install.webhook_dir / "manifests.yaml").read_text(encoding="utf-8")) if d]
    if len(docs) != 1 or docs[0].get("kind") != "ValidatingWebhookConfiguration":
        raise TrainerStartError(f"expected one ValidatingWebhookConfiguration in {install.webhook_dir}/manifests.yaml")
    doc = copy.deepcopy(docs[0])
    doc["metadata"] = {"name": WEBHOOK_CONFIGURATION}
    for hook in doc["webhooks"]:
        path = hook["clientConfig"]["service"]["path"]
        hook["clientConfig"] = {"url": f"https://127.0.0.1:{webhook_port}{path}", "caBundle": ca_bundle}
    return dict(doc)


def crd_documents() -> list[dict[str, Any]]:
    docs = []
    for kind in KINDS:
        doc = yaml.safe_load(crd_path(kind).read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            raise TrainerStartError(f"{crd_path(kind)} is not a CustomResourceDefinition")
        docs.append(dict(doc))
    return docs


def _jobset_served(server_client: httpx.Client) -> bool:
    return server_client.get("/apis/jobset.x-k8s.io/v1alpha2").status_code == 200


def start_trainer(
    server_client: httpx.Client,
    kubeconfig: Path,
    workdir: Path,
    processes: list[ManagedProcess],
    *,
    install: TrainerInstall | None = None,
    timeout_seconds: float = 120.0,
) -> Trainer:
    """Install the trainer's CRDs, webhooks and certificate Secret into the cluster `server_client` talks to (JobSet
    must be there), start the manager, wait until it serves."""
    install = install or find_trainer()
    if not _jobset_served(server_client):
        raise TrainerStartError("Kubeflow Trainer needs JobSet: start the cluster with ClusterConfig(jobset=True)")
    directory = workdir / "trainer"
    tmpdir = directory / "tmp"
    namespace = manager_namespace()
    certs = make_certificates(f"{SERVICE}.{namespace}.svc")
    write_serving_certs(tmpdir, certs)
    mark_rotator_cert(certs)
    webhook_port, health_port = free_loopback_port(), free_loopback_port()
    for crd in crd_documents():
        _apply(server_client, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    for crd in crd_documents():
        wait_established(server_client, crd["metadata"]["name"], timeout_seconds)
    _apply(
        server_client, "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    _apply(server_client, f"/api/v1/namespaces/{namespace}/secrets", secret_document(namespace, certs))
    ca_bundle = base64.b64encode(certs.ca_cert).decode()
    _apply(
        server_client,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        webhook_document(install, webhook_port, ca_bundle),
    )
    argv = [
        str(install.binary),
        f"--kubeconfig={kubeconfig}",
        f"--webhook-server-port={webhook_port}",
        f"--health-probe-bind-address=127.0.0.1:{health_port}",
        "--metrics-bind-address=0",
        "--leader-elect=false",
        "--zap-log-level=2",
    ]
    process = ManagedProcess.start(
        "trainer", argv, workdir / "logs" / "trainer.log", workdir, env={"TMPDIR": str(tmpdir)}
    )
    processes.append(process)
    trainer = Trainer(process, webhook_port, health_port, install)
    wait_ready(server_client, trainer, timeout_seconds)
    return trainer


def probe_runtime() -> dict[str, Any]:
    """A minimal torch-style ClusterTrainingRuntime, created in dry-run only: it goes through the trainer's webhook."""
    container = {"name": "node", "image": "probe", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    node = {
        "name": "node",
        "template": {
            "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
            "spec": {"template": {"spec": {"containers": [container]}}},
        },
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ClusterTrainingRuntime",
        "metadata": {"name": "readiness-probe"},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": "auto"}},
            "template": {"spec": {"replicatedJobs": [node]}},
        },
    }


def _webhook_answers(server_client: httpx.Client) -> bool:
    response = server_client.post(
        f"/apis/{GROUP}/{VERSION}/clustertrainingruntimes", params={"dryRun": "All"}, json=probe_runtime()
    )
    return response.status_code in (201, 409)


def wait_ready(server_client: httpx.Client, trainer: Trainer, timeout_seconds: float) -> None:
    def answers() -> bool:
        return _webhook_answers(server_client)

    controllers.wait_ready(
        "Kubeflow Trainer", trainer.process, trainer.health_port, answers, timeout_seconds, TrainerStartError
    )
