"""The carbon-window AdmissionCheck of a Kueue Workload: what its check's state should be now. Pure.

Kueue admits a Workload once it has quota and every AdmissionCheck of its ClusterQueue is Ready; a check in
Retry evicts it (if admitted) and requeues it no earlier than `lastTransitionTime + requeueAfterSeconds`.
carbonshift's check maps the plan onto those states with `decide`'s rules (domain.lifecycle):

- the plan runs the job now, or it is at/after its latest safe start (whatever the grid), or nothing is left to
  run -> Ready;
- otherwise, not started -> Pending, with requeueAfter = until the next planned window (or the latest safe start,
  if that comes first): when the controller looks again (Kueue itself acts on requeueAfterSeconds only in Retry);
- admitted, interruptible, and its window has ended -> Retry at once (Kueue evicts, i.e. suspends, the Job and
  requeues it; once it has quota again the check is Pending until the next window);
- admitted and not interruptible -> stays Ready: a started job is never stopped.

A waiting workload keeps the quota Kueue reserved for it (see docs/kueue.md for why Retry with a delay does not
free it in Kueue 0.17).

`terms` resolves what a workload asks for (duration, deadline, interruptible) from its annotations and the
check's CarbonWindowPolicy defaults; a bad value raises TermsError, which the handler reports as Rejected with
the error in the check's message (Kueue then deactivates the workload and records an AdmissionCheckRejected event).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from carbonshift.domain.planning.model import Plan, Reason

ANNOTATION_DURATION = "carbonshift.io/duration"  # expected run time, e.g. 4h
ANNOTATION_DEADLINE = "carbonshift.io/deadline"  # RFC 3339
ANNOTATION_MAX_DELAY = "carbonshift.io/max-delay"  # from creation, e.g. 12h
ANNOTATION_INTERRUPTIBLE = "carbonshift.io/interruptible"  # "true" / "false"
MIN_REQUEUE = timedelta(seconds=1)
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


class CheckState(StrEnum):
    PENDING = "Pending"
    READY = "Ready"
    RETRY = "Retry"
    REJECTED = "Rejected"


class TermsError(ValueError):
    """A workload's carbonshift annotations cannot be read; the message names the annotation and the value."""


@dataclass(frozen=True, slots=True)
class Defaults:
    """What a CarbonWindowPolicy gives a workload that does not say."""

    max_delay: timedelta
    duration: timedelta | None = None
    interruptible: bool = False


@dataclass(frozen=True, slots=True)
class Terms:
    duration: timedelta
    deadline: datetime
    interruptible: bool


@dataclass(frozen=True, slots=True)
class CheckDecision:
    state: CheckState
    requeue_after: timedelta | None  # planning time until Kueue may try again (Retry only)
    recheck_at: datetime | None  # when the controller should look again (a window's end or start)
    reason: str  # one word, for the Event
    message: str


def kueue_managed(metadata: Mapping[str, Any]) -> bool:
    """Whether Kueue drives this Job's `suspend` field: it names a queue, or a Kueue object owns it.

    carbonshift then never writes that field (Kueue admits and evicts; the carbon-window check decides when)."""
    if QUEUE_LABEL in (metadata.get("labels") or {}):
        return True
    return any(
        str(r.get("apiVersion", "")).startswith("kueue.x-k8s.io/") for r in metadata.get("ownerReferences") or []
    )


