"""The core's rule for a committed deferral that saves nothing (`deferred_for_capacity_only`): its plan's forecast
emissions are not below running at once, so only other work's GPUs made the job wait; it is not kept, and the job
starts as soon as the GPUs are free. A deferral that saves carbon stays committed."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np

from carbonshift.domain.core import (
    Commitment,
    CoreStatus,
    JobNeeds,
    Snapshot,
    deferred_for_capacity_only,
    reconcile,
)
from carbonshift.domain.lifecycle import Observed, Phase
from carbonshift.domain.planning import Cluster
from carbonshift.domain.planning.model import RunWindow
from carbonshift.domain.series import IntensitySeries

T0 = datetime(2026, 3, 2, tzinfo=UTC)
HOUR = timedelta(hours=1)
FLAT = IntensitySeries("Z", T0, HOUR, np.full(72, 300.0))
CLUSTER = Cluster("local", "Z", 1.0, 8)
LATER = (RunWindow(T0 + HOUR, T0 + 3 * HOUR, 300.0),)


def committed(planned: float, run_now: float, windows: tuple[RunWindow, ...] = LATER) -> Commitment:
    return Commitment(windows, "local", "Z", T0, planned_grams=planned, run_now_grams=run_now)


def test_the_rule_drops_only_a_deferral_whose_plan_saves_nothing() -> None:
    assert deferred_for_capacity_only(committed(100.0, 100.0), T0)  # saves nothing: only capacity deferred it
    assert deferred_for_capacity_only(committed(120.0, 100.0), T0)  # dearer than running now
    assert not deferred_for_capacity_only(committed(60.0, 100.0), T0)  # saves carbon: kept
    assert not deferred_for_capacity_only(committed(100.0, 100.0), T0 + HOUR)  # its window has begun: running
    assert not deferred_for_capacity_only(committed(math.nan, 100.0), T0)  # no gain reported: nothing known
    assert not deferred_for_capacity_only(committed(100.0, math.nan), T0)
    assert not deferred_for_capacity_only(committed(100.0, 100.0, ()), T0)
    assert not deferred_for_capacity_only(None, T0)


def test_the_core_starts_a_job_at_once_when_its_committed_deferral_saved_nothing() -> None:
    """2 h, non-interruptible, on a flat grid, committed to 01:00-03:00 while others held the GPUs; now they are
    free. Committed with a saving, it waits for its window; committed without one, it is re-planned and starts."""
    needs = JobNeeds("j", 2 * HOUR, T0 + 12 * HOUR)

    def at(commitment: Commitment) -> tuple[bool, Phase, Commitment | None]:
        status = CoreStatus(commitment=commitment, phase=Phase.WAITING)
        out = reconcile(Snapshot(needs, status, Observed(exists=True), T0, (CLUSTER,), {"Z": FLAT}))
        return out.resume, out.phase, out.status.commitment

    resume, phase, kept = at(committed(500.0, 600.0))
    assert not resume and phase is Phase.WAITING
    assert kept is not None and kept.windows[0].start == T0 + HOUR
    resume, phase, fresh = at(committed(600.0, 600.0))
    assert resume and phase is Phase.RUNNING
    assert fresh is not None and fresh.windows[0].start == T0


def test_the_commitment_carries_the_gain_of_the_plan_it_last_reported() -> None:
    """The rule reads the gain the last plan reported on the commitment: the core records it with each plan."""
    needs = JobNeeds("j", 2 * HOUR, T0 + 12 * HOUR)
    values = np.full(72, 300.0)
    values[4:6] = 100.0  # a clean window 04:00-06:00
    series = replace(FLAT, values=values)
    out = reconcile(Snapshot(needs, CoreStatus(), Observed(exists=True), T0, (CLUSTER,), {"Z": series}))
    assert out.plan is not None and out.plan.windows[0].start == T0 + 4 * HOUR
    commitment = out.status.commitment
    assert commitment is not None
    assert commitment.planned_grams == out.plan.planned_grams < commitment.run_now_grams == out.plan.baseline_grams
    assert not deferred_for_capacity_only(commitment, T0 + timedelta(minutes=5))
