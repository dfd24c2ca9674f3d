"""A `helm install` of charts/carbonshift into a cluster, and kubeconfigs for the identity its Deployment runs as.

The end-to-end suite runs the operator as local processes, but under the installed release's ServiceAccount,
so what it proves holds for the chart a user installs: its RBAC, its CRDs, its namespace.

- `find_helm`: the pinned helm of `hack/install-tools.sh`, else the one on PATH (a kind machine).
- `install_release`: `helm upgrade --install` (a fresh cluster gets a plain install; a reused one is upgraded),
  `--take-ownership` (CRDs applied earlier with kubectl are adopted), `--wait`; returns a `HelmRelease` that names
  the ServiceAccount the release's Deployment runs as, read from the release's own manifest.
- `scale_to_zero`: stop the Deployment's replicas, so that nothing but the caller's processes acts on the cluster
  (under kwok they are fake pods that do nothing; on kind they would run the image and reconcile).
- `HelmRelease.kubeconfig`: a kubeconfig authenticated by a fresh token of that ServiceAccount.
- `uninstall_release`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from carbonshift_dev.devcluster.binaries import MissingBinaryError, require
from carbonshift_dev.devcluster.operator_process import ensure_namespace, service_account_kubeconfig
from carbonshift_dev.devcluster.testing import wait_for

HELM_TIMEOUT_SECONDS = 240.0


class HelmError(RuntimeError):
    """helm exited non-zero; the message names the command and carries helm's stderr."""


@dataclass(frozen=True)
class HelmRelease:
    """One installed release, and the ServiceAccount its Deployment's pods run as."""

    name: str
    namespace: str
    admin_kubeconfig: Path
    deployment: str
    service_account: str
    manifest: tuple[dict[str, Any], ...]

    @property
    def username(self) -> str:
        """The user name the API server gives the ServiceAccount's tokens."""
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def kubeconfig(self, api: client.ApiClient, out: Path) -> Path:
        """A kubeconfig that authenticates as the release's ServiceAccount (what the pods' mounted token gives)."""
        return service_account_kubeconfig(api, self.admin_kubeconfig, self.namespace, self.service_account, out)

    def objects(self, kind: str) -> list[dict[str, Any]]:
        """The release's rendered objects of one kind."""
        return [doc for doc in self.manifest if doc.get("kind") == kind]


def find_helm() -> Path:
    """helm from the tools directory (the pinned version), else from PATH."""
    try:
        return require("helm")
    except MissingBinaryError:
        found = shutil.which("helm")
        if found is None:
            raise
        return Path(found)


def helm(
    helm_binary: Path, kubeconfig: Path, *args: str, timeout_seconds: float = HELM_TIMEOUT_SECONDS
) -> subprocess.CompletedProcess[str]:
    """Run helm against the cluster of `kubeconfig`; raises HelmError when it fails."""
    command = [str(helm_binary), "--kubeconfig", str(kubeconfig), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout_seconds)
    if done.returncode != 0:
        raise HelmError(f"helm {' '.join(args[:2])} failed (exit {done.returncode}): {done.stderr.strip()}")
    return done


def install_release(
    api: client.ApiClient,
    admin_kubeconfig: Path,
    chart: Path,
    *,
    name: str,
    namespace: str,
    values: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    helm_binary: Path | None = None,
    wait_seconds: int = 180,
) -> HelmRelease:
    """Install (or upgrade) the release and wait until it is ready; the namespace is created first if missing."""
    binary = helm_binary if helm_binary is not None else find_helm()
    ensure_namespace(api, namespace)
    with tempfile.TemporaryDirectory(prefix="helm-values-") as tmp:
        values_path = Path(tmp) / "values.yaml"
        values_path.write_text(json.dumps(dict(values or {})), encoding="utf-8")  # JSON is YAML
        helm(
            binary, admin_kubeconfig, "upgrade", name, str(chart), "--install", "--namespace", namespace,
            "--values", str(values_path), "--take-ownership", "--wait", "--timeout", f"{wait_seconds}s", *extra_args,
        )  # fmt: skip
    shown = helm(binary, admin_kubeconfig, "get", "manifest", name, "--namespace", namespace).stdout
    manifest = tuple(doc for doc in yaml.safe_load_all(shown) if doc)
    deployments = [doc for doc in manifest if doc.get("kind") == "Deployment"]
    if len(deployments) != 1:
        names = [d["metadata"]["name"] for d in deployments]
        raise HelmError(f"release {namespace}/{name} has {len(deployments)} Deployments ({names}), expected one")
    deployment = deployments[0]
    deployment_namespace = deployment["metadata"].get("namespace", namespace)
    if deployment_namespace != namespace:
        raise HelmError(f"release {name}'s Deployment is in namespace {deployment_namespace}, not {namespace}")
    account = deployment["spec"]["template"]["spec"].get("serviceAccountName") or "default"
    return HelmRelease(
        name=name,
        namespace=namespace,
        admin_kubeconfig=admin_kubeconfig,
        deployment=str(deployment["metadata"]["name"]),
        service_account=str(account),
        manifest=manifest,
    )


def scale_to_zero(api: client.ApiClient, release: HelmRelease, timeout_seconds: float = 120.0) -> None:
    """Scale the release's Deployment to zero replicas and wait until none of its pods is left."""
    apps = client.AppsV1Api(api)
    apps.patch_namespaced_deployment_scale(release.deployment, release.namespace, {"spec": {"replicas": 0}})
    deployment = apps.read_namespaced_deployment(release.deployment, release.namespace)
    labels = deployment.spec.selector.match_labels if deployment.spec else None
    if not labels:
        raise HelmError(f"Deployment {release.namespace}/{release.deployment} selects its pods by no labels")
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    core = client.CoreV1Api(api)

    def no_pods() -> bool:
        return not core.list_namespaced_pod(release.namespace, label_selector=selector).items

    wait_for(no_pods, f"the pods of Deployment {release.namespace}/{release.deployment} to be gone", timeout_seconds)


def uninstall_release(admin_kubeconfig: Path, name: str, namespace: str, helm_binary: Path | None = None) -> None:
    binary = helm_binary if helm_binary is not None else find_helm()
    helm(binary, admin_kubeconfig, "uninstall", name, "--namespace", namespace)
