"""The operator as a real process for end-to-end tests: run under its own ServiceAccount, killed and restarted.

- `OperatorInstall`: how the operator's identity was installed for the session (the `operator_install` fixture):
  a `helm install` of charts/carbonshift (default), or only `carbonshift.api.rbac`'s rules
  (`E2E_OPERATOR_INSTALL=rbac`, what `operator_kubeconfig` applies). `operator_install.kubeconfig(path)` writes a
  kubeconfig that authenticates with a fresh token of that ServiceAccount, and checks the API server agrees who it
  is, so every test proves the installed permissions are sufficient.
- `OperatorProcess`: `carbonshift run` in a subprocess, with an accelerated clock whose anchor is fixed, so a
  SIGKILLed and restarted operator continues the same planning time.
- `write_trace`: a grid trace CSV in the bundled shape, for scenarios with a known low-carbon window.
- `measured_energy`: the DCGM stand-in on every node (8 GPUs each), the binder that gives pods their GPUs in it, and
  a real Prometheus scraping it every second: what a test of measured energy and receipts runs beside the operator.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from kubernetes import client

from carbonshift_dev.devcluster import PrometheusServer
from carbonshift_dev.devcluster.dcgm import DcgmStandIn
from carbonshift_dev.devcluster.gpu_binder import GpuBinder
from carbonshift_dev.devcluster.helm_release import HelmRelease
from carbonshift_dev.devcluster.operator_process import (
    OPERATOR_NAMESPACE,
    OperatorProcess,
    apply_objects,
    authenticated_user,
    ensure_namespace,
    free_port,
    operator_kubeconfig,
    service_account_kubeconfig,
    write_trace,
)

T = TypeVar("T")
GROUP, VERSION, PLURAL = "carbonshift.io", "v1alpha1", "carbonawarejobs"


@dataclass(frozen=True)
class OperatorInstall:
    """The identity the suite's operator processes run as: a helm release's ServiceAccount, or rbac.py's."""

    mode: Literal["helm", "rbac"]
    api: client.ApiClient
    admin_kubeconfig: Path
    namespace: str
    service_account: str
    release: HelmRelease | None  # set in helm mode

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"

    def kubeconfig(self, out: Path) -> Path:
        """A kubeconfig with a fresh token of the ServiceAccount; fails unless the API server authenticates it so."""
        path = service_account_kubeconfig(self.api, self.admin_kubeconfig, self.namespace, self.service_account, out)
        user = authenticated_user(path)
        assert user == self.username, f"the operator kubeconfig authenticates as {user}, not {self.username}"
        return path


