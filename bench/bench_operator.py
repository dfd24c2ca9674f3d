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

Options (environment):
- `BENCH_OPERATOR_BASELINE=/path/to/checkout`: also run the same benchmark with the operator of another checkout
  (its `.venv/bin/python` and its `crds/`), each size on its own fresh cluster, alternating baseline and this
  checkout `BENCH_OPERATOR_REPEATS` times (default 1), and print both in one table with the operator's CPU seconds.
- `BENCH_OPERATOR_PROFILE=DIR`: record the operator with py-spy (`--gil`, collapsed stacks) into DIR, one file a run,
  from `BENCH_OPERATOR_PROFILE_FROM` on (`planning`, the default, or `resuming`: once the windows open).
- `BENCH_OPERATOR_SPEED`: the operator's clock, planning seconds per wall second (default 60). At 60x a pod that takes
  20 s to start is 20 planning minutes, past the core's tolerance for extending a committed window; a slower clock
  shows how much of the resume phase's work that costs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from e2e.harness import OperatorProcess, caj_manifest, ensure_namespace, write_trace
from kubernetes import client

from carbonshift_dev.devcluster import ClusterConfig, DevCluster
from carbonshift_dev.devcluster.testing import api_client_from_kubeconfig, install_crds, load_crd_documents

REPO = Path(__file__).resolve().parents[1]
KUEUE_ADMISSIONS_PER_SECOND = 43.0  # Kueue's published scheduling throughput (kubernetes-sigs/kueue perf docs)
WORKERS = 16


