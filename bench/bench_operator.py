"""The operator at scale on the real control plane, against the API server's own rate in the same run.

For N CarbonAwareJobs (default 1,000 and 10,000; `BENCH_OPERATOR_SIZES=1000` to choose), on a fresh dev cluster:
- planned: seconds from creating them until every one has a plan in status (the operator creates N Jobs too);
- transitions: a grid trace whose low-carbon window opens for all jobs at once; resumes the operator applies per
  second (Jobs unsuspended), and jobs Running per second (their pods up: bounded by the Job controller's API
  client, 20 requests/s by default, not by the operator);
- memory: the operator's resident set; idle CPU: its CPU seconds per wall second once everything is planned.
Baselines in the same run: the API server creating N plain (suspended) Jobs, and patching N Jobs' spec.suspend,
from one client in a thread pool (the ceiling any controller on this machine can reach), and Kueue's published
43 admissions per second.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e.harness import OperatorProcess, caj_manifest, ensure_namespace, write_trace
from kubernetes import client

from carbonshift_dev.devcluster import ClusterConfig, DevCluster
from carbonshift_dev.devcluster.testing import api_client_from_kubeconfig, install_crds, load_crd_documents

REPO = Path(__file__).resolve().parents[1]
KUEUE_ADMISSIONS_PER_SECOND = 43.0  # Kueue's published scheduling throughput (kubernetes-sigs/kueue perf docs)
WORKERS = 16


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS), or the highest it has been since the process started (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parallel(fn: object, items: list[object]) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(fn, items))  # type: ignore[arg-type]
    return time.perf_counter() - t0


def count_planned(custom: client.CustomObjectsApi, namespace: str) -> tuple[int, int]:
    items = custom.list_namespaced_custom_object("carbonshift.io", "v1alpha1", namespace, "carbonawarejobs")["items"]
    planned = sum(1 for i in items if (i.get("status") or {}).get("plan"))
    running = sum(1 for i in items if (i.get("status") or {}).get("phase") == "Running")
    return planned, running


def bench(n: int, workdir: Path) -> dict[str, float]:
    # Enough GPUs for every job at once: the transition rate is about the operator, not about queueing for GPUs.
    # 64 GPUs a node (fewer, larger fake nodes): 1,251 kwok nodes did not all turn Ready within the start timeout.
    config = ClusterConfig(name=f"bench-op-{n}", nodes=n // 64 + 1, gpus_per_node=64, zones=("zone-a",))
    with DevCluster.start(config) as cluster:
        api = api_client_from_kubeconfig(cluster.kubeconfig)
        api.configuration.connection_pool_maxsize = WORKERS
        install_crds(api, load_crd_documents(sorted((REPO / "crds").glob("*.yaml"))))
        batch, custom = client.BatchV1Api(api), client.CustomObjectsApi(api)
        ensure_namespace(api, "baseline")
        ensure_namespace(api, "bench")
        # Baseline: the API server's own rate for plain suspended Jobs, create then patch.
        job = caj_manifest("x", duration="1h", max_delay="2h")["spec"]["template"]
        spec = {**job["spec"], "suspend": True}
        spec["template"]["spec"]["containers"][0]["resources"]["limits"] = {"nvidia.com/gpu": "1"}  # client wants str
        bodies = [
            {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"plain-{i}"}, "spec": spec}
            for i in range(n)
        ]
        create_s = parallel(lambda b: batch.create_namespaced_job("baseline", b), bodies)  # type: ignore[arg-type]
        patch_s = parallel(
            lambda i: batch.patch_namespaced_job(f"plain-{i}", "baseline", {"spec": {"suspend": True}}),  # type: ignore[arg-type]
            list(range(n)),
        )
        # The operator: a trace whose clean window opens for everyone 1 planning hour after planning completes.
        epoch = datetime.now(UTC).replace(microsecond=0)
        speed = 60.0
        opens_after_wall = 90 + n / 12  # generous: planning (17/s at 1,000 here) must be done before it opens
        opens_at = epoch + timedelta(seconds=opens_after_wall * speed)
        values = [
            500.0 if epoch + timedelta(minutes=15 * i) - timedelta(hours=1) < opens_at else 50.0 for i in range(4 * 96)
        ]
        trace = write_trace(workdir / f"trace-{n}.csv", epoch - timedelta(hours=1), values, timedelta(minutes=15))
        extra = ["--zone", "BENCH", "--trace", f"BENCH={trace}", "--forecast", "oracle", "--tick", "2h"]
        proc = OperatorProcess(cluster.kubeconfig, workdir, speed=speed, epoch=epoch, extra=extra)
        proc.start()
        while not proc.serving():
            time.sleep(0.1)
        t0 = time.perf_counter()
        manifests = [caj_manifest(f"job-{i}", duration="1h", max_delay="96h") for i in range(n)]
        parallel(
            lambda m: custom.create_namespaced_custom_object(
                "carbonshift.io", "v1alpha1", "bench", "carbonawarejobs", m
            ),
            manifests,
        )  # type: ignore[arg-type]
        created_s = time.perf_counter() - t0
        planned = 0
        while planned < n:
            time.sleep(1.0)
            planned, _ = count_planned(custom, "bench")
        planned_s = time.perf_counter() - t0
        print(f"  n={n}: CAJs created in {created_s:.1f} s, all planned in {planned_s:.1f} s", flush=True)
        assert proc.proc is not None
        pid = proc.proc.pid
        cpu0, w0 = cpu_seconds(pid), time.perf_counter()
        time.sleep(10)
        idle_cpu = (cpu_seconds(pid) - cpu0) / (time.perf_counter() - w0)
        rss, planned_peak = rss_mib(pid), rss_mib(pid, "VmHWM")
        print(f"  n={n}: RSS {rss:.0f} MiB once planned, peak so far {planned_peak:.0f} MiB", flush=True)
        if os.environ.get("BENCH_OPERATOR_PLAN_ONLY"):  # quick memory and planning runs: stop here
            proc.stop()
            return {"n": n, "all_planned_s": planned_s, "rss_mib": planned_peak}
        # All windows open at once: measure resumes per second.
        wait = proc.wall_until(opens_at)
        time.sleep(wait)
        t1 = time.perf_counter()
        running = resumed = 0
        resumed_s = 0.0
        deadline = t1 + 1200
        while running < n and time.perf_counter() < deadline:
            time.sleep(0.5)
            if resumed < n:  # the operator's own act: the Job's spec.suspend set to false
                jobs = batch.list_namespaced_job("bench").items
                resumed = sum(1 for j in jobs if j.spec and j.spec.suspend is False)
                resumed_s = time.perf_counter() - t1
            _, running = count_planned(custom, "bench")
        transition_s = time.perf_counter() - t1
        print(f"  n={n}: {resumed} resumed in {resumed_s:.1f} s, {running} running in {transition_s:.1f} s", flush=True)
        rss_peak = rss_mib(pid, "VmHWM")
        proc.stop()
        return {
            "n": n,
            "baseline_create_per_s": n / create_s,
            "baseline_patch_per_s": n / patch_s,
            "caj_create_s": created_s,
            "all_planned_s": planned_s,
            "planned_per_s": n / planned_s,
            "resumed": resumed,
            "resumes_per_s": resumed / resumed_s,
            "running_per_s": running / transition_s,
            "rss_mib": rss_peak,
            "idle_cpu_cores": idle_cpu,
        }


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_OPERATOR_SIZES", "1000,10000").split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            rows.append(bench(n, Path(tmp)))
    print(f"{'N':>6} {'API create/s':>12} {'API patch/s':>11} {'planned in s':>12} {'planned/s':>9} "
          f"{'resumes/s':>9} {'vs Kueue 43/s':>13} {'running/s':>9} {'RSS MiB':>8} {'idle CPU':>8}")  # fmt: skip
    for r in rows:
        if "resumes_per_s" not in r:
            print(f"{r['n']:>6} planned in {r['all_planned_s']:.1f} s, peak RSS {r['rss_mib']:.0f} MiB (plan only)")
            continue
        print(
            f"{r['n']:>6} {r['baseline_create_per_s']:>12.0f} {r['baseline_patch_per_s']:>11.0f} "
            f"{r['all_planned_s']:>12.1f} {r['planned_per_s']:>9.1f} {r['resumes_per_s']:>9.1f} "
            f"{r['resumes_per_s'] / KUEUE_ADMISSIONS_PER_SECOND:>12.1f}x {r['running_per_s']:>9.1f} "
            f"{r['rss_mib']:>8.0f} {r['idle_cpu_cores']:>8.2f}"
        )


if __name__ == "__main__":
    main()
