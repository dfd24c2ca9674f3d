"""Which pods are a CarbonAwareJob's, on the real Job controller: `Kube.workload_pods` lists the pods of the Job the
operator built (its CarbonAwareJob-UID label and the Job's owner reference), and nothing that only looks alike."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from carbonshift.adapters.kube import Kube
from carbonshift.api.jobs import LABEL_CAJ_UID, build_job
from carbonshift_dev.devcluster.testing import wait_for

pytestmark = pytest.mark.cluster


def caj(name: str, uid: str) -> dict[str, Any]:
    container = {"name": "train", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    template = {
        "spec": {
            "parallelism": 2,
            "completions": 2,
            "template": {"spec": {"restartPolicy": "Never", "containers": [container]}},
        }
    }
    return {"metadata": {"namespace": "", "name": name, "uid": uid}, "spec": {"template": template}}


async def test_only_the_jobs_own_pods_are_listed(api_client: client.ApiClient, namespace: str) -> None:
    core, batch = client.CoreV1Api(api_client), client.BatchV1Api(api_client)
    jobs = {}
    for name, uid in (
        ("train", "0b0e6a4e-0000-4000-8000-000000000001"),
        ("train-1", "0b0e6a4e-0000-4000-8000-000000000002"),
    ):
        manifest = build_job(caj(name, uid), local=False)
        manifest["metadata"]["namespace"] = namespace
        manifest["spec"]["suspend"] = False
        jobs[name] = batch.create_namespaced_job(namespace, manifest)
    # A plain pod named like the job, carrying the job's UID label by hand: not the Job's.
    forged = {"name": "train-debug", "labels": {LABEL_CAJ_UID: "0b0e6a4e-0000-4000-8000-000000000001"}}
    core.create_namespaced_pod(
        namespace,
        {"apiVersion": "v1", "kind": "Pod", "metadata": forged,
         "spec": {"containers": [{"name": "debug", "image": "x"}]}},
    )  # fmt: skip

    def pods_of(job: str) -> set[str]:
        selector = f"batch.kubernetes.io/job-name={job}"
        return {p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector=selector).items}

    wait_for(lambda: len(pods_of("train")) == 2 and len(pods_of("train-1")) == 2, "both Jobs' pods")
    kube = Kube("local", api_client)
    listed = await kube.workload_pods(namespace, "0b0e6a4e-0000-4000-8000-000000000001", jobs["train"].metadata.uid)
    assert {name for name, _ in listed} == pods_of("train")
    assert all(uid for _, uid in listed)
    other = await kube.workload_pods(namespace, "0b0e6a4e-0000-4000-8000-000000000002", jobs["train-1"].metadata.uid)
    assert {name for name, _ in other} == pods_of("train-1")
    # Without the Job's UID (not read yet) the label alone decides, and the forged pod would pass: the handler
    # always passes the Job it read.
    loose = await kube.workload_pods(namespace, "0b0e6a4e-0000-4000-8000-000000000001", None)
    assert "train-debug" in {name for name, _ in loose}
