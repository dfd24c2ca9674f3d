"""The per-tick decision: resume, suspend, annotate ahead, or wait; and the run-time accounting it relies on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carbonshift.domain.lifecycle import Accounting, Observed, Phase, decide, remaining
from carbonshift.domain.planning.model import Plan, Reason, RunWindow

NOW = datetime(2030, 1, 1, 12, tzinfo=UTC)
H = timedelta(hours=1)


def plan(*windows: tuple[float, float], reason: Reason = Reason.OPTIMAL, lss: float = 5.0) -> Plan:
    runs = tuple(RunWindow(NOW + a * H, NOW + b * H, 100.0) for a, b in windows)
    return Plan("j", "local", "DE", runs, 1.0, 2.0, NOW + lss * H, reason, cycles=max(len(runs) - 1, 0))


SUSPENDED = Observed(exists=True, suspended=True)
RUNNING = Observed(exists=True, suspended=False, active_pods=1)


def test_waits_before_the_window_and_says_when_it_starts() -> None:
    d = decide(plan((2, 4)), SUSPENDED, NOW, interruptible=False, grace=timedelta(0), has_run=False)
    assert (d.resume, d.suspend, d.phase) == (False, False, Phase.WAITING)
    assert d.next_transition == NOW + 2 * H


def test_resumes_when_the_window_begins() -> None:
    d = decide(plan((0, 2)), SUSPENDED, NOW, interruptible=False, grace=timedelta(0), has_run=False)
    assert d.resume and d.phase is Phase.RUNNING and d.next_transition == NOW + 2 * H


def test_resumes_at_the_latest_safe_start_whatever_the_plan_says() -> None:
    d = decide(plan((3, 5), lss=0.0), SUSPENDED, NOW, interruptible=False, grace=timedelta(0), has_run=False)
    assert d.resume


def test_never_suspends_a_non_interruptible_job_that_runs() -> None:
    d = decide(plan((3, 5)), RUNNING, NOW, interruptible=False, grace=timedelta(0), has_run=True)
    assert not d.suspend and d.phase is Phase.RUNNING


def test_suspends_an_interruptible_job_between_windows() -> None:
    d = decide(plan((3, 5)), RUNNING, NOW, interruptible=True, grace=timedelta(0), has_run=True)
    assert d.suspend and d.phase is Phase.SUSPENDED and d.next_transition == NOW + 3 * H


def test_annotates_within_the_grace_period_before_the_window_ends() -> None:
    p = plan((-1, 0.25), (3, 5))
    early = decide(p, RUNNING, NOW - H / 2, interruptible=True, grace=timedelta(minutes=10), has_run=True)
    assert early.annotate_suspend_at is None
    late = decide(p, RUNNING, NOW, interruptible=True, grace=timedelta(minutes=20), has_run=True)
    assert late.annotate_suspend_at == NOW + H / 4 and not late.suspend


def test_a_suspended_job_that_has_run_reports_suspended_not_waiting() -> None:
    d = decide(plan((2, 4)), SUSPENDED, NOW, interruptible=True, grace=timedelta(0), has_run=True)
    assert d.phase is Phase.SUSPENDED


def test_finished_jobs_are_left_alone() -> None:
    done = decide(plan((0, 2)), Observed(exists=True, complete=True), NOW, interruptible=True, grace=H, has_run=True)
    assert (done.resume, done.suspend, done.phase) == (False, False, Phase.SUCCEEDED)
    failed = Observed(exists=True, failed=True, failure_reason="BackoffLimitExceeded")
    d = decide(plan((0, 2)), failed, NOW, interruptible=True, grace=H, has_run=True)
    assert d.phase is Phase.FAILED and d.why == "BackoffLimitExceeded"


def test_no_capacity_keeps_a_waiting_job_pending_and_a_running_one_running() -> None:
    p = plan(reason=Reason.NO_CAPACITY)
    assert decide(p, SUSPENDED, NOW, interruptible=True, grace=H, has_run=False).phase is Phase.PENDING
    running = decide(p, RUNNING, NOW, interruptible=True, grace=H, has_run=True)
    assert running.phase is Phase.RUNNING and not running.suspend


def test_done_by_the_estimate_but_not_finished_keeps_running() -> None:
    d = decide(plan(reason=Reason.DONE), SUSPENDED, NOW, interruptible=True, grace=H, has_run=True)
    assert d.resume


def test_accounting_closes_intervals_and_counts_suspensions() -> None:
    acc = Accounting().resumed(NOW)
    assert acc.total_seconds(NOW + H) == pytest.approx(3600)
    acc = acc.suspended(NOW + H)
    assert (acc.run_seconds, acc.running_since, acc.suspensions) == (3600, None, 1)
    acc = acc.resumed(NOW + 2 * H).stopped(NOW + 2.5 * H)
    assert (acc.run_seconds, acc.suspensions) == (5400, 1)
    assert acc.resumed(NOW).resumed(NOW + H).running_since == NOW, "resuming twice keeps the first start"


def test_remaining_never_goes_negative() -> None:
    acc = Accounting(run_seconds=7200)
    assert remaining(timedelta(hours=3), acc, NOW) == H
    assert remaining(timedelta(hours=1), acc, NOW) == timedelta(0)
