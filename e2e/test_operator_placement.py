"""Placement across two real control planes: each job goes where the planner says, remote Jobs are cleaned up,
and a job that needs more GPUs than any cluster has gets a specific condition instead of a crash loop.

The management cluster (the session's dev cluster, zone DIRTY, 500 g/kWh) holds the CarbonAwareJobs; a second
dev cluster (zone CLEAN, 100 g/kWh) is reached through a kubeconfig in a Secret, as a real remote cluster would be.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from carbonshift_dev.devcluster import ClusterConfig, DevCluster
from carbonshift_dev.devcluster.testing import api_client_from_kubeconfig
from e2e.harness import (
    OPERATOR_NAMESPACE,
    Cluster,
    OperatorInstall,
    OperatorProcess,
    caj_manifest,
    ensure_namespace,
    wait_until,
    write_trace,
)

SLOT = timedelta(hours=1)


@pytest.fixture(scope="module")
def remote(dev_cluster: DevCluster | None) -> Iterator[DevCluster]:
    if dev_cluster is None:
        pytest.skip("placement needs a second local control plane; E2E_KUBECONFIG gives only one cluster")
    config = ClusterConfig(name="e2e-remote", nodes=1, gpus_per_node=4, zones=("zone-r",))
    with DevCluster.start(config) as cluster:
        yield cluster


def test_jobs_are_placed_where_the_planner_says_and_cleaned_up(
    api_client: client.ApiClient,
    operator_install: OperatorInstall,
    installed_crds: object,
    namespace: str,
    remote: DevCluster,
    tmp_path: Path,
) -> None:
    local, far = Cluster(api_client), Cluster(api_client_from_kubeconfig(remote.kubeconfig))
    ensure_namespace(far.api, namespace)  # the remote cluster's targetNamespace, named like the local one here
    epoch = datetime.now(UTC).replace(microsecond=0)
    start = epoch - timedelta(hours=2)
    dirty = write_trace(tmp_path / "dirty.csv", start, [500.0] * 72, SLOT)
    clean = write_trace(tmp_path / "clean.csv", start, [100.0] * 72, SLOT)
    secret = {
        "metadata": {"name": "remote-kubeconfig", "namespace": OPERATOR_NAMESPACE},
        "data": {"kubeconfig": base64.b64encode(remote.kubeconfig.read_bytes()).decode()},
    }
    config = operator_install.kubeconfig(tmp_path / "operator.kubeconfig")
    local.core.create_namespaced_secret(OPERATOR_NAMESPACE, secret)
    clusters = [
        {"metadata": {"name": "here"}, "spec": {"zone": "DIRTY", "pue": 1.1}},
        {"metadata": {"name": "there"}, "spec": {"zone": "CLEAN", "pue": 1.3,
         "kubeconfigSecretRef": {"name": "remote-kubeconfig", "namespace": OPERATOR_NAMESPACE},
         # Tenancy: a remote cluster admits no namespace until selected; its Jobs go to an explicit namespace.
         "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
         "targetNamespace": namespace}},
    ]  # fmt: skip
    for cc in clusters:
        local.custom.create_cluster_custom_object(
            "carbonshift.io",
            "v1alpha1",
            "computeclusters",
            {"apiVersion": "carbonshift.io/v1alpha1", "kind": "ComputeCluster", **cc},
        )
    extra = ["--trace", f"DIRTY={dirty}", "--trace", f"CLEAN={clean}", "--forecast", "oracle", "--tick", "10m"]
    proc = OperatorProcess(config, tmp_path, speed=600.0, epoch=epoch, extra=extra)
    proc.start()
    try:
        wait_until(proc.serving, "the operator to start", timeout=30, interval=0.05)
        time.sleep(1.0)
        # Free choice: the clean zone wins even with the worse PUE (100 x 1.3 < 500 x 1.1).
        local.create_caj(namespace, caj_manifest("anywhere", duration="2h", max_delay="10h"))
        # Pinned: placement.clusters keeps it in the dirty cluster.
        pinned = caj_manifest(
            "pinned", duration="1h", max_delay="10h", extra_spec={"placement": {"clusters": ["here"]}}
        )
        local.create_caj(namespace, pinned)
        # Too big for any cluster (8 + 8 and 4 GPUs): a specific condition, no Job anywhere.
        local.create_caj(namespace, caj_manifest("huge", duration="1h", max_delay="10h", gpus=12))

        status = wait_until(lambda: (s := local.status(namespace, "anywhere")).get("cluster") and s, "placement")
        assert status["cluster"] == "there"
        assert status["plan"]["zone"] == "CLEAN"
        wait_until(lambda: far.running_pods(namespace, "anywhere"), "the job running in the remote cluster", timeout=30)
        remote_job = far.job(namespace, "anywhere")
        assert remote_job is not None and not remote_job.metadata.owner_references
        assert local.job(namespace, "anywhere") is None, "never in two clusters"

        status = wait_until(lambda: (s := local.status(namespace, "pinned")).get("cluster") and s, "pinned placement")
        assert status["cluster"] == "here"
        wait_until(lambda: local.job(namespace, "pinned"), "the pinned Job in the management cluster")
        assert far.job(namespace, "pinned") is None

        def huge_condition() -> dict[str, str] | None:
            conditions = local.status(namespace, "huge").get("conditions") or []
            return next((c for c in conditions if c["type"] == "DeadlineAtRisk" and c["status"] == "True"), None)

        condition = wait_until(huge_condition, "the huge job's DeadlineAtRisk condition", timeout=30)
        assert condition["reason"] == "NotEnoughGPUs"
        assert local.status(namespace, "huge")["phase"] == "Pending"
        assert local.job(namespace, "huge") is None and far.job(namespace, "huge") is None
        local.wait_for_events(namespace, "huge", "NotEnoughGPUs")

        # Deleting the CarbonAwareJob deletes its remote Job (the finalizer's work).
        local.custom.delete_namespaced_custom_object(
            "carbonshift.io", "v1alpha1", namespace, "carbonawarejobs", "anywhere"
        )
        wait_until(lambda: far.job(namespace, "anywhere") is None, "the remote Job to be deleted", timeout=30)
        cc = local.custom.get_cluster_custom_object("carbonshift.io", "v1alpha1", "computeclusters", "there")
        ready = next(c for c in cc["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True" and cc["status"]["gpusTotal"] == 4
        proc.assert_alive()
    finally:
        proc.stop()
        for cc in clusters:
            local.custom.delete_cluster_custom_object(
                "carbonshift.io", "v1alpha1", "computeclusters", cc["metadata"]["name"]
            )
        local.core.delete_namespaced_secret("remote-kubeconfig", OPERATOR_NAMESPACE)
