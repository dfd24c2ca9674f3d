"""GPU reservations: each job plans around the GPUs the others' plans use."""

from __future__ import annotations

import math
from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from carbonshift.domain.planning import Cluster, plan_job
from carbonshift.domain.planning.model import RunWindow
from carbonshift.domain.planning.reservations import EPOCH, Reservations
from tests.unit.planning.builders import NOW, ZONE, forecast, job

H = timedelta(hours=1)
QUARTER = timedelta(minutes=15)


def window(start_h: float, end_h: float) -> RunWindow:
    return RunWindow(NOW + start_h * H, NOW + end_h * H, math.nan)


def test_free_gpus_are_what_the_others_leave_and_never_count_the_job_itself() -> None:
    r = Reservations()
    r.put("a", "c1", 6, [window(1, 3)])
    r.put("b", "c1", 4, [window(2, 4)])
    free = r.free_by_slot("b", "c1", available=8, now=NOW, step=H, count=5)
    assert free == (8, 2, 2, 8, 8)  # a uses 6 in hours 1-3; b's own 4 are not subtracted from b
    free = r.free_by_slot("new", "c1", available=8, now=NOW, step=H, count=5)
    assert free == (8, 2, 0, 4, 8)  # hour 2-3: 6 + 4 planned, capped at zero
    assert r.free_by_slot("new", "other", available=3, now=NOW, step=H, count=2) == (3, 3)


def test_a_running_jobs_gpus_come_back_when_its_plan_ends() -> None:
    r = Reservations()
    # `a` runs now on 4 of the 4 GPUs carbonshift may use, until hour 2.
    r.put("a", "c1", 4, [window(0, 2)])
    assert r.free_by_slot("x", "c1", available=4, now=NOW, step=H, count=3) == (0, 0, 4)
    assert r.free_by_slot("a", "c1", available=4, now=NOW, step=H, count=3) == (4, 4, 4)  # its own are its own


def test_drop_and_replace_undo_a_plan_exactly() -> None:
    r = Reservations()
    r.put("a", "c1", 2, [window(0, 1), window(3, 4)])
    r.put("a", "c2", 2, [window(5, 6)])  # re-planned elsewhere: the old plan is gone
    assert r.free_by_slot("x", "c1", available=5, now=NOW, step=H, count=6) == (5,) * 6
    r.drop("a")
    r.drop("a")
    assert len(r) == 0
    assert r.free_by_slot("x", "c2", available=5, now=NOW, step=H, count=7) == (5,) * 7


def test_a_planning_slot_straddling_two_reserved_slots_takes_the_larger_use() -> None:
    r = Reservations()
    r.put("a", "c1", 3, [window(0, 0.25)])
    r.put("b", "c1", 5, [window(0.25, 0.5)])
    later = NOW + timedelta(minutes=10)  # grid not aligned with the reservations
    # [10, 25) min overlaps a (3 GPUs) and b (5): the larger counts; [25, 40) overlaps b; [40, 55) neither.
    assert r.free_by_slot("x", "c1", available=8, now=later, step=QUARTER, count=3) == (3, 3, 8)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["c1", "c2"]), st.integers(1, 4), st.integers(0, 40), st.integers(1, 12)),
        min_size=1,
        max_size=12,
    ),
)
def test_dropping_every_plan_leaves_nothing_reserved(
    plans: list[tuple[str, int, int, int]],
) -> None:
    r = Reservations()
    for i, (cluster, gpus, start, length) in enumerate(plans):
        r.put(i % 5, cluster, gpus, [window(start / 4, (start + length) / 4)])
    for key in range(5):
        r.drop(key)
    for cluster in ("c1", "c2"):
        assert r.free_by_slot("x", cluster, available=7, now=NOW, step=QUARTER, count=60) == (7,) * 60


def test_the_second_job_plans_around_the_first_in_the_clean_window() -> None:
    """With reservations the planner sends the second job to the next-cleanest window instead of the same one."""
    values = [500.0] * 96
    values[12:20] = [50.0] * 8  # clean: hours 3-5
    values[36:44] = [90.0] * 8  # next cleanest: hours 9-11
    series = forecast(values)
    r = Reservations()
    placed = []
    for name in ("a", "b"):
        j = job().named(name).hours(2).deadline_in(20).gpus(16).build()
        free = r.free_by_slot(name, "c1", available=16, now=NOW, step=QUARTER, count=80)
        plan = plan_job(j, [Cluster("c1", ZONE, free_gpus=16, free_gpus_by_slot=free)], {ZONE: series}, NOW)
        r.put(name, "c1", j.gpus, plan.windows)
        placed.append(plan.windows)
    assert placed[0][0].start == NOW + 3 * H
    assert placed[1][0].start == NOW + 9 * H


def naive_free(
    plans: dict[object, tuple[str, int, list[RunWindow]]], key: object, cluster: str, available: int, now, step, count
) -> tuple[int, ...]:
    """The rule written out slot by slot: others' GPUs per 5-minute absolute slot, a planning slot taking the
    largest use among the absolute slots it touches."""
    res = timedelta(minutes=5)
    use: dict[int, int] = {}
    for other, (where, gpus, windows) in plans.items():
        if other == key or where != cluster:
            continue
        for w in windows:
            a = math.floor((w.start - EPOCH) / res + 1e-9)
            b = max(math.ceil((w.end - EPOCH) / res - 1e-9), a + 1)
            for s in range(a, b):
                use[s] = use.get(s, 0) + gpus
    out = []
    for i in range(count):
        begin, end = now + i * step, now + (i + 1) * step
        a = math.floor((begin - EPOCH) / res + 1e-9)
        b = max(math.ceil((end - EPOCH) / res - 1e-9), a + 1)
        out.append(max(available - max(use.get(s, 0) for s in range(a, b)), 0))
    return tuple(out)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 7),  # job key
            st.sampled_from(["c1", "c2"]),
            st.integers(0, 6),  # GPUs
            st.lists(st.tuples(st.integers(-600, 4000), st.integers(1, 900)), min_size=1, max_size=3),  # minutes
            st.booleans(),  # drop it instead
        ),
        min_size=1,
        max_size=25,
    ),
    st.integers(-300, 3000),  # query time, minutes from NOW
    st.sampled_from([1, 5, 7, 15, 30, 60]),  # planning step, minutes
    st.integers(1, 120),
    st.integers(0, 7),
)
def test_free_by_slot_is_the_rule_slot_by_slot(
    ops: list[tuple[int, str, int, list[tuple[int, int]], bool]], at: int, step: int, count: int, key: int
) -> None:
    """Whatever the history of plans put, replaced and dropped (spans far apart, so the arrays grow and are cut),
    and whatever the query grid (misaligned, finer or coarser than 5 minutes), the free GPUs are the rule's."""
    minute = timedelta(minutes=1)
    r = Reservations()
    live: dict[object, tuple[str, int, list[RunWindow]]] = {}
    for job_key, cluster, gpus, spans, drop in ops:
        if drop:
            r.drop(job_key)
            live.pop(job_key, None)
            continue
        windows = [RunWindow(NOW + s * minute, NOW + (s + d) * minute, math.nan) for s, d in sorted(spans)]
        r.put(job_key, cluster, gpus, windows)
        live[job_key] = (cluster, gpus, windows)
    now = NOW + at * minute + timedelta(seconds=17)
    for cluster in ("c1", "c2"):
        got = r.free_by_slot(key, cluster, 9, now, step * minute, count)
        assert got == naive_free(live, key, cluster, 9, now, step * minute, count)
