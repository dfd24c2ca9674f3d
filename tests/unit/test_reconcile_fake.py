"""The operator's reconcile pass (handlers/carbonawarejob.py) driven end to end against an in-memory cluster: no
kopf, no API server. Read the snapshot, call the decision core, act in crash-safe order, report; what the core
decides must be what the fake cluster sees done (announcements ahead of suspensions, run time at the share of pods
running, Kueue-managed Jobs left alone)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
import numpy as np
import pytest

from carbonshift.adapters.clock import Clock
from carbonshift.adapters.intensity import ZoneForecast
from carbonshift.adapters.kube import Capacity, Kube
from carbonshift.adapters.workloads import KindNotInstalled, Workload, workload_for
from carbonshift.adapters.workloads.client import WorkloadClient
from carbonshift.api.jobs import ANNOTATION_SUSPEND_AT, parse_time
from carbonshift.domain.series import IntensitySeries
from carbonshift.handlers import carbonawarejob as handler
from carbonshift.handlers import state as handler_state
from carbonshift.handlers.state import LOCAL, OperatorState, Settings

T0 = datetime(2026, 3, 2, tzinfo=UTC)
ZONE = "TEST"
# Hourly: dirty, clean 02-04 and 06-08, dirty after.
INTENSITY = [500.0, 500.0, 50.0, 50.0, 500.0, 500.0, 60.0, 60.0] + [500.0] * 40


@dataclass(frozen=True)
class StepClock(Clock):
    """Planning time set by the test (wall time is planning time: no epoch)."""

    at: list[datetime] = field(default_factory=lambda: [T0])

    def now(self) -> datetime:
        return self.at[0]


class Trace:
    def __init__(self) -> None:
        self.series = IntensitySeries(ZONE, T0, timedelta(hours=1), np.array(INTENSITY))

    async def forecast(self, zone: str, now: datetime, horizon: Any) -> ZoneForecast:
        return ZoneForecast(zone, self.series, "trace:test", False, "")

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> IntensitySeries:
        return self.series

    async def latest(self, zone: str, now: datetime, provider: str) -> tuple[datetime, float] | None:
        i = self.series.index_of(now)
        return (self.series.slot_start(i), float(self.series.values[i])) if 0 <= i < len(self.series) else None


class FakeKube:
    """The API as the handler uses it: Jobs in a dict, the CarbonAwareJob's status patched in place; every write
    recorded with the planning time it happened at."""

    name = LOCAL

    def __init__(self, clock: StepClock, caj: dict[str, Any]) -> None:
        self.clock = clock
        self.caj = caj
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.writes: list[tuple[datetime, str, Any]] = []
        self.version = 0
        self.kueue = False
        self.budgets: list[dict[str, Any]] = []  # the EnergyBudgets the API lists (the watch's mirror is apart)

    async def list_energy_budgets(self, namespace: str) -> list[dict[str, Any]]:
        return [b for b in self.budgets if b["metadata"].get("namespace", namespace) == namespace]

    async def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        job = self.jobs.get((namespace, name))
        return copy.deepcopy(job) if job is not None else None

    async def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        job = copy.deepcopy(manifest)
        meta = job.setdefault("metadata", {})
        meta["uid"] = "job-uid"
        if self.kueue:
            meta.setdefault("labels", {})["kueue.x-k8s.io/queue-name"] = "team"
        job["status"] = {}
        self.jobs[(meta["namespace"], meta["name"])] = job
        self.writes.append((self.clock.now(), "create", bool(job["spec"].get("suspend"))))
        return copy.deepcopy(job)

    async def set_suspend(self, namespace: str, name: str, suspend: bool) -> None:
        job = self.jobs[(namespace, name)]
        job["spec"]["suspend"] = suspend
        if suspend:
            job["status"] = {}
        self.writes.append((self.clock.now(), "suspend" if suspend else "resume", None))

    async def annotate_suspend_at(self, namespace: str, name: str, value: str | None) -> None:
        annotations = self.jobs[(namespace, name)]["metadata"].setdefault("annotations", {})
        if value is None:
            annotations.pop(ANNOTATION_SUSPEND_AT, None)
        else:
            annotations[ANNOTATION_SUSPEND_AT] = value
        self.writes.append((self.clock.now(), "annotate", value))

    async def patch_caj_status(self, namespace: str, name: str, patch: dict[str, Any]) -> str:
        status = self.caj.setdefault("status", {})
        for key, value in patch.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = copy.deepcopy(value)
        self.version += 1
        self.writes.append((self.clock.now(), "status", dict(status)))
        return str(self.version)

    async def gpu_capacity(self) -> Capacity:
        return Capacity(16, 0, 8, {})

    async def workload_pods(self, namespace: str, caj_uid: str, job_uid: str | None) -> list[tuple[str, str]]:
        return []

    async def dry_run_create_job(self, manifest: dict[str, Any]) -> None:
        return None

    async def namespace_labels(self, namespace: str) -> dict[str, str]:
        return {}

    async def list_compute_clusters(self) -> list[dict[str, Any]]:
        return []

    def pods_ready(self, ready: int) -> None:
        job = self.jobs[("team", "train")]
        if not job["spec"].get("suspend"):
            job["status"] = {"active": 2, "ready": ready}

    def complete(self) -> None:
        job = self.jobs[("team", "train")]
        stamp = self.clock.now().isoformat().replace("+00:00", "Z")
        job["status"] = {"succeeded": 2, "completionTime": stamp,
                         "conditions": [{"type": "Complete", "status": "True"}]}  # fmt: skip


class FakeWorkloads:
    """`WorkloadClient` over FakeKube's Jobs: the real kind adapters (build, observe, suspend/resume/announce
    patches) on in-memory objects, so the handler's only way to its workload is the workload interface."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube

    async def get(self, info: Any, namespace: str, name: str) -> Workload | None:
        job = await self.kube.get_job(namespace, name)
        return workload_for(job) if job is not None else None

    async def create(self, manifest: dict[str, Any]) -> Workload:
        return workload_for(await self.kube.create_job(manifest))

    async def _patched(self, workload: Workload, body: dict[str, Any]) -> Workload:
        job = self.kube.jobs[(workload.namespace, workload.name)]
        suspend = (body.get("spec") or {}).get("suspend")
        if suspend is not None:
            await self.kube.set_suspend(workload.namespace, workload.name, bool(suspend))
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        if ANNOTATION_SUSPEND_AT in annotations:
            await self.kube.annotate_suspend_at(workload.namespace, workload.name, annotations[ANNOTATION_SUSPEND_AT])
        return workload_for(copy.deepcopy(job))

    async def suspend(self, workload: Workload) -> Workload:
        return await self._patched(workload, workload.suspend_patch())

    async def resume(self, workload: Workload) -> Workload:
        return await self._patched(workload, workload.resume_patch())

    async def announce(self, workload: Workload, when: str | None) -> Workload:
        return await self._patched(workload, workload.announce_patch(when))

    async def dry_run_create(self, manifest: dict[str, Any]) -> None:
        return None


