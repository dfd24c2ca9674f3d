"""A labelled Kubeflow TrainJob through planned windows, on the real control plane with the trainer's real controller.

A dev cluster of its own (ClusterConfig(jobset=True, trainer=True)): Kubeflow Trainer v2's controller manager makes
each TrainJob's JobSet, JobSet's controller its Jobs, the Job controller their pods, kwok runs them. The operator runs
as a process under `carbonshift.api.rbac`'s ServiceAccount with `--webhook --adoption`, planning time 60x the wall
clock, a grid trace with two clean windows. The user creates a TrainJob with labels only (`kubectl --as`), on a
torch-style ClusterTrainingRuntime whose trainer step asks for GPUs:

- it is created suspended (the adoption webhook), and the trainer's JobSet with it: no pods;
- resumed in its first planned window: the trainer resumes its JobSet, whose pods run on kwok's GPU nodes;
- interruptible: announced and suspended at that window's end; the trainer suspends its JobSet and the pods go;
- resumed in the next window, its pods complete, the TrainJob completes (the trainer's Complete condition), and its
  receipt charges its own pods' energy (DCGM stand-in through a real Prometheus), of both runs.
"""

# ruff: noqa: F811 - the fixtures imported from the adoption e2e modules are test parameters of the same names

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from carbonshift_dev.devcluster import COMPLETE_ANNOTATION, ClusterConfig, DevCluster, PrometheusServer
from carbonshift_dev.devcluster.dcgm import DcgmStandIn
from carbonshift_dev.devcluster.gpu_binder import GpuBinder
from carbonshift_dev.devcluster.testing import api_client_from_kubeconfig, install_crds, load_crd_documents
from e2e.harness import Cluster, wait_until
from e2e.test_adoption import caj, kubectl, team  # noqa: F401 - team: a fixture of this module's `api`
from e2e.test_adoption_windows import hours_after, measured, start_operator, stop_operator  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
TRAINER = ("trainer.kubeflow.org", "v1alpha1")
RUNTIME = "e2e-torch"
GPUS_PER_NODE = 2
NODES = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    if os.environ.get("E2E_KUBECONFIG"):
        pytest.skip("runs on a dev cluster with Kubeflow Trainer (ClusterConfig(trainer=True)), not E2E_KUBECONFIG")
    config = ClusterConfig(
        name="e2e-trainjob", nodes=2, gpus_per_node=8, jobset=True, trainer=True, startup_timeout_seconds=300.0
    )
    with DevCluster.start(config) as started:
        yield started
        shutil.copytree(started.workdir / "logs", tmp_path_factory.mktemp("trainjob-cluster-logs"), dirs_exist_ok=True)


@pytest.fixture(scope="module")
def api(cluster: DevCluster) -> Iterator[client.ApiClient]:
    api = api_client_from_kubeconfig(cluster.kubeconfig)
    install_crds(api, load_crd_documents(sorted((REPO / "crds").glob("*.yaml"))))
    yield api
    api.close()


def torch_runtime() -> dict[str, Any]:
    """A minimal torch-style ClusterTrainingRuntime: NODES nodes, its trainer step GPUS_PER_NODE GPUs each."""
    node = {
        "name": "node",
        "image": "registry.example/torch:2",
        "command": ["torchrun", "train.py"],
        "resources": {"limits": {"nvidia.com/gpu": str(GPUS_PER_NODE)}},
    }
    return {
        "apiVersion": "/".join(TRAINER),
        "kind": "ClusterTrainingRuntime",
        "metadata": {"name": RUNTIME},
        "spec": {
            "mlPolicy": {"numNodes": NODES, "torch": {"numProcPerNode": "auto"}},
            "template": {
                "spec": {
                    "replicatedJobs": [
                        {
                            "name": "node",
                            "template": {
                                "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                                "spec": {"template": {"spec": {"containers": [node]}}},
                            },
                        }
                    ]
                }
            },
        },
    }


@pytest.fixture(scope="module")
def runtime(api: client.ApiClient) -> Iterator[str]:
    custom = client.CustomObjectsApi(api)
    custom.create_cluster_custom_object(*TRAINER, "clustertrainingruntimes", torch_runtime())
    yield RUNTIME
    custom.delete_cluster_custom_object(*TRAINER, "clustertrainingruntimes", RUNTIME)


def trainjob(name: str, labels: dict[str, str], runtime: str) -> dict[str, Any]:
    return {
        "apiVersion": "/".join(TRAINER),
        "kind": "TrainJob",
        "metadata": {"name": name, "labels": labels},
        "spec": {"runtimeRef": {"name": runtime}, "trainer": {"image": "registry.example/finetune:1"}},
    }


def read(api: client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    group, version = ("jobset.x-k8s.io", "v1alpha2") if plural == "jobsets" else TRAINER
    found: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        group, version, namespace, plural, name
    )
    return found


