"""The carbon-window AdmissionCheck's pure parts: the check's state from a plan, a workload's terms, Kueue ownership."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from carbonshift.api.durations import parse_duration
from carbonshift.api.jobs import parse_time
from carbonshift.domain.kueue import (
    CheckState,
    Defaults,
    Terms,
    TermsError,
    decide_check,
    kueue_managed,
    terms,
)
from carbonshift.domain.planning.model import Job, Plan, Reason, RunWindow
from carbonshift.domain.planning.single import plan_job
from carbonshift.domain.series import IntensitySeries, Kind

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
H = timedelta(hours=1)


def plan(*windows: tuple[float, float], reason: Reason = Reason.OPTIMAL, lss: float = 5.0) -> Plan:
    runs = tuple(RunWindow(NOW + a * H, NOW + b * H, 100.0) for a, b in windows)
    return Plan("w", "local", "DE", runs, 1.0, 2.0, NOW + lss * H, reason)


def test_a_workload_waiting_for_its_window_stays_pending_until_it_opens() -> None:
    d = decide_check(plan((2, 4)), NOW, admitted=False, interruptible=False)
    assert d.state is CheckState.PENDING
    assert d.requeue_after == 2 * H and d.recheck_at == NOW + 2 * H
    assert "2030-01-01T14:00:00Z" in d.message


def test_the_wait_never_passes_the_latest_safe_start() -> None:
    d = decide_check(plan((4, 6), lss=1.0), NOW, admitted=False, interruptible=False)
    assert d.state is CheckState.PENDING and d.requeue_after == H


def test_ready_when_the_window_opens() -> None:
    d = decide_check(plan((0, 2)), NOW, admitted=False, interruptible=True)
    assert d.state is CheckState.READY and d.reason == "WindowOpen"
    assert d.recheck_at == NOW + 2 * H  # an interruptible job is looked at again when its window ends


def test_ready_at_the_latest_safe_start_whatever_the_grid() -> None:
    d = decide_check(plan((3, 5), lss=0.0), NOW, admitted=False, interruptible=False)
    assert d.state is CheckState.READY and d.reason == "LatestSafeStart"


def test_an_admitted_interruptible_workload_is_evicted_at_its_window_end_until_the_next() -> None:
    d = decide_check(plan((1, 2)), NOW, admitted=True, interruptible=True)
    assert d.state is CheckState.RETRY and d.reason == "WindowEnded"
    assert d.requeue_after is None and d.recheck_at == NOW + H  # evicted at once; looked at again at the next


def test_an_admitted_non_interruptible_workload_is_never_stopped() -> None:
    d = decide_check(plan((3, 4)), NOW, admitted=True, interruptible=False)
    assert d.state is CheckState.READY


def test_nothing_left_to_run_is_ready() -> None:
    assert decide_check(plan(reason=Reason.DONE), NOW, admitted=False, interruptible=True).state is CheckState.READY


def test_with_the_real_planner_the_check_follows_the_cleanest_window() -> None:
    # 6 hours of forecast: dirty, dirty, clean, clean, dirty, dirty; a 2 h job due in 6 h.
    values = np.array([500, 500, 50, 50, 500, 500, 500, 500], dtype=np.float64)
    series = IntensitySeries(zone="local", start=NOW, resolution=H, values=values, kind=Kind.FORECAST)
    job = Job("w", remaining=2 * H, deadline=NOW + 6 * H, gpus=4)
    first = decide_check(plan_job(job, [], {"local": series}, NOW), NOW, admitted=False, interruptible=False)
    assert first.state is CheckState.PENDING and first.requeue_after == 2 * H
    later = NOW + 2 * H
    second = decide_check(plan_job(job, [], {"local": series}, later), later, admitted=False, interruptible=False)
    assert second.state is CheckState.READY


DEFAULTS = Defaults(max_delay=12 * H, duration=None, interruptible=False)


def resolve(
    annotations: dict[str, str], defaults: Defaults = DEFAULTS, max_execution: timedelta | None = None
) -> Terms:
    return terms(
        annotations, created=NOW, defaults=defaults, max_execution=max_execution,
        parse_duration=parse_duration, parse_time=parse_time,
    )  # fmt: skip


def test_terms_come_from_the_annotations() -> None:
    t = resolve({
        "carbonshift.io/duration": "2h", "carbonshift.io/deadline": "2030-01-02T00:00:00Z",
        "carbonshift.io/interruptible": "true",
    })  # fmt: skip
    assert (t.duration, t.deadline, t.interruptible) == (2 * H, NOW + 12 * H, True)


def test_terms_fall_back_to_max_delay_execution_time_and_the_policy() -> None:
    t = resolve({"carbonshift.io/max-delay": "3h"}, max_execution=90 * timedelta(minutes=1))
    assert (t.duration, t.deadline, t.interruptible) == (90 * timedelta(minutes=1), NOW + 3 * H, False)
    t = resolve({}, Defaults(max_delay=6 * H, duration=H, interruptible=True))
    assert (t.duration, t.deadline, t.interruptible) == (H, NOW + 6 * H, True)


@pytest.mark.parametrize(
    ("annotations", "words"),
    [
        ({}, "no run time"),
        ({"carbonshift.io/duration": "soon"}, "annotation carbonshift.io/duration"),
        ({"carbonshift.io/duration": "1h", "carbonshift.io/deadline": "tomorrow"}, "RFC 3339"),
        ({"carbonshift.io/duration": "1h", "carbonshift.io/interruptible": "yes"}, "true or false"),
        ({"carbonshift.io/duration": "0s"}, "must be positive"),
    ],
)
def test_bad_terms_name_the_annotation(annotations: dict[str, str], words: str) -> None:
    with pytest.raises(TermsError, match=words):
        resolve(annotations)


def test_kueue_managed_by_queue_label_or_kueue_owner() -> None:
    assert kueue_managed({"labels": {"kueue.x-k8s.io/queue-name": "team-a"}})
    assert kueue_managed({"ownerReferences": [{"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "Workload"}]})
    assert not kueue_managed({"labels": {"carbonshift.io/managed": "true"}})
    assert not kueue_managed({})