def caj_body() -> dict[str, Any]:
    pod = {"restartPolicy": "Never", "containers": [{"name": "train", "image": "example/train:1",
                                                      "resources": {"limits": {"nvidia.com/gpu": 1}}}]}  # fmt: skip
    return {
        "apiVersion": "carbonshift.io/v1alpha1",
        "kind": "CarbonAwareJob",
        "metadata": {
            "namespace": "team",
            "name": "train",
            "uid": "caj-uid",
            "generation": 1,
            "creationTimestamp": T0.isoformat().replace("+00:00", "Z"),
            "resourceVersion": "0",
        },
        "spec": {
            "duration": "3h",
            "deadline": (T0 + timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "interruptible": True,
            "checkpoint": {"overhead": "0s", "gracePeriod": "15m", "minRunDuration": "30m"},
            "template": {"spec": {"parallelism": 2, "backoffLimit": 0, "template": {"spec": pod}}},
        },
    }


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> tuple[OperatorState, FakeKube, list[tuple[str, str, str]]]:
    events: list[tuple[str, str, str]] = []

    def record(body: Any, *, type: str, reason: str, message: str = "") -> None:
        events.append((type, reason, message))

    monkeypatch.setattr(kopf, "event", record)
    clock = StepClock()
    kube = FakeKube(clock, caj_body())
    settings = Settings(zone=ZONE, pue=1.0, tick=timedelta(minutes=5), margin=timedelta(minutes=10))
    state = OperatorState(settings, clock, cast(Kube, kube), cast(Any, Trace()))
    state._workloads[LOCAL] = cast(WorkloadClient, FakeWorkloads(kube))
    return state, kube, events


async def run_pass(state: OperatorState, kube: FakeKube, at: datetime) -> datetime | None:
    cast(StepClock, state.clock).at[0] = at
    return await handler.reconcile(state, copy.deepcopy(kube.caj))


async def test_the_handler_runs_the_core_plan_announces_every_suspension_and_credits_pods_running(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]],
) -> None:
    state, kube, events = cluster
    t = T0 + timedelta(seconds=7)
    pods = 0
    status_at_3h: dict[str, Any] = {}
    while t < T0 + timedelta(hours=12):
        job = kube.jobs.get(("team", "train"))
        if job is not None and not job["spec"].get("suspend"):
            # One of the two pods runs during the first hour of the first chunk, both after that.
            pods = 1 if t < T0 + timedelta(hours=3) else 2
            kube.pods_ready(pods)
        status = kube.caj.get("status") or {}
        if float((status.get("progress") or {}).get("workSeconds") or 0) >= 3 * 3600 - 1:
            kube.complete()
        await run_pass(state, kube, t)
        if not status_at_3h and t >= T0 + timedelta(hours=3):
            status_at_3h = copy.deepcopy(kube.caj["status"])
        if kube.caj["status"].get("phase") == "Succeeded":
            break
        t += timedelta(minutes=5)
    status = kube.caj["status"]
    assert status["phase"] == "Succeeded", status
    kinds = [(w, k) for w, k, _ in kube.writes if k in ("create", "resume", "suspend", "annotate")]
    # Created suspended at once, resumed at the clean window's start (the core's aligned, committed plan).
    assert kinds[0][1] == "create" and next(v for _, k, v in kube.writes if k == "create") is True
    resumes = [w for w, k in kinds if k == "resume"]
    assert resumes[0] == T0 + timedelta(hours=2, seconds=7), resumes
    # Every suspension was announced at least gracePeriod (15 min) ahead, and the annotation named its time.
    suspends = [w for w, k in kinds if k == "suspend"]
    assert suspends, kinds
    for when in suspends:
        announced = [(w, v) for w, k, v in kube.writes if k == "annotate" and v is not None and w <= when]
        assert announced, (when, kinds)
        first = max(w for w, _ in announced if w >= (max([s for s in suspends if s < when], default=T0)))
        named = parse_time(next(v for w, v in announced if w == first))
        assert when - first >= timedelta(minutes=15), (when, first)
        assert named is not None and named <= when
    # 1 of 2 pods from 02:05 (first seen) to 03:00: credited at half rate, not full.
    progress = status_at_3h["progress"]
    assert progress["runSeconds"] == pytest.approx(0.5 * 55 * 60, abs=1), progress
    assert progress["workSeconds"] == pytest.approx(progress["runSeconds"], abs=1)
    # The committed windows are in the typed status, and the receipt was posted.
    assert status_at_3h["commitment"]["windows"], status_at_3h
    assert status["receiptPosted"] is True
    assert any(reason == "SuspendPlanned" for _, reason, _ in events)
    assert any(reason == "Receipt" for _, reason, _ in events)


