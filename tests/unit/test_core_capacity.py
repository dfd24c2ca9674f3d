"""The decision core when starting now does not fit the GPUs other jobs reserved: it plans a later start (the
next clean window), never NoCapacity while a later window has room."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from carbonshift.domain.core import CoreSettings, CoreStatus, JobNeeds, Snapshot, reconcile
from carbonshift.domain.lifecycle import Observed
from carbonshift.domain.planning.model import Cluster, Reason, RunWindow
from carbonshift.domain.planning.reservations import Reservations
from carbonshift.domain.series import IntensitySeries

T0 = datetime(2026, 3, 2, 0, 2, 48, tzinfo=UTC)  # not on a 5-minute boundary (reservations straddle)
STEP = timedelta(minutes=15)


def test_a_non_interruptible_job_that_cannot_start_now_plans_the_next_window_with_room() -> None:
    """9 of 16 GPUs for 2 h; another job holds 9 from 3 h to 5 h (the cleanest window), so a start now (1 h) runs
    into that reservation and does not fit: the next clean window (9-11 h) is planned."""
    now = T0 + timedelta(hours=1, seconds=1)
    start = T0 + timedelta(hours=1)  # the forecast starts at the slot holding now
    values = [80.0 if 3 <= (i * 0.25 + 1) < 5 or 9 <= (i * 0.25 + 1) < 11 else 500.0 for i in range(289)]
    series = IntensitySeries("TEST", start, STEP, np.array(values))
    needs = JobNeeds("second", timedelta(hours=2), now + timedelta(hours=20), gpus=9)
    others = Reservations()
    others.put("first", "local", 9, [RunWindow(T0 + timedelta(hours=3), T0 + timedelta(hours=5), 80.0)])
    free = others.free_by_slot("second", "local", 16, start, STEP, 90)
    cluster = Cluster("local", "TEST", 1.2, 16, free_gpus_by_slot=free)
    snapshot = Snapshot(needs, CoreStatus(), Observed(exists=False), now, (cluster,), {"TEST": series})
    out = reconcile(snapshot, CoreSettings(tick=STEP))
    assert out.plan is not None and out.plan.reason is Reason.OPTIMAL, out.plan
    assert out.plan.windows[0].start == T0 + timedelta(hours=9), out.plan.windows
    assert out.create and not out.resume