def wait_until(
    check: Callable[[], T | None],
    what: str,
    timeout: float = 60.0,
    interval: float = 0.2,
    explain: Callable[[], object] | None = None,
) -> T:
    """`check()` until it is truthy; on timeout, fail with its last answer and what `explain()` says then (the
    state a failed wait saw, so that a CI failure tells why)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    seen = f"; seen: {explain()!r}" if explain is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r}){seen}")


def delete_carbonawarejobs(api: client.ApiClient, timeout: float = 60.0) -> None:
    """Delete every CarbonAwareJob in the cluster and wait until none is left. Call it while the test's operator
    still runs: its finalizer deletes each job's workload and lets the job go. An operator stopped first leaves its
    jobs behind, finalizer and all, their namespace stuck terminating with their pods in it; the next test's
    operator then adopts them, plans them again on its own clock and reserves their GPUs in the very windows that
    test expects free (a JobSet planned 8 h out after the lifecycle tests' whole-node job)."""
    custom = client.CustomObjectsApi(api)

    def left() -> list[dict[str, Any]]:
        return list(custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"])

    for job in left():
        meta = job["metadata"]
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
        except client.ApiException as exc:
            if exc.status != 404:
                raise
    wait_until(lambda: not left(), "every CarbonAwareJob to be deleted", timeout=timeout)


@contextlib.contextmanager
def serving_operator(proc: OperatorProcess, api: client.ApiClient) -> Iterator[OperatorProcess]:
    """Start a test's operator and wait until kopf watches; at the end delete the test's CarbonAwareJobs while it
    still runs (`delete_carbonawarejobs`: else the next test's operator adopts them), then stop it."""
    try:
        proc.start()
        wait_until(proc.serving, "the operator to start", timeout=30, interval=0.05)
        time.sleep(0.5)  # kopf lists and starts watching right after the metrics endpoint is up
        yield proc
        proc.assert_alive()
        delete_carbonawarejobs(api)
    finally:
        proc.stop()


def release_carbonawarejobs(api: client.ApiClient, namespace: str) -> None:
    """After a test, when no operator of that test runs any more: delete the namespace's CarbonAwareJobs and take
    kopf's finalizer off them, so that the namespace goes and no later test's operator adopts them. (Without this,
    a job left by a test whose operator stopped first kept its namespace terminating, with its Jobs and pods, and
    the next operator planned it again and reserved its GPUs; `delete_carbonawarejobs` is the way for a test whose
    operator still runs, this is the net under every test that uses the `namespace` fixture.)"""
    custom = client.CustomObjectsApi(api)
    try:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    except client.ApiException as exc:
        if exc.status == 404:
            return  # (the CRD is not installed)
        raise
    unfinalized = {"metadata": {"finalizers": None}}
    for job in items:
        name = job["metadata"]["name"]
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, unfinalized)
        except client.ApiException as exc:
            if exc.status != 404:  # (gone already: its operator, or the deletion itself, let it go)
                raise


@contextlib.contextmanager
def measured_energy(api: client.ApiClient) -> Iterator[tuple[DcgmStandIn, PrometheusServer, GpuBinder]]:
    """The DCGM stand-in (started 25 s into the H100 trace: training at about 683 W), the GPU binder and a real
    Prometheus, stopped on the way out whatever happened."""
    nodes = {n.metadata.name: 8 for n in client.CoreV1Api(api).list_node().items}
    exporter = DcgmStandIn(nodes, start_offset_seconds=25.0).start()
    binder = GpuBinder(api, exporter, nodes)
    binder.start()
    try:
        prometheus = PrometheusServer.start([exporter.target])
        try:
            yield exporter, prometheus, binder
        finally:
            prometheus.stop()
    finally:
        binder.halt.set()
        exporter.stop()


def caj_manifest(
    name: str,
    *,
    duration: str,
    max_delay: str | None = None,
    deadline: datetime | None = None,
    gpus: int = 1,
    interruptible: bool = False,
    checkpoint: dict[str, str] | None = None,
    policy: str | None = None,
    extra_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "duration": duration,
        "interruptible": interruptible,
        "template": {
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "train",
                                "image": "example/train:1",
                                "resources": {"limits": {"nvidia.com/gpu": gpus}},
                            }
                        ],
                    }
                },
            }
        },
    }
    if max_delay:
        spec["maxDelay"] = max_delay
    if deadline:
        spec["deadline"] = deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
    if checkpoint:
        spec["checkpoint"] = checkpoint
    if policy:
        spec["policy"] = policy
    spec.update(extra_spec or {})
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CarbonAwareJob", "metadata": {"name": name}, "spec": spec}


class Cluster:
    """Small conveniences over one cluster's API for the scenarios."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    def create_caj(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest
        )
        return created

    def caj(self, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return obj

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.caj(namespace, name).get("status") or {})

    def job(self, namespace: str, name: str) -> client.V1Job | None:
        try:
            return self.batch.read_namespaced_job(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def pods(self, namespace: str, name: str) -> list[client.V1Pod]:
        selector = f"carbonshift.io/carbonawarejob={name}"
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def running_pods(self, namespace: str, name: str) -> list[client.V1Pod]:
        return [
            p for p in self.pods(namespace, name)
            if p.status and p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]  # fmt: skip

    def complete_pods(self, namespace: str, name: str) -> None:
        """Tell kwok to finish the job's pods successfully (the devcluster's completion stage)."""
        for pod in self.running_pods(namespace, name):
            body = {"metadata": {"annotations": {"carbonshift.io/complete": "true"}}}
            self.core.patch_namespaced_pod(pod.metadata.name, namespace, body)

    def events(self, namespace: str, name: str) -> list[client.CoreV1Event]:
        selector = f"involvedObject.name={name}"
        return list(self.core.list_namespaced_event(namespace, field_selector=selector).items)

    def event_reasons(self, namespace: str, name: str) -> list[str]:
        return [e.reason for e in self.events(namespace, name)]

    def wait_for_events(self, namespace: str, name: str, *reasons: str, timeout: float = 30) -> list[str]:
        """The object's event reasons once all of `reasons` are among them. The operator posts Events after the
        status write they explain, through kopf's background poster, so a test that saw the status must wait for
        the Event rather than read it at once (an immediate read raced in CI: status Suspended, Event not yet)."""
        seen: list[str] = []

        def arrived() -> list[str] | None:
            seen[:] = self.event_reasons(namespace, name)
            return list(seen) if set(reasons) <= set(seen) else None

        try:
            return wait_until(arrived, f"the events {', '.join(reasons)} of {namespace}/{name}", timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; seen: {seen}") from None


__all__ = [
    "OPERATOR_NAMESPACE",
    "Cluster",
    "OperatorInstall",
    "OperatorProcess",
    "apply_objects",
    "caj_manifest",
    "delete_carbonawarejobs",
    "ensure_namespace",
    "free_port",
    "measured_energy",
    "operator_kubeconfig",
    "release_carbonawarejobs",
    "serving_operator",
    "wait_until",
    "write_trace",
]
