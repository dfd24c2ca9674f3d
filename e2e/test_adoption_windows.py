"""Adopted workloads through planned windows, on the real control plane with JobSet's real controller.

A dev cluster of its own (ClusterConfig(jobset=True)); the operator as a process under `carbonshift.api.rbac`'s
ServiceAccount with `--webhook --adoption`, planning time 60x the wall clock, a grid trace with clean windows.
Users create their own workloads with labels only (`kubectl --as`, a Role without CarbonAwareJobs):

- a labelled plain Job is resumed in its planned window, runs to Succeeded, and its receipt charges its own pods'
  energy only (DCGM stand-in through a real Prometheus; a pod beside it draws power too and is charged to nobody);
- a labelled, interruptible JobSet is resumed in its window: JobSet's controller unsuspends its Jobs, the Job
  controller creates their pods, kwok runs them; at the window's end it is announced and suspended, and the pods go.
"""

# ruff: noqa: F811 - the fixtures imported from e2e.test_adoption are test parameters of the same names

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from carbonshift_dev.devcluster import DevCluster, PrometheusServer
from carbonshift_dev.devcluster.dcgm import DcgmStandIn
from carbonshift_dev.devcluster.gpu_binder import GpuBinder
from carbonshift_dev.devcluster.operator_process import OperatorProcess, install_rbac, service_account_kubeconfig
from e2e.harness import Cluster, free_port, measured_energy, wait_until, write_trace
from e2e.test_adoption import (  # noqa: F401 - the module's cluster, api and team fixtures
    api,
    caj,
    cluster,
    job,
    jobset,
    kubectl,
    mutating_ready,
    read_jobset,
    team,
)

SPEED = 60.0  # planning seconds per wall second: 15 planning minutes in 15 s
SLOT = timedelta(minutes=15)
CONFIGURATION = "e2e-adoption-windows.carbonshift.io"


def hours_after(epoch: datetime, moment: datetime) -> float:
    return (moment - epoch).total_seconds() / 3600


def start_operator(
    cluster: DevCluster, api: client.ApiClient, workdir: Path, clean: list[tuple[float, float]], extra: list[str]
) -> OperatorProcess:
    """The operator with adoption on, a trace clean (60 g/kWh) in `clean` (hours after its epoch), 400 elsewhere."""
    epoch = datetime.now(UTC).replace(microsecond=0)
    start = epoch - timedelta(hours=1)
    values = [
        60.0 if any(a <= hours_after(epoch, start + i * SLOT) < b for a, b in clean) else 400.0 for i in range(96)
    ]
    trace = write_trace(workdir / "trace.csv", start, values, SLOT)
    account = install_rbac(api)
    kubeconfig = service_account_kubeconfig(
        api, cluster.kubeconfig, "carbonshift-system", account, workdir / "operator.kubeconfig"
    )
    flags = ["--zone", "TEST", "--trace", f"TEST={trace}", "--forecast", "oracle", "--tick", "5m", "--margin", "5m"]
    flags += ["--webhook", "--adoption", "--webhook-address", "127.0.0.1", "--webhook-host", "127.0.0.1"]
    port = free_port()
    flags += ["--webhook-port", str(port), "--webhook-configuration", CONFIGURATION, *extra]
    proc = OperatorProcess(kubeconfig, workdir, speed=SPEED, epoch=epoch, extra=flags)
    proc.start()
    admission = client.AdmissionregistrationV1Api(api)

    def registered_here() -> bool:  # not a previous test's operator's address
        if not mutating_ready(api, CONFIGURATION):
            return False
        hooks = admission.read_mutating_webhook_configuration(CONFIGURATION).webhooks or []
        return all(f":{port}/" in (h.client_config.url or "") for h in hooks)

    wait_until(registered_here, "the adoption webhooks registered", timeout=60)
    return proc


def stop_operator(api: client.ApiClient, proc: OperatorProcess) -> None:
    """Stop it and remove its webhook configurations (they stay registered otherwise: failure policy Fail)."""
    proc.stop()
    admission = client.AdmissionregistrationV1Api(api)
    for delete in (admission.delete_mutating_webhook_configuration, admission.delete_validating_webhook_configuration):
        with contextlib.suppress(client.ApiException):
            delete(CONFIGURATION)


