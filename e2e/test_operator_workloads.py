"""CarbonAwareJobs of other kinds than a Job they create, on the real control plane (issue 16, items 4 and 5).

- a template that is a JobSet (its real CRD, from hack/install-crds.sh; no JobSet controller runs here, so the test
  plays its part by writing the JobSet's status): created suspended, resumed in its planned window, announced and
  suspended at the window's end;
- a `spec.workloadRef` to a plain suspended Job the test created as its user would: resumed in its window, run to
  Succeeded, with a receipt whose energy (DCGM through a real Prometheus) is that Job's pods' only;
- a template of a kind whose CRD is not installed (RayJob): condition KindNotInstalled, exactly one Event, and no
  retry loop in the operator's log.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kubernetes import client

from carbonshift.api.carbonawarejob import CarbonAwareJob
from carbonshift.domain.core import CoreSettings
from carbonshift.domain.forecasting import parse_forecast_model
from carbonshift.domain.planning.model import Cluster as PlanCluster
from carbonshift.domain.series import IntensitySeries
from carbonshift.handlers import translate
from carbonshift.simulate.closed_loop import LoopSettings, run_job
from carbonshift_dev.devcluster.testing import install_crds, load_crd_documents
from carbonshift_dev.devcluster.workload_crds import crd_path
from e2e.harness import (
    Cluster,
    OperatorInstall,
    OperatorProcess,
    caj_manifest,
    measured_energy,
    serving_operator,
    wait_until,
    write_trace,
)

SPEED = 600.0  # planning seconds per wall second: an hour in 6 s
SLOT = timedelta(minutes=15)
JOBSET = ("jobset.x-k8s.io", "v1alpha2", "jobsets")
RAYJOBS_CRD = "rayjobs.ray.io"
TRACES: dict[str, IntensitySeries] = {}  # the operator fixture's trace, for the closed-loop replay


def trace_values(epoch: datetime, start: datetime, hours: float, low: list[tuple[float, float]]) -> list[float]:
    """500 g/kWh everywhere, 80 g/kWh in the `low` windows (hours after the epoch)."""
    values = []
    for i in range(int(hours * 4)):
        at = (start + i * SLOT - epoch).total_seconds() / 3600
        values.append(80.0 if any(a <= at < b for a, b in low) else 500.0)
    return values


def hours_after(proc: OperatorProcess, moment: datetime) -> float:
    return (moment - proc.epoch).total_seconds() / 3600


@pytest.fixture(scope="module")
def jobset_crd(api_client: client.ApiClient) -> None:
    """The JobSet CRD installed and the RayJob CRD absent, before the operator starts (it watches the kinds served at
    its start)."""
    install_crds(api_client, load_crd_documents([crd_path("JobSet")]))
    ext = client.ApiextensionsV1Api(api_client)
    with contextlib.suppress(client.ApiException):
        ext.delete_custom_resource_definition(RAYJOBS_CRD)

    def rayjobs_gone() -> bool:
        try:
            ext.read_custom_resource_definition(RAYJOBS_CRD)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_until(rayjobs_gone, "the RayJob CRD to be absent", timeout=60)


@pytest.fixture
def operator(
    api_client: client.ApiClient,
    operator_install: OperatorInstall,
    installed_crds: object,
    jobset_crd: None,
    tmp_path: Path,
) -> Iterator[OperatorProcess]:
    epoch = datetime.now(UTC).replace(microsecond=0)
    start = epoch - timedelta(hours=2)
    values = trace_values(epoch, start, 96, [(3.0, 5.0), (9.0, 11.0)])
    trace = write_trace(tmp_path / "trace.csv", start, values, SLOT)
    TRACES["TEST"] = IntensitySeries("TEST", start, SLOT, np.array(values))
    config = operator_install.kubeconfig(tmp_path / "operator.kubeconfig")
    extra = ["--zone", "TEST", "--trace", f"TEST={trace}", "--forecast", "oracle", "--tick", "15m", "--margin", "10m"]
    proc = OperatorProcess(config, tmp_path, speed=SPEED, epoch=epoch, extra=extra)
    with serving_operator(proc, api_client) as running:
        yield running


def jobset_template(gpus: int = 1) -> dict[str, Any]:
    pod = {"restartPolicy": "Never", "containers": [{"name": "train", "image": "example/train:1",
                                                      "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}  # fmt: skip
    job = {"parallelism": 1, "completions": 1, "backoffLimit": 0, "template": {"spec": pod}}
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "spec": {"replicatedJobs": [{"name": "workers", "replicas": 2, "template": {"spec": job}}]},
    }


def test_a_jobset_template_is_created_suspended_resumed_in_its_window_and_suspended_at_its_end(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client)
    custom = client.CustomObjectsApi(api_client)
    checkpoint = {"overhead": "1m", "gracePeriod": "10m", "minRunDuration": "15m"}
    manifest = caj_manifest("sweep", duration="3h", max_delay="20h", interruptible=True, checkpoint=checkpoint)
    manifest["spec"]["template"] = jobset_template()
    k.create_caj(namespace, manifest)

    def jobset() -> dict[str, Any] | None:
        try:
            return dict(custom.get_namespaced_custom_object(*JOBSET[:2], namespace, JOBSET[2], "sweep"))
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    created = wait_until(jobset, "the JobSet")
    assert created["spec"]["suspend"] is True, "created suspended"
    assert created["metadata"]["ownerReferences"][0]["kind"] == "CarbonAwareJob"
    assert created["metadata"]["labels"]["carbonshift.io/managed"] == "true"
    status = wait_until(lambda: (s := k.status(namespace, "sweep")).get("plan") and s, "a plan")
    assert status["jobName"] == "sweep"
    windows = status["plan"]["windows"]
    assert 2.75 <= hours_after(operator, datetime.fromisoformat(windows[0]["start"])) <= 3.25, windows
    assert operator.planning_now() < operator.epoch + timedelta(hours=2.75)
    # In the window: resumed. No JobSet controller runs here: play its part, both Jobs' pods ready.
    wait_until(lambda: (j := jobset()) and j["spec"].get("suspend") is False, "the JobSet resumed", timeout=40)
    resumed_at = operator.planning_now()
    assert hours_after(operator, resumed_at) >= 2.75
    ready = {"replicatedJobsStatus": [{"name": "workers", "ready": 2, "active": 2, "succeeded": 0, "failed": 0,
                                       "suspended": 0}]}  # fmt: skip
    custom.patch_namespaced_custom_object_status(*JOBSET[:2], namespace, JOBSET[2], "sweep", {"status": ready})
    wait_until(lambda: k.status(namespace, "sweep").get("runningSince"), "run time to count", timeout=20)
    resumed_chunk = k.status(namespace, "sweep")["progress"]["chunkStartedAt"]  # the resume, in planning time
    # At the window's end (5 h): announced gracePeriod ahead, then suspended.
    announced = wait_until(
        lambda: (j := jobset()) and (j["metadata"].get("annotations") or {}).get("carbonshift.io/suspend-at"),
        "the suspension announced",
        timeout=40,
    )
    assert 4.5 <= hours_after(operator, datetime.fromisoformat(announced)) <= 5.25, announced
    wait_until(lambda: (j := jobset()) and j["spec"].get("suspend") is True, "the JobSet suspended", timeout=40)
    suspended_at = operator.planning_now()
    assert 4.5 <= hours_after(operator, suspended_at) <= 5.5, suspended_at
    stopped = {"replicatedJobsStatus": [{"name": "workers", "ready": 0, "active": 0, "succeeded": 0, "failed": 0,
                                         "suspended": 2}]}  # fmt: skip
    custom.patch_namespaced_custom_object_status(*JOBSET[:2], namespace, JOBSET[2], "sweep", {"status": stopped})
    status = wait_until(lambda: (s := k.status(namespace, "sweep")).get("phase") == "Suspended" and s, "Suspended")
    assert status["progress"]["workSeconds"] > 3600, status["progress"]  # two GPUs' pods ran about 2 h
    k.wait_for_events(namespace, "sweep", "JobCreated", "Planned", "Resumed", "SuspendPlanned", "Suspended")
    created_event = next(e for e in k.events(namespace, "sweep") if e.reason == "JobCreated")
    assert created_event.message.startswith("Created JobSet sweep (suspended)"), created_event.message
    # The same job replayed through the simulator's closed loop (the same core, trace, forecast model, tick and
    # margin) resumes and suspends at the same times, within one tick (issue 13, item 5).
    caj = CarbonAwareJob.model_validate(k.caj(namespace, "sweep"))
    submitted = datetime.fromisoformat(status["submittedAt"])
    deadline = datetime.fromisoformat(status["deadline"])
    needs = translate.job_needs("sweep", caj.spec, deadline, gpus=2)
    tick = timedelta(minutes=15)
    replay = run_job(
        needs, submitted, TRACES["TEST"], parse_forecast_model("oracle"), PlanCluster("local", "TEST", 1.0, 16),
        lambda begin, end: 0.0, CoreSettings(tick=tick, margin=timedelta(minutes=10)), LoopSettings(tick=tick),
    )  # fmt: skip
    first_resume = datetime.fromisoformat(resumed_chunk)
    assert abs(replay.windows[0][0] - first_resume) <= tick, (replay.windows, first_resume)
    assert abs(replay.windows[0][1] - datetime.fromisoformat(announced)) <= tick, (replay.windows, announced)
    # Deleting the CarbonAwareJob deletes the JobSet it created.
    custom.delete_namespaced_custom_object("carbonshift.io", "v1alpha1", namespace, "carbonawarejobs", "sweep")
    wait_until(lambda: jobset() is None, "the JobSet deleted", timeout=30)
    operator.assert_alive()


def test_a_kind_whose_crd_is_not_installed_gets_one_condition_and_one_event_and_no_retry_loop(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client)
    manifest = caj_manifest("ray", duration="1h", max_delay="20h")
    head = {"rayStartParams": {}, "template": {"spec": {"containers": [{"name": "ray-head", "image": "ray:2"}]}}}
    manifest["spec"]["template"] = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "spec": {"entrypoint": "python train.py", "shutdownAfterJobFinishes": True,
                 "rayClusterSpec": {"headGroupSpec": head}},
    }  # fmt: skip
    k.create_caj(namespace, manifest)

    def unavailable() -> dict[str, Any] | None:
        conditions = k.status(namespace, "ray").get("conditions") or []
        return next((c for c in conditions if c["type"] == "WorkloadUnavailable" and c["status"] == "True"), None)

    condition = wait_until(unavailable, "the WorkloadUnavailable condition", timeout=30)
    assert condition["reason"] == "KindNotInstalled"
    assert "rayjobs.ray.io is not installed" in condition["message"], condition["message"]
    assert "KubeRay" in condition["message"], condition["message"]
    # Many ticks later (an hour of planning time at the 15 min tick: 4 re-checks): still one Event, no loop.
    time.sleep(8)
    events = [e for e in k.events(namespace, "ray") if e.reason == "KindNotInstalled"]
    assert len(events) == 1 and (events[0].count or 1) == 1, [(e.reason, e.count) for e in events]
    assert k.status(namespace, "ray")["phase"] == "Pending"
    log = operator.logs()
    assert log.count("rayjobs.ray.io") <= 1, log[-3000:]
    assert "reconcile failed" not in log, log[-3000:]
    operator.assert_alive()


def test_a_workload_ref_to_a_users_job_runs_in_its_window_and_is_charged_its_own_pods_only(
    api_client: client.ApiClient,
    operator_install: OperatorInstall,
    installed_crds: object,
    namespace: str,
    tmp_path: Path,
) -> None:
    k = Cluster(api_client)
    energy = contextlib.ExitStack()  # closed in the finally below
    exporter, prometheus, binder = energy.enter_context(measured_energy(api_client))
    epoch = datetime.now(UTC).replace(microsecond=0)
    start = epoch - timedelta(hours=1)
    # Clean in [15m, 45m) after the epoch; 60x: the window opens 15 s after the start.
    values = [60.0 if 0.25 <= (start + i * SLOT - epoch).total_seconds() / 3600 < 0.75 else 400.0 for i in range(48)]
    trace = write_trace(tmp_path / "trace.csv", start, values, SLOT)
    config = operator_install.kubeconfig(tmp_path / "operator.kubeconfig")
    extra = ["--zone", "TEST", "--trace", f"TEST={trace}", "--forecast", "oracle", "--tick", "5m", "--margin", "5m"]
    extra += ["--prometheus-url", prometheus.url, "--dcgm-scrape-interval", "1s"]
    proc = OperatorProcess(config, tmp_path, speed=60.0, epoch=epoch, extra=extra)
    try:
        proc.start()
        wait_until(proc.serving, "the operator to start", timeout=30, interval=0.05)
        time.sleep(0.5)
        # The user's own Job, created suspended with their manifest (no label of ours), and a plain pod beside it
        # whose name starts like the Job's pods.
        job = caj_manifest("theirs", duration="1h", gpus=2)["spec"]["template"]
        body = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "theirs"},
                "spec": {**job["spec"], "suspend": True}}  # fmt: skip
        for container in body["spec"]["template"]["spec"]["containers"]:  # the client wants quantities as strings
            limits = container["resources"]["limits"]
            limits["nvidia.com/gpu"] = str(limits["nvidia.com/gpu"])
        client.BatchV1Api(api_client).create_namespaced_job(namespace, body)
        debug = {"name": "debug", "image": "example/train:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
        k.core.create_namespaced_pod(
            namespace,
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "theirs-debug"},
             "spec": {"restartPolicy": "Never", "containers": [debug]}},
        )  # fmt: skip
        manifest = caj_manifest("drive-theirs", duration="20m", max_delay="2h")
        del manifest["spec"]["template"]
        manifest["spec"]["workloadRef"] = {"apiVersion": "batch/v1", "kind": "Job", "name": "theirs"}
        k.create_caj(namespace, manifest)
        status = wait_until(lambda: (s := k.status(namespace, "drive-theirs")).get("plan") and s, "a plan")
        assert status["phase"] == "Waiting" and status["jobName"] == "theirs", status
        assert k.job(namespace, "theirs").spec.suspend is True

        def job_pods(phase: str | None = None) -> list[client.V1Pod]:
            pods = k.core.list_namespaced_pod(namespace, label_selector="batch.kubernetes.io/job-name=theirs").items
            return [p for p in pods if phase is None or (p.status and p.status.phase == phase)]

        wait_until(lambda: job_pods("Running"), "the Job's pod running", timeout=60)
        resumed_at = proc.planning_now()
        assert resumed_at >= epoch + timedelta(minutes=14), resumed_at
        # Let it run about 20 planning minutes, then the workload finishes.
        wait_until(
            lambda: k.status(namespace, "drive-theirs").get("runningSince"), "run time to count", timeout=20
        )  # fmt: skip
        time.sleep(20)
        for pod in job_pods("Running"):
            body = {"metadata": {"annotations": {"carbonshift.io/complete": "true"}}}
            k.core.patch_namespaced_pod(pod.metadata.name, namespace, body)
        status = wait_until(
            lambda: (s := k.status(namespace, "drive-theirs")).get("receiptPosted") and s, "the receipt", timeout=120
        )
    finally:
        proc.stop()
        energy.close()
    assert status["phase"] == "Succeeded", status
    pods = sorted(p.metadata.name for p in job_pods())
    assert pods and all(re.fullmatch(r"theirs-[a-z0-9]{5}", p) for p in pods), pods
    assert status["energySource"] == "dcgm"
    assert {p["name"] for p in status["energy"]["pods"]} == set(pods), status["energy"]["pods"]
    truth_kwh = sum(exporter.energy_mj(namespace, pod) for pod in pods) / 3.6e9
    # Within one 1 s scrape at training power per GPU either way (a holding's first or last second; see
    # test_operator_energy) and 1 %: the plain pod beside it drew about 683 W for the whole run, far outside this.
    unseen_kwh = 2 * 1.0 * 700.0 / 3.6e6
    assert truth_kwh - unseen_kwh - 0.01 * truth_kwh <= status["energyKWh"] <= 1.01 * truth_kwh + unseen_kwh, (
        status["energyKWh"],
        truth_kwh,
    )
    debug_kwh = exporter.energy_mj(namespace, "theirs-debug") / 3.6e9
    assert debug_kwh > 2 * unseen_kwh, "the plain pod drew energy (charged to nobody)"
    k.wait_for_events(namespace, "drive-theirs", "Receipt")
    # The user's Job is theirs: deleting the CarbonAwareJob leaves it.
    k.custom.delete_namespaced_custom_object("carbonshift.io", "v1alpha1", namespace, "carbonawarejobs", "drive-theirs")
    time.sleep(2)
    assert k.job(namespace, "theirs") is not None
    assert not binder.errors
