"""The operator's shared state: the free-GPU count is cached per cluster, the local one included, reconciles in
flight are bounded, and the jobs-by-phase gauge follows each change without recounting."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from carbonshift import metrics
from carbonshift.adapters.clock import Clock
from carbonshift.adapters.kube import Capacity, Kube
from carbonshift.handlers.state import LOCAL, OperatorState, PhaseCounts, Settings


class CountingKube:
    """Stands in for the cluster's API: counts the capacity reads (each one lists every node and pod)."""

    name = LOCAL

    def __init__(self) -> None:
        self.reads = 0

    async def gpu_capacity(self) -> Capacity:
        self.reads += 1
        await asyncio.sleep(0.01)  # a real read takes time; others arrive meanwhile
        return Capacity(16, 4, 8, {("team", "job"): 4})

    async def patch_caj_status(self, namespace: str, name: str, patch: dict[str, Any]) -> str:
        return "1"  # the status an announcement writes before the annotation (its resourceVersion)


class NoForecasts:
    async def forecast(self, zone: str, now: datetime, horizon: Any) -> Any:
        raise AssertionError("not used")

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> Any:
        raise AssertionError("not used")


def state(settings: Settings, kube: CountingKube) -> OperatorState:
    return OperatorState(settings, Clock(), cast(Kube, kube), NoForecasts())


async def test_local_cluster_capacity_is_read_once_per_ttl_however_many_jobs_ask() -> None:
    kube = CountingKube()
    s = state(Settings(zone="DE", capacity_ttl_seconds=60.0), kube)
    entries = await asyncio.gather(*(s.candidate_entries([]) for _ in range(50)))
    assert kube.reads == 1
    assert {(e[0].name, e[0].zone, e[0].free_gpus, e[0].largest_node_gpus) for e in entries} == {(LOCAL, "DE", 12, 8)}
    await s.candidate_entries([])
    assert kube.reads == 1  # still fresh


async def test_local_cluster_capacity_is_read_again_once_stale() -> None:
    kube = CountingKube()
    s = state(Settings(capacity_ttl_seconds=0.0), kube)
    await s.candidate_entries([])
    await asyncio.sleep(0.001)
    await s.candidate_entries([])
    assert kube.reads == 2


async def test_reconciles_in_flight_never_exceed_the_bound() -> None:
    s = state(Settings(max_concurrent_reconciles=3), CountingKube())
    in_flight = peak = 0

    async def reconcile() -> None:
        nonlocal in_flight, peak
        async with s.reconciling:
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.005)
            in_flight -= 1

    await asyncio.gather(*(reconcile() for _ in range(20)))
    assert peak == 3


def jobs_gauge() -> dict[tuple[str, str], float]:
    return {
        (s.labels["namespace"], s.labels["phase"]): s.value
        for family in metrics.REGISTRY.collect()
        if family.name == "carbonshift_jobs"
        for s in family.samples
    }


def test_jobs_by_phase_follow_every_change_and_deletion() -> None:
    counts = PhaseCounts()
    counts.set("team-a", "j1", "Waiting")
    counts.set("team-a", "j2", "Waiting")
    counts.set("team-b", "j3", "Running")
    assert {k: v for k, v in jobs_gauge().items() if k[0] in ("team-a", "team-b")} == {
        ("team-a", "Waiting"): 2,
        ("team-b", "Running"): 1,
    }
    counts.set("team-a", "j1", "Running")
    counts.set("team-a", "j1", "Running")  # no change: counted once
    counts.drop("team-b", "j3")
    counts.drop("team-b", "j3")  # already gone
    assert {k: v for k, v in jobs_gauge().items() if k[0] in ("team-a", "team-b")} == {
        ("team-a", "Waiting"): 1,
        ("team-a", "Running"): 1,
    }


class AnnouncingWorkloads:
    """The workload client as `act` uses it for an announcement: records each suspend-at written."""

    def __init__(self) -> None:
        self.announced: list[str | None] = []

    async def announce(self, workload: Any, when: str | None) -> Any:
        self.announced.append(when)
        return workload


