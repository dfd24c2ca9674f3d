"""A job that waits behind another job's GPUs takes them as soon as they are freed (real control plane).

One zone, hourly: dirty now, clean for the next two hours, dirty again, middling five hours out. A job that holds
all 16 GPUs of the dev cluster runs now, through the clean hours. A second job, deferrable, cannot have the clean
hours and commits to the middling one (cleaner than now: a carbon plan, not a wait for capacity alone). When the
first job is deleted, the second one's commitment is weighed again at once (the operator runs with a re-check
interval of a day, so only the freed GPUs can make it look) and it moves into the clean hours.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kubernetes import client

from carbonshift.api.jobs import parse_time
from e2e.harness import (
    Cluster,
    OperatorInstall,
    OperatorProcess,
    caj_manifest,
    wait_until,
    write_trace,
)

HOUR = timedelta(hours=1)


def hog(name: str) -> dict[str, Any]:
    """Two pods of 8 GPUs: every GPU of the dev cluster's two nodes, right away, for 4 hours."""
    manifest = caj_manifest(name, duration="4h", max_delay="10h", gpus=8, policy="Immediate")
    job = manifest["spec"]["template"]["spec"]
    job["parallelism"] = job["completions"] = 2
    return manifest


def test_a_job_waiting_behind_another_jobs_gpus_takes_them_when_they_are_freed(
    api_client: client.ApiClient,
    operator_install: OperatorInstall,
    installed_crds: object,
    namespace: str,
    tmp_path: Path,
) -> None:
    k = Cluster(api_client)
    epoch = datetime.now(UTC).replace(microsecond=0)
    start = epoch - 2 * HOUR
    # hours from epoch: [0, 1) 500, [1, 3) 100, [3, 5) 500, [5, 6) 300, later 500
    values = [100.0 if 1 <= i - 2 < 3 else 300.0 if i - 2 == 5 else 500.0 for i in range(48)]
    trace = write_trace(tmp_path / "hours.csv", start, values, HOUR)
    config = operator_install.kubeconfig(tmp_path / "operator.kubeconfig")
    extra = ["--zone", "TEST", "--trace", f"TEST={trace}", "--forecast", "oracle", "--tick", "10m",
             "--recheck-every", "24h", "--capacity-refresh", "1s"]  # fmt: skip
    proc = OperatorProcess(config, tmp_path, speed=60.0, epoch=epoch, extra=extra)
    proc.start()
    try:
        wait_until(proc.serving, "the operator to start", timeout=30, interval=0.05)
        k.create_caj(namespace, hog("hog"))
        wait_until(lambda: k.status(namespace, "hog").get("phase") == "Running", "the hog to run", timeout=30)
        k.create_caj(namespace, caj_manifest("waiter", duration="1h", max_delay="10h", gpus=8))

        def planned_start() -> datetime | None:
            plan = k.status(namespace, "waiter").get("plan") or {}
            windows = plan.get("windows") or []
            return parse_time(windows[0]["start"]) if windows else None

        first = wait_until(planned_start, "the waiter's plan", timeout=30)
        assert first == epoch + 5 * HOUR, (first, k.status(namespace, "waiter"))  # the middling hour
        commitment = k.status(namespace, "waiter")["commitment"]
        fits_from = parse_time(commitment["fitsFrom"])
        assert fits_from is not None and fits_from >= epoch + 4 * HOUR, commitment  # no room before the hog ends

        k.custom.delete_namespaced_custom_object("carbonshift.io", "v1alpha1", namespace, "carbonawarejobs", "hog")

        def in_clean_hours() -> datetime | None:
            s = planned_start()
            return s if s is not None and s < epoch + 3 * HOUR else None

        moved = wait_until(in_clean_hours, "the waiter to move into the clean hours", timeout=40)
        assert moved < epoch + 3 * HOUR
        # and it runs there: its Job resumed within the clean hours
        wait_until(lambda: k.status(namespace, "waiter").get("phase") == "Running", "the waiter to run", timeout=90)
        assert epoch + HOUR <= proc.planning_now() < epoch + 3 * HOUR
    finally:
        proc.stop()
