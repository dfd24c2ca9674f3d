"""What a CarbonAwareJob's Job should do now: the pure decision at the heart of every reconcile.

Given the plan, what the cluster shows of the Job, the run time accounted so far, and `now`, `decide` says whether
to resume, suspend, or annotate the Job ahead of a suspension, which phase to report, and when to look again.
It never reads a clock and never touches the API, so every decision can be replayed from its inputs.

Safety rules it keeps, whatever the plan says:
- a non-interruptible Job that has started is never suspended;
- a Job past its latest safe start runs;
- a finished Job is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from carbonshift.domain.planning.model import Plan, Reason


class Phase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True, slots=True)
class Observed:
    """The owned Job as the API server shows it."""

    exists: bool
    suspended: bool = True
    active_pods: int = 0
    ready_pods: int = 0  # pods actually running (a resumed Job's pods may still wait for GPUs)
    complete: bool = False
    failed: bool = False
    failure_reason: str | None = None
    failure_message: str | None = None
    suspend_at_annotation: datetime | None = None
    desired_pods: int = 1  # pods the Job runs at once (parallelism); run time accrues at ready/desired
    running_since: datetime | None = None  # since when the ready pods run, when the cluster says so
    completed_at: datetime | None = None  # when the Job completed (its status.completionTime), when known


@dataclass(frozen=True, slots=True)
class Accounting:
    """Run time so far, kept in status so a restarted operator continues exactly.

    `running_since` is set while the Job is resumed; `run_seconds` holds the closed intervals."""

    run_seconds: float = 0.0
    running_since: datetime | None = None
    suspensions: int = 0

    def total_seconds(self, now: datetime) -> float:
        open_seconds = (now - self.running_since).total_seconds() if self.running_since else 0.0
        return self.run_seconds + max(open_seconds, 0.0)

    def resumed(self, now: datetime) -> Accounting:
        return self if self.running_since else Accounting(self.run_seconds, now, self.suspensions)

    def suspended(self, now: datetime) -> Accounting:
        if self.running_since is None:
            return self
        return Accounting(self.total_seconds(now), None, self.suspensions + 1)

    def stopped(self, now: datetime) -> Accounting:
        """Close the open interval because the Job finished (not a suspension)."""
        if self.running_since is None:
            return self
        return Accounting(self.total_seconds(now), None, self.suspensions)


@dataclass(frozen=True, slots=True)
class Decision:
    resume: bool
    suspend: bool
    annotate_suspend_at: datetime | None
    phase: Phase
    next_transition: datetime | None
    why: str


def remaining(duration: timedelta, accounting: Accounting, now: datetime) -> timedelta:
    """Run time still needed; never negative."""
    left = duration.total_seconds() - accounting.total_seconds(now)
    return timedelta(seconds=max(left, 0.0))


def _current_window_end(plan: Plan, now: datetime) -> datetime | None:
    return next((w.end for w in plan.windows if w.start <= now < w.end), None)


def _next_window_start(plan: Plan, now: datetime) -> datetime | None:
    return next((w.start for w in plan.windows if w.start > now), None)


def decide(
    plan: Plan,
    observed: Observed,
    now: datetime,
    *,
    interruptible: bool,
    grace: timedelta,
    has_run: bool,
) -> Decision:
    """The action for this tick. `plan` must have been computed at `now` with the Job's current state."""
    if observed.complete:
        return Decision(False, False, None, Phase.SUCCEEDED, None, "the Job completed")
    if observed.failed:
        return Decision(False, False, None, Phase.FAILED, None, observed.failure_reason or "the Job failed")
    running = observed.exists and not observed.suspended
    if plan.reason is Reason.NO_CAPACITY:
        if running:
            return Decision(False, False, None, Phase.RUNNING, None, "running; no other cluster has room")
        return Decision(False, False, None, Phase.PENDING, None, "no cluster has enough GPUs")
    # DONE: the estimate says nothing is left but the Job has not finished; let it finish rather than wait.
    must_run = plan.reason is Reason.DONE or plan.runs_at(now) or now >= plan.latest_safe_start
    if running and not interruptible:
        return Decision(False, False, None, Phase.RUNNING, None, "running to completion (not interruptible)")
    if running and must_run:
        end = _current_window_end(plan, now)
        annotate = end if end is not None and end - now <= grace else None
        # Wake at the window's end minus the grace period, so that the suspension is announced in time.
        wake = end if end is None or annotate is not None else end - grace
        return Decision(False, False, annotate, Phase.RUNNING, wake, "running in a planned window")
    if running:
        return Decision(False, True, None, Phase.SUSPENDED, _next_window_start(plan, now), "the planned window ended")
    if must_run and observed.exists:
        return Decision(True, False, None, Phase.RUNNING, _current_window_end(plan, now), "a planned window began")
    phase = Phase.SUSPENDED if has_run else Phase.WAITING
    return Decision(False, False, None, phase, _next_window_start(plan, now), "waiting for a cleaner window")
