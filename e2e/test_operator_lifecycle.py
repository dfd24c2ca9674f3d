"""The operator drives real Jobs on a real control plane, through planned windows, under least-privilege RBAC.

Planning time runs 600x faster than the wall clock (an hour in 6 s); each scenario's grid trace has a known
low-carbon window, and the forecast model is `oracle`, so what is tested is that the operator follows the plan, not
the forecast's quality (the simulator's tests own that).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from e2e.harness import (
    Cluster,
    OperatorInstall,
    OperatorProcess,
    caj_manifest,
    serving_operator,
    wait_until,
    write_trace,
)

SPEED = 600.0
SLOT = timedelta(minutes=15)


def trace_values(epoch: datetime, start: datetime, hours: float, low: list[tuple[float, float]]) -> list[float]:
    """500 g/kWh everywhere, 80 g/kWh in the `low` windows (hours after the epoch)."""
    values = []
    for i in range(int(hours * 4)):
        at = (start + i * SLOT - epoch).total_seconds() / 3600
        values.append(80.0 if any(a <= at < b for a, b in low) else 500.0)
    return values


@pytest.fixture
def operator(
    api_client: client.ApiClient, operator_install: OperatorInstall, installed_crds: object, tmp_path: Path
) -> Iterator[OperatorProcess]:
    epoch = datetime.now(UTC).replace(microsecond=0)
    start = epoch - timedelta(hours=2)
    low = [(3.0, 5.0), (9.0, 11.0)]
    trace = write_trace(tmp_path / "trace.csv", start, trace_values(epoch, start, 96, low), SLOT)
    config = operator_install.kubeconfig(tmp_path / "operator.kubeconfig")
    proc = OperatorProcess(
        config,
        tmp_path,
        speed=SPEED,
        epoch=epoch,
        extra=[
            "--zone",
            "TEST",
            "--trace",
            f"TEST={trace}",
            "--forecast",
            "oracle",
            "--tick",
            "15m",
            "--margin",
            "10m",
            "--capacity-refresh",
            "1s",  # tests fill the cluster mid-window; the operator must see it within the window
        ],
    )
    with serving_operator(proc, api_client) as running:
        yield running


def hours_after(proc: OperatorProcess, text: str) -> float:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (moment - proc.epoch).total_seconds() / 3600


def test_non_interruptible_job_waits_then_runs_in_the_low_carbon_window(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client)
    # 1h45m in the 2 h window: at 600x a pass that runs 50 ms late is 30 s of planning time late, and a job exactly
    # as long as the window would then overrun it into 500 g/kWh and rightly move to the next clean window.
    k.create_caj(namespace, caj_manifest("finetune", duration="1h45m", max_delay="20h"))
    status = wait_until(lambda: (s := k.status(namespace, "finetune")).get("phase") == "Waiting" and s, "Waiting")
    window = status["plan"]["windows"][0]
    # The planning grid starts at `now`, so a window may start up to one slot (15 min) after the trace's boundary.
    assert 2.75 <= hours_after(operator, window["start"]) <= 3.25, window
    assert window["gPerKWh"] < 200, "the window should be the low-carbon one (80 g/kWh, not 500)"
    job = wait_until(lambda: k.job(namespace, "finetune"), "the Job")
    assert job.spec.suspend is True
    assert job.metadata.owner_references[0].kind == "CarbonAwareJob"
    assert k.pods(namespace, "finetune") == []
    # Before the window: still suspended, no pods.
    assert operator.planning_now() < operator.epoch + timedelta(hours=2.5)
    k.wait_for_events(namespace, "finetune", "Planned")
    planned = next(e for e in k.events(namespace, "finetune") if e.reason == "Planned")
    assert planned.message.startswith("Deferred to ")
    assert re.search(r"^Deferred to \S+Z: forecast \d+ g/kWh vs 500 now, saves about [\d.]+ kg", planned.message)
    # The grid is a trace (--trace): the plan and its Event say so, never passing it off as today's grid.
    replayed = f"replayed trace of {(operator.epoch - timedelta(hours=2)).year}"
    assert planned.message.endswith(f"[on a {replayed}, not today's grid]"), planned.message
    assert replayed in status["plan"]["provider"]
    # In the window: resumed, a pod runs on a GPU node.
    pods = wait_until(lambda: k.running_pods(namespace, "finetune"), "a running pod", timeout=30)
    resumed_at = operator.planning_now()
    assert resumed_at >= operator.epoch + timedelta(hours=2.75)
    assert pods[0].spec.node_name.startswith("gpu-node")
    assert pods[0].metadata.labels["carbonshift.io/carbonawarejob"] == "finetune"
    status = wait_until(lambda: (s := k.status(namespace, "finetune")).get("phase") == "Running" and s, "Running")
    assert status["cluster"] == "local"
    # Run time counts from when the operator sees the pods ready (never from the resume itself).
    wait_until(lambda: k.status(namespace, "finetune").get("runningSince"), "run time to start counting", timeout=20)
    time.sleep(1.0)
    # The workload finishes: the CarbonAwareJob succeeds, with a receipt.
    k.complete_pods(namespace, "finetune")
    status = wait_until(lambda: (s := k.status(namespace, "finetune")).get("phase") == "Succeeded" and s, "Succeeded")
    assert status["runSeconds"] > 0
    assert status["energyKWh"] > 0
    operator.assert_alive()
    # The phase gauge is set after the status write that the test saw: wait for it.
    succeeded = rf'^carbonshift_jobs\{{namespace="{namespace}",phase="Succeeded"\}} 1\.0'

    def gauge_set() -> str | None:
        text = operator.metrics()
        return text if re.search(succeeded, text, re.M) else None

    exported = wait_until(gauge_set, "the Succeeded gauge")
    assert re.search(r'^carbonshift_transitions_total\{action="resume"\} [1-9]', exported, re.M), exported[-2000:]
    assert re.search(
        r'^carbonshift_grid_intensity_g_per_kwh\{provider="trace:[^"]+",signal="average",zone="TEST"\}', exported, re.M
    )


def test_job_without_slack_runs_at_once(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client)
    k.create_caj(namespace, caj_manifest("urgent", duration="4h", max_delay="4h15m"))
    wait_until(lambda: k.running_pods(namespace, "urgent"), "a running pod", timeout=20)
    status = wait_until(lambda: (s := k.status(namespace, "urgent")).get("phase") == "Running" and s, "Running")
    # It did not wait for the clean window at 3h: it started running when it was submitted (planning time).
    submitted = hours_after(operator, status["submittedAt"])
    running = next(c for c in status["conditions"] if c["type"] == "Running")
    assert running["status"] == "True"
    assert hours_after(operator, running["lastTransitionTime"]) - submitted < 0.5, (status["submittedAt"], running)
    assert hours_after(operator, status["plan"]["latestSafeStart"]) - submitted < 0.3


def test_resumed_job_whose_pods_never_start_says_why_its_deadline_is_at_risk(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client)
    manifest = caj_manifest("stuck", duration="4h", max_delay="4h15m")  # no slack: resumed at once
    pod_spec = manifest["spec"]["template"]["spec"]["template"]["spec"]
    pod_spec["nodeSelector"] = {"carbonshift.io/test-pool": "no-such-pool"}  # the scheduler has nowhere to put it
    k.create_caj(namespace, manifest)
    wait_until(lambda: (j := k.job(namespace, "stuck")) is not None and j.spec.suspend is False, "the Job resumed")

    def at_risk() -> dict[str, str] | None:
        conditions = k.status(namespace, "stuck").get("conditions") or []
        return next((c for c in conditions if c["type"] == "DeadlineAtRisk" and c["status"] == "True"), None)

    condition = wait_until(at_risk, "DeadlineAtRisk", timeout=30)
    # Not "the duration does not fit" (the plan was fine when made): its pods never started.
    assert condition["reason"] == "PodsNotRunning", condition
    assert "none of its pods is running" in condition["message"]
    assert not k.running_pods(namespace, "stuck")
    assert k.pods(namespace, "stuck"), "the Job controller made no pod"
    k.wait_for_events(namespace, "stuck", "PodsNotRunning")


def test_interruptible_job_is_suspended_and_resumed_with_pods_annotated_first(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    k = Cluster(api_client)
    checkpoint = {"overhead": "1m", "gracePeriod": "30m", "minRunDuration": "30m"}
    manifest = caj_manifest("pretrain", duration="3h30m", max_delay="12h", interruptible=True, checkpoint=checkpoint)
    k.create_caj(namespace, manifest)
    status = wait_until(lambda: (s := k.status(namespace, "pretrain")).get("plan") and s, "a plan")
    windows = [(hours_after(operator, w["start"]), hours_after(operator, w["end"])) for w in status["plan"]["windows"]]
    assert len(windows) == 2, windows
    assert 2.75 <= windows[0][0] <= 3.25 and 8.75 <= windows[1][0] <= 9.25, windows
    # First window: runs; before its end the pod is annotated with the planned suspension time.
    pods = wait_until(lambda: k.running_pods(namespace, "pretrain"), "running in window 1", timeout=30)
    annotated = wait_until(
        lambda: [
            p
            for p in k.running_pods(namespace, "pretrain")
            if "carbonshift.io/suspend-at" in (p.metadata.annotations or {})
        ],
        "the suspend-at annotation on the running pod",
        timeout=30,
    )
    suspend_at = hours_after(operator, annotated[0].metadata.annotations["carbonshift.io/suspend-at"])
    assert abs(suspend_at - windows[0][1]) < 0.3, (suspend_at, windows)  # the end of the first planned window
    assert suspend_at <= 5.3, "inside the low-carbon window"
    assert operator.planning_now() < operator.epoch + timedelta(hours=suspend_at), "annotated before the suspension"
    # The decision core announces every suspension at least gracePeriod (30 min) ahead, says so in status, and the
    # Job is not suspended before the announced time.
    announced = k.status(namespace, "pretrain")
    assert announced.get("suspendAt"), ("read 30 planning minutes before the suspension", announced)
    at, since = (
        datetime.fromisoformat(announced[f].replace("Z", "+00:00")) for f in ("suspendAt", "suspendAnnouncedAt")
    )
    assert at - since >= timedelta(minutes=30), announced
    assert abs((at - operator.epoch).total_seconds() / 3600 - suspend_at) < 1 / 60, (announced, suspend_at)
    while operator.planning_now() < at - timedelta(minutes=3):
        assert k.job(namespace, "pretrain").spec.suspend is not True, "suspended before the announced time"
        time.sleep(0.05)
    # Between the windows: suspended, pods gone.
    wait_until(lambda: k.job(namespace, "pretrain").spec.suspend is True, "suspension", timeout=20)
    wait_until(lambda: not k.running_pods(namespace, "pretrain"), "pods deleted", timeout=20)
    wait_until(lambda: k.status(namespace, "pretrain")["phase"] == "Suspended", "phase Suspended", timeout=10)
    # Second window: resumed.
    wait_until(lambda: k.running_pods(namespace, "pretrain"), "running in window 2", timeout=40)
    assert operator.planning_now() >= operator.epoch + timedelta(hours=8.75)
    status = k.status(namespace, "pretrain")
    assert status["suspensions"] == 1
    k.wait_for_events(namespace, "pretrain", "Resumed", "Suspended", "SuspendPlanned")
    for event in k.events(namespace, "pretrain"):
        if event.reason in ("Resumed", "Suspended") and event.involved_object.kind == "CarbonAwareJob":
            # decisions made on a trace say so (the Job controller's own "Suspended" is about the Job)
            assert event.message.endswith("not today's grid]"), event.message
    del pods


def free_gpus(core: client.CoreV1Api) -> int:
    """The cluster's free GPUs as the operator counts them: allocatable less the requests of unfinished pods."""
    nodes = core.list_node().items
    total = sum(int(n.status.allocatable.get("nvidia.com/gpu", 0)) for n in nodes if not n.spec.unschedulable)
    pods = core.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded,status.phase!=Failed").items
    return total - sum(
        int((c.resources.limits or {}).get("nvidia.com/gpu", 0)) for p in pods for c in p.spec.containers
    )