async def test_a_suspend_time_already_announced_to_the_second_is_not_announced_again() -> None:
    """The plan's window end carries the clock's microseconds; the annotation is written to the second. Compared
    raw, every pass re-annotated the Job, and each patch woke the next pass: a hot loop until the suspension."""
    from carbonshift.adapters.workloads import BatchJob
    from carbonshift.domain.lifecycle import Decision, Observed, Phase
    from carbonshift.handlers.carbonawarejob import Tick, act

    s = state(Settings(), CountingKube())
    client = AnnouncingWorkloads()
    job = BatchJob({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"namespace": "team", "name": "job"}})
    body = {"metadata": {"namespace": "team", "name": "job", "uid": "u"}, "status": {"cluster": LOCAL}}
    end = datetime(2026, 1, 1, 5, 0, 0, 654321, tzinfo=UTC)
    decision = Decision(False, False, end, Phase.RUNNING, end, "running in a planned window")
    announced = Observed(exists=True, suspended=False, suspend_at_annotation=end.replace(microsecond=0))
    await act(Tick(s, body), decision, announced, cast(Any, client), job)
    assert client.announced == []
    earlier = Observed(exists=True, suspended=False, suspend_at_annotation=end - timedelta(minutes=1))
    tick = Tick(s, body)
    await act(tick, decision, earlier, cast(Any, client), job)
    assert client.announced == ["2026-01-01T05:00:00Z"]
    assert [e[1] for e in tick.events] == ["SuspendPlanned"]


async def test_the_events_of_our_own_workload_writes_wake_nobody() -> None:
    """A pass that resumes a Job gets the Job's watch event of that very patch back: it says nothing the pass does
    not know, and each such wake cost a pass and a status patch per resumed job (bench/bench_operator.py). An event
    of someone else's change (the Job controller's) still wakes the daemon, whenever it comes."""
    from carbonshift.handlers import state as state_module
    from carbonshift.handlers.carbonawarejob import workload_changed

    s = state(Settings(), CountingKube())
    state_module.install(s)
    wake = s.wake_event("team", "train")

    def job_event(version: str) -> dict[str, Any]:
        meta = {"name": "train", "namespace": "team", "resourceVersion": version,
                "labels": {"carbonshift.io/carbonawarejob": "train"}}  # fmt: skip
        return {"kind": "Job", "metadata": meta}

    s.wrote_workload("team", "train", ["41", "42"])  # the pass resumed it (41) and announced (42)
    await workload_changed(body=job_event("42"), namespace="team")  # type: ignore[arg-type]
    assert not wake.is_set()  # our own write, after the pass: not even a poke
    await workload_changed(body=job_event("43"), namespace="team")  # type: ignore[arg-type]
    assert wake.is_set()  # the Job controller's update
    assert not s.only_own_pokes("team", "train")
    wake.clear()

    # An event of our write that arrives during the pass, before the pass knows the version it wrote: it wakes the
    # daemon, which then finds that only its own writes woke it.
    s.pokes.pop(("team", "train"), None)
    s.own_workload_writes.clear()
    await workload_changed(body=job_event("50"), namespace="team")  # type: ignore[arg-type]
    assert wake.is_set()
    s.wrote_workload("team", "train", ["50"])
    assert s.only_own_pokes("team", "train")
    assert not s.only_own_pokes("team", "train")  # (taken: nothing woke it since)
    s.poke("team", "train")  # a spec change: no version, never our own
    assert not s.only_own_pokes("team", "train")


async def test_a_deleted_job_leaves_no_record_of_its_own_writes() -> None:
    """What the own-events rule keeps per job (the versions its last pass wrote, the pokes since) goes with the job,
    as its wake event and reservations do: an operator that runs for months keeps nothing of deleted jobs."""
    from carbonshift.handlers import state as state_module
    from carbonshift.handlers.carbonawarejob import delete_job

    s = state(Settings(), CountingKube())
    state_module.install(s)
    s.wake_event("team", "train")
    s.wrote_workload("team", "train", ["41"])
    s.poke("team", "train", "43")
    assert s.own_workload_writes and s.pokes
    await delete_job(body={"metadata": {"name": "train", "namespace": "team"}, "spec": {}}, name="train",
                     namespace="team")  # type: ignore[arg-type]  # fmt: skip
    assert ("team", "train") not in s.own_workload_writes
    assert ("team", "train") not in s.pokes


