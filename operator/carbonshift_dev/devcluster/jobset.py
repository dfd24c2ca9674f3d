"""JobSet on the dev cluster: its real controller manager (built by `hack/install-tools.sh jobset`), CRD and webhooks.

`start_jobset(...)` (or `ClusterConfig(jobset=True)`) does what JobSet's release manifests do, adapted to a control
plane whose API server cannot reach Services, in the way devcluster.kueue runs Kueue:

- applies the JobSet CRD of the same release (hack/install-crds.sh's copy, `workload_crds.crd_path("JobSet")`).
  Its kustomize patch adds a conversion webhook, which a CRD with one version never calls: it is left out;
- applies the webhook configurations of config/components/webhook/manifests.yaml with their kustomize patches
  (the pod webhooks only see pods carrying `jobset.sigs.k8s.io/jobset-name`), each `clientConfig.service` turned
  into a loopback URL with our CA as its caBundle;
- turns JobSet's internal cert management off (its rotator writes to a fixed /tmp path and names only the
  webhook Service) and gives the manager a serving certificate for 127.0.0.1 made here with carbonshift's own
  adapters.tls, in a certificate directory of this cluster's own (`webhook.certDir`);
- starts the manager with leader election and metrics off, and waits until `/readyz` answers and a dry-run JobSet
  create goes through its webhooks.

The JobSet controller then creates the Jobs, the cluster's real Job controller their pods, and kwok runs them: a
JobSet really runs and completes. The process joins the cluster's processes, so `cluster.stop()` stops it first.
"""

from __future__ import annotations

import base64
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from carbonshift.adapters.tls import new_bundle
from carbonshift_dev.devcluster import controllers
from carbonshift_dev.devcluster.controllers import RunningManager, pinned_dir, release_version
from carbonshift_dev.devcluster.processes import ManagedProcess, free_loopback_port
from carbonshift_dev.devcluster.workload_crds import crd_path

JOBSET_DIR_ENV = "CARBONSHIFT_JOBSET_DIR"
GROUP = "jobset.x-k8s.io"
WEBHOOK_CONFIGS = {
    "mutating-webhook-configuration": "jobset-mutating-webhook-configuration",
    "validating-webhook-configuration": "jobset-validating-webhook-configuration",
}
PATCHES = {
    "MutatingWebhookConfiguration": "mutating-patch.yaml",
    "ValidatingWebhookConfiguration": "validating-patch.yaml",
}
FIELD_MANAGER = "carbonshift-devcluster"


class JobSetStartError(RuntimeError):
    """JobSet did not become ready; the message says what was waited for and where its log is."""


@dataclass(frozen=True)
class JobSetInstall:
    """The manager binary, webhook manifests and CRD of one JobSet release."""

    binary: Path
    webhook_dir: Path
    crd: Path
    version: str


JobSet = RunningManager[JobSetInstall]  # a running JobSet controller manager of a dev cluster


def jobset_dir() -> Path:
    return pinned_dir(JOBSET_DIR_ENV, "JOBSET_VERSION", "jobset")


def find_jobset(directory: Path | None = None) -> JobSetInstall:
    where = directory or jobset_dir()
    binary, webhook = where / "jobset", where / "webhook"
    present = (webhook / "manifests.yaml").is_file() and all(
        (webhook / "patches" / p).is_file() for p in PATCHES.values()
    )
    version = release_version(where, binary, present, "JobSet", "jobset")
    return JobSetInstall(binary=binary, webhook_dir=webhook, crd=crd_path("JobSet"), version=version)


def _apply(client: httpx.Client, path: str, obj: dict[str, Any]) -> None:
    """Server-side apply (create or update) of one object."""
    response = client.patch(
        f"{path}/{obj['metadata']['name']}",
        params={"fieldManager": FIELD_MANAGER, "force": "true"},
        content=yaml.safe_dump(obj).encode(),
        headers={"Content-Type": "application/apply-patch+yaml"},
    )
    if response.status_code not in (200, 201):
        raise JobSetStartError(
            f"applying {obj['kind']} {obj['metadata']['name']}: HTTP {response.status_code} {response.text[:300]}"
        )


def _patched(doc: dict[str, Any], patch: list[dict[str, Any]]) -> dict[str, Any]:
    """The kustomize JSON patches of the release: each replaces one webhook (`/webhooks/<i>`)."""
    doc = copy.deepcopy(doc)
    for op in patch:
        head, _, index = str(op["path"]).rpartition("/")
        if op["op"] != "replace" or head != "/webhooks":
            raise JobSetStartError(f"unexpected kustomize patch {op['op']} {op['path']} in JobSet's webhook manifests")
        doc["webhooks"][int(index)] = op["value"]
    return doc