async def test_a_kueue_managed_job_is_never_resumed_or_suspended_by_the_core_pass(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]],
) -> None:
    state, kube, events = cluster
    kube.kueue = True
    t = T0 + timedelta(seconds=7)
    while t < T0 + timedelta(hours=6):
        await run_pass(state, kube, t)
        t += timedelta(minutes=5)
    kinds = {k for _, k, _ in kube.writes}
    assert "create" in kinds
    assert "resume" not in kinds and "suspend" not in kinds, kube.writes
    assert any(reason == "KueueManaged" for _, reason, _ in events)
    # No chunk began (the resume was not carried out), so nothing is credited.
    assert kube.caj["status"]["progress"].get("chunkStartedAt") is None


def test_the_core_plans_a_later_start_when_running_now_does_not_fit_the_gpus_others_reserved() -> None:
    """Non-interruptible, 9 of 16 GPUs; another job holds 9 from 3 h to 5 h: starting now (2 h, into that
    reservation) does not fit, so the next clean window (9-11 h) is planned, not NoCapacity (which made the
    handler fall back to planning without the others' reservations)."""
    from carbonshift.domain.core import CoreSettings, CoreStatus, JobNeeds, Snapshot, reconcile
    from carbonshift.domain.lifecycle import Observed
    from carbonshift.domain.planning.model import Cluster, Reason, RunWindow
    from carbonshift.domain.planning.reservations import Reservations

    step = timedelta(minutes=15)
    start = T0 - timedelta(hours=2)
    values = [80.0 if 3 <= (i * 0.25 - 2) < 5 or 9 <= (i * 0.25 - 2) < 11 else 500.0 for i in range(96 * 4)]
    series = IntensitySeries(ZONE, start, step, np.array(values))
    now = T0 + timedelta(hours=1, seconds=1)
    needs = JobNeeds("second", timedelta(hours=2), now + timedelta(hours=20), gpus=9)
    others = Reservations()
    others.put("first", LOCAL, 9, [RunWindow(T0 + timedelta(hours=3), T0 + timedelta(hours=5), 80.0)])
    aligned = T0 + timedelta(hours=1)
    free = others.free_by_slot("second", LOCAL, 16, aligned, step, 90)
    cluster = Cluster(LOCAL, ZONE, 1.0, 16, free_gpus_by_slot=free)
    out = reconcile(Snapshot(needs, CoreStatus(), Observed(exists=False), now, (cluster,), {ZONE: series}),
                    CoreSettings(tick=step))  # fmt: skip
    assert out.plan is not None and out.plan.reason is Reason.OPTIMAL, out.plan
    assert out.plan.windows[0].start == T0 + timedelta(hours=9), out.plan.windows


