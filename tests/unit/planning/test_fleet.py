"""Fleet planning: least slack first, capacity, MILP optimum and the greedy gap."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from carbonshift.domain.planning import Cluster, PlanningError, plan_fleet_greedy, plan_fleet_milp
from tests.unit.planning.builders import NOW, ZONE, forecast, job

VALLEY = np.full(48, 400.0)
VALLEY[8:12] = 100.0  # 02:00-03:00 is clean


def test_least_slack_job_gets_the_clean_slot_first() -> None:
    tight = job().hours(1).deadline_in(3.5).named("tight").build()
    loose = job().hours(1).deadline_in(12).named("loose").build()
    plan = plan_fleet_greedy([loose, tight], [Cluster("c", ZONE, free_gpus=1)], {ZONE: forecast(VALLEY)}, NOW)
    slots = {p.job: p.slots for p in plan.placements}
    assert slots["tight"] == (8, 9, 10, 11)
    assert not set(slots["loose"]) & set(slots["tight"])
    assert plan.usage["c"].max() == 1


def test_a_job_that_cannot_fit_is_reported_not_squeezed_in() -> None:
    a = job().hours(2).deadline_in(2).named("a").build()
    b = job().hours(2).deadline_in(2).named("b").build()
    plan = plan_fleet_greedy([a, b], [Cluster("c", ZONE, free_gpus=1)], {ZONE: forecast(VALLEY)}, NOW)
    assert len(plan.placements) == 1
    assert len(plan.unplaced) == 1
    assert plan.usage["c"].max() == 1


def test_greedy_picks_the_cluster_with_lower_pue_then_spills_over() -> None:
    jobs = [job().hours(1).deadline_in(3).named(f"j{i}").gpus(2).build() for i in range(3)]
    clusters = [Cluster("efficient", ZONE, pue=1.1, free_gpus=4), Cluster("old", ZONE, pue=1.6, free_gpus=4)]
    plan = plan_fleet_greedy(jobs, clusters, {ZONE: forecast(VALLEY)}, NOW)
    where = sorted(p.cluster for p in plan.placements)
    assert where == ["efficient", "efficient", "old"]
    assert plan.usage["efficient"].max() <= 4 and plan.usage["old"].max() <= 4


def test_milp_finds_a_better_plan_than_greedy_and_reports_the_gap() -> None:
    # Greedy: the least-slack job takes the clean slot it could have left to a job with no alternative.
    values = np.array([100.0, 50.0, 60.0, 500.0] + [500.0] * 12)
    a = job().slots(1).deadline(NOW + timedelta(minutes=30)).named("a").build()  # slot 0 or 1
    b = job().slots(2).deadline(NOW + timedelta(minutes=60)).named("b").build()  # 2 slots in 0-3
    clusters = [Cluster("c", ZONE, free_gpus=1)]
    greedy = plan_fleet_greedy([a, b], clusters, {ZONE: forecast(values)}, NOW)
    exact = plan_fleet_milp([a, b], clusters, {ZONE: forecast(values)}, NOW)
    # Greedy: a takes slot 1 (50), b is pushed to slots 2-3 (560); optimum: a in 0, b in 1-2 (100 + 110).
    assert {p.job: p.slots for p in greedy.placements} == {"a": (1,), "b": (2, 3)}
    assert {p.job: p.slots for p in exact.placements} == {"a": (0,), "b": (1, 2)}
    assert exact.total_grams == pytest.approx(210 * 0.25)  # 1 kW x 15 min
    assert exact.optimality_gap == pytest.approx((610 - 210) / 210)
    assert exact.greedy_grams == pytest.approx(greedy.total_grams)
    assert exact.usage["c"].max() <= 1


def test_milp_refuses_jobs_whose_overheads_it_does_not_model() -> None:
    j = job().hours(1).interruptible(overhead=timedelta(seconds=16)).build()
    with pytest.raises(PlanningError, match="free suspension"):
        plan_fleet_milp([j], [Cluster("c", ZONE, free_gpus=1)], {ZONE: forecast(VALLEY)}, NOW)


def test_fleet_needs_one_forecast_resolution() -> None:
    hourly = forecast(np.full(24, 100.0), step=timedelta(hours=1))
    hourly = type(hourly)(zone="NO", start=hourly.start, resolution=hourly.resolution, values=hourly.values)
    clusters = [Cluster("a", ZONE), Cluster("b", "NO")]
    with pytest.raises(PlanningError, match="one forecast resolution"):
        plan_fleet_greedy([job().build()], clusters, {ZONE: forecast(VALLEY), "NO": hourly}, NOW)
