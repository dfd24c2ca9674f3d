"""Table-driven tests of plan_job: each policy and the edge cases a user meets."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from carbonshift.domain.planning import Cluster, Flag, PlanningError, Reason, latest_safe_start, plan_job
from tests.unit.planning.builders import NOW, SLOT, ZONE, cluster, forecast, job

# A day of 15-minute slots: 400 g/kWh except a clean valley of 100 g/kWh from 10:00 to 14:00.
DAY = np.full(96, 400.0)
DAY[40:56] = 100.0
VALLEY = forecast(DAY)


def plan(j, f=VALLEY, now=NOW, margin=timedelta(0), clusters=None):  # type: ignore[no-untyped-def]
    return plan_job(j.build(), clusters or [cluster()], {ZONE: f}, now, margin)


def test_optimal_non_interruptible_runs_in_the_valley() -> None:
    p = plan(job().hours(2))
    assert p.reason is Reason.OPTIMAL
    assert p.start == NOW + timedelta(hours=10)
    assert p.end == NOW + timedelta(hours=12)
    assert p.windows[0].mean_g_per_kwh == pytest.approx(100.0)
    assert p.planned_grams == pytest.approx(2 * 1.0 * 100.0)  # 2 h x 1 kW x 100 g/kWh
    assert p.baseline_grams == pytest.approx(2 * 400.0)
    assert p.feasible


def test_optimal_interruptible_uses_two_valleys() -> None:
    values = np.full(96, 400.0)
    values[8:12] = 50.0  # 02:00-03:00
    values[60:64] = 60.0  # 15:00-16:00
    p = plan(job().hours(2).interruptible(), forecast(values))
    assert [(w.start, w.end) for w in p.windows] == [
        (NOW + timedelta(hours=2), NOW + timedelta(hours=3)),
        (NOW + timedelta(hours=15), NOW + timedelta(hours=16)),
    ]
    assert p.planned_grams == pytest.approx(50 + 60)
    assert p.cycles == 1


def test_overhead_energy_can_make_one_block_cheaper_than_two_chunks() -> None:
    values = np.full(96, 400.0)
    values[8:12] = 50.0
    values[60:64] = 60.0
    values[20:28] = 90.0  # 05:00-07:00, a single 2-hour block at 90
    p = plan(job().hours(2).interruptible(overhead_kwh=2.0), forecast(values))
    # Two chunks: 50 + 60 + 2 kWh x 60 = 230 g; one block at 90 g/kWh: 180 g.
    assert len(p.windows) == 1
    assert p.start == NOW + timedelta(hours=5)
    assert p.planned_grams == pytest.approx(180.0)


def test_min_run_keeps_every_chunk_long_enough() -> None:
    values = np.tile([100.0, 400.0], 48)
    p = plan(job().hours(2).interruptible(min_run=timedelta(hours=1)), forecast(values))
    assert all(w.duration >= timedelta(hours=1) for w in p.windows[:-1])
    assert p.run_time() == timedelta(hours=2)


def test_resumed_chunks_redo_the_overhead_time() -> None:
    values = np.full(96, 400.0)
    values[8:12] = 50.0
    values[60:64] = 60.0
    overhead = timedelta(seconds=16)
    p = plan(job().hours(2).interruptible(overhead=overhead), forecast(values))
    assert p.cycles == len(p.windows) - 1
    assert p.run_time() == timedelta(hours=2) + overhead * p.cycles


def test_sub_slot_overhead_starts_the_resumed_chunk_early_instead_of_buying_a_slot() -> None:
    # Hourly slots: a lone 300 g/kWh hour at 00:00, clean hours at 05:00 (50) and 15:00 (60), 1000 elsewhere.
    # A 2 h job with a 16 s overhead: the slot search needs 3 whole slots and takes 00:00, 05:00 and 15:00
    # (about 350 g); the exact optimum runs 05:00-06:00 and 15:00-16:00, starting the resumed chunk 16 s early.
    hour = timedelta(hours=1)
    values = np.full(24, 1000.0)
    values[0], values[5], values[15] = 300.0, 50.0, 60.0
    overhead = timedelta(seconds=16)
    p = plan(job().hours(2).interruptible(overhead=overhead), forecast(values, step=hour))
    exact = 50.0 + 60.0 + 1000.0 * 16 / 3600
    assert p.planned_grams == pytest.approx(exact)
    assert [(w.start, w.end) for w in p.windows] == [
        (NOW + 5 * hour, NOW + 6 * hour),
        (NOW + 15 * hour - overhead, NOW + 16 * hour),
    ]
    assert p.cycles == 1
    assert p.run_time() == timedelta(hours=2) + overhead
    assert p.energy_kwh == pytest.approx(2 + 16 / 3600)


def test_sub_slot_overhead_extends_a_chunk_at_its_end_when_that_is_cheaper() -> None:
    hour = timedelta(hours=1)
    values = np.full(24, 1000.0)
    values[0], values[5], values[15], values[16] = 300.0, 50.0, 60.0, 200.0
    overhead = timedelta(seconds=16)
    p = plan(job().hours(2).interruptible(overhead=overhead), forecast(values, step=hour))
    assert p.planned_grams == pytest.approx(50.0 + 60.0 + 200.0 * 16 / 3600)
    assert p.windows[-1].start == NOW + 15 * hour
    assert p.windows[-1].end == NOW + 16 * hour + overhead


def test_a_block_of_whole_slots_and_a_part_may_start_inside_a_slot_to_end_on_a_boundary() -> None:
    # 2.5 h on hourly slots. Started on a boundary the best block is 04:00-06:30 (150 + 100 + 100/2 = 300 g) or
    # 05:00-07:30 (100 + 100 + 500/2 = 450 g); ending on one, 04:30-07:00 costs 150/2 + 100 + 100 = 275 g.
    hour = timedelta(hours=1)
    values = np.full(12, 300.0)
    values[4:8] = [150.0, 100.0, 100.0, 500.0]
    for builder in (job().hours(2.5), job().hours(2.5).interruptible(overhead=timedelta(seconds=16))):
        p = plan(builder, forecast(values, step=hour))
        assert [(w.start, w.end) for w in p.windows] == [(NOW + 4.5 * hour, NOW + 7 * hour)]
        assert p.planned_grams == pytest.approx(275.0)
        assert p.windows[0].mean_g_per_kwh == pytest.approx(110.0)
        assert p.energy_kwh == pytest.approx(2.5) and p.cycles == 0
    # Where a boundary start is cheaper it stays (the dear slot is the first one).
    values[4] = 500.0
    values[7] = 150.0
    p = plan(job().hours(2.5), forecast(values, step=hour))
    assert [(w.start, w.end) for w in p.windows] == [(NOW + 5 * hour, NOW + 7.5 * hour)]
    assert p.planned_grams == pytest.approx(275.0)


def test_a_plan_made_inside_a_slot_uses_the_forecasts_own_slots() -> None:
    # Hourly forecast, planned at 00:30: a grid from now mixes 01:00-02:00 (400) with the clean 02:00-03:00
    # (100) into 250-g slots; on the forecast's own slots the job runs exactly in the clean hour.
    hour = timedelta(hours=1)
    values = np.full(24, 400.0)
    values[2] = 100.0
    now = NOW + hour / 2
    for builder in (job().hours(1), job().hours(1).interruptible(overhead=timedelta(seconds=16))):
        p = plan(builder, forecast(values, step=hour), now=now)
        assert [(w.start, w.end) for w in p.windows] == [(NOW + 2 * hour, NOW + 3 * hour)]
        assert p.planned_grams == pytest.approx(100.0)
        assert p.baseline_grams == pytest.approx(400.0)
        assert p.energy_kwh == pytest.approx(1.0)


def test_threshold_runs_when_clean_and_is_forced_before_the_deadline() -> None:
    p = plan(job().hours(2).threshold(150).interruptible())
    assert p.reason is Reason.THRESHOLD
    assert p.start == NOW + timedelta(hours=10)
    dirty = plan(job().hours(2).threshold(50).deadline_in(8).interruptible())
    assert Flag.FORCED in dirty.flags
    assert dirty.end is not None and dirty.end <= NOW + timedelta(hours=8)


def test_threshold_non_interruptible_starts_at_the_first_clean_slot() -> None:
    p = plan(job().hours(3).threshold(150))
    assert p.start == NOW + timedelta(hours=10)
    assert p.run_time() == timedelta(hours=3)


def test_immediate_runs_now_and_accounts() -> None:
    p = plan(job().hours(2).immediate())
    assert p.reason is Reason.IMMEDIATE
    assert p.start == NOW
    assert p.planned_grams == pytest.approx(p.baseline_grams)


@pytest.mark.parametrize(
    ("builder", "reason", "feasible"),
    [
        (job().hours(2).deadline(NOW - timedelta(hours=1)), Reason.DEADLINE_PASSED, False),
        (job().hours(5).deadline_in(4), Reason.INFEASIBLE_DEADLINE, False),
        (job().hours(4).deadline_in(4), Reason.LATEST_SAFE_START, True),
        (job().hours(0), Reason.DONE, True),
    ],
    ids=["deadline-passed", "longer-than-time-left", "no-slack", "nothing-left"],
)
def test_edge_cases_give_a_specific_reason(builder, reason: Reason, feasible: bool) -> None:  # type: ignore[no-untyped-def]
    p = plan(builder)
    assert p.reason is reason
    assert p.feasible is feasible
    if reason in (Reason.DEADLINE_PASSED, Reason.INFEASIBLE_DEADLINE, Reason.LATEST_SAFE_START):
        assert p.start == NOW  # best effort: as soon as possible
    if not feasible:
        assert Flag.BEST_EFFORT in p.flags


def test_no_forecast_runs_at_the_latest_safe_start() -> None:
    j = job().hours(2).deadline_in(10)
    p = plan_job(j.build(), [cluster()], {}, NOW, timedelta(minutes=30))
    assert p.reason is Reason.NO_DATA
    assert Flag.NO_FORECAST in p.flags
    assert p.start == NOW + timedelta(hours=10) - timedelta(hours=2) - timedelta(minutes=30)
    assert p.start == latest_safe_start(j.build(), timedelta(minutes=30))
    assert math.isnan(p.planned_grams)
    all_nan = plan(j, forecast(np.full(96, np.nan)))
    assert all_nan.reason is Reason.NO_DATA


def test_missing_slots_are_treated_as_the_worst_known_value() -> None:
    values = DAY.copy()
    values[0:40] = np.nan  # unknown until 10:00, then 100 g/kWh for 4 h
    p = plan(job().hours(2), forecast(values))
    assert Flag.PARTIAL_FORECAST in p.flags
    assert p.start == NOW + timedelta(hours=10)
    short = forecast(DAY[:20])  # forecast ends at 05:00, deadline at 24:00
    q = plan(job().hours(2), short)
    assert Flag.PARTIAL_FORECAST in q.flags
    assert q.end is not None and q.end <= NOW + timedelta(hours=24)


def test_latest_safe_start_includes_overhead_for_a_suspended_job_and_margin() -> None:
    j = job().hours(2).deadline_in(10).interruptible(overhead=timedelta(minutes=5)).suspended().build()
    assert latest_safe_start(j, timedelta(minutes=10)) == NOW + timedelta(hours=8, minutes=-15)
    running = job().hours(2).deadline_in(10).interruptible(overhead=timedelta(minutes=5)).running().build()
    assert latest_safe_start(running) == NOW + timedelta(hours=8)


def test_job_at_its_latest_safe_start_runs_now_whatever_the_forecast() -> None:
    j = job().hours(2).deadline_in(2.5)
    p = plan(j, now=NOW, margin=timedelta(minutes=30))
    assert p.reason is Reason.LATEST_SAFE_START
    assert p.start == NOW


def test_now_inside_a_slot_is_accounted_exactly() -> None:
    values = np.array([100.0, 300.0] * 48)
    now = NOW + timedelta(minutes=5)
    p = plan(job().hours(0.25).immediate(), forecast(values), now=now)
    # [00:05, 00:20): 10 minutes at 100 and 5 minutes at 300, at 1 kW.
    assert p.planned_grams == pytest.approx((10 * 100 + 5 * 300) / 60)
    assert p.start == now


def test_cluster_choice_weighs_pue_intensity_and_free_gpus() -> None:
    clean = forecast(np.full(96, 100.0))
    dirty = forecast(np.full(96, 300.0))
    clean = type(clean)(zone="NO", start=clean.start, resolution=clean.resolution, values=clean.values)
    j = job().hours(1).gpus(4)
    clusters = [Cluster("dirty", ZONE, pue=1.1), Cluster("clean", "NO", pue=1.5, free_gpus=8)]
    p = plan_job(j.build(), clusters, {ZONE: dirty, "NO": clean}, NOW)
    assert p.cluster == "clean"
    assert p.planned_grams == pytest.approx(4 * 1.0 * 1.5 * 100)  # 4 GPUs x 1 kW x PUE x g/kWh
    full = [Cluster("dirty", ZONE, pue=1.1), Cluster("clean", "NO", pue=1.5, free_gpus=2)]
    q = plan_job(j.build(), full, {ZONE: dirty, "NO": clean}, NOW)
    assert q.cluster == "dirty"
    none = plan_job(j.build(), [Cluster("small", ZONE, free_gpus=1)], {ZONE: dirty}, NOW)
    assert none.reason is Reason.NO_CAPACITY
    assert not none.windows


def test_per_slot_free_gpus_block_slots() -> None:
    free = tuple([1] * 96)
    blocked = tuple(0 if 40 <= i < 56 else 1 for i in range(96))
    p = plan_job(job().hours(2).build(), [Cluster("c", ZONE, free_gpus_by_slot=free)], {ZONE: VALLEY}, NOW)
    q = plan_job(job().hours(2).build(), [Cluster("c", ZONE, free_gpus_by_slot=blocked)], {ZONE: VALLEY}, NOW)
    assert p.start == NOW + timedelta(hours=10)
    assert q.start is not None and not (NOW + timedelta(hours=8) < q.start < NOW + timedelta(hours=14))


def test_bad_inputs_are_refused_with_a_clear_error() -> None:
    with pytest.raises(PlanningError, match="Threshold needs max_intensity"):
        job().build().__class__(name="x", remaining=SLOT, deadline=NOW, policy=job().threshold(1).build().policy)
    with pytest.raises(PlanningError, match="negative"):
        plan_job(job().build(), [cluster()], {ZONE: VALLEY}, NOW, timedelta(minutes=-1))