async def test_a_workload_ref_is_driven_through_the_interface_and_never_created(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]],
) -> None:
    """A user's own suspended Job named by spec.workloadRef: carbonshift reads, resumes and announces it through the
    workload interface, never creates it, and reports WorkloadNotFound (once) while it does not exist yet."""
    state, kube, events = cluster
    template = kube.caj["spec"].pop("template")
    kube.caj["spec"]["workloadRef"] = {"apiVersion": "batch/v1", "kind": "Job", "name": "mine"}
    t = T0 + timedelta(seconds=7)
    for _ in range(3):  # the user has not created it yet
        await run_pass(state, kube, t)
        t += timedelta(minutes=5)
    missing = [e for e in events if e[1] == "WorkloadNotFound"]
    assert len(missing) == 1 and "Job mine does not exist" in missing[0][2], events
    assert not kube.jobs and not any(k == "create" for _, k, _ in kube.writes)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"namespace": "team", "name": "mine", "uid": "u1"},
           "spec": {**template["spec"], "suspend": True}, "status": {}}  # fmt: skip
    kube.jobs[("team", "mine")] = job
    while t < T0 + timedelta(hours=3):
        await run_pass(state, kube, t)
        t += timedelta(minutes=5)
    status = kube.caj["status"]
    assert status["jobName"] == "mine" and status["cluster"] == LOCAL, status
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["WorkloadUnavailable"]["status"] == "False"
    resumes = [w for w, k, _ in kube.writes if k == "resume"]
    assert resumes and resumes[0] == T0 + timedelta(hours=2, seconds=7), kube.writes
    assert kube.jobs[("team", "mine")]["spec"]["suspend"] is False
    assert not any(k == "create" for _, k, _ in kube.writes)
    assert list(kube.jobs) == [("team", "mine")]


class NoRayWorkloads(FakeWorkloads):
    """A cluster that does not serve RayJobs: creating one fails as WorkloadClient fails it."""

    async def create(self, manifest: dict[str, Any]) -> Workload:
        self.kube.writes.append((self.kube.clock.now(), "create-attempt", manifest["kind"]))
        raise KindNotInstalled(workload_for(manifest).info, "local")

    async def get(self, info: Any, namespace: str, name: str) -> Workload | None:
        if info.kind == "RayJob":
            raise KindNotInstalled(info, "local")
        return await super().get(info, namespace, name)


async def test_a_kind_not_installed_is_one_condition_and_one_event_then_a_slow_recheck(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]],
) -> None:
    state, kube, events = cluster
    state._workloads[LOCAL] = cast(WorkloadClient, NoRayWorkloads(kube))
    head = {"rayStartParams": {}, "template": {"spec": {"containers": [{"name": "head", "image": "ray:2"}]}}}
    kube.caj["spec"]["template"] = {"apiVersion": "ray.io/v1", "kind": "RayJob",
                                    "spec": {"entrypoint": "python train.py", "shutdownAfterJobFinishes": True,
                                             "rayClusterSpec": {"headGroupSpec": head}}}  # fmt: skip
    t = T0 + timedelta(seconds=7)
    wakes = []
    for _ in range(6):
        nxt = await run_pass(state, kube, t)
        assert nxt is not None
        wakes.append(nxt - t)
        t += timedelta(minutes=5)
    status = kube.caj["status"]
    condition = next(c for c in status["conditions"] if c["type"] == "WorkloadUnavailable")
    assert (condition["status"], condition["reason"]) == ("True", "KindNotInstalled")
    assert "rayjobs.ray.io is not installed" in condition["message"]
    assert [e for e in events if e[1] == "KindNotInstalled"] == [("Warning", "KindNotInstalled", condition["message"])]
    assert all(w >= handler.WORKLOAD_RECHECK for w in wakes), wakes  # a slow timer, not a retry loop
    assert status["phase"] == "Pending"
    assert sum(1 for _, k, _ in kube.writes if k == "create-attempt") == 1, kube.writes


