"""EnergyBudgets on the real control plane, with the operator as a subprocess on a fast clock.

1. An interruptible job admitted for 10 minutes runs on past its estimate (its pods do not finish): once the Suspend
   budget is used up it is suspended; a new job that does not fit is held at admission; the next period releases
   both. Planning time starts at 22:00 UTC at 300x, so the next period begins 24 s after the start; the job draws
   2 x 683 W (the estimate; no DCGM here), so 0.5 kWh is reached after ~22 planning minutes.
2. Budgets as admission: a burst of 50 jobs against a budget of 5.5 jobs' projected energy runs 5 of them and
   overshoots by less than one job's minimum chunk, with the operator SIGKILLed in the middle of the burst;
   deleting and re-creating a finished job under its name, relabelling one out of the selector and another SIGKILL
   leave the budget's usage unchanged within 1%.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from e2e.harness import Cluster, OperatorInstall, OperatorProcess, caj_manifest, wait_until, write_trace


def condition(status: dict[str, object], type_: str) -> dict[str, str] | None:
    conditions = status.get("conditions") or []
    assert isinstance(conditions, list)
    return next((c for c in conditions if c["type"] == type_ and c["status"] == "True"), None)


def flat_grid_operator(install: OperatorInstall, tmp_path: Path, *, speed: float, tick: str = "5m") -> OperatorProcess:
    """The operator (not started) on a flat 300 g/kWh trace from two hours ago, its planning clock from now at
    `speed`, with an oracle forecast: every plan runs at once, so what holds a job is its budget or cap."""
    epoch = datetime.now(UTC).replace(microsecond=0)
    trace = write_trace(tmp_path / "flat.csv", epoch - timedelta(hours=2), [300.0] * 48, timedelta(hours=1))
    config = install.kubeconfig(tmp_path / "operator.kubeconfig")
    extra = ["--zone", "TEST", "--trace", f"TEST={trace}", "--forecast", "oracle", "--tick", tick, "--margin", "5m"]
    return OperatorProcess(config, tmp_path, speed=speed, epoch=epoch, extra=extra)


def test_suspend_budget_stops_a_job_holds_new_ones_and_releases_them_next_period(
    api_client: client.ApiClient,
    operator_install: OperatorInstall,
    installed_crds: object,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CARBONSHIFT_BUDGET_INTERVAL_SECONDS", "2")  # budget status every 2 s (10 planning min)
    k = Cluster(api_client)
    today = datetime.now(UTC).replace(hour=22, minute=0, second=0, microsecond=0)
    midnight = today + timedelta(hours=2)
    trace = write_trace(tmp_path / "flat.csv", today - timedelta(hours=2), [300.0] * 48, timedelta(hours=1))
    config = operator_install.kubeconfig(tmp_path / "operator.kubeconfig")
    extra = ["--zone", "TEST", "--trace", f"TEST={trace}", "--forecast", "oracle", "--tick", "5m", "--margin", "5m"]
    proc = OperatorProcess(config, tmp_path, speed=300.0, epoch=today, extra=extra)
    budget = {
        "apiVersion": "carbonshift.io/v1alpha1",
        "kind": "EnergyBudget",
        "metadata": {"name": "team-cap"},
        "spec": {
            "period": "Daily",
            "limits": {"energyKWh": 0.5},
            "action": "Suspend",
            "selector": {"matchLabels": {"team": "a"}},
        },
    }
    k.custom.create_namespaced_custom_object("carbonshift.io", "v1alpha1", namespace, "energybudgets", budget)
    checkpoint = {"overhead": "1m", "gracePeriod": "1m", "minRunDuration": "5m"}
    first = caj_manifest("first", duration="10m", max_delay="20h", gpus=2, interruptible=True, checkpoint=checkpoint)
    first["metadata"]["labels"] = {"team": "a"}
    try:
        proc.start()
        wait_until(proc.serving, "the operator to start", timeout=30, interval=0.05)
        time.sleep(0.5)
        k.create_caj(namespace, first)
        wait_until(lambda: k.running_pods(namespace, "first"), "the first job running", timeout=20)
        # The limit is reached: suspended, with the budget named.
        held = wait_until(lambda: condition(k.status(namespace, "first"), "BudgetHeld"), "BudgetHeld", timeout=30)
        assert held["reason"] == "BudgetExhausted" and f"{namespace}/team-cap" in held["message"]
        wait_until(lambda: k.job(namespace, "first").spec.suspend is True, "the Job suspended", timeout=20)
        events = [(e.reason, e.message) for e in k.events(namespace, "first")]
        assert proc.planning_now() < midnight, f"suspended within the day, not at its end: {events}"
        k.wait_for_events(namespace, "first", "BudgetExhausted")
        # A new job of the team that does not fit what is left is held at admission, not started.
        second = caj_manifest("second", duration="15m", max_delay="20h", gpus=1)
        second["metadata"]["labels"] = {"team": "a"}
        k.create_caj(namespace, second)
        held2 = wait_until(
            lambda: condition(k.status(namespace, "second"), "BudgetHeld"), "the new job held", timeout=20
        )
        assert "does not fit" in held2["message"], held2
        assert k.running_pods(namespace, "second") == []

        def exceeded() -> bool:
            eb = k.custom.get_namespaced_custom_object(
                "carbonshift.io", "v1alpha1", namespace, "energybudgets", "team-cap"
            )
            return any(
                c["type"] == "Exceeded" and c["status"] == "True"
                for c in (eb.get("status") or {}).get("conditions", [])
            )

        wait_until(exceeded, "the EnergyBudget's Exceeded condition", timeout=20)
        # Midnight: a new period; both run again.
        wait_until(lambda: k.running_pods(namespace, "second"), "the held job to start next period", timeout=60)
        wait_until(lambda: k.running_pods(namespace, "first"), "the suspended job to resume next period", timeout=60)
        assert proc.planning_now() >= midnight
        proc.assert_alive()
    finally:
        proc.stop()


JOB_MINUTES = 20
JOB_KWH = 0.683 * JOB_MINUTES / 60  # 1 GPU x 683 W (the default wattsPerGPU) x 20 min
MIN_CHUNK_KWH = 0.683 * 15 / 60  # one job's minimum chunk: minRunDuration 15m (the default) on its GPU
BURST = 50


def budget_status(k: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj = k.custom.get_namespaced_custom_object("carbonshift.io", "v1alpha1", namespace, "energybudgets", name)
    return dict(obj.get("status") or {})


def run_minutes(status: dict[str, Any], now: datetime) -> float:
    seconds = float(status.get("runSeconds") or 0.0)
    since = status.get("runningSince")
    if since:
        seconds += (now - datetime.fromisoformat(since.replace("Z", "+00:00"))).total_seconds()
    return seconds / 60


def test_a_burst_is_admitted_up_to_the_budget_and_its_usage_survives_deletes_relabels_and_kills(
    api_client: client.ApiClient,
    operator_install: OperatorInstall,
    installed_crds: object,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CARBONSHIFT_BUDGET_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("CARBONSHIFT_BUDGET_SETTLE_SECONDS", "5")
    k = Cluster(api_client)
    epoch = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)  # the Daily period has 15 h left
    trace = write_trace(tmp_path / "flat.csv", epoch - timedelta(hours=2), [300.0] * 48, timedelta(hours=1))
    config = operator_install.kubeconfig(tmp_path / "operator.kubeconfig")
    extra = ["--zone", "TEST", "--trace", f"TEST={trace}", "--forecast", "oracle", "--tick", "5m", "--margin", "5m"]
    proc = OperatorProcess(config, tmp_path, speed=60.0, epoch=epoch, extra=extra)
    limit = 5.5 * JOB_KWH
    budget = {
        "apiVersion": "carbonshift.io/v1alpha1",
        "kind": "EnergyBudget",
        "metadata": {"name": "burst-cap"},
        "spec": {
            "period": "Daily",
            "limits": {"energyKWh": limit},
            "action": "Suspend",
            "selector": {"matchLabels": {"team": "burst"}},
        },
    }
    k.custom.create_namespaced_custom_object("carbonshift.io", "v1alpha1", namespace, "energybudgets", budget)

    def manifest(name: str) -> dict[str, Any]:
        job = caj_manifest(name, duration=f"{JOB_MINUTES}m", max_delay="20h", gpus=1)
        job["metadata"]["labels"] = {"team": "burst"}
        return job

    names = [f"burst-{i:02d}" for i in range(BURST)]
    ran: set[str] = set()
    completed: set[str] = set()

    def drive() -> None:
        """Note which jobs run, and finish each one's pods once it has run its 20 minutes (kwok pods run forever)."""
        now = proc.planning_now()
        for pod in k.core.list_namespaced_pod(namespace, label_selector="carbonshift.io/carbonawarejob").items:
            owner = pod.metadata.labels["carbonshift.io/carbonawarejob"]
            if pod.status.phase == "Running" and owner not in completed:
                ran.add(owner)
                if run_minutes(k.status(namespace, owner), now) >= JOB_MINUTES:
                    k.complete_pods(namespace, owner)
                    completed.add(owner)

    try:
        proc.start()
        wait_until(proc.serving, "the operator to start", timeout=30, interval=0.05)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: k.create_caj(namespace, manifest(n)), names))
        # SIGKILL in the middle of the burst, once the first admission is recorded in the budget's status.
        wait_until(lambda: (budget_status(k, namespace, "burst-cap").get("admittedJobs") or 0) >= 1,
                   "the first admission", timeout=60, interval=0.05)  # fmt: skip
        proc.kill()
        proc.start()
        wait_until(proc.serving, "the operator to restart", timeout=30, interval=0.05)

        def settled() -> bool:
            drive()
            phases = {n: k.status(namespace, n).get("phase") for n in ran}
            return len(ran) >= 5 and all(p == "Succeeded" for p in phases.values())

        wait_until(settled, "five admitted jobs to run and finish", timeout=240, interval=0.3)
        end = time.monotonic() + 15  # 15 planning minutes, 3 ticks: nothing else starts
        while time.monotonic() < end:
            drive()
            time.sleep(0.3)
        if len(ran) != 5:  # a rare flake (6 once in many runs, not yet explained): say everything that decides it
            ledger = budget_status(k, namespace, "burst-cap")
            jobs = {
                n: {f: k.status(namespace, n).get(f) for f in ("phase", "runSeconds", "energyKWh", "suspensions")}
                for n in sorted(ran)
            }
            raise AssertionError(f"jobs that ran: {sorted(ran)}; their status {jobs}; the budget {ledger}")

        def synced() -> dict[str, Any] | None:
            s = budget_status(k, namespace, "burst-cap")
            return s if s.get("admittedJobs") == 0 and (s.get("usedEnergyKWh") or 0) > 4 * JOB_KWH else None

        status = wait_until(synced, "the finished jobs' usage in the ledger", timeout=30)
        used = float(status["usedEnergyKWh"])
        print(f"burst: limit {limit:.4f} kWh, used {used:.4f} kWh by {len(ran)} jobs, "
              f"overshoot {used - limit:+.4f} kWh (bound {MIN_CHUNK_KWH:.4f})")  # fmt: skip
        assert used <= limit + MIN_CHUNK_KWH
        # The others wait: those whose plan says "now" are held by the budget, the rest are planned later (the
        # GPUs of the cluster are reserved slot by slot among all of them).
        waiting = {n: k.status(namespace, n) for n in names if n not in ran}
        held = [n for n, st in waiting.items() if condition(st, "BudgetHeld")]
        print(f"burst: {len(held)} held by the budget, {len(waiting) - len(held)} planned later")
        assert all(st.get("phase") == "Waiting" for st in waiting.values())
        assert len(held) >= 5, {n: st.get("conditions") for n, st in list(waiting.items())[:3]}

        def unchanged() -> dict[str, Any] | None:
            s = budget_status(k, namespace, "burst-cap")
            return s if abs(float(s.get("usedEnergyKWh") or 0) - used) <= 0.01 * used else None

        # Deleted and re-created under the same name: the new job is held, the old one's usage stays.
        gone, moved = sorted(ran)[:2]
        k.custom.delete_namespaced_custom_object("carbonshift.io", "v1alpha1", namespace, "carbonawarejobs", gone)

        def deleted() -> bool:
            try:
                k.caj(namespace, gone)
            except client.ApiException as exc:
                return exc.status == 404
            return False

        wait_until(deleted, f"{gone} deleted", timeout=30)
        k.create_caj(namespace, manifest(gone))
        wait_until(lambda: condition(k.status(namespace, gone), "BudgetHeld"), "the re-created job held", timeout=30)
        time.sleep(3)
        wait_until(unchanged, "the usage unchanged after delete and re-create", timeout=10)
        # Relabelled out of the selector: its usage stays in the budget.
        patch = {"metadata": {"labels": {"team": "elsewhere"}}}
        k.custom.patch_namespaced_custom_object(
            "carbonshift.io", "v1alpha1", namespace, "carbonawarejobs", moved, patch
        )
        time.sleep(3)
        wait_until(unchanged, "the usage unchanged after a relabel", timeout=10)
        # SIGKILL mid-period and a new process: same usage once it has settled, nothing new admitted.
        proc.kill()
        proc.start()
        wait_until(proc.serving, "the operator to restart", timeout=30, interval=0.05)
        time.sleep(8)
        final = wait_until(unchanged, "the usage unchanged after a SIGKILL", timeout=10)
        assert final["admittedJobs"] == 0
        assert all(k.running_pods(namespace, n) == [] for n in names)
        ledger_uids = {e["uid"] for e in final["ledger"]}
        assert len(ledger_uids) >= 5  # the deleted job's entry is kept under its old UID
        proc.assert_alive()
    finally:
        proc.stop()


