"""carbonshift as Kueue's carbon-window AdmissionCheck, with the real Kueue manager on a real control plane.

A dev cluster of its own (ClusterConfig(kueue=True): Kueue's CRDs, webhooks and manager on loopback), the operator
as a process under `carbonshift.api.rbac`'s ServiceAccount, planning time 240x the wall clock (an hour in 15 s), a
grid trace with two clean windows. A ClusterQueue with quota for 8 GPUs lists the check; three 4-GPU Jobs whose clean
windows overlap. The test plays the workloads (a Job's pods complete once they have run its duration) and watches:
never more than 8 GPUs in use, every run inside a clean window (or from its latest safe start), no deadline missed,
the interruptible job evicted at its first window's end and re-admitted in the next, and an operator SIGKILLed in
the middle losing nothing (its run-time account is in the Workload, not in memory).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from carbonshift_dev.devcluster import ClusterConfig, DevCluster
from carbonshift_dev.devcluster.operator_process import OperatorProcess, install_rbac, service_account_kubeconfig
from carbonshift_dev.devcluster.testing import (
    api_client_from_kubeconfig,
    create_namespace,
    install_crds,
    load_crd_documents,
)
from e2e.harness import Cluster, caj_manifest, wait_until, write_trace

REPO = Path(__file__).resolve().parents[1]
SPEED = 240.0
SLOT = timedelta(minutes=15)
CLEAN = [(2.0, 4.0), (6.0, 8.0)]  # hours after the epoch at 80 g/kWh; 500 elsewhere
SLACK_H = 0.5  # planning hours (7.5 s of wall time) for Kueue, the Job controller and kwok to act on a decision
MAX_DELAY_H = 12.0
KUEUE = "kueue.x-k8s.io"


@dataclass
class Played:
    """One Job as the test plays it: its run intervals (planning hours after the epoch)."""

    name: str
    gpus: int
    hours: float
    interruptible: bool
    created_h: float = 0.0
    runs: list[list[float]] = field(default_factory=list)
    done_h: float | None = None

    def ran_h(self, now_h: float) -> float:
        return sum((end if end is not None else now_h) - start for start, end in (tuple(r) for r in self.runs))


@pytest.fixture(scope="module")
def kueue_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    if os.environ.get("E2E_KUBECONFIG"):
        pytest.skip("runs on a dev cluster with Kueue (ClusterConfig(kueue=True)); not on E2E_KUBECONFIG clusters")
    with DevCluster.start(ClusterConfig(name="e2e-kueue", nodes=2, gpus_per_node=8, kueue=True)) as cluster:
        yield cluster
        # The control plane's logs (Kueue's among them) outlive the cluster's directory, for a failure's story.
        shutil.copytree(cluster.workdir / "logs", tmp_path_factory.mktemp("kueue-cluster-logs"), dirs_exist_ok=True)


def trace_values(epoch: datetime, start: datetime, hours: float) -> list[float]:
    values = []
    for i in range(int(hours * 4)):
        at = (start + i * SLOT - epoch).total_seconds() / 3600
        values.append(80.0 if any(a <= at < b for a, b in CLEAN) else 500.0)
    return values


def queue_objects(namespace: str) -> list[dict[str, Any]]:
    """What docs/kueue.md has a platform team apply (plus the namespace's LocalQueue)."""
    v = f"{KUEUE}/v1beta2"
    return [
        {"apiVersion": "carbonshift.io/v1alpha1", "kind": "CarbonWindowPolicy", "metadata": {"name": "grid-aware"},
         "spec": {"zone": "TEST", "defaultMaxDelay": "12h"}},
        {"apiVersion": v, "kind": "AdmissionCheck", "metadata": {"name": "carbon-window"},
         "spec": {"controllerName": "carbonshift.io/carbon-window",
                  "parameters": {"apiGroup": "carbonshift.io", "kind": "CarbonWindowPolicy", "name": "grid-aware"}}},
        {"apiVersion": v, "kind": "ResourceFlavor", "metadata": {"name": "gpu"}},
        {"apiVersion": v, "kind": "WorkloadPriorityClass", "metadata": {"name": "first"}, "value": 100},
        {"apiVersion": v, "kind": "ClusterQueue", "metadata": {"name": "gpus"},
         "spec": {"namespaceSelector": {},
                  "resourceGroups": [{"coveredResources": ["nvidia.com/gpu"], "flavors": [
                      {"name": "gpu", "resources": [{"name": "nvidia.com/gpu", "nominalQuota": 8}]}]}],
                  "admissionChecksStrategy": {"admissionChecks": [{"name": "carbon-window"}]}}},
        {"apiVersion": v, "kind": "LocalQueue", "metadata": {"name": "team", "namespace": namespace},
         "spec": {"clusterQueue": "gpus"}},
    ]  # fmt: skip


def create_custom(custom: client.CustomObjectsApi, docs: list[dict[str, Any]]) -> None:
    plurals = {"CarbonWindowPolicy": "carbonwindowpolicies", "AdmissionCheck": "admissionchecks",
               "ResourceFlavor": "resourceflavors", "WorkloadPriorityClass": "workloadpriorityclasses",
               "ClusterQueue": "clusterqueues", "LocalQueue": "localqueues"}  # fmt: skip
    for doc in docs:
        group, version = doc["apiVersion"].split("/")
        namespace = doc["metadata"].get("namespace")
        try:
            if namespace:
                custom.create_namespaced_custom_object(group, version, namespace, plurals[doc["kind"]], doc)
            else:
                custom.create_cluster_custom_object(group, version, plurals[doc["kind"]], doc)
        except client.ApiException as exc:
            if exc.status != 409:  # the cluster-scoped ones stay from an earlier test of the module
                raise


def job_manifest(job: Played, namespace: str, *, priority: str | None = None) -> dict[str, Any]:
    labels = {"kueue.x-k8s.io/queue-name": "team", "app": job.name}
    if priority:
        labels["kueue.x-k8s.io/priority-class"] = priority
    gpus = {"nvidia.com/gpu": str(job.gpus)}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job.name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {
                "carbonshift.io/duration": f"{job.hours}h",
                "carbonshift.io/max-delay": f"{MAX_DELAY_H:g}h",
                "carbonshift.io/interruptible": str(job.interruptible).lower(),
            },
        },
        "spec": {
            "suspend": True,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app": job.name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "train", "image": "example/train:1", "resources": {"limits": gpus, "requests": gpus}}
                    ],
                },
            },
        },
    }