async def test_a_pod_larger_than_any_node_is_at_risk_in_the_core_and_nothing_is_created(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]],
) -> None:
    """Node fit is the core's rule: each pod of 9 GPUs, nodes of 8 (the fake cluster's largest): NotEnoughGPUs, once,
    no workload created; the same spec at 8 GPUs a pod is created."""
    state, kube, events = cluster
    pod = kube.caj["spec"]["template"]["spec"]["template"]["spec"]
    pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 9
    t = T0 + timedelta(seconds=7)
    for _ in range(3):
        await run_pass(state, kube, t)
        t += timedelta(minutes=5)
    at_risk = next(c for c in kube.caj["status"]["conditions"] if c["type"] == "DeadlineAtRisk")
    assert (at_risk["status"], at_risk["reason"]) == ("True", "NotEnoughGPUs"), at_risk
    assert "each pod asks for 9 GPUs but the largest node of any allowed cluster has 8" in at_risk["message"]
    assert [e[1] for e in events].count("NotEnoughGPUs") == 1, events
    assert not kube.jobs and kube.caj["status"]["phase"] == "Pending"
    pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = 8
    await run_pass(state, kube, t)
    assert ("team", "train") in kube.jobs


def test_node_fit_keeps_the_clusters_whose_largest_node_holds_a_pod() -> None:
    from carbonshift.domain.core import CoreStatus as Status
    from carbonshift.domain.core import JobNeeds, Snapshot, node_fit
    from carbonshift.domain.lifecycle import Observed
    from carbonshift.domain.planning.model import Cluster

    needs = JobNeeds("j", timedelta(hours=1), T0 + timedelta(hours=5), gpus=8)
    clusters = (Cluster("small", ZONE, 1.0, 16), Cluster("big", ZONE, 1.0, 16), Cluster("unknown", ZONE, 1.0, 16))
    snap = Snapshot(needs, Status(), Observed(exists=False), T0, clusters, pod_gpus=8,
                    largest_node_gpus={"small": 4, "big": 8})  # fmt: skip
    fit, why = node_fit(snap)
    assert [c.name for c in fit] == ["big", "unknown"] and why is None
    from dataclasses import replace

    fit, why = node_fit(replace(snap, clusters=clusters[:1]))
    assert fit == () and why is not None and "largest node of any allowed cluster has 4" in why


