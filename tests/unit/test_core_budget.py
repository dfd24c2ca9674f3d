"""The budget hold in the decision core: the snapshot carries the budgets that select the job (specs and ledgers as
read), the job's cap and usage; the core's outcome holds a (re)start, suspends a running interruptible job, lets a
non-interruptible one finish, and puts the deadline at risk when the hold outlasts the latest safe start. No kopf,
no API server: the handler only reads these facts and records `Outcome.budget.admission` in the budgets' status."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from carbonshift.domain.budgets import BudgetFacts, BudgetSpec, Cap, Ledger, LedgerEntry, UsageChunk
from carbonshift.domain.core import AtRisk, CoreStatus, JobNeeds, Outcome, Progress, Snapshot, reconcile
from carbonshift.domain.lifecycle import Observed, Phase
from carbonshift.domain.planning import Cluster
from carbonshift.domain.series import IntensitySeries

DAY = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday
NOW = DAY + timedelta(hours=10)
MIDNIGHT = DAY + timedelta(days=1)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
CLUSTER = Cluster("local", "Z", 1.0)
FLAT = IntensitySeries("Z", DAY, HOUR, np.full(24 * 5, 300.0))  # a flat grid: every plan runs now


def budget(kwh: float = 1.0, action: str = "Suspend") -> BudgetSpec:
    return BudgetSpec("team", "cap", "Daily", None, kwh, None, action, 100.0 if action == "Defer" else None)


def used_by_others(kwh: float) -> Ledger:
    """The budget's ledger: another job used `kwh` today, from 08:00 to 09:00."""
    entry = LedgerEntry("other-uid", "other", DAY, used_kwh=kwh, used_kg=kwh * 0.3,
                        used_from=DAY + 8 * HOUR, used_to=DAY + 9 * HOUR)  # fmt: skip
    return Ledger((entry,))


def needs(*, interruptible: bool = True, deadline: datetime = NOW + 3 * 24 * HOUR) -> JobNeeds:
    # 1 h at 1 GPU x 700 W: 0.7 kWh projected
    return JobNeeds("train", HOUR, deadline, interruptible, min_run=10 * MINUTE, grace=2 * MINUTE)


def waiting(job: JobNeeds, facts: BudgetFacts | None) -> Outcome:
    """A Job created suspended, never run: the flat grid's plan resumes it now."""
    return reconcile(Snapshot(job, CoreStatus(), Observed(exists=True), NOW, (CLUSTER,), {"Z": FLAT}, budget=facts))


def running(job: JobNeeds, facts: BudgetFacts | None, status: CoreStatus | None = None) -> Outcome:
    """A Job whose pod has run for 20 minutes (seen 5 minutes ago), 40 minutes of work left."""
    progress = Progress(work_seconds=1200.0, run_seconds=1200.0, chunk_run_seconds=1200.0,
                        chunk_started_at=NOW - 20 * MINUTE, observed_at=NOW - 5 * MINUTE, rate=1.0,
                        ran=True)  # fmt: skip
    status = status or CoreStatus(progress=progress, phase=Phase.RUNNING)
    observed = Observed(exists=True, suspended=False, active_pods=1, ready_pods=1)
    return reconcile(Snapshot(job, status, observed, NOW, (CLUSTER,), {"Z": FLAT}, budget=facts))


def test_a_start_that_does_not_fit_the_budget_is_held_at_admission_and_no_chunk_begins() -> None:
    job = needs()
    fits = waiting(job, BudgetFacts("uid-1", ((budget(), used_by_others(0.2)),)))
    # 0.2 used + 0.7 projected fits 1 kWh: resumed, and the job's reservation is what the handler records.
    assert fits.resume and fits.phase is Phase.RUNNING and not fits.budget_held
    assert fits.budget is not None and fits.budget.hold is None
    assert fits.budget.admission is not None and fits.budget.admission.admitted
    entry = next(e for e in fits.budget.admission.ledgers["team/cap"].entries if e.uid == "uid-1")
    assert entry.reserved_kwh == pytest.approx(0.7)
    assert fits.status.progress.chunk_started_at == NOW

    held = waiting(job, BudgetFacts("uid-1", ((budget(), used_by_others(0.5)),)))
    # 0.5 used + 0.7 projected does not fit: not resumed, Waiting until the period ends, no chunk begun.
    assert not held.resume and not held.suspend and held.budget_held
    assert held.phase is Phase.WAITING and held.status.phase is Phase.WAITING
    assert held.budget is not None and held.budget.hold is not None
    assert held.budget.admission is not None and not held.budget.admission.admitted
    assert held.budget.hold.until == MIDNIGHT and held.transition_at == MIDNIGHT
    assert (
        held.why
        == held.budget.message
        == (
            "held by EnergyBudget team/cap: its projected 0.700 kWh does not fit the 0.500 kWh left of 1 in the period "
            "from 2024-03-04T00:00:00Z (used and admitted: 0.500); until 2024-03-05T00:00:00Z"
        )
    )  # the budget named once (it was twice)
    assert held.status.progress.chunk_started_at is None and held.status.progress.resumes == 0
    # The deadline is 3 days away: the hold ends before the latest safe start.
    assert not held.budget.deadline_at_risk


