"""Two operator replicas with kopf peering: exactly one acts; when it is killed, the other takes over."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubernetes import client

from e2e.harness import Cluster, OperatorInstall, OperatorProcess, caj_manifest, wait_until, write_trace

PEERING = "carbonshift-e2e"


def reconciles(proc: OperatorProcess) -> float:
    """How many reconciles this replica has run, from its own /metrics."""
    found = re.search(r'^carbonshift_reconcile_duration_seconds_count\{outcome="ok"\} (\S+)', proc.metrics(), re.M)
    return float(found.group(1)) if found else 0.0


def test_only_the_highest_priority_replica_acts_and_the_other_takes_over(
    api_client: client.ApiClient,
    operator_install: OperatorInstall,
    installed_crds: object,
    namespace: str,
    tmp_path: Path,
) -> None:
    custom = client.CustomObjectsApi(api_client)
    peering = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING}}
    custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", peering)
    epoch = datetime.now(UTC).replace(microsecond=0)
    trace = write_trace(tmp_path / "trace.csv", epoch - timedelta(hours=1), [300.0] * 96, timedelta(minutes=15))
    config = operator_install.kubeconfig(tmp_path / "operator.kubeconfig")
    common = ["--zone", "TEST", "--trace", f"TEST={trace}", "--forecast", "oracle", "--peering", PEERING]
    replicas = []
    for priority in (100, 200):
        workdir = tmp_path / f"replica-{priority}"
        workdir.mkdir()
        proc = OperatorProcess(config, workdir, speed=60.0, epoch=epoch, extra=[*common, "--priority", str(priority)])
        proc.standalone = False
        replicas.append(proc)
    low, high = replicas
    k = Cluster(api_client)
    try:
        # The active replica first, as in a rolling deploy; two that start at the very same instant may both act
        # for a moment before either sees the other (kopf's peering is eventually consistent).
        high.start()
        wait_until(high.serving, "the first replica to start", timeout=30, interval=0.1)
        time.sleep(1.0)
        low.start()
        wait_until(low.serving, "the second replica to start", timeout=30, interval=0.1)
        time.sleep(1.0)
        k.create_caj(namespace, caj_manifest("first", duration="1h", max_delay="10h"))
        wait_until(lambda: k.status(namespace, "first").get("plan"), "the first job planned", timeout=40)
        time.sleep(2.0)
        assert reconciles(high) > 0
        assert reconciles(low) == 0, "the lower-priority replica must not act while the other lives"
        # The active replica dies; the other resumes and plans a new job.
        high.kill()
        k.create_caj(namespace, caj_manifest("second", duration="1h", max_delay="10h"))
        wait_until(
            lambda: k.status(namespace, "second").get("plan"), "the second job planned by the survivor", timeout=90
        )
        # The plan is written mid-pass (with the placement); the counter moves when the pass completes.
        wait_until(lambda: reconciles(low) > 0, "the survivor's first completed reconcile", timeout=20)
        low.assert_alive()
    finally:
        for proc in replicas:
            proc.stop()
        custom.delete_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", PEERING)
        time.sleep(0.1)