async def test_a_change_of_a_referenced_workload_wakes_the_carbonawarejob_that_drives_it(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch on each kind pokes the CarbonAwareJob named by our label, or the one seen referring to the
    workload (an adopted workload's tracking CarbonAwareJob may have another name)."""
    state, kube, _ = cluster
    monkeypatch.setattr(handler, "current", lambda: state)
    kube.caj["spec"].pop("template")
    kube.caj["spec"]["workloadRef"] = {"apiVersion": "batch/v1", "kind": "Job", "name": "mine"}
    await run_pass(state, kube, T0 + timedelta(seconds=7))
    woken = state.wake_event("team", "train")
    other = state.wake_event("team", "mine")
    await handler.workload_changed(cast(kopf.Body, {"kind": "Job", "metadata": {"name": "mine"}}), "team")
    assert woken.is_set() and not other.is_set()
    woken.clear()
    labelled = {"kind": "JobSet", "metadata": {"name": "x", "labels": {"carbonshift.io/carbonawarejob": "train"}}}
    await handler.workload_changed(cast(kopf.Body, labelled), "team")
    assert woken.is_set()


def test_a_deferral_that_saves_nothing_is_not_kept_as_a_commitment() -> None:
    """Deferred only because others held the GPUs (planned emissions not below running at once): the handler reads
    the gain the status's plan reported into the core's commitment, and the core's rule drops it (re-planned each
    pass, so the job starts once the GPUs are free); a deferral that saves carbon stays committed."""
    from carbonshift.api.carbonawarejob import CarbonAwareJobStatus
    from carbonshift.domain.core import deferred_for_capacity_only

    def status(planned: float | None, at_once: float | None) -> CarbonAwareJobStatus:
        later = {"start": "2026-03-02T01:00:00Z", "end": "2026-03-02T03:00:00Z", "gPerKWh": 300.0}
        commitment = {"windows": [later], "cluster": LOCAL, "zone": ZONE, "madeAt": "2026-03-02T00:00:00Z"}
        plan = {"plannedEmissionsGrams": planned, "runNowEmissionsGrams": at_once}
        return CarbonAwareJobStatus.model_validate({"plan": plan, "commitment": commitment})

    core = handler.core_status(status(100.0, 100.0), T0)
    assert core.commitment is not None
    assert (core.commitment.planned_grams, core.commitment.run_now_grams) == (100.0, 100.0)
    assert deferred_for_capacity_only(core.commitment, T0)
    assert not deferred_for_capacity_only(handler.core_status(status(60.0, 100.0), T0).commitment, T0)
    assert not deferred_for_capacity_only(core.commitment, T0 + timedelta(hours=1))  # running
    assert not deferred_for_capacity_only(handler.core_status(status(None, None), T0).commitment, T0)  # not known
    assert handler.core_status(None, T0).commitment is None


def budget_cluster(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]], monkeypatch: pytest.MonkeyPatch, kwh: float
) -> None:
    """A Daily Suspend EnergyBudget of `kwh` selecting the job (team=a), known to the budget handlers' mirror; its
    status writes land in the fake cluster's record of writes, in order with the Job's."""
    from carbonshift.handlers import energybudget as eb

    _, kube, _ = cluster
    monkeypatch.setattr(eb, "MIRROR", eb.Mirror({}, {}))
    spec = {"period": "Daily", "limits": {"energyKWh": kwh}, "action": "Suspend",
            "selector": {"matchLabels": {"team": "a"}}}  # fmt: skip
    key = ("team", "cap")
    eb.MIRROR.budgets[key] = eb.budget_spec("team", "cap", spec)
    eb.MIRROR.bodies[key] = {"metadata": {"namespace": "team", "name": "cap", "resourceVersion": "1"},
                             "spec": spec, "status": {}}  # fmt: skip

    async def write(key: tuple[str, str], body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        kube.writes.append((kube.clock.now(), "budget", copy.deepcopy(status)))
        new = copy.deepcopy(body)
        new["status"] = {**(new.get("status") or {}), **status}
        new["metadata"]["resourceVersion"] = str(int(new["metadata"]["resourceVersion"]) + 1)
        eb.MIRROR.bodies[key] = new
        return new

    monkeypatch.setattr(eb, "_write", write)
    kube.caj["metadata"]["labels"] = {"team": "a"}


async def test_an_admission_is_recorded_in_the_budget_before_the_job_is_resumed(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The core admits the resume (its 3 h x 2 GPUs x 683 W fit 10 kWh); the handler writes the job's reservation
    into the budget's ledger, then resumes the Job (a crash between leaves a reservation, never a Job running
    unaccounted)."""
    state, kube, _ = cluster
    budget_cluster(cluster, monkeypatch, 10.0)
    t = T0 + timedelta(seconds=7)
    while t < T0 + timedelta(hours=3) and not any(k == "resume" for _, k, _ in kube.writes):
        await run_pass(state, kube, t)
        t += timedelta(minutes=5)
    kinds = [k for _, k, _ in kube.writes]
    assert "resume" in kinds, kinds
    assert "budget" in kinds and kinds.index("budget") < kinds.index("resume"), kinds
    ledger = next(v for _, k, v in kube.writes if k == "budget")["ledger"]
    mine = [e for e in ledger if e["uid"] == "caj-uid"]
    assert mine and sum(e["reservedKWh"] for e in mine) == pytest.approx(3 * 2 * 0.683, rel=0.01), ledger
    held = next(c for c in kube.caj["status"]["conditions"] if c["type"] == "BudgetHeld")
    assert (held["status"], held["reason"]) == ("False", "WithinBudget")


async def test_a_start_the_budget_cannot_hold_is_held_waiting_and_the_deadline_said_at_risk(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1 kWh daily limit, 4.1 kWh asked: more than the whole limit, so held from the first pass (before its
    window) until the limit is raised, which outlasts the latest safe start (deadline 12:00): Waiting, BudgetHeld
    and DeadlineAtRisk BudgetExhausted, no next transition (time does not free it), never resumed, no chunk begun,
    and no GPUs reserved for the others' plans."""
    state, kube, events = cluster
    budget_cluster(cluster, monkeypatch, 1.0)
    t = T0 + timedelta(seconds=7)
    while t < T0 + timedelta(hours=3):
        await run_pass(state, kube, t)
        t += timedelta(minutes=5)
    assert not any(k == "resume" for _, k, _ in kube.writes), kube.writes
    status = kube.caj["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    held = conditions["BudgetHeld"]
    assert (held["status"], held["reason"]) == ("True", "BudgetExhausted") and "team/cap" in held["message"]
    at_risk = conditions["DeadlineAtRisk"]
    assert (at_risk["status"], at_risk["reason"]) == ("True", "BudgetExhausted"), at_risk
    assert status["phase"] == "Waiting" and status.get("nextTransitionTime") is None, status
    assert "is more than the budget's whole limit of 1 kWh" in held["message"] and "until 20" not in held["message"]
    assert status["progress"].get("chunkStartedAt") is None
    # Said once each (BudgetHeld, DeadlineAtRisk), not on every pass.
    assert [e[1] for e in events].count("BudgetExhausted") == 2, "\n".join(str(e) for e in events)
    assert state.reservations.free_by_slot(("x", "y"), LOCAL, 16, T0 + timedelta(hours=3), timedelta(minutes=5),
                                           12) == (16,) * 12  # fmt: skip


async def test_a_budget_the_watch_has_not_delivered_yet_still_holds_the_start(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A budget applied together with the job (one `kubectl apply -f`) is in the API before the job's first pass
    but not yet in the watch's mirror (a watch reconnecting, a busy operator): the pass about to resume lists the
    namespace's budgets, finds it, and decides again with it. Held, never resumed; without the listing the job
    started unbudgeted."""
    from carbonshift.handlers import energybudget as eb

    state, kube, _ = cluster
    budget_cluster(cluster, monkeypatch, 1.0)
    key = ("team", "cap")
    kube.budgets = [eb.MIRROR.bodies.pop(key)]
    del eb.MIRROR.budgets[key]  # the watch has not delivered it

    async def read(key: tuple[str, str]) -> dict[str, Any]:
        body = copy.deepcopy(next(b for b in kube.budgets if b["metadata"]["name"] == key[1]))
        eb.MIRROR.bodies[key] = body
        return body

    monkeypatch.setattr(eb, "_read", read)
    t = T0 + timedelta(seconds=7)
    while t < T0 + timedelta(hours=3):
        await run_pass(state, kube, t)
        t += timedelta(minutes=5)
    assert not any(k == "resume" for _, k, _ in kube.writes), kube.writes
    conditions = {c["type"]: c for c in kube.caj["status"]["conditions"]}
    assert conditions["BudgetHeld"]["status"] == "True" and "team/cap" in conditions["BudgetHeld"]["message"]
    assert kube.caj["status"]["phase"] == "Waiting"


async def test_a_budget_created_changed_or_deleted_wakes_the_jobs_it_selects_and_its_status_writes_do_not(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiting job's next pass may be hours away (its window): a new budget holds it now, a deleted one frees it
    now. The budget's own status writes (every 30 s) wake nobody."""
    from carbonshift.domain.budgets import JobUsage
    from carbonshift.handlers import energybudget as eb

    state, _, _ = cluster
    monkeypatch.setattr(eb, "MIRROR", eb.Mirror({}, {}))
    monkeypatch.setattr(handler_state, "_state", state)
    for name, labels in (("a-job", {"team": "a"}), ("b-job", {"team": "b"})):
        eb.MIRROR.jobs[("team", name)] = eb.JobInfo(f"{name}-uid", labels, JobUsage("team", name, {}, ()), False)
    woken = {name: state.wake_event("team", name) for name in ("a-job", "b-job")}
    spec = {"period": "Daily", "limits": {"energyKWh": 1.0}, "action": "Suspend",
            "selector": {"matchLabels": {"team": "a"}}}  # fmt: skip
    body = {"metadata": {"namespace": "team", "name": "cap", "resourceVersion": "1"}, "spec": spec}

    async def event(type: str, body: dict[str, Any]) -> list[str]:
        for flag in woken.values():
            flag.clear()
        await eb.budget_event(type, cast(kopf.Body, body), "cap", "team")
        return [name for name, flag in woken.items() if flag.is_set()]

    assert await event("ADDED", body) == ["a-job"]
    assert await event("MODIFIED", {**body, "status": {"usedEnergyKWh": 0.5}}) == []  # its status only
    assert await event("MODIFIED", {**body, "spec": {**spec, "limits": {"energyKWh": 2.0}}}) == ["a-job"]
    moved = {**spec, "selector": {"matchLabels": {"team": "b"}}}
    assert await event("MODIFIED", {**body, "spec": moved}) == ["a-job", "b-job"]  # released and newly held
    assert await event("DELETED", {**body, "spec": moved}) == ["b-job"]


async def test_the_chunk_a_resume_begins_is_in_status_before_the_job_is_resumed(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]],
) -> None:
    """Crash-safe order: the core's typed status (the chunk's start, which pays the overhead) is written, in its
    wire form, by the flush before the resume; the pass's last flush writes no other core fields."""
    state, kube, _ = cluster
    t = T0 + timedelta(seconds=7)
    while not any(k == "resume" for _, k, _ in kube.writes):
        await run_pass(state, kube, t)
        t += timedelta(minutes=5)
    at, index = next((w, i) for i, (w, k, _) in enumerate(kube.writes) if k == "resume")
    before = [v for w, k, v in kube.writes[:index] if k == "status"][-1]
    assert before["phase"] == "Running" and parse_time(before["progress"]["chunkStartedAt"]) == at, before
    # Any later write of the pass (none since one patch carries the pass: the next test) leaves the chunk alone.
    after = [v for w, k, v in kube.writes[index:] if k == "status"]
    assert all(v.get("progress", before["progress"]) == before["progress"] for v in after), after


async def test_a_resume_pass_writes_the_status_once_and_before_the_job_runs(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]],
) -> None:
    """Each status patch comes back to kopf as a watch event (the operator's main CPU cost at scale): the pass that
    resumes writes the status once, before the Job runs (crash-safe order), with what it reports already in it."""
    state, kube, _ = cluster
    t = T0 + timedelta(seconds=7)
    while not any(k == "resume" for _, k, _ in kube.writes):
        before = len(kube.writes)
        await run_pass(state, kube, t)
        t += timedelta(minutes=5)
    in_pass = [(k, v) for _, k, v in kube.writes[before:]]
    assert [k for k, _ in in_pass] == ["status", "resume"], in_pass
    written = in_pass[0][1]
    assert written["phase"] == "Running"
    assert written["progress"]["chunkStartedAt"]
    running = next(c for c in written["conditions"] if c["type"] == "Running")
    assert running["status"] == "True"
    assert parse_time(written["nextTransitionTime"]) == T0 + timedelta(hours=4) - timedelta(minutes=15)