class JobApi:
    """The API server as the workload client sees it for one Job: answers each merge patch with the stored object,
    and lets a test play the Job controller writing the Job in between (a new resourceVersion each write)."""

    def __init__(self, obj: dict[str, Any]) -> None:
        from types import SimpleNamespace

        self.obj = obj
        self.custom = SimpleNamespace(patch_namespaced_custom_object=object(), create_namespaced_custom_object=object())
        self.core = SimpleNamespace(list_namespaced_pod=object(), patch_namespaced_pod=object())

    def ns(self, namespace: str) -> str:
        return namespace

    def store(self, obj: dict[str, Any]) -> None:
        version = int(self.obj["metadata"]["resourceVersion"]) + 1
        self.obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(version)}}

    def controller_writes(self, status: dict[str, Any]) -> dict[str, Any]:
        self.store({**self.obj, "status": status})
        return self.obj

    async def _raw(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        import copy

        from carbonshift.adapters.workloads.base import _comparable, merge_patch

        if what == "list pods":
            return {"items": []}
        assert what == "patch Job", what
        patched = merge_patch(self.obj, args[-1])
        if _comparable(patched) != _comparable(self.obj):  # a patch that changes nothing writes nothing
            self.store(patched)
        return copy.deepcopy(self.obj)


async def test_a_foreign_change_answered_to_our_no_op_patch_still_wakes_the_daemon() -> None:
    """A suspension is two patches: suspend, then withdraw the announcement. When there was none to withdraw, the
    second patch changes nothing and the server answers with the Job as it is, at the version of the Job
    controller's update made in between. Taken for our own write, that update's watch event (its only one) was
    dropped, and the daemon slept on a change it never saw."""
    from carbonshift.adapters.workloads import BatchJob
    from carbonshift.adapters.workloads.client import WorkloadClient
    from carbonshift.handlers import state as state_module
    from carbonshift.handlers.carbonawarejob import Tick, workload_changed

    s = state(Settings(), CountingKube())
    state_module.install(s)
    wake = s.wake_event("team", "train")
    labels = {"carbonshift.io/carbonawarejob": "train", "carbonshift.io/managed": "true"}
    meta = {"namespace": "team", "name": "train", "resourceVersion": "10", "labels": labels}
    running = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": {"suspend": False},
               "status": {"active": 1, "ready": 1}}  # fmt: skip
    api = JobApi(running)
    client = WorkloadClient(cast(Any, api))
    tick = Tick(s, {"metadata": {"namespace": "team", "name": "train", "uid": "u"}, "status": {"cluster": LOCAL}})

    suspended = await client.suspend(BatchJob(running))
    assert suspended.meta["resourceVersion"] == "11" and suspended.own_write
    tick.wrote(suspended)
    # The Job controller stops the pods: its update, and its watch event, while the pass still runs.
    changed = api.controller_writes({"active": 0, "conditions": [{"type": "Suspended", "status": "True"}]})
    await workload_changed(body=cast(Any, changed), namespace="team")
    withdrawn = await client.announce(suspended, None)  # nothing announced: changes nothing
    assert withdrawn.meta["resourceVersion"] == "12"  # the controller's version, not a write of ours
    assert not withdrawn.own_write
    tick.wrote(withdrawn)
    assert s.own_workload_writes[("team", "train")] == {"11"}
    assert wake.is_set() and not s.only_own_pokes("team", "train")  # the daemon looks again
    # The event of our own suspension, on the other hand, wakes nobody.
    wake.clear()
    await workload_changed(body=cast(Any, {**suspended.obj, "kind": "Job"}), namespace="team")
    assert not wake.is_set()


def test_a_patch_is_ours_alone_only_when_it_changed_the_object_and_nothing_else_did() -> None:
    from carbonshift.adapters.workloads.base import patched_alone

    def job(version: str, suspend: bool, status: dict[str, Any], annotations: dict[str, str] | None = None) -> Any:
        meta: dict[str, Any] = {"name": "j", "resourceVersion": version, "generation": int(version)}
        if annotations is not None:
            meta["annotations"] = annotations
        return {"metadata": meta, "spec": {"suspend": suspend}, "status": status}

    resume = {"spec": {"suspend": False}}
    assert patched_alone(job("1", True, {}), resume, job("2", False, {}))
    # Someone else's change between our read and our patch: the answer holds both.
    assert not patched_alone(job("1", True, {}), resume, job("3", False, {"active": 1}))
    # A patch that changes nothing: the server's answer is the object as it is, whoever wrote it last.
    assert not patched_alone(job("1", False, {}), resume, job("1", False, {}))
    assert not patched_alone(job("1", False, {}), resume, job("2", False, {"active": 1}))
    # Withdrawing the last annotation: the server drops the emptied map.
    announced = job("4", True, {}, {"carbonshift.io/suspend-at": "2026-01-01T05:00:00Z"})
    withdraw = {"metadata": {"annotations": {"carbonshift.io/suspend-at": None}}}
    assert patched_alone(announced, withdraw, job("5", True, {}))
