"""Helpers the pytest fixtures of tests/integration and e2e share: API clients, namespaces, CRDs, waiting.

Plain functions over the official `kubernetes` client (no pytest import), so both conftest files stay thin.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from kubernetes import client, config
from kubernetes.client import ApiException

T = TypeVar("T")
_POLL_SECONDS = 0.1


class WaitTimeoutError(AssertionError):
    """A condition did not become true in time; the message names it and the last value seen."""


def wait_for(check: Callable[[], T | None], what: str, timeout_seconds: float = 30.0) -> T:
    """Poll `check` until it returns something truthy, and return that; raise WaitTimeoutError on timeout."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout_seconds:.0f} s waiting for {what} (last: {value!r})")
        time.sleep(_POLL_SECONDS)


def api_client_from_kubeconfig(kubeconfig: Path) -> client.ApiClient:
    """An ApiClient configured from a kubeconfig file (its current context)."""
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return cast(client.ApiClient, api)


def token_api_client(base: client.ApiClient, token: str) -> client.ApiClient:
    """A client to the same server and CA as `base`, authenticated by `token` instead."""
    configuration = client.Configuration()
    source = base.configuration
    configuration.host = source.host
    configuration.ssl_ca_cert = source.ssl_ca_cert
    configuration.verify_ssl = source.verify_ssl
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def create_namespace(api: client.ApiClient, prefix: str, timeout_seconds: float = 30.0) -> str:
    """Create a uniquely named namespace and wait for its `default` ServiceAccount (pods need it)."""
    core = client.CoreV1Api(api)
    safe = "".join(c if c.isalnum() else "-" for c in prefix.lower()).strip("-")[:40].strip("-") or "test"
    name = f"{safe}-{secrets.token_hex(3)}"
    body = client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"carbonshift.io/test": "true"}))
    core.create_namespace(body)

    def default_account() -> bool:
        try:
            core.read_namespaced_service_account("default", name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    wait_for(default_account, f"ServiceAccount default in namespace {name}", timeout_seconds)
    return name


def delete_namespace(api: client.ApiClient, name: str) -> None:
    """Request deletion of a namespace (the namespace controller finishes it in the background)."""
    try:
        client.CoreV1Api(api).delete_namespace(name, propagation_policy="Background")
    except ApiException as exc:
        if exc.status != 404:
            raise


@dataclass(frozen=True)
class InstalledCrd:
    """Where the API server serves one custom resource kind."""

    name: str
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool


def load_crd_documents(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition document in the given YAML files."""
    docs: list[dict[str, Any]] = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs


def install_crds(
    api: client.ApiClient, documents: Iterable[dict[str, Any]], timeout_seconds: float = 60.0
) -> dict[str, InstalledCrd]:
    """Create (or replace) each CRD and wait until it is Established; returns them by kind."""
    ext = client.ApiextensionsV1Api(api)
    installed: dict[str, InstalledCrd] = {}
    for doc in documents:
        name = str(doc["metadata"]["name"])
        body: Any = doc  # the client accepts plain dicts as request bodies
        try:
            ext.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current: Any = ext.read_custom_resource_definition(name)
            version = current.metadata.resource_version
            replacement: Any = dict(doc, metadata=dict(doc["metadata"], resourceVersion=version))
            ext.replace_custom_resource_definition(name, replacement)
        spec = doc["spec"]
        served = next(v["name"] for v in spec["versions"] if v.get("storage"))
        installed[str(spec["names"]["kind"])] = InstalledCrd(
            name=name,
            group=str(spec["group"]),
            version=str(served),
            plural=str(spec["names"]["plural"]),
            kind=str(spec["names"]["kind"]),
            namespaced=spec["scope"] == "Namespaced",
        )
    for crd in installed.values():
        wait_for(_established_check(ext, crd.name), f"CRD {crd.name} Established", timeout_seconds)
    return installed


def _established_check(ext: client.ApiextensionsV1Api, name: str) -> Callable[[], bool]:
    return lambda: crd_established(ext, name)


def crd_established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    """Whether the CRD's Established condition is True."""
    crd = ext.read_custom_resource_definition(name)
    conditions = (crd.status.conditions or []) if crd.status else []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def create_custom_object(
    api: client.ApiClient, crd: InstalledCrd, manifest: dict[str, Any], namespace: str, field_validation: str = "Strict"
) -> dict[str, Any]:
    """Create one custom object (namespaced objects go to `namespace`); returns what the server stored.

    Field validation is Strict by default, as `kubectl apply` does: unknown fields are refused, not pruned.
    """
    custom = client.CustomObjectsApi(api)
    created: Any
    if crd.namespaced:
        body = dict(manifest, metadata=dict(manifest.get("metadata", {}), namespace=namespace))
        created = custom.create_namespaced_custom_object(
            crd.group, crd.version, namespace, crd.plural, body, field_validation=field_validation
        )
    else:
        created = custom.create_cluster_custom_object(
            crd.group, crd.version, crd.plural, manifest, field_validation=field_validation
        )
    return cast(dict[str, Any], created)


def delete_custom_object(api: client.ApiClient, crd: InstalledCrd, name: str, namespace: str) -> None:
    custom = client.CustomObjectsApi(api)
    try:
        if crd.namespaced:
            custom.delete_namespaced_custom_object(crd.group, crd.version, namespace, crd.plural, name)
        else:
            custom.delete_cluster_custom_object(crd.group, crd.version, crd.plural, name)
    except ApiException as exc:
        if exc.status != 404:
            raise