def test_two_jobs_that_cannot_share_the_cluster_plan_different_clean_windows(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """Each job plans around the GPUs the other's plan uses: the second takes the next clean window rather than
    queueing for the first one's GPUs."""
    k = Cluster(api_client)
    free = free_gpus(client.CoreV1Api(api_client))
    assert free >= 4, free
    windows = {}
    for name in ("first", "second"):
        manifest = caj_manifest(name, duration="2h", max_delay="20h")  # 1 GPU a pod
        manifest["spec"]["template"]["spec"]["parallelism"] = free // 2 + 1  # more than half: they cannot share
        k.create_caj(namespace, manifest)
        # A plan with windows: the very first pass may still see pods of the previous test (no room, no windows).
        status = wait_until(
            lambda n=name: (s := k.status(namespace, n)).get("plan", {}).get("windows") and s, f"{name} planned"
        )
        windows[name] = [(hours_after(operator, w["start"]), hours_after(operator, w["end"]))
                         for w in status["plan"]["windows"]]  # fmt: skip
    assert 2.75 <= windows["first"][0][0] <= 3.25, windows  # the cleanest window, 3-5 h
    assert 8.75 <= windows["second"][0][0] <= 9.25, windows  # the next one, 9-11 h: 3-5 h is taken
    assert all(b[0] >= a[1] or a[0] >= b[1] for a in windows["first"] for b in windows["second"]), windows


def test_interruptible_job_that_fills_its_cluster_still_follows_its_plan(
    api_client: client.ApiClient, namespace: str, operator: OperatorProcess
) -> None:
    """A resumed Job's own pods count as used GPUs; its re-plans must not take that as a full cluster (which once
    kept it running past its window and reported NotEnoughGPUs)."""
    k = Cluster(api_client)
    core = client.CoreV1Api(api_client)
    nodes = core.list_node().items
    per_node = max(int(n.status.allocatable.get("nvidia.com/gpu", 0)) for n in nodes)
    checkpoint = {"overhead": "1m", "gracePeriod": "30m", "minRunDuration": "30m"}
    manifest = caj_manifest(
        "whole-node", duration="3h30m", max_delay="12h", gpus=per_node, interruptible=True, checkpoint=checkpoint
    )
    k.create_caj(namespace, manifest)
    wait_until(lambda: k.running_pods(namespace, "whole-node"), "running in window 1", timeout=30)
    # Take every other GPU of the cluster, as the operator counts them (requests of unfinished pods).
    for i in range(free_gpus(core)):
        container = {"name": "c", "image": "filler", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
        core.create_namespaced_pod(
            namespace, {"metadata": {"name": f"filler-{i}"}, "spec": {"containers": [container]}}
        )
    status = k.status(namespace, "whole-node")
    window_end = hours_after(operator, status["plan"]["windows"][0]["end"])
    wait_until(
        lambda: k.job(namespace, "whole-node").spec.suspend is True, "suspension at the window's end", timeout=30
    )
    assert hours_after(operator, operator.planning_now().isoformat()) >= window_end - 0.5
    # Its pod now checkpoints for its grace period (30 min: 3 s here) and still holds the GPUs; the job re-plans
    # meanwhile and must count them as its own, not report a full cluster.
    time.sleep(5)
    status = k.status(namespace, "whole-node")
    assert status["phase"] == "Suspended", status["phase"]
    events = [(e.reason, e.message) for e in k.events(namespace, "whole-node")]
    assert not [e for e in events if e[0] == "NotEnoughGPUs"], events
