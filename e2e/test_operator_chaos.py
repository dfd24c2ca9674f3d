"""The operator survives SIGKILL at random moments: no job lost, never run twice at once, no feasible deadline missed.

A monitor thread plays the workload: it watches the pods of every CarbonAwareJob, accrues planning time while a pod
runs, and completes the pods once a job has run for its duration (kwok's completion stage). Meanwhile the operator
is SIGKILLed at a random moment after each start (0.3-2.5 s after it serves metrics, so kills land in the middle of
reconciles and transitions) and restarted, at least 20 times. Planning time runs 120x faster than the wall clock: a
restart takes about 4 s here (importing kopf and the Kubernetes client), i.e. 8 minutes of planning time, which the
safety margin (30 minutes) covers, as a real deployment's 10-minute margin covers a real restart.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kubernetes import client

from carbonshift.api.durations import parse_duration
from e2e.harness import Cluster, OperatorInstall, OperatorProcess, caj_manifest, wait_until, write_trace

SPEED = 120.0
KILLS = 22
SLOT = timedelta(minutes=15)
# (name, duration, maxDelay, interruptible)
JOBS = [
    ("steady", "1h", "4h", False),
    ("chunked", "1h30m", "5h", True),
    ("tight", "45m", "1h45m", False),
    ("chunked-tight", "1h30m", "3h", True),
    ("late", "30m", "5h30m", True),
]


class Workload(threading.Thread):
    """Completes each job's pods once they have run for its duration; records every invariant violation."""

    def __init__(self, k: Cluster, namespace: str, proc: OperatorProcess) -> None:
        super().__init__(daemon=True)
        self.k, self.namespace, self.proc = k, namespace, proc
        self.durations = {name: parse_duration(d) for name, d, _, _ in JOBS}
        self.ran: dict[str, timedelta] = defaultdict(timedelta)
        self.completed_at: dict[str, datetime] = {}
        self.violations: list[str] = []
        self.halt = threading.Event()

    def run(self) -> None:
        last = self.proc.planning_now()
        while not self.halt.is_set():
            now = self.proc.planning_now()
            step = now - last
            last = now
            pods = self.k.core.list_namespaced_pod(self.namespace, label_selector="carbonshift.io/managed=true").items
            running: dict[str, list[client.V1Pod]] = defaultdict(list)
            for pod in pods:
                if pod.status.phase == "Running" and not pod.metadata.deletion_timestamp:
                    running[pod.metadata.labels["carbonshift.io/carbonawarejob"]].append(pod)
            jobs = self.k.batch.list_namespaced_job(self.namespace, label_selector="carbonshift.io/managed=true").items
            per_caj = defaultdict(int)
            for job in jobs:
                per_caj[job.metadata.labels["carbonshift.io/carbonawarejob"]] += 1
            for name, count in per_caj.items():
                if count > 1:
                    self.violations.append(f"{name}: {count} Jobs at once")
            for name, live in running.items():
                if len(live) > 1:
                    self.violations.append(f"{name}: {len(live)} pods running at once")
                if name in self.completed_at:
                    continue
                self.ran[name] += step
                if self.ran[name] >= self.durations[name]:
                    for pod in live:
                        body = {"metadata": {"annotations": {"carbonshift.io/complete": "true"}}}
                        self.k.core.patch_namespaced_pod(pod.metadata.name, self.namespace, body)
                    self.completed_at[name] = now
            time.sleep(0.1)


def test_operator_killed_20_times_loses_nothing_and_meets_deadlines(
    api_client: client.ApiClient,
    operator_install: OperatorInstall,
    installed_crds: object,
    namespace: str,
    tmp_path: Path,
) -> None:
    epoch = datetime.now(UTC).replace(microsecond=0)
    start = epoch - timedelta(hours=1)
    # Clean between 1h and 2h and between 3h and 3h30 after the epoch; dirty otherwise.
    values = []
    for i in range(4 * 24):
        at = (start + i * SLOT - epoch).total_seconds() / 3600
        values.append(90.0 if 1 <= at < 2 or 3 <= at < 3.5 else 450.0)
    trace = write_trace(tmp_path / "trace.csv", start, values, SLOT)
    config = operator_install.kubeconfig(tmp_path / "operator.kubeconfig")
    extra = ["--zone", "TEST", "--trace", f"TEST={trace}", "--forecast", "oracle", "--tick", "10m", "--margin", "30m"]
    extra += ["--max-concurrent-reconciles", "2"]  # fewer slots than jobs: queued reconciles must still keep time
    proc = OperatorProcess(config, tmp_path, speed=SPEED, epoch=epoch, extra=extra)
    k = Cluster(api_client)
    proc.start()
    deadlines = {}
    for name, duration, max_delay, interruptible in JOBS:
        checkpoint = {"overhead": "2m", "gracePeriod": "10m", "minRunDuration": "15m"} if interruptible else None
        k.create_caj(
            namespace,
            caj_manifest(
                name, duration=duration, max_delay=max_delay, interruptible=interruptible, checkpoint=checkpoint
            ),
        )
        deadlines[name] = proc.planning_now() + parse_duration(max_delay)
    workload = Workload(k, namespace, proc)
    workload.start()
    rng = random.Random(7)
    kills = 0
    try:
        while kills < KILLS:
            wait_until(proc.serving, "the operator to serve metrics after a start", timeout=30, interval=0.05)
            time.sleep(rng.uniform(0.3, 2.5))
            proc.kill()
            kills += 1
            proc.start()
        names = [name for name, *_ in JOBS]
        wait_until(
            lambda: all(k.status(namespace, n).get("phase") == "Succeeded" for n in names),
            "every job to succeed",
            timeout=240,
            interval=0.5,
        )
    finally:
        workload.halt.set()
        workload.join(timeout=5)
        proc.stop()
    assert kills >= 20
    assert proc.starts == KILLS + 1
    assert workload.violations == [], workload.violations[:10]
    for name, *_ in JOBS:
        status = k.status(namespace, name)
        assert status["phase"] == "Succeeded", (name, status)
        finished = workload.completed_at[name]
        # The submitted deadline is taken from the operator's own record (first sighting), within a tick of ours.
        deadline = datetime.fromisoformat(status["deadline"].replace("Z", "+00:00"))
        assert abs(deadline - deadlines[name]) < timedelta(minutes=5), (name, deadline, deadlines[name])
        assert finished <= deadline, f"{name} finished at {finished}, after its deadline {deadline}"
        # A crash may only under-count run time (the deadline stays safe), never over-count it.
        slack = timedelta(minutes=15)  # the monitor samples every 0.1 s wall = 12 s planning; ticks are 10 min
        assert timedelta(seconds=status["runSeconds"]) <= workload.ran[name] + slack, (name, status, workload.ran[name])
