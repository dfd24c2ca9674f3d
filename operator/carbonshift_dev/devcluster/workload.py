"""A stand-in for the training code inside the demo's pods: each job finishes once it has run for its duration.

kwok keeps fake pods Running forever; this thread watches the pods of every CarbonAwareJob, accrues the planning time
during which a job has a running pod, and, once that reaches the job's `spec.duration`, annotates its pods so that
kwok completes them (the dev cluster's completion stage). It also records each job's run intervals, which the demo
report plots against the grid's intensity. Time comes from the caller's planning clock.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kubernetes import client

from carbonshift.api.durations import parse_duration
from carbonshift.api.jobs import LABEL_CAJ, LABEL_MANAGED

COMPLETE = {"metadata": {"annotations": {"carbonshift.io/complete": "true"}}}


@dataclass
class JobRuns:
    duration: timedelta
    ran: timedelta = timedelta(0)
    intervals: list[tuple[datetime, datetime]] = field(default_factory=list)
    running_since: datetime | None = None
    finished_at: datetime | None = None


class Workload(threading.Thread):
    """Plays the workload of every CarbonAwareJob in `namespace` across the given clusters' APIs."""

    def __init__(
        self,
        management: client.ApiClient,
        clusters: dict[str, client.ApiClient],
        namespace: str,
        now: Callable[[], datetime],
        poll_seconds: float = 0.2,
    ) -> None:
        super().__init__(daemon=True, name="workload")
        self.custom = client.CustomObjectsApi(management)
        self.cores = {name: client.CoreV1Api(api) for name, api in clusters.items()}
        self.namespace = namespace
        self.now = now
        self.poll_seconds = poll_seconds
        self.jobs: dict[str, JobRuns] = {}
        self.halt = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        last = self.now()
        while not self.halt.wait(self.poll_seconds):
            try:
                last = self.step(last)
            except Exception as exc:  # a demo must not die on one failed poll; keep the message for the report
                self.errors.append(str(exc))

    def step(self, last: datetime) -> datetime:
        now = self.now()
        listing: dict[str, Any] = self.custom.list_namespaced_custom_object(  # type: ignore[assignment]
            "carbonshift.io", "v1alpha1", self.namespace, "carbonawarejobs"
        )
        for item in listing["items"]:
            name = item["metadata"]["name"]
            if name not in self.jobs:
                self.jobs[name] = JobRuns(parse_duration(item["spec"]["duration"]))
        running: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for cluster, core in self.cores.items():
            pods = core.list_namespaced_pod(self.namespace, label_selector=f"{LABEL_MANAGED}=true").items
            for pod in pods:
                if (
                    pod.status
                    and pod.status.phase == "Running"
                    and pod.metadata
                    and not pod.metadata.deletion_timestamp
                ):
                    labels = pod.metadata.labels or {}
                    running[labels.get(LABEL_CAJ, "")].append((cluster, str(pod.metadata.name)))
        for name, runs in self.jobs.items():
            live = running.get(name, [])
            if live and runs.finished_at is None:
                if runs.running_since is None:
                    runs.running_since = now
                runs.ran += now - last
                if runs.ran >= runs.duration:
                    for cluster, pod_name in live:
                        self.cores[cluster].patch_namespaced_pod(pod_name, self.namespace, COMPLETE)
                    runs.finished_at = now
            if runs.running_since is not None and (not live or runs.finished_at is not None):
                runs.intervals.append((runs.running_since, now))
                runs.running_since = None
        return now
