"""Property tests of the planner's promises (hypothesis)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from carbonshift.domain.planning import Cluster, Job, Policy, Reason, plan_fleet_greedy, plan_fleet_milp, plan_job
from tests.unit.planning.builders import NOW, SLOT, ZONE, cluster, forecast

MAX_SLOTS = 48

values_strategy = st.lists(st.floats(min_value=20, max_value=800), min_size=MAX_SLOTS, max_size=MAX_SLOTS)


@st.composite
def jobs(draw: st.DrawFn, *, policies: tuple[Policy, ...] = tuple(Policy)) -> Job:
    remaining = draw(st.integers(1, 6 * 4)) * timedelta(minutes=draw(st.sampled_from([5, 15])))
    deadline_offset = draw(st.integers(0, MAX_SLOTS * 15)) * timedelta(minutes=1)
    interruptible = draw(st.booleans())
    policy = draw(st.sampled_from(policies))
    return Job(
        name="j",
        remaining=remaining,
        deadline=NOW + deadline_offset,
        interruptible=interruptible,
        overhead=timedelta(seconds=draw(st.sampled_from([0, 16, 120]))) if interruptible else timedelta(0),
        overhead_kwh=draw(st.sampled_from([0.0, 0.05])) if interruptible else 0.0,
        min_run=draw(st.sampled_from([timedelta(0), SLOT, 2 * SLOT])) if interruptible else timedelta(0),
        policy=policy,
        max_intensity_g_per_kwh=draw(st.floats(20, 800)) if policy is Policy.THRESHOLD else None,
        watts_per_gpu=1000.0,
    )


def feasible(job: Job, now=NOW) -> bool:  # type: ignore[no-untyped-def]
    return now + job.remaining <= job.deadline


@given(job=jobs(), values=values_strategy, offset=st.integers(0, 14), margin=st.sampled_from([0, 10]))
@settings(max_examples=300, deadline=None)
def test_a_feasible_job_never_misses_its_deadline(job: Job, values: list[float], offset: int, margin: int) -> None:
    now = NOW + timedelta(minutes=offset)
    assume(feasible(job, now))
    plan = plan_job(job, [cluster()], {ZONE: forecast(values)}, now, timedelta(minutes=margin))
    assert plan.feasible
    assert plan.end is not None and plan.end <= job.deadline
    assert plan.start is not None and plan.start >= now
    needed = job.remaining + job.overhead * plan.cycles
    assert plan.run_time() == pytest.approx(needed, abs=timedelta(microseconds=10))
    assert all(a.end <= b.start for a, b in zip(plan.windows, plan.windows[1:], strict=False))


@given(job=jobs(policies=(Policy.OPTIMAL,)), values=values_strategy)
@settings(max_examples=200, deadline=None)
def test_with_a_perfect_forecast_the_plan_never_emits_more_than_running_now(job: Job, values: list[float]) -> None:
    assume(feasible(job))
    plan = plan_job(job, [cluster()], {ZONE: forecast(values)}, NOW)
    assert plan.planned_grams <= plan.baseline_grams * (1 + 1e-9) + 1e-9


@given(job=jobs(), values=values_strategy)
@settings(max_examples=100, deadline=None)
def test_same_inputs_give_the_same_plan(job: Job, values: list[float]) -> None:
    first = plan_job(job, [cluster()], {ZONE: forecast(values)}, NOW)
    second = plan_job(replace(job), [cluster()], {ZONE: forecast(list(values))}, NOW)
    assert first == second


@given(job=jobs(policies=(Policy.OPTIMAL,)), values=values_strategy)
@settings(max_examples=200, deadline=None)
def test_interruptible_with_zero_overhead_is_never_worse(job: Job, values: list[float]) -> None:
    assume(feasible(job))
    rigid = replace(job, interruptible=False, overhead=timedelta(0), overhead_kwh=0.0, min_run=timedelta(0))
    free = replace(rigid, interruptible=True)
    f = {ZONE: forecast(values)}
    assert (
        plan_job(free, [cluster()], f, NOW).planned_grams <= plan_job(rigid, [cluster()], f, NOW).planned_grams + 1e-6
    )


@given(
    values=st.lists(st.floats(min_value=20, max_value=800), min_size=12, max_size=12),
    minutes=st.integers(1, 12 * 12),
    spare=st.integers(0, 12 * 12),
)
@settings(max_examples=400, deadline=None)
def test_a_block_that_cannot_be_interrupted_is_the_cheapest_at_any_start(
    values: list[float], minutes: int, spare: int
) -> None:
    """On slot-wise constant intensities (hourly here), the Optimal block is the cheapest of every start on a 5-minute
    grid, which holds every start and every end on a boundary and the latest start (where the cheapest block lies):
    exact, not only the cheapest of the blocks that start on a boundary and end in the whole slots before the
    deadline."""
    hour, step = timedelta(hours=1), timedelta(minutes=5)
    assume((minutes + spare) * step <= 12 * hour)
    length = minutes * step
    rigid = Job(name="j", remaining=length, deadline=NOW + length + spare * step, watts_per_gpu=1000.0)
    p = plan_job(rigid, [cluster()], {ZONE: forecast(values, step=hour)}, NOW)
    per_step = np.repeat(np.asarray(values), 12) / 12.0  # grams per 5 minutes at 1 kW

    def cost(first: int) -> float:
        return float(per_step[first : first + minutes].sum())

    best = min(cost(first) for first in range(spare + 1))
    # (Without a whole slot before the deadline there is nothing to search: it runs now, at the same cost.)
    assert p.reason is Reason.OPTIMAL or (p.reason is Reason.LATEST_SAFE_START and spare < 12)
    assert p.planned_grams == pytest.approx(best, rel=1e-9, abs=1e-6)
    (window,) = p.windows
    assert window.end - window.start == length and window.end <= rigid.deadline
    assert cost(round((window.start - NOW) / step)) == pytest.approx(p.planned_grams, rel=1e-9, abs=1e-6)


def _execute(job: Job, base: np.ndarray, seed: int, tick: timedelta) -> tuple[Job, object]:
    """Re-plan every tick with a fresh, different forecast and follow each plan until the next tick."""
    rng = np.random.default_rng(seed)
    now = NOW
    finish = None
    for _ in range(400):
        if job.remaining <= timedelta(0):
            return job, finish
        noisy = base * rng.uniform(0.5, 1.5, size=base.shape)
        plan = plan_job(job, [cluster()], {ZONE: forecast(noisy)}, now)
        assert plan.end is not None
        nxt = now + tick
        ran = False
        progress = timedelta(0)
        debt = job.overhead if (job.started and not job.running) else timedelta(0)
        last_end = None
        for w in plan.windows:
            lo, hi = max(w.start, now), min(w.end, nxt)
            if hi <= lo:
                continue
            if last_end is not None and lo > last_end:
                debt += job.overhead  # suspended inside the tick and resumed: pays again
            span = hi - lo
            paid = min(debt, span)
            debt -= paid
            progress += span - paid
            ran = True
            last_end = hi
            finish = hi
        running_at_next = plan.runs_at(nxt) and ran
        job = replace(
            job,
            remaining=max(job.remaining - progress, timedelta(0)),
            running=running_at_next,
            started=job.started or ran,
        )
        if job.remaining <= timedelta(0):
            return job, finish
        now = nxt
    raise AssertionError("job never finished")


@given(job=jobs(), seed=st.integers(0, 2**16), tick_minutes=st.sampled_from([5, 15]))
@settings(max_examples=60, deadline=None)
def test_replanning_with_fresher_forecasts_still_meets_the_deadline(job: Job, seed: int, tick_minutes: int) -> None:
    assume(feasible(job))
    base = np.linspace(100, 500, MAX_SLOTS + 8)
    done, finish = _execute(job, base, seed, timedelta(minutes=tick_minutes))
    assert done.remaining <= timedelta(0)
    assert finish is not None and finish <= job.deadline + timedelta(microseconds=1)


@st.composite
def fleets(draw: st.DrawFn) -> list[Job]:
    count = draw(st.integers(1, 12))
    out = []
    for index in range(count):
        remaining = draw(st.integers(1, 8)) * SLOT
        out.append(
            Job(
                name=f"j{index}",
                remaining=remaining,
                deadline=NOW + remaining + draw(st.integers(0, 24)) * SLOT,
                interruptible=draw(st.booleans()),
                gpus=draw(st.integers(1, 3)),
                watts_per_gpu=500.0,
            )
        )
    return out


@given(fleet=fleets(), values=values_strategy, capacity=st.integers(1, 6))
@settings(max_examples=120, deadline=None)
def test_fleet_capacity_is_never_exceeded_and_deadlines_hold(
    fleet: list[Job], values: list[float], capacity: int
) -> None:
    clusters = [Cluster("a", ZONE, pue=1.2, free_gpus=capacity), Cluster("b", ZONE, pue=1.4, free_gpus=capacity)]
    plan = plan_fleet_greedy(fleet, clusters, {ZONE: forecast(values)}, NOW)
    by_name = {j.name: j for j in fleet}
    for usage in plan.usage.values():
        assert int(usage.max(initial=0)) <= capacity
    for placement in plan.placements:
        j = by_name[placement.job]
        assert NOW + SLOT * (max(placement.slots) + 1) <= j.deadline
        assert len(placement.slots) * SLOT >= j.remaining
    assert len(plan.placements) + len(plan.unplaced) == len(fleet)


@given(fleet=fleets(), values=values_strategy, capacity=st.integers(2, 6))
@settings(max_examples=25, deadline=None)
def test_milp_is_never_worse_than_greedy_and_respects_capacity(
    fleet: list[Job], values: list[float], capacity: int
) -> None:
    clusters = [Cluster("a", ZONE, pue=1.2, free_gpus=capacity)]
    exact = plan_fleet_milp(fleet, clusters, {ZONE: forecast(values)}, NOW)
    greedy = plan_fleet_greedy(fleet, clusters, {ZONE: forecast(values)}, NOW)
    assert int(exact.usage["a"].max(initial=0)) <= capacity
    assert len(exact.unplaced) <= len(greedy.unplaced)
    if len(exact.unplaced) == len(greedy.unplaced):
        assert exact.total_grams <= greedy.total_grams + 1e-6
        assert exact.optimality_gap is None or exact.optimality_gap >= -1e-9