def test_a_hold_that_outlasts_the_latest_safe_start_puts_the_deadline_at_risk() -> None:
    job = needs(deadline=NOW + 4 * HOUR)  # latest safe start 12:50, the hold lasts until midnight
    held = waiting(job, BudgetFacts("uid-1", ((budget(), used_by_others(0.5)),)))
    assert held.budget is not None and held.budget.hold is not None
    assert held.budget.deadline_at_risk
    assert held.plan is not None and held.plan.latest_safe_start < MIDNIGHT
    # A Defer budget holds until the grid is clean (no end): at risk whatever the deadline.
    defer = waiting(needs(), BudgetFacts("uid-1", ((budget(action="Defer"), used_by_others(0.5)),)))
    assert defer.budget is not None and defer.budget.hold is not None and defer.budget.hold.until is None
    assert defer.budget.deadline_at_risk and not defer.resume
    assert "until the grid is below the budget's intensity limit" in defer.why


# 300 g/kWh but 50 from 20:00 to 22:00 today: a 1 h job planned at 10:00 waits for 20:00.
DIP = IntensitySeries("Z", DAY, HOUR, np.array([300.0] * 20 + [50.0] * 2 + [300.0] * (24 * 5 - 22)))


def deferred(job: JobNeeds, facts: BudgetFacts | None, now: datetime = NOW) -> Outcome:
    return reconcile(Snapshot(job, CoreStatus(), Observed(exists=True), now, (CLUSTER,), {"Z": DIP}, budget=facts))


def test_a_waiting_job_that_a_limit_can_never_admit_is_held_now_not_when_its_window_opens() -> None:
    """A Suspend budget whose limit the job's planned run alone exceeds, or a Suspend cap its plan exceeds: the
    admission at its window (20:00) is sure to hold it, whatever the other jobs do. Said at 10:00: BudgetHeld,
    DeadlineAtRisk (nothing but a raised limit frees it), and its planned GPUs left to the others. A hold that
    depends on the others' use is still decided only at the window."""
    job = needs()  # 0.7 kWh
    others = deferred(job, BudgetFacts("uid-1", ((budget(1.0), used_by_others(0.5)),)))
    assert not others.resume and others.phase is Phase.WAITING and others.transition_at == DAY + 20 * HOUR
    assert others.budget is not None and others.budget.hold is None and not others.budget_held

    never = deferred(job, BudgetFacts("uid-1", ((budget(0.5), Ledger()),)))
    assert not never.resume and never.phase is Phase.WAITING and never.budget_held
    assert never.budget is not None and never.budget.hold is not None and never.budget.hold.until_raised
    assert never.budget.admission is None  # no start asked: nothing to record
    assert never.transition_at is None and never.budget.deadline_at_risk
    words = (
        "held by EnergyBudget team/cap: its projected 0.700 kWh in the period from 2024-03-04T00:00:00Z is more "
        "than the budget's whole limit of 0.5 kWh a period: it is held until the limit is raised or a later plan "
        "spreads it over several periods"
    )
    assert never.why == words
    # At 20:00 the admission holds it in the same words (the condition and its Event are not said again).
    window = deferred(job, BudgetFacts("uid-1", ((budget(0.5), Ledger()),)), now=DAY + 20 * HOUR)
    assert window.budget is not None and window.budget.admission is not None
    assert not window.budget.admission.admitted and window.why == words

    for action in ("Notify", "Defer"):  # neither holds a start for sure: Notify never, Defer on a clean grid
        loose = deferred(job, BudgetFacts("uid-1", ((budget(0.5, action), Ledger()),)))
        assert loose.budget is not None and loose.budget.hold is None, action
        assert loose.transition_at == DAY + 20 * HOUR

    capped = deferred(job, BudgetFacts("uid-1", (), Cap(0.5, None, "Suspend")))
    assert capped.budget is not None and capped.budget.hold is not None and capped.budget_held
    assert capped.why == "held by cap of CarbonAwareJob train: projected 0.700 kWh exceeds its cap of 0.5 kWh; " \
                         "raise spec.cap to let it run"  # fmt: skip
    within = deferred(job, BudgetFacts("uid-1", (), Cap(1.0, None, "Suspend")))
    assert within.budget is not None and within.budget.hold is None