async def test_the_operator_weighs_a_newer_forecast_at_the_recheck_interval_and_keeps_the_slot_in_status(
    cluster: tuple[OperatorState, FakeKube, list[tuple[str, str, str]]],
) -> None:
    """The commitment's `checkedAt` (the forecast slot it was last weighed in) survives in the CarbonAwareJob's status,
    so an operator that reads its state back every pass weighs a newer forecast only an hour (--recheck-every) later:
    until then the plan reports what the last weighing found."""
    state, kube, _ = cluster
    assert state.settings.recheck_every == timedelta(hours=1)
    await run_pass(state, kube, T0 + timedelta(seconds=7))
    first = copy.deepcopy(kube.caj["status"])
    assert first["commitment"]["checkedAt"] == "2026-03-02T00:00:00Z"
    assert first["commitment"]["windows"][0]["start"] == "2026-03-02T02:00:00Z"
    trace = cast(Trace, state.forecasts)
    dirtier = trace.series.values.copy()
    dirtier[2:4] = 100.0  # the committed 02:00-04:00 window is forecast twice as dirty
    trace.series = IntensitySeries(ZONE, T0, timedelta(hours=1), dirtier)
    await run_pass(state, kube, T0 + timedelta(minutes=20, seconds=7))  # within the hour: not weighed
    kept = kube.caj["status"]
    assert kept["commitment"] == first["commitment"]
    assert kept["plan"]["plannedEmissionsGrams"] == first["plan"]["plannedEmissionsGrams"]
    await run_pass(state, kube, T0 + timedelta(hours=1, seconds=7))  # the next hour's forecast slot: weighed
    weighed = kube.caj["status"]
    assert weighed["commitment"]["checkedAt"] == "2026-03-02T01:00:00Z"
    assert weighed["plan"]["plannedEmissionsGrams"] > first["plan"]["plannedEmissionsGrams"] * 1.3
    state.settings.recheck_every = timedelta(0)  # --recheck-every 0s: every pass weighs the forecast
    trace.series = IntensitySeries(ZONE, T0, timedelta(hours=1), np.array(INTENSITY))
    await run_pass(state, kube, T0 + timedelta(hours=1, minutes=5, seconds=7))
    assert kube.caj["status"]["plan"]["plannedEmissionsGrams"] == pytest.approx(
        first["plan"]["plannedEmissionsGrams"], rel=0.05
    )
