"""Measured receipts: a job's energy read through a real Prometheus scraping the DCGM stand-in matches what the
stand-in served to the job's pods within 1%, across a suspend and a resume; the receipt Event is posted at the end.
Beside it run a second CarbonAwareJob `train-1` (its pods' names start with "train-") and a plain pod `train-debug`:
the operator charges each job its own pods only (listed by identity), and the plain pod to nobody.

The stand-in replays the real H100 trace (training phase) on the dev cluster's GPU nodes; `GpuBinder` assigns GPUs
to the Job's pods as a kubelet's pod-resources API would, so the series carry the pods' names.
"""

from __future__ import annotations

import contextlib
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubernetes import client

from carbonshift_dev.devcluster.workload import Workload
from e2e.harness import (
    Cluster,
    OperatorInstall,
    OperatorProcess,
    caj_manifest,
    measured_energy,
    wait_until,
    write_trace,
)

SPEED = 60.0  # planning minutes per wall second
SLOT = timedelta(minutes=15)


def test_receipt_energy_matches_the_replayed_counter_across_suspend_and_resume(
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
    # Clean in [15m, 45m) and [60m, 90m) after the epoch: an interruptible 40-minute job runs in two chunks. The first
    # chunk is 30 s of wall time at 60x: with 15 s its pod, slowed by a loaded machine, once never ran in it (the
    # job then ran in one piece in the second window, one pod, and the test proved nothing of suspend and resume).
    values = [
        60.0 if 0.25 <= (start + i * SLOT - epoch).total_seconds() / 3600 < 0.75
        or 1.0 <= (start + i * SLOT - epoch).total_seconds() / 3600 < 1.5 else 400.0
        for i in range(4 * 12)
    ]  # fmt: skip
    trace = write_trace(tmp_path / "trace.csv", start, values, SLOT)
    config = operator_install.kubeconfig(tmp_path / "operator.kubeconfig")
    extra = ["--zone", "TEST", "--trace", f"TEST={trace}", "--forecast", "oracle", "--tick", "5m", "--margin", "5m"]
    extra += ["--prometheus-url", prometheus.url, "--dcgm-scrape-interval", "1s"]  # the harness scrapes every 1 s
    proc = OperatorProcess(config, tmp_path, speed=SPEED, epoch=epoch, extra=extra)
    workload = Workload(api_client, {"local": api_client}, namespace, proc.planning_now)
    try:
        proc.start()
        wait_until(proc.serving, "the operator to start", timeout=30, interval=0.05)
        time.sleep(0.5)
        checkpoint = {"overhead": "1m", "gracePeriod": "2m", "minRunDuration": "5m"}
        manifest = caj_manifest(
            "train", duration="40m", max_delay="2h", gpus=2, interruptible=True, checkpoint=checkpoint
        )
        k.create_caj(namespace, manifest)
        k.create_caj(namespace, caj_manifest("train-1", duration="20m", max_delay="2h", gpus=1, policy="Immediate"))
        debug = {"name": "debug", "image": "example/train:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
        k.core.create_namespaced_pod(
            namespace,
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "train-debug"},
             "spec": {"restartPolicy": "Never", "containers": [debug]}},
        )  # fmt: skip
        workload.start()
        status = wait_until(
            lambda: (s := k.status(namespace, "train")).get("receiptPosted") and s, "the receipt", timeout=180
        )
        other = wait_until(
            lambda: (s := k.status(namespace, "train-1")).get("receiptPosted") and s, "train-1's receipt", timeout=120
        )
    finally:
        workload.halt.set()
        proc.stop()
        energy.close()
    assert status["phase"] == "Succeeded"
    events = [(e.reason, e.message) for e in k.events(namespace, "train")]
    assert status["suspensions"] >= 1, f"two chunks expected: {status['runSeconds']} s, {events}"
    # Ground truth by the Job controller's naming (<job>-<5 chars>), which the operator itself no longer relies on:
    # "train-debug" fits that pattern too (this test's first version counted it as train's).
    pods = [
        pod for ns, pod in binder.seen
        if ns == namespace and re.fullmatch(r"train-[a-z0-9]{5}", pod) and pod != "train-debug"
    ]  # fmt: skip
    others = [pod for ns, pod in binder.seen if ns == namespace and re.fullmatch(r"train-1-[a-z0-9]{5}", pod)]
    assert len(pods) >= 2, f"a resumed Job gets a new pod: {pods}; {status.get('runSeconds')} s, {events}"
    assert others and (namespace, "train-debug") in binder.seen, binder.seen
    truth_kwh = sum(exporter.energy_mj(namespace, pod) for pod in pods) / 3.6e9
    assert status["energySource"] == "dcgm"
    # Never charged more than its own pods drew (1%: status rounding). Less only by what no scraper can see: the
    # energy between the last 1 s scrape that carries the pod's label and the release of its GPU, at most one scrape
    # at training power (~700 W) per GPU and holding (measured 1.1-1.4% short here, under load).
    unseen_kwh = (status["suspensions"] + 1) * 2 * 1.0 * 700.0 / 3.6e6
    assert truth_kwh - unseen_kwh - 0.01 * truth_kwh <= status["energyKWh"] <= 1.01 * truth_kwh, (
        status["energyKWh"],
        truth_kwh,
    )
    # The receipt is priced and adds up. (Whether shifting saved carbon depends on how much of the 40 planning
    # minutes the 60x clock let land inside the clean windows; the lifecycle and simulator tests own that claim.)
    assert status["emissionsGrams"] > 0 and status["baselineEmissionsGrams"] > 0
    avoided = status["baselineEmissionsGrams"] - status["emissionsGrams"]
    assert abs(status["avoidedEmissionsGrams"] - avoided) < 0.01
    k.wait_for_events(namespace, "train", "Receipt")
    receipt = next(e for e in k.events(namespace, "train") if e.reason == "Receipt")
    assert "kWh" in receipt.message and "temporal" in receipt.message and "spatial" in receipt.message
    # train-1 is charged its own pod, train neither train-1's nor the plain pod's; the plain pod is nobody's.
    other_kwh = sum(exporter.energy_mj(namespace, pod) for pod in others) / 3.6e9
    unseen_other_kwh = 1 * 1 * 1.0 * 700.0 / 3.6e6  # one holding of one GPU, as above
    assert other_kwh - unseen_other_kwh - 0.01 * other_kwh <= other["energyKWh"] <= 1.01 * other_kwh, (
        other["energyKWh"],
        other_kwh,
    )
    assert {p["name"] for p in status["energy"]["pods"]} == set(pods)
    assert {p["name"] for p in other["energy"]["pods"]} == set(others)
    assert exporter.energy_mj(namespace, "train-debug") > 0
    # Priced on the trace the operator was started with, and says so; one signal.
    assert status["energy"]["replayedTrace"] and status["energy"]["signal"] == "average"
    assert not binder.errors and not workload.errors