def test_a_running_interruptible_job_is_suspended_at_once_when_its_budget_is_used_up() -> None:
    exhausted = BudgetFacts("uid-1", ((budget(), used_by_others(1.2)),))
    calm = running(needs(), BudgetFacts("uid-1", ((budget(), used_by_others(0.2)),)))
    assert not calm.suspend and calm.phase is Phase.RUNNING
    assert calm.budget is not None and calm.budget.hold is None
    out = running(needs(), exhausted)
    assert out.suspend and not out.resume and out.phase is Phase.SUSPENDED
    assert out.announce_suspend_at is None  # the budget is used up now: not announced a grace ahead
    assert out.status.phase is Phase.SUSPENDED and out.status.suspend_at is None
    assert out.budget is not None and out.budget.hold is not None and out.budget.hold.suspend_running
    assert out.budget.admission is None  # nothing to record: no (re)start was asked
    assert out.transition_at == MIDNIGHT and not out.budget_held
    # An announced suspension is dropped with it (the Job is suspended now).
    announced = running(needs(), None)
    assert announced.status.progress.ran
    pending = replace(announced.status, suspend_at=NOW + 10 * MINUTE, announced_at=NOW - MINUTE)
    again = running(needs(), exhausted, pending)
    assert again.suspend and again.status.suspend_at is None and again.status.announced_at is None


def test_a_running_job_that_cannot_be_interrupted_finishes_whatever_its_budget_says() -> None:
    out = running(needs(interruptible=False), BudgetFacts("uid-1", ((budget(), used_by_others(1.2)),)))
    assert not out.suspend and out.phase is Phase.RUNNING
    assert out.budget is not None and out.budget.hold is None
    # Nor does its own cap stop it.
    cap = Cap(0.1, None, "Suspend")
    used = (UsageChunk(NOW - 20 * MINUTE, NOW, 0.23, 69.0),)
    capped = running(needs(interruptible=False), BudgetFacts("uid-1", (), cap, used))
    assert not capped.suspend and capped.phase is Phase.RUNNING
    # An interruptible one is stopped by its cap (held until the cap is raised: the deadline at risk).
    stopped = running(needs(), BudgetFacts("uid-1", (), cap, used))
    assert stopped.suspend and stopped.phase is Phase.SUSPENDED
    assert stopped.budget is not None and stopped.budget.hold is not None
    assert "raise spec.cap" in stopped.why and stopped.budget.deadline_at_risk


def test_notify_budgets_never_hold_and_their_overrun_is_noted() -> None:
    out = waiting(needs(), BudgetFacts("uid-1", ((budget(action="Notify"), used_by_others(0.9)),)))
    assert out.resume and out.budget is not None and out.budget.hold is None
    assert out.budget.notes and "Notify" in out.budget.notes[0]


def test_an_overrunning_job_is_admitted_one_floor_at_a_time() -> None:
    """The core plans an overrun as long again as it has overrun (here 2 h): the budget is asked for 10 minutes
    (`overrun_floor`) at a time instead, so a guess larger than what is left does not hold it."""
    job = replace(needs(), duration=HOUR)
    progress = Progress(work_seconds=3 * 3600.0, run_seconds=3 * 3600.0, observed_at=NOW, ran=True)
    status = CoreStatus(progress=progress, phase=Phase.SUSPENDED)
    facts = BudgetFacts("uid-1", ((budget(), used_by_others(0.5)),))
    out = reconcile(Snapshot(job, status, Observed(exists=True), NOW, (CLUSTER,), {"Z": FLAT}, budget=facts))
    assert out.at_risk == AtRisk.OVERRUN and out.resume
    assert out.plan is not None and out.plan.run_time() >= 2 * HOUR  # the plan itself holds the whole guess
    assert out.budget is not None and out.budget.admission is not None and out.budget.admission.admitted
    entry = next(e for e in out.budget.admission.ledgers["team/cap"].entries if e.uid == "uid-1")
    assert entry.reserved_kwh == pytest.approx(0.7 / 6)  # 10 minutes at 700 W


def test_without_budget_facts_the_core_has_no_budget_say() -> None:
    out = waiting(needs(), None)
    assert out.resume and out.budget is None and not out.budget_held
    empty = waiting(needs(), BudgetFacts("uid-1"))
    assert empty.resume and empty.budget is not None and empty.budget.hold is None
    assert empty.budget.admission is not None and empty.budget.admission.admitted