def webhook_documents(install: JobSetInstall, webhook_port: int, ca_bundle: str) -> list[dict[str, Any]]:
    documents = []
    for doc in yaml.safe_load_all((install.webhook_dir / "manifests.yaml").read_text(encoding="utf-8")):
        if not doc:
            continue
        patch = yaml.safe_load((install.webhook_dir / "patches" / PATCHES[doc["kind"]]).read_text(encoding="utf-8"))
        doc = _patched(doc, patch)
        doc["metadata"] = {"name": WEBHOOK_CONFIGS[doc["metadata"]["name"]]}
        for hook in doc["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"https://127.0.0.1:{webhook_port}{path}", "caBundle": ca_bundle}
        documents.append(doc)
    return documents


def crd_document(install: JobSetInstall) -> dict[str, Any]:
    doc = yaml.safe_load(install.crd.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
        raise JobSetStartError(f"{install.crd} is not a CustomResourceDefinition")
    return dict(doc)


def wait_established(server_client: httpx.Client, name: str, timeout_seconds: float) -> None:
    """The manager's watches fail ("no matches for kind") if it starts before the CRD is served."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        response = server_client.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        conditions = (response.json().get("status") or {}).get("conditions") or [] if response.is_success else []
        if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
            return
        if time.monotonic() >= deadline:
            raise JobSetStartError(f"CRD {name} not Established after {timeout_seconds:.0f} s")
        time.sleep(0.1)


def manager_config(webhook_port: int, health_port: int, cert_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},  # off: nothing scrapes it here
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "clientConnection": {"qps": 50, "burst": 100},
    }


def write_certs(cert_dir: Path) -> str:
    """A CA and a serving certificate for 127.0.0.1 as controller-runtime reads them (tls.crt, tls.key); returns
    the CA bundle (base64) for the webhook configurations."""
    bundle = new_bundle(["127.0.0.1", "localhost"])
    cert_dir.mkdir(parents=True, exist_ok=True)
    (cert_dir / "tls.crt").write_bytes(bundle.cert)
    key = cert_dir / "tls.key"
    key.touch(mode=0o600)
    key.write_bytes(bundle.key)
    return base64.b64encode(bundle.ca_cert).decode()


def start_jobset(
    server_client: httpx.Client,
    kubeconfig: Path,
    workdir: Path,
    processes: list[ManagedProcess],
    *,
    install: JobSetInstall | None = None,
    timeout_seconds: float = 120.0,
) -> JobSet:
    """Install JobSet's CRD and webhooks into the cluster `server_client` talks to, start the manager, wait."""
    install = install or find_jobset()
    directory = workdir / "jobset"
    cert_dir = directory / "certs"
    ca_bundle = write_certs(cert_dir)
    webhook_port, health_port = free_loopback_port(), free_loopback_port()
    crd = crd_document(install)
    _apply(server_client, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    wait_established(server_client, crd["metadata"]["name"], timeout_seconds)
    for hook in webhook_documents(install, webhook_port, ca_bundle):
        plural = (
            "mutatingwebhookconfigurations"
            if hook["kind"].startswith("Mutating")
            else "validatingwebhookconfigurations"
        )
        _apply(server_client, f"/apis/admissionregistration.k8s.io/v1/{plural}", hook)
    config_path = directory / "config.yaml"
    config_path.write_text(yaml.safe_dump(manager_config(webhook_port, health_port, cert_dir)), encoding="utf-8")
    process = ManagedProcess.start(
        "jobset",
        [str(install.binary), f"--config={config_path}", f"--kubeconfig={kubeconfig}", "--zap-log-level=2"],
        workdir / "logs" / "jobset.log",
        workdir,
    )
    processes.append(process)
    jobset = JobSet(process, webhook_port, health_port, install)
    wait_ready(server_client, jobset, timeout_seconds)
    return jobset


PROBE: dict[str, Any] = {
    "apiVersion": f"{GROUP}/v1alpha2",
    "kind": "JobSet",
    "metadata": {"name": "readiness-probe"},
    "spec": {
        "replicatedJobs": [
            {
                "name": "probe",
                "template": {
                    "spec": {
                        "template": {
                            "spec": {"restartPolicy": "Never", "containers": [{"name": "probe", "image": "probe"}]}
                        }
                    }
                },
            }
        ]
    },
}


def _webhook_answers(server_client: httpx.Client) -> bool:
    """A dry-run JobSet create goes through JobSet's defaulting and validating webhooks: 201 once they serve."""
    response = server_client.post(
        f"/apis/{GROUP}/v1alpha2/namespaces/default/jobsets", params={"dryRun": "All"}, json=PROBE
    )
    return response.status_code in (201, 409)


def wait_ready(server_client: httpx.Client, jobset: JobSet, timeout_seconds: float) -> None:
    def answers() -> bool:
        return _webhook_answers(server_client)

    controllers.wait_ready("JobSet", jobset.process, jobset.health_port, answers, timeout_seconds, JobSetStartError)