def test_an_adopted_trainjob_runs_in_its_windows_is_suspended_between_them_and_charged_its_own_pods(
    cluster: DevCluster,
    api: client.ApiClient,
    team: str,
    runtime: str,
    measured: tuple[DcgmStandIn, PrometheusServer, GpuBinder],
    tmp_path: Path,
) -> None:
    exporter, prometheus, _ = measured
    k = Cluster(api)
    dcgm = ["--prometheus-url", prometheus.url, "--dcgm-scrape-interval", "1s"]
    operator = start_operator(cluster, api, tmp_path, [(0.5, 1.0), (1.5, 2.0)], dcgm)
    seen: set[str] = set()

    def pods(phase: str | None = None) -> list[client.V1Pod]:
        found = k.core.list_namespaced_pod(team, label_selector="jobset.sigs.k8s.io/jobset-name=finetune").items
        seen.update(p.metadata.name for p in found if p.status and p.status.phase == "Running")
        return [p for p in found if phase is None or (p.status and p.status.phase == phase)]

    try:
        labels = {
            "carbonshift.io/max-delay": "4h",
            "carbonshift.io/duration": "40m",
            "carbonshift.io/interruptible": "true",
        }
        code, out = kubectl(cluster, trainjob("finetune", labels, runtime), team)
        assert code == 0 and "created" in out, out
        stored = read(api, team, "trainjobs", "finetune")
        assert stored["spec"]["suspend"] is True, stored["spec"]
        assert stored["metadata"]["labels"]["carbonshift.io/managed"] == "true"
        tracking = wait_until(lambda: caj(api, team, "finetune"), "the tracking CarbonAwareJob", timeout=30)
        assert tracking["spec"]["workloadRef"]["kind"] == "TrainJob"
        status = wait_until(lambda: (s := k.status(team, "finetune")).get("plan") and s, "a plan", timeout=30)
        windows = status["plan"]["windows"]
        assert len(windows) >= 2 and all(w["gPerKWh"] == 60 for w in windows), windows
        assert 0.45 <= hours_after(operator.epoch, datetime.fromisoformat(windows[0]["start"])) <= 0.55, windows
        first_end = hours_after(operator.epoch, datetime.fromisoformat(windows[0]["end"]))
        assert first_end <= 1.0, windows
        # The trainer made its JobSet, suspended with it: no pods before the window.
        jobset = wait_until(lambda: _maybe(api, team, "finetune"), "the trainer's JobSet", timeout=60)
        assert jobset["spec"]["suspend"] is True, jobset["spec"]
        assert [o["kind"] for o in jobset["metadata"]["ownerReferences"]] == ["TrainJob"]
        assert not pods()
        # In the window: resumed; the trainer resumes its JobSet, JobSet its Jobs, kwok runs their pods.
        running = wait_until(
            lambda: len(pods("Running")) == NODES and pods("Running"), "the trainer's pods running", timeout=90
        )
        assert hours_after(operator.epoch, operator.planning_now()) >= 0.45
        assert read(api, team, "trainjobs", "finetune")["spec"]["suspend"] is False
        assert all(p.spec.node_name for p in running)
        gpus = [c.resources.limits["nvidia.com/gpu"] for p in running for c in p.spec.containers]
        assert gpus == [str(GPUS_PER_NODE)] * NODES, gpus
        wait_until(lambda: k.status(team, "finetune").get("runningSince"), "run time to count", timeout=30)
        # At the window's end: announced, suspended; the trainer suspends its JobSet and the pods go.
        announced = wait_until(
            lambda: (read(api, team, "trainjobs", "finetune")["metadata"].get("annotations") or {}).get(
                "carbonshift.io/suspend-at"
            ),
            "the suspension announced",
            timeout=60,
        )
        assert abs(hours_after(operator.epoch, datetime.fromisoformat(announced)) - first_end) <= 0.1, announced
        wait_until(lambda: read(api, team, "trainjobs", "finetune")["spec"]["suspend"] is True, "suspended", timeout=60)
        suspended_h = hours_after(operator.epoch, operator.planning_now())
        assert first_end - 0.1 <= suspended_h <= first_end + 0.25, (suspended_h, first_end)
        wait_until(lambda: read(api, team, "jobsets", "finetune")["spec"]["suspend"] is True, "JobSet suspended")
        wait_until(lambda: not pods("Running"), "its pods stopped", timeout=60)
        first_run = set(seen)
        assert len(first_run) == NODES, first_run
        wait_until(lambda: k.status(team, "finetune").get("phase") == "Suspended", "phase Suspended", timeout=30)
        # The next window: resumed again; the rest of its work done, the training code finishes.
        wait_until(lambda: len(pods("Running")) == NODES, "its pods running again", timeout=120)
        assert hours_after(operator.epoch, operator.planning_now()) >= 1.45
        for pod in pods("Running"):
            k.core.patch_namespaced_pod(
                pod.metadata.name, team, {"metadata": {"annotations": {COMPLETE_ANNOTATION: "true"}}}
            )
        status = wait_until(
            lambda: (s := k.status(team, "finetune")).get("receiptPosted") and s, "the receipt", timeout=120
        )
    finally:
        stop_operator(api, operator)
    assert status["phase"] == "Succeeded", status
    conditions = read(api, team, "trainjobs", "finetune")["status"]["conditions"]
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in conditions), conditions
    assert len(seen) == 2 * NODES and first_run < seen, seen
    k.wait_for_events(team, "finetune", "Planned", "Resumed", "SuspendPlanned", "Suspended", "Receipt")
    # Its receipt: its own pods of both runs, as the DCGM stand-in counted them; nobody else's.
    assert status["energySource"] == "dcgm"
    charged = {p["name"] for p in status["energy"]["pods"]}
    assert charged == seen, (charged, seen)
    truth_kwh = sum(exporter.energy_mj(team, n) for n in seen) / 3.6e9
    # Each GPU: up to a 1 s scrape at training power unseen at each run's end (as in test_adoption_windows), and the
    # edge of a scrape above the counter (1%).
    scrape_kwh = 2 * NODES * GPUS_PER_NODE * 1.0 * 700.0 / 3.6e6
    assert truth_kwh - scrape_kwh - 0.01 * truth_kwh <= status["energyKWh"] <= 1.01 * truth_kwh + scrape_kwh, (
        status["energyKWh"],
        truth_kwh,
    )
    assert "Traceback" not in operator.logs(), operator.logs()[-4000:]


def _maybe(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return read(api, namespace, "jobsets", name)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
