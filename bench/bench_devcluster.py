"""Costs of the dev cluster: warm start, per-test namespace overhead, memory; against naive baselines.

Baselines measured in the same run:
- per-test isolation by namespace (what the fixtures do) against a fresh cluster per test (the naive way);
- our launcher against kwokctl's binary runtime given the same local binaries (when kwokctl is installed).
Prints one table; needs the binaries from hack/install-tools.sh.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from carbonshift_dev.devcluster import ClusterConfig, DevCluster, bin_dir
from carbonshift_dev.devcluster.testing import api_client_from_kubeconfig, create_namespace, delete_namespace, wait_for

NAMESPACE_ROUNDS = 10
MIB = 1024 * 1024


def measure_namespaces(cluster: DevCluster) -> tuple[list[float], list[float], list[float]]:
    """Seconds to create a namespace (until its default ServiceAccount exists), to request its deletion,
    and until it is gone."""
    api = api_client_from_kubeconfig(cluster.kubeconfig)
    create_s, delete_s, gone_s = [], [], []
    try:
        for i in range(NAMESPACE_ROUNDS):
            t0 = time.perf_counter()
            name = create_namespace(api, f"bench-{i}")
            t1 = time.perf_counter()
            delete_namespace(api, name)
            t2 = time.perf_counter()
            with cluster.http_client() as http:
                wait_for(
                    lambda n=name, h=http: h.get(f"/api/v1/namespaces/{n}").status_code == 404, f"{name} gone", 120
                )
            t3 = time.perf_counter()
            create_s.append(t1 - t0)
            delete_s.append(t2 - t1)
            gone_s.append(t3 - t1)
    finally:
        api.close()
    return create_s, delete_s, gone_s


def kwokctl_start_seconds() -> float | None:
    """Seconds for `kwokctl create cluster --runtime binary` with our local binaries, or None without kwokctl."""
    tools = bin_dir()
    kwokctl = tools / "kwokctl"
    if not kwokctl.exists():
        return None
    workdir = Path(tempfile.mkdtemp(prefix="carbonshift-bench-kwokctl-"))
    env = {**os.environ, "KWOK_WORKDIR": str(workdir)}
    name = "bench"
    create = [
        str(kwokctl), "create", "cluster", "--name", name, "--runtime", "binary",
        "--kube-apiserver-binary", str(tools / "kube-apiserver"),
        "--kube-controller-manager-binary", str(tools / "kube-controller-manager"),
        "--kube-scheduler-binary", str(tools / "kube-scheduler"),
        "--etcd-binary", str(tools / "etcd"), "--kwok-controller-binary", str(tools / "kwok"),
        "--kubeconfig", str(workdir / "kubeconfig"), "--wait", "3m",
    ]  # fmt: skip
    t0 = time.perf_counter()
    result = subprocess.run(create, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    subprocess.run([str(kwokctl), "delete", "cluster", "--name", name], env=env, capture_output=True, check=False)
    shutil.rmtree(workdir, ignore_errors=True)
    if result.returncode != 0:
        print(f"kwokctl failed ({result.returncode}): {result.stderr.strip()[-500:]}", file=sys.stderr)
        return None
    return elapsed


def main() -> int:
    config = ClusterConfig(name="bench", nodes=2, gpus_per_node=8)
    t0 = time.perf_counter()
    with DevCluster.start(config) as cluster:
        start_s = time.perf_counter() - t0
        timings = cluster.timings
        memory_ready = cluster.memory_rss_bytes()
        create_s, delete_s, gone_s = measure_namespaces(cluster)
        memory_after = cluster.memory_rss_bytes()
        t1 = time.perf_counter()
        second = DevCluster.start(ClusterConfig(name="bench-second", nodes=1))
        second_s = time.perf_counter() - t1
        second_memory = sum(second.memory_rss_bytes().values())
        t2 = time.perf_counter()
        second.stop()
        stop_s = time.perf_counter() - t2
        with cluster.http_client() as http:
            version = http.get("/version").json()["gitVersion"]
    kwokctl_s = kwokctl_start_seconds()

    per_test_s = statistics.median(create_s) + statistics.median(delete_s)
    print(f"dev cluster benchmark (Kubernetes {version}, {os.cpu_count()} CPUs)")
    print(f"  warm start, until /readyz                    {timings.apiserver_ready_seconds:6.1f} s")
    print(f"  warm start, until components healthy         {timings.components_healthy_seconds:6.1f} s")
    print(f"  warm start, until nodes Ready (usable)       {start_s:6.1f} s")
    print(f"  second cluster while the first runs          {second_s:6.1f} s")
    print(f"  stop (all processes, by PID)                 {stop_s:6.1f} s")
    print(f"  namespace create + default SA (median of {NAMESPACE_ROUNDS})  {statistics.median(create_s):6.3f} s")
    print(f"  namespace delete request (median)            {statistics.median(delete_s):6.3f} s")
    print(f"  namespace fully gone (median, not waited on) {statistics.median(gone_s):6.3f} s")
    print(f"  per-test overhead (namespace)                {per_test_s:6.3f} s")
    fresh_s = start_s + stop_s
    print(f"  baseline: fresh cluster per test (start+stop) {fresh_s:5.1f} s  ({fresh_s / per_test_s:.0f}x more)")
    if kwokctl_s is not None:
        print(f"  baseline: kwokctl --runtime binary create    {kwokctl_s:6.1f} s")
    else:
        print("  baseline: kwokctl --runtime binary create    n/a (see stderr)")
    print("  memory (RSS, MiB)            ready   after namespaces")
    for name, size in memory_ready.items():
        print(f"    {name:<26} {size / MIB:7.0f} {memory_after.get(name, 0) / MIB:9.0f}")
    print(f"    {'total':<26} {sum(memory_ready.values()) / MIB:7.0f} {sum(memory_after.values()) / MIB:9.0f}")
    print(f"    second cluster total       {second_memory / MIB:7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