@pytest.fixture
def measured(api: client.ApiClient) -> Iterator[tuple[DcgmStandIn, PrometheusServer, GpuBinder]]:
    with measured_energy(api) as stack:
        yield stack
    assert not stack[2].errors, stack[2].errors


def test_an_adopted_job_runs_in_its_window_to_succeeded_and_is_charged_its_own_pods_only(
    cluster: DevCluster,
    api: client.ApiClient,
    team: str,
    measured: tuple[DcgmStandIn, PrometheusServer, GpuBinder],
    tmp_path: Path,
) -> None:
    exporter, prometheus, _ = measured
    k = Cluster(api)
    dcgm = ["--prometheus-url", prometheus.url, "--dcgm-scrape-interval", "1s"]
    operator = start_operator(cluster, api, tmp_path, [(0.5, 1.0)], dcgm)
    try:
        labels = {"carbonshift.io/max-delay": "3h", "carbonshift.io/duration": "10m"}
        code, out = kubectl(cluster, job("finetune", labels, gpus=2), team)
        assert code == 0 and "created" in out, out
        # A plain pod of the same user beside it, named like the Job's pods: it draws power, charged to nobody.
        debug = {"name": "debug", "image": "example/train:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
        k.core.create_namespaced_pod(
            team,
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "finetune-debug"},
             "spec": {"restartPolicy": "Never", "containers": [debug]}},
        )  # fmt: skip
        wait_until(lambda: caj(api, team, "finetune"), "the tracking CarbonAwareJob", timeout=30)
        status = wait_until(lambda: (s := k.status(team, "finetune")).get("plan") and s, "a plan", timeout=30)
        windows = status["plan"]["windows"]
        assert 0.45 <= hours_after(operator.epoch, datetime.fromisoformat(windows[0]["start"])) <= 0.55, windows
        assert k.job(team, "finetune").spec.suspend is True

        def pods(phase: str | None = None) -> list[client.V1Pod]:
            found = k.core.list_namespaced_pod(team, label_selector="batch.kubernetes.io/job-name=finetune").items
            return [p for p in found if phase is None or (p.status and p.status.phase == phase)]

        wait_until(lambda: pods("Running"), "the Job's pods running", timeout=90)
        assert hours_after(operator.epoch, operator.planning_now()) >= 0.45
        wait_until(lambda: k.status(team, "finetune").get("runningSince"), "run time to count", timeout=20)
        time.sleep(10)  # about its 10 planning minutes; then the training code finishes
        for pod in pods("Running"):
            k.core.patch_namespaced_pod(
                pod.metadata.name, team, {"metadata": {"annotations": {"carbonshift.io/complete": "true"}}}
            )
        status = wait_until(
            lambda: (s := k.status(team, "finetune")).get("receiptPosted") and s, "the receipt", timeout=120
        )
    finally:
        stop_operator(api, operator)
    assert status["phase"] == "Succeeded", status
    assert k.job(team, "finetune").status.succeeded == 1
    names = sorted(p.metadata.name for p in pods())
    assert len(names) == 1 and all(re.fullmatch(r"finetune-[a-z0-9]{5}", n) for n in names), names
    assert status["energySource"] == "dcgm"
    assert {p["name"] for p in status["energy"]["pods"]} == set(names), status["energy"]["pods"]
    truth_kwh = sum(exporter.energy_mj(team, n) for n in names) / 3.6e9
    # Its 2 GPUs: one 1 s scrape at training power each, unseen at the end (as in test_operator_energy). A run this
    # short (about 15 kJ) also sees the edge of a scrape above the counter: 1.8% (270 J, 0.2 s of 2 GPUs) measured
    # once. The debug pod beside it (1 GPU, running all along) drew more: charging it would at least double it.
    scrape_kwh = 2 * 1.0 * 700.0 / 3.6e6
    assert truth_kwh - scrape_kwh - 0.01 * truth_kwh <= status["energyKWh"] <= 1.01 * truth_kwh + scrape_kwh, (
        status["energyKWh"],
        truth_kwh,
    )
    assert exporter.energy_mj(team, "finetune-debug") > 0, "the plain pod drew energy, charged to nobody"
    k.wait_for_events(team, "finetune", "Receipt")
    assert "Traceback" not in operator.logs(), operator.logs()[-4000:]