def test_the_estimate_counts_the_gpus_of_the_pods_that_run_not_every_gpu_of_the_template(
    api_client: client.ApiClient,
    operator_install: OperatorInstall,
    installed_crds: object,
    namespace: str,
    tmp_path: Path,
) -> None:
    """Two pods that each take a whole node, both pinned to the same node: one runs, one waits. Without DCGM the
    energy is estimated, and it must be one pod's GPUs x wattsPerGPU x run time, not two pods'."""
    k = Cluster(api_client)
    node = next(n for n in k.core.list_node().items if int((n.status.allocatable or {}).get("nvidia.com/gpu", 0)))
    per_pod = int(node.status.allocatable["nvidia.com/gpu"])
    hostname = node.metadata.labels["kubernetes.io/hostname"]

    def node_free() -> bool:
        pods = k.core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node.metadata.name}").items
        return not [p for p in pods if p.status.phase in ("Running", "Pending")]

    wait_until(node_free, f"node {hostname} free of earlier tests' pods", timeout=60)
    proc = flat_grid_operator(operator_install, tmp_path, speed=60.0)
    job = caj_manifest("pinned", duration="4h", max_delay="20h", gpus=per_pod)
    job["spec"]["template"]["spec"].update(parallelism=2, completions=2)
    job["spec"]["template"]["spec"]["template"]["spec"]["nodeSelector"] = {"kubernetes.io/hostname": hostname}
    try:
        proc.start()
        wait_until(proc.serving, "the operator to start", timeout=30, interval=0.05)
        k.create_caj(namespace, job)
        wait_until(lambda: len(k.running_pods(namespace, "pinned")) == 1, "one pod running", timeout=60)

        def ran_ten_minutes() -> dict[str, Any] | None:
            status = k.status(namespace, "pinned")
            return status if float(status.get("runSeconds") or 0) >= 600 or (
                status.get("runningSince") and run_minutes(status, proc.planning_now()) >= 10
                and float(status.get("energyKWh") or 0) > 0
            ) else None  # fmt: skip

        wait_until(ran_ten_minutes, "ten planning minutes of run", timeout=60)
        time.sleep(2)
        status = k.status(namespace, "pinned")
        assert len(k.running_pods(namespace, "pinned")) == 1 and len(k.pods(namespace, "pinned")) == 2
        estimate = status["estimate"]
        gpus = estimate["kWh"] * 3.6e6 / (estimate["runSeconds"] * 683.0)
        print(f"estimate: {estimate['kWh']:.4f} kWh over {estimate['runSeconds']:.0f} s = {gpus:.2f} GPUs")
        assert gpus == pytest.approx(per_pod, rel=0.01)
        proc.assert_alive()
    finally:
        proc.stop()


