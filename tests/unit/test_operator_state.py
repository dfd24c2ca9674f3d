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
