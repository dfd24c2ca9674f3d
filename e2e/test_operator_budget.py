"""An EnergyBudget with action Suspend stops an interruptible job when its limit is reached, holds new jobs until
the next period, and says so in conditions and events; the next period releases them.

Planning time starts at 22:00 UTC and runs 300x faster, so the Daily budget's next period begins two planning
hours (24 s) after the start. Two jobs draw 2 x 683 W (the estimate; no DCGM here): 0.5 kWh is reached in ~11 min.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import client

from e2e.harness import Cluster, OperatorInstall, OperatorProcess, caj_manifest, wait_until, write_trace


def condition(status: dict[str, object], type_: str) -> dict[str, str] | None:
    conditions = status.get("conditions") or []
    assert isinstance(conditions, list)
    return next((c for c in conditions if c["type"] == type_ and c["status"] == "True"), None)


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
    first = caj_manifest("first", duration="3h", max_delay="20h", gpus=2, interruptible=True, checkpoint=checkpoint)
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
        assert "BudgetExhausted" in k.event_reasons(namespace, "first")
        # A new job of the team is held, not started.
        second = caj_manifest("second", duration="1h", max_delay="20h", gpus=1)
        second["metadata"]["labels"] = {"team": "a"}
        k.create_caj(namespace, second)
        wait_until(lambda: condition(k.status(namespace, "second"), "BudgetHeld"), "the new job held", timeout=20)
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