def test_a_jobs_own_cap_holds_it_when_its_projection_exceeds_the_cap(
    api_client: client.ApiClient,
    operator_install: OperatorInstall,
    installed_crds: object,
    namespace: str,
    tmp_path: Path,
) -> None:
    """spec.cap, projected ahead: a 1 h job on one GPU (0.683 kWh) with a 0.5 kWh cap is not started, and says why;
    the same job with a 1 kWh cap runs; a Notify cap lets it run and says so in an Event."""
    k = Cluster(api_client)
    proc = flat_grid_operator(operator_install, tmp_path, speed=60.0)
    caps = {"capped": {"energyKWh": 0.5}, "within": {"energyKWh": 1.0}, "noted": {"energyKWh": 0.5, "action": "Notify"}}
    try:
        proc.start()
        wait_until(proc.serving, "the operator to start", timeout=30, interval=0.05)
        for name, cap in caps.items():
            k.create_caj(namespace, caj_manifest(name, duration="1h", max_delay="20h", extra_spec={"cap": cap}))
        held = wait_until(lambda: condition(k.status(namespace, "capped"), "BudgetHeld"), "the capped job held")
        assert "projected 0.683 kWh exceeds its cap of 0.5 kWh" in held["message"], held
        wait_until(lambda: k.running_pods(namespace, "within"), "the job within its cap running", timeout=30)
        wait_until(lambda: k.running_pods(namespace, "noted"), "the Notify-capped job running", timeout=30)
        k.wait_for_events(namespace, "noted", "BudgetExhausted")
        notes = [e.message for e in k.events(namespace, "noted") if e.reason == "BudgetExhausted"]
        assert any("exceeds its cap of 0.5 kWh" in m for m in notes), notes
        assert k.running_pods(namespace, "capped") == [] and k.status(namespace, "capped")["phase"] == "Waiting"
        proc.assert_alive()
    finally:
        proc.stop()