def terms(
    annotations: Mapping[str, str],
    *,
    created: datetime,
    defaults: Defaults,
    max_execution: timedelta | None,
    parse_duration: Callable[[str], timedelta],
    parse_time: Callable[[str], datetime | None],
) -> Terms:
    """Duration, deadline and interruptibility: the workload's annotations, else the policy's defaults.

    The duration falls back to the Workload's `maximumExecutionTimeSeconds`, then to the policy's default."""

    def duration_of(key: str) -> timedelta | None:
        text = annotations.get(key)
        if text is None:
            return None
        try:
            value = parse_duration(text)
        except ValueError as exc:
            raise TermsError(f"annotation {key}: {exc}") from exc
        if value <= timedelta(0):
            raise TermsError(f"annotation {key}: {text!r} must be positive")
        return value

    duration = duration_of(ANNOTATION_DURATION) or max_execution or defaults.duration
    if duration is None:
        raise TermsError(
            f"no run time: set annotation {ANNOTATION_DURATION} (e.g. 4h), spec.maximumExecutionTimeSeconds, "
            "or the CarbonWindowPolicy's defaultDuration"
        )
    deadline_text = annotations.get(ANNOTATION_DEADLINE)
    if deadline_text is not None:
        try:
            deadline = parse_time(deadline_text)
        except ValueError as exc:
            raise TermsError(f"annotation {ANNOTATION_DEADLINE}: {deadline_text!r} is not an RFC 3339 time") from exc
        if deadline is None:
            raise TermsError(f"annotation {ANNOTATION_DEADLINE}: {deadline_text!r} is not an RFC 3339 time")
    else:
        deadline = created + (duration_of(ANNOTATION_MAX_DELAY) or defaults.max_delay)
    flag = annotations.get(ANNOTATION_INTERRUPTIBLE)
    if flag is not None and flag.lower() not in ("true", "false"):
        raise TermsError(f"annotation {ANNOTATION_INTERRUPTIBLE}: {flag!r} must be true or false")
    interruptible = defaults.interruptible if flag is None else flag.lower() == "true"
    return Terms(duration=duration, deadline=deadline, interruptible=interruptible)


def _current_window_end(plan: Plan, now: datetime) -> datetime | None:
    return next((w.end for w in plan.windows if w.start <= now < w.end), None)


def _next_start(plan: Plan, now: datetime) -> datetime:
    """When to look again while waiting: the next window, or the latest safe start if it comes first."""
    upcoming = next((w.start for w in plan.windows if w.start > now), None)
    return min(upcoming, plan.latest_safe_start) if upcoming is not None else plan.latest_safe_start


def _iso(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


# Plans that run the job now whatever the windows say: asked to, declined by do no harm (a gain within the forecast's
# error, or from a forecast without shown skill), or out of time.
_RUNS_NOW = frozenset(
    {Reason.IMMEDIATE, Reason.WITHIN_ERROR, Reason.WITHOUT_SKILL, Reason.DEADLINE_PASSED, Reason.INFEASIBLE_DEADLINE}
)


def decide_check(plan: Plan, now: datetime, *, admitted: bool, interruptible: bool) -> CheckDecision:
    """The check's state for this tick. `admitted`: the workload is admitted (its Job may be running).

    `plan` must have been computed at `now` with the job's current state (remaining run time, running)."""
    at_lss = now >= plan.latest_safe_start
    in_window = plan.runs_at(now)
    if admitted and not interruptible:
        return CheckDecision(CheckState.READY, None, None, "Running", "running to completion (not interruptible)")
    if plan.reason is Reason.DONE:
        return CheckDecision(CheckState.READY, None, None, "Running", "no run time left by the estimate; finishing")
    if in_window or at_lss or plan.reason in _RUNS_NOW:
        end = _current_window_end(plan, now)
        if plan.reason in (Reason.LATEST_SAFE_START, Reason.DEADLINE_PASSED, Reason.INFEASIBLE_DEADLINE) or (
            at_lss and not in_window
        ):
            why = f"at its latest safe start {_iso(plan.latest_safe_start)}: runs whatever the grid"
            return CheckDecision(CheckState.READY, None, end, "LatestSafeStart", why)
        grid = f"{plan.windows[0].mean_g_per_kwh:.0f} g/kWh" if plan.windows else "no forecast"
        until = f" until {_iso(end)}" if end is not None and interruptible else ""
        return CheckDecision(CheckState.READY, None, end, "WindowOpen", f"clean window open ({grid}){until}")
    nxt = _next_start(plan, now)
    wait = max(nxt - now, MIN_REQUEUE)
    if admitted:
        why = f"the planned window ended; evicted, next window at {_iso(nxt)}"
        return CheckDecision(CheckState.RETRY, None, nxt, "WindowEnded", why)
    first = next((w for w in plan.windows if w.start > now), None)
    grid = f" (forecast {first.mean_g_per_kwh:.0f} g/kWh)" if first is not None else ""
    why = f"waiting for the clean window at {_iso(nxt)}{grid}; latest safe start {_iso(plan.latest_safe_start)}"
    return CheckDecision(CheckState.PENDING, wait, nxt, "Deferred", why)