class CheckoutOperator(OperatorProcess):
    """The operator run by another checkout's interpreter (its own editable install of carbonshift)."""

    def __init__(self, python: Path, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.python = python
        # A flag this harness adds that an older checkout's `carbonshift run` does not know (it would exit at once).
        usage = subprocess.run([str(python), "-m", "carbonshift.cli", "run", "--help"], capture_output=True, text=True)
        self.extra = [flag for flag in self.extra if flag != "--no-keep-forecasts" or flag in usage.stdout]

    def start(self) -> None:
        saved = sys.executable
        sys.executable = str(self.python)
        try:
            super().start()
        finally:
            sys.executable = saved


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS), or the highest it has been since the process started (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_requests(api: client.ApiClient) -> Counter[str]:
    """The API server's request counts by verb and resource (apiserver_request_total), for the kinds the operator
    reads and writes."""
    method, url, headers, _, _ = api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    response = api.call_api(method, url, headers)
    response.read()
    counts: Counter[str] = Counter()
    for line in response.data.decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if labels.get("resource") not in ("carbonawarejobs", "jobs", "pods", "events", "nodes"):
            continue
        what = labels["resource"] + (f"/{labels['subresource']}" if labels.get("subresource") else "")
        counts[f"{labels.get('verb')} {what}"] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def delta(after: Counter[str], before: Counter[str]) -> str:
    changed = {k: after[k] - before.get(k, 0) for k in sorted(after) if after[k] - before.get(k, 0) > 0}
    return ", ".join(f"{k} {v}" for k, v in changed.items())


def passes(proc: OperatorProcess) -> tuple[int, float]:
    """(reconcile passes so far, seconds spent planning in them), from the operator's own metrics."""
    count, planner = 0, 0.0
    for line in proc.metrics().splitlines():
        if line.startswith("carbonshift_reconcile_duration_seconds_count"):
            count += int(float(line.rsplit(" ", 1)[1]))
        elif line.startswith("carbonshift_planner_duration_seconds_sum"):
            planner = float(line.rsplit(" ", 1)[1])
    return count, planner


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


def bench(n: int, workdir: Path, checkout: Path = REPO, label: str = "") -> dict[str, Any]:
    # Enough GPUs for every job at once: the transition rate is about the operator, not about queueing for GPUs.
    # 64 GPUs a node (fewer, larger fake nodes): 1,251 kwok nodes did not all turn Ready within the start timeout.
    config = ClusterConfig(name=f"bench-op-{n}", nodes=n // 64 + 1, gpus_per_node=64, zones=("zone-a",))
    with DevCluster.start(config) as cluster:
        api = api_client_from_kubeconfig(cluster.kubeconfig)
        api.configuration.connection_pool_maxsize = WORKERS
        install_crds(api, load_crd_documents(sorted((checkout / "crds").glob("*.yaml"))))
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
        speed = float(os.environ.get("BENCH_OPERATOR_SPEED", "60"))  # planning seconds per wall second
        opens_after_wall = 90 + n / 12  # generous: planning (17/s at 1,000 here) must be done before it opens
        opens_at = epoch + timedelta(seconds=opens_after_wall * speed)
        values = [
            500.0 if epoch + timedelta(minutes=15 * i) - timedelta(hours=1) < opens_at else 50.0 for i in range(4 * 96)
        ]
        trace = write_trace(workdir / f"trace-{n}.csv", epoch - timedelta(hours=1), values, timedelta(minutes=15))
        extra = ["--zone", "BENCH", "--trace", f"BENCH={trace}", "--forecast", "oracle", "--tick", "2h"]
        python = checkout / ".venv" / "bin" / "python"
        proc = CheckoutOperator(python, cluster.kubeconfig, workdir, speed=speed, epoch=epoch, extra=extra)
        proc.start()
        while not proc.serving():
            assert proc.proc is not None
            if proc.proc.poll() is not None:  # it exited: say why rather than wait for ever
                log = sorted(workdir.glob("operator-*.log"))
                raise RuntimeError(f"{label} operator exited: {log[-1].read_text()[-2000:] if log else ''}")
            time.sleep(0.1)
        assert proc.proc is not None
        profiler = profile(proc, label, n, "planning")
        calls0 = api_requests(api)
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
        plan_passes, plan_planner = passes(proc)
        calls1 = api_requests(api)
        print(
            f"  {label} n={n}: CAJs created in {created_s:.1f} s, all planned in {planned_s:.1f} s "
            f"({plan_passes} passes, {plan_planner:.1f} s planning, CPU {cpu_seconds(proc.proc.pid):.1f} s)",
            flush=True,
        )
        print(f"  {label} n={n}: API requests while planning (the bench's own included): {delta(calls1, calls0)}")
        pid = proc.proc.pid
        cpu0, w0 = cpu_seconds(pid), time.perf_counter()
        time.sleep(10)
        idle_cpu = (cpu_seconds(pid) - cpu0) / (time.perf_counter() - w0)
        rss, planned_peak = rss_mib(pid), rss_mib(pid, "VmHWM")
        print(f"  {label} n={n}: RSS {rss:.0f} MiB once planned, peak so far {planned_peak:.0f} MiB", flush=True)
        if os.environ.get("BENCH_OPERATOR_PLAN_ONLY"):  # quick memory and planning runs: stop here
            cpu = cpu_seconds(pid)
            stop(proc, profiler)
            return {"n": n, "label": label, "all_planned_s": planned_s, "rss_mib": planned_peak, "cpu_s": cpu}
        # All windows open at once: measure resumes per second.
        wait = proc.wall_until(opens_at)
        time.sleep(wait)
        calls2 = api_requests(api)
        if profiler is None:
            profiler = profile(proc, label, n, "resuming")
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
        all_passes, all_planner = passes(proc)
        print(f"  {label} n={n}: API requests while resuming: {delta(api_requests(api), calls2)}")
        print(
            f"  {label} n={n}: {resumed} resumed in {resumed_s:.1f} s, {running} running in {transition_s:.1f} s "
            f"({all_passes} passes, {all_planner:.1f} s planning, CPU {cpu_seconds(pid):.1f} s)",
            flush=True,
        )
        rss_peak = rss_mib(pid, "VmHWM")
        cpu = cpu_seconds(pid)
        stop(proc, profiler)
        return {
            "n": n,
            "label": label,
            "cpu_s": cpu,
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


def profile(proc: OperatorProcess, label: str, n: int, phase: str) -> subprocess.Popen[bytes] | None:
    """py-spy recording the operator from this phase on (BENCH_OPERATOR_PROFILE_FROM: planning or resuming)."""
    profile_dir = os.environ.get("BENCH_OPERATOR_PROFILE")
    if not profile_dir or os.environ.get("BENCH_OPERATOR_PROFILE_FROM", "planning") != phase:
        return None
    assert proc.proc is not None
    out = Path(profile_dir) / f"operator-{label or 'run'}-{n}-{phase}-{int(time.time())}.txt"
    spy = REPO / ".venv" / "bin" / "py-spy"
    command = [str(spy), "record", "--gil", "--rate", "50", "--format", "raw", "--output", str(out)]
    return subprocess.Popen([*command, "--pid", str(proc.proc.pid)], stdout=subprocess.DEVNULL)


def stop(proc: OperatorProcess, profiler: subprocess.Popen[bytes] | None) -> None:
    proc.stop()
    if profiler is not None:
        profiler.wait(timeout=60)  # py-spy writes its file when the process it records exits


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_OPERATOR_SIZES", "1000,10000").split(",")]
    baseline = os.environ.get("BENCH_OPERATOR_BASELINE")
    repeats = int(os.environ.get("BENCH_OPERATOR_REPEATS", "1"))
    runs: list[tuple[str, Path]] = [("this", REPO)]
    if baseline:
        runs = [("baseline", Path(baseline).resolve()), ("this", REPO)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for _ in range(repeats):
                for label, checkout in runs:
                    rows.append(bench(n, Path(tmp), checkout, label))
    if baseline:
        print(f"baseline: {baseline}; this: {REPO}")
    print(f"{'run':>8} {'N':>6} {'API create/s':>12} {'API patch/s':>11} {'planned in s':>12} {'planned/s':>9} "
          f"{'resumes/s':>9} {'vs Kueue 43/s':>13} {'running/s':>9} {'RSS MiB':>8} {'idle CPU':>8} "
          f"{'CPU s':>6}")  # fmt: skip
    for r in rows:
        if "resumes_per_s" not in r:
            print(
                f"{r['label']:>8} {r['n']:>6} planned in {r['all_planned_s']:.1f} s, peak RSS {r['rss_mib']:.0f} MiB, "
                f"CPU {r['cpu_s']:.1f} s (plan only)"
            )
            continue
        print(
            f"{r['label']:>8} {r['n']:>6} {r['baseline_create_per_s']:>12.0f} {r['baseline_patch_per_s']:>11.0f} "
            f"{r['all_planned_s']:>12.1f} {r['planned_per_s']:>9.1f} {r['resumes_per_s']:>9.1f} "
            f"{r['resumes_per_s'] / KUEUE_ADMISSIONS_PER_SECOND:>12.1f}x {r['running_per_s']:>9.1f} "
            f"{r['rss_mib']:>8.0f} {r['idle_cpu_cores']:>8.2f} {r['cpu_s']:>6.1f}"
        )


if __name__ == "__main__":
    main()