def test_raising_a_budget_that_holds_a_job_starts_it_at_once_not_at_its_next_pass(
    api_client: client.ApiClient,
    operator_install: OperatorInstall,
    installed_crds: object,
    namespace: str,
    tmp_path: Path,
) -> None:
    """A job held by its budget waits for the budget's next period (midnight), with a pass due at most every tick
    (one hour here, on the wall clock). The platform team raises the budget: the budget's event wakes the jobs it
    selects, and the job starts within seconds. Before, it waited for its next pass."""
    k = Cluster(api_client)
    proc = flat_grid_operator(operator_install, tmp_path, speed=1.0, tick="1h")
    budget = {"apiVersion": "carbonshift.io/v1alpha1", "kind": "EnergyBudget", "metadata": {"name": "tight"},
              "spec": {"period": "Daily", "limits": {"energyKWh": 0.001}, "action": "Suspend",
                       "selector": {"matchLabels": {"team": "a"}}}}  # fmt: skip
    job = caj_manifest("held", duration="1h", max_delay="20h")
    job["metadata"]["labels"] = {"team": "a"}
    try:
        proc.start()
        wait_until(proc.serving, "the operator to start", timeout=30, interval=0.05)
        k.custom.create_namespaced_custom_object("carbonshift.io", "v1alpha1", namespace, "energybudgets", budget)
        k.create_caj(namespace, job)
        held = wait_until(lambda: condition(k.status(namespace, "held"), "BudgetHeld"), "the job held", timeout=30)
        assert f"{namespace}/tight" in held["message"], held
        assert k.status(namespace, "held")["phase"] == "Waiting" and k.running_pods(namespace, "held") == []
        raised = {"spec": {"limits": {"energyKWh": 10.0}}}
        k.custom.patch_namespaced_custom_object("carbonshift.io", "v1alpha1", namespace, "energybudgets", "tight",
                                                raised)  # fmt: skip
        wait_until(lambda: k.running_pods(namespace, "held"), "the job running once its budget is raised", timeout=30)
        assert condition(k.status(namespace, "held"), "BudgetHeld") is None
        proc.assert_alive()
    finally:
        proc.stop()