def test_an_adopted_interruptible_jobset_runs_in_its_window_and_is_suspended_at_its_end(
    cluster: DevCluster, api: client.ApiClient, team: str, tmp_path: Path
) -> None:
    k = Cluster(api)
    operator = start_operator(cluster, api, tmp_path, [(0.5, 1.0), (1.5, 2.0)], [])
    try:
        labels = {
            "carbonshift.io/max-delay": "4h",
            "carbonshift.io/duration": "40m",
            "carbonshift.io/interruptible": "true",
        }
        code, out = kubectl(cluster, jobset("pretrain", labels), team)
        assert code == 0 and "created" in out, out

        def pods(phase: str | None = None) -> list[client.V1Pod]:
            found = k.core.list_namespaced_pod(team, label_selector="jobset.sigs.k8s.io/jobset-name=pretrain").items
            return [p for p in found if phase is None or (p.status and p.status.phase == phase)]

        wait_until(lambda: caj(api, team, "pretrain"), "the tracking CarbonAwareJob", timeout=30)
        status = wait_until(lambda: (s := k.status(team, "pretrain")).get("plan") and s, "a plan", timeout=30)
        windows = status["plan"]["windows"]
        assert len(windows) >= 2 and all(w["gPerKWh"] == 60 for w in windows), windows  # two clean windows
        assert 0.45 <= hours_after(operator.epoch, datetime.fromisoformat(windows[0]["start"])) <= 0.55, windows
        first_end = hours_after(operator.epoch, datetime.fromisoformat(windows[0]["end"]))
        assert first_end <= 1.0, windows
        assert read_jobset(api, team, "pretrain")["spec"]["suspend"] is True
        assert not pods()
        # In the window: resumed; JobSet's controller resumes its Jobs, whose pods kwok runs.
        running = wait_until(lambda: len(pods("Running")) == 2 and pods("Running"), "two pods running", timeout=90)
        resumed_h = hours_after(operator.epoch, operator.planning_now())
        assert resumed_h >= 0.45, resumed_h
        assert all(p.spec.node_name for p in running)
        wait_until(
            lambda: k.status(team, "pretrain").get("runningSince"), "run time to count (phase Running)", timeout=30
        )
        # At the window's end: announced ahead (the suspend-at annotation), then suspended; its pods go.
        announced = wait_until(
            lambda: (read_jobset(api, team, "pretrain")["metadata"].get("annotations") or {}).get(
                "carbonshift.io/suspend-at"
            ),
            "the suspension announced",
            timeout=60,
        )
        assert abs(hours_after(operator.epoch, datetime.fromisoformat(announced)) - first_end) <= 0.1, announced
        wait_until(lambda: read_jobset(api, team, "pretrain")["spec"]["suspend"] is True, "suspended", timeout=60)
        suspended_h = hours_after(operator.epoch, operator.planning_now())
        assert first_end - 0.1 <= suspended_h <= first_end + 0.25, (suspended_h, first_end)
        wait_until(lambda: not [p for p in pods() if p.status.phase == "Running"], "its pods stopped", timeout=60)
        jobs = (
            client.BatchV1Api(api)
            .list_namespaced_job(team, label_selector="jobset.sigs.k8s.io/jobset-name=pretrain")
            .items
        )
        assert len(jobs) == 2 and all(j.spec.suspend for j in jobs), [(j.metadata.name, j.spec.suspend) for j in jobs]
        status = wait_until(
            lambda: (s := k.status(team, "pretrain")).get("phase") == "Suspended" and s, "phase Suspended", timeout=30
        )
        k.wait_for_events(team, "pretrain", "Planned", "Resumed", "SuspendPlanned", "Suspended")
        assert status["progress"]["workSeconds"] > 0, status["progress"]
    finally:
        stop_operator(api, operator)
    assert "Traceback" not in operator.logs(), operator.logs()[-4000:]
