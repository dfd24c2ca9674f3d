"""Token-based kubeconfig files and the API server's static token file.

The admin, controller-manager, scheduler and kwok identities each get a random bearer token; the CA is
embedded so the kubeconfig is self-contained. Files holding tokens are written with mode 0600 and tokens
never appear in reprs or messages.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Identity:
    """A user the API server knows from its token file."""

    user: str
    groups: tuple[str, ...]
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)


def admin_identity() -> Identity:
    return Identity("carbonshift-admin", ("system:masters",))


def component_identities(controller_service_accounts: bool = False) -> dict[str, Identity]:
    """The control-plane components' identities, bound by Kubernetes' bootstrap RBAC policy.

    With `controller_service_accounts` the controller-manager runs each controller under its own
    ServiceAccount (as kubeadm does) and needs only its bootstrap role; without, it acts as one
    `system:masters` identity, which starts about 5 s sooner on 2 cores.
    """
    manager_groups = () if controller_service_accounts else ("system:masters",)
    return {
        "kube-controller-manager": Identity("system:kube-controller-manager", manager_groups),
        "kube-scheduler": Identity("system:kube-scheduler", ()),
        # kwok plays every kubelet; it needs node, lease and pod-status rights across the cluster.
        "kwok": Identity("kwok-controller", ("system:masters",)),
    }


def write_private(path: Path, text: str) -> None:
    """Write a file that only the current user can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_token_file(path: Path, identities: list[Identity]) -> None:
    """The `--token-auth-file` CSV: token,user,uid,"group1,group2"."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for ident in identities:
        writer.writerow([ident.token, ident.user, ident.user, ",".join(ident.groups)])
    write_private(path, buffer.getvalue())


def kubeconfig_document(cluster_name: str, server_url: str, ca_cert: Path, identity: Identity) -> dict[str, Any]:
    ca_data = base64.b64encode(ca_cert.read_bytes()).decode("ascii")
    user = f"{cluster_name}-{identity.user.replace(':', '-')}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": server_url, "certificate-authority-data": ca_data}}],
        "users": [{"name": user, "user": {"token": identity.token}}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": user}}],
        "current-context": cluster_name,
        "preferences": {},
    }


def write_kubeconfig(path: Path, cluster_name: str, server_url: str, ca_cert: Path, identity: Identity) -> None:
    document = kubeconfig_document(cluster_name, server_url, ca_cert, identity)
    write_private(path, yaml.safe_dump(document, sort_keys=False))


def read_kubeconfig_token(path: Path) -> str:
    """The bearer token of the current context's user in a kubeconfig this module wrote."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    context_name = document["current-context"]
    context = next(c["context"] for c in document["contexts"] if c["name"] == context_name)
    user = next(u["user"] for u in document["users"] if u["name"] == context["user"])
    return str(user["token"])