def running_pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace).items
    return [p for p in pods if p.status and p.status.phase == "Running" and not p.metadata.deletion_timestamp]


# The planner's grid starts at `now` in 15-minute slots, so a planned window may begin up to one slot before or
# after the trace's boundary (a slot straddling it is priced at its mix).
GRID_H = 0.25


def in_clean_window(start: float, end: float) -> bool:
    return any(a - GRID_H <= start and end <= b + SLACK_H for a, b in CLEAN)


def workload_of(custom: client.CustomObjectsApi, namespace: str, job: str) -> dict[str, Any]:
    items = custom.list_namespaced_custom_object(KUEUE, "v1beta2", namespace, "workloads")["items"]
    return next(w for w in items if any(r["name"] == job for r in w["metadata"].get("ownerReferences") or []))


def test_three_jobs_share_8_gpus_in_clean_windows_through_kueue(kueue_cluster: DevCluster, tmp_path: Path) -> None:
    api = api_client_from_kubeconfig(kueue_cluster.kubeconfig)
    core, batch, custom = client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)
    install_crds(api, load_crd_documents(sorted((REPO / "crds").glob("*.yaml"))))
    account = install_rbac(api)
    namespace = create_namespace(api, "e2e-kueue")
    create_custom(custom, queue_objects(namespace))

    def account_of(job: str) -> dict[str, Any]:
        annotations = workload_of(custom, namespace, job)["metadata"].get("annotations") or {}
        return dict(json.loads(annotations.get("carbonshift.io/kueue-account") or "{}"))

    epoch = datetime.now(UTC).replace(microsecond=0)
    start = epoch - timedelta(hours=2)
    trace = write_trace(tmp_path / "trace.csv", start, trace_values(epoch, start, 48), SLOT)
    kubeconfig = service_account_kubeconfig(
        api, kueue_cluster.kubeconfig, "carbonshift-system", account, tmp_path / "operator.kubeconfig"
    )
    flags = ["--zone", "TEST", "--trace", f"TEST={trace}", "--forecast", "oracle", "--tick", "15m", "--margin", "10m"]
    operator = OperatorProcess(kubeconfig, tmp_path, speed=SPEED, epoch=epoch, extra=flags)
    operator.start()
    try:
        wait_until(operator.serving, "the operator to start", timeout=30, interval=0.05)

        def check_active() -> bool:
            check = custom.get_cluster_custom_object(KUEUE, "v1beta2", "admissionchecks", "carbon-window")
            conditions = (check.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Active" and c["status"] == "True" for c in conditions)

        wait_until(check_active, "the AdmissionCheck Active (set by carbonshift)", timeout=30)

        def hours_now() -> float:
            return (operator.planning_now() - epoch).total_seconds() / 3600

        jobs = [
            Played("tune-c", gpus=4, hours=3.0, interruptible=True),
            Played("train-a", gpus=4, hours=2.0, interruptible=False),
            Played("train-b", gpus=4, hours=2.0, interruptible=False),
        ]
        for job in jobs:
            job.created_h = hours_now()
            batch.create_namespaced_job(
                namespace, job_manifest(job, namespace, priority="first" if job is jobs[0] else None)
            )
            time.sleep(1.1)  # creation timestamps are to the second: Kueue's queue order is then the creation order

        most_gpus, killed = 0, False
        deadline_wall = time.monotonic() + (10.5 - hours_now()) * 3600 / SPEED + 60
        while any(j.done_h is None for j in jobs) and time.monotonic() < deadline_wall:
            now_h = hours_now()
            pods = running_pods(core, namespace)
            most_gpus = max(most_gpus, sum(int(p.spec.containers[0].resources.limits["nvidia.com/gpu"]) for p in pods))
            for job in jobs:
                if job.done_h is not None:
                    continue
                mine = [p for p in pods if p.metadata.labels.get("app") == job.name]
                is_open = bool(job.runs) and job.runs[-1][1] is None
                if mine and not is_open:
                    job.runs.append([now_h, None])  # type: ignore[list-item]
                elif not mine and is_open:
                    job.runs[-1][1] = now_h
                if mine and job.ran_h(now_h) >= job.hours:
                    for pod in mine:
                        core.patch_namespaced_pod(
                            pod.metadata.name,
                            namespace,
                            {"metadata": {"annotations": {"carbonshift.io/complete": "true"}}},
                        )
                    job.runs[-1][1] = now_h
                    job.done_h = now_h
            if not killed and now_h >= 3.0:
                operator.kill()  # mid-way: two jobs running in the first window, one queued
                time.sleep(1.0)
                operator.start()
                killed = True
            kueue_cluster.check_running()  # Kueue among them
            time.sleep(0.1)
        operator.assert_alive()
        if all(j.done_h is not None for j in jobs):  # the receipts come once Kueue declares the workloads finished
            for job in jobs:
                wait_until(lambda job=job: account_of(job.name).get("receiptPosted"), f"{job.name} receipt", 60)
    finally:
        operator.stop()

    def story(job: str) -> list[str]:
        events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={job}").items
        return [f"{e.reason}: {e.message}" for e in sorted(events, key=lambda e: e.metadata.creation_timestamp)]

    report = {
        j.name: {"runs": j.runs, "done": j.done_h, "account": account_of(j.name), "events": story(j.name)} for j in jobs
    }
    assert all(j.done_h is not None for j in jobs), f"not every job finished: {report}\n{operator.logs()[-3000:]}"
    assert killed
    assert most_gpus <= 8, f"{most_gpus} GPUs in use at once: {report}"
    for job in jobs:
        assert job.done_h is not None and job.done_h <= job.created_h + MAX_DELAY_H, f"{job.name} late: {report}"
        for run in job.runs:
            assert in_clean_window(run[0], run[1]), f"{job.name} ran outside a clean window: {report}"
    # The interruptible job: evicted at its first window's end, re-admitted in the next.
    tune = jobs[0]
    assert len(tune.runs) >= 2, report
    assert abs(tune.runs[0][1] - CLEAN[0][1]) <= SLACK_H, f"tune-c not evicted at its window's end: {report}"
    assert CLEAN[1][0] - GRID_H <= tune.runs[1][0] <= CLEAN[1][0] + SLACK_H, report
    # At some point all three wanted the same window: one of the non-interruptible jobs had to wait for the next.
    assert sorted(round(j.runs[0][0]) for j in jobs[1:]) == [2, 6], report

    # Nothing lost across the SIGKILL: the run-time account and the receipt, where a user looks.
    for job in jobs:
        acc = account_of(job.name)
        assert acc.get("receiptPosted"), (job.name, acc)
        ran_s = job.ran_h(job.done_h or 0) * 3600
        assert 0.8 * ran_s <= acc["runSeconds"] <= ran_s + 1800, (job.name, acc["runSeconds"], ran_s)
        events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={job.name}").items
        reasons = {e.reason for e in events}
        assert "Receipt" in reasons and "CarbonWindowWindowOpen" in reasons, (job.name, sorted(reasons))
    assert account_of("tune-c")["suspensions"] >= 1
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=tune-c").items
    assert "CarbonWindowWindowEnded" in {e.reason for e in events}


def test_a_carbonawarejob_in_a_kueue_queue_is_admitted_by_kueue_never_resumed_by_carbonshift(
    kueue_cluster: DevCluster, tmp_path: Path
) -> None:
    """Never both: the CarbonAwareJob's Job names a queue, so Kueue owns its suspend field; the check times it."""
    api = api_client_from_kubeconfig(kueue_cluster.kubeconfig)
    core, batch, custom = client.CoreV1Api(api), client.BatchV1Api(api), client.CustomObjectsApi(api)
    install_crds(api, load_crd_documents(sorted((REPO / "crds").glob("*.yaml"))))
    account = install_rbac(api)
    namespace = create_namespace(api, "e2e-kueue-caj")
    create_custom(custom, queue_objects(namespace))
    epoch = datetime.now(UTC).replace(microsecond=0)
    start = epoch - timedelta(hours=2)
    trace = write_trace(tmp_path / "trace.csv", start, trace_values(epoch, start, 48), SLOT)
    kubeconfig = service_account_kubeconfig(
        api, kueue_cluster.kubeconfig, "carbonshift-system", account, tmp_path / "operator.kubeconfig"
    )
    flags = ["--zone", "TEST", "--trace", f"TEST={trace}", "--forecast", "oracle", "--tick", "15m", "--margin", "10m"]
    operator = OperatorProcess(kubeconfig, tmp_path, speed=SPEED, epoch=epoch, extra=flags)
    operator.start()
    k = Cluster(api)
    try:
        wait_until(operator.serving, "the operator to start", timeout=30, interval=0.05)
        manifest = caj_manifest("queued", duration="1h", max_delay="12h", gpus=2)
        manifest["spec"]["template"]["metadata"] = {
            "labels": {"kueue.x-k8s.io/queue-name": "team"},
            "annotations": {"carbonshift.io/duration": "1h", "carbonshift.io/max-delay": "12h"},
        }
        k.create_caj(namespace, manifest)
        wait_until(lambda: k.job(namespace, "queued"), "the Job, created by carbonshift")
        pods = wait_until(lambda: k.running_pods(namespace, "queued"), "its pod, admitted by Kueue", timeout=90)
        started_h = (operator.planning_now() - epoch).total_seconds() / 3600
        assert CLEAN[0][0] - GRID_H <= started_h <= CLEAN[0][1], f"started at {started_h:.2f} h, outside the window"
        assert pods[0].metadata.labels["carbonshift.io/carbonawarejob"] == "queued"
        k.wait_for_events(namespace, "queued", "KueueManaged")
        k.complete_pods(namespace, "queued")
        wait_until(lambda: k.status(namespace, "queued").get("phase") == "Succeeded", "Succeeded", timeout=60)
        operator.assert_alive()
    finally:
        operator.stop()
    # The suspend field was last written by Kueue (admitting it), never by carbonshift's operator.
    job = batch.read_namespaced_job("queued", namespace)
    owners = [m.manager for m in job.metadata.managed_fields or [] if '"f:suspend"' in json.dumps(m.fields_v1 or {})]
    assert owners and all("kueue" in owner for owner in owners), owners
    assert not [
        e for e in core.list_namespaced_event(namespace).items if e.reason == "Resumed" and e.source.component == "kopf"
    ]
