"""Adoption without wrapping: what a workload's carbonshift labels ask for (docs/design/adoption.md).

A user opts their own Job, JobSet, TrainJob, PyTorchJob or RayJob in with labels; the operator's mutating webhook
creates it suspended and the operator tracks it with a CarbonAwareJob whose `spec.workloadRef` names it.

Labels (values must be valid label values: letters, digits, `-`, `_`, `.`, at most 63 characters):

| label | value | meaning |
|---|---|---|
| `carbonshift.io/max-delay` | a duration, e.g. `24h` | must be complete this long after the workload's creation |
| `carbonshift.io/deadline` | a UTC time in ISO 8601 basic form, e.g. `20261205T180000Z` | must be complete by then |
| `carbonshift.io/policy` | the name of a CarbonWindowPolicy | its defaults apply to what the labels leave out |
| `carbonshift.io/duration` | a duration, e.g. `4h` | expected run time at full speed (else the policy's) |
| `carbonshift.io/interruptible` | `true` or `false` | may be suspended between windows (else the policy's) |

Any of max-delay, deadline or policy opts a workload in (the webhooks' objectSelectors); duration and interruptible
only refine. Deadline is in the basic form because a label value cannot hold `:`. Everything here is pure: the
handler reads the policy and passes its defaults in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from carbonshift.api.durations import parse_duration

PREFIX = "carbonshift.io/"
LABEL_MAX_DELAY = "carbonshift.io/max-delay"
LABEL_DEADLINE = "carbonshift.io/deadline"
LABEL_POLICY = "carbonshift.io/policy"
LABEL_DURATION = "carbonshift.io/duration"
LABEL_INTERRUPTIBLE = "carbonshift.io/interruptible"
OPT_IN = (LABEL_MAX_DELAY, LABEL_DEADLINE, LABEL_POLICY)  # each one opts a workload in
TERMS = (*OPT_IN, LABEL_DURATION, LABEL_INTERRUPTIBLE)
_BASIC_TIME = re.compile(r"^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})?Z$")


class AdoptionError(ValueError):
    """The labels cannot be honoured; the message names the label, its value and what is expected."""


@dataclass(frozen=True)
class PolicyDefaults:
    """What a CarbonWindowPolicy lends a workload whose labels say nothing (spec.defaultMaxDelay, ...)."""

    name: str
    max_delay: timedelta
    duration: timedelta | None
    interruptible: bool


@dataclass(frozen=True)
class AdoptionTerms:
    """The tracking CarbonAwareJob's terms: complete by `deadline`, running `duration`, maybe interruptible."""

    deadline: datetime
    duration: timedelta
    interruptible: bool
    policy: str | None


def opted_in(labels: Mapping[str, str] | None) -> bool:
    return any(key in (labels or {}) for key in OPT_IN)


def policy_name(labels: Mapping[str, str] | None) -> str | None:
    return (labels or {}).get(LABEL_POLICY)


def parse_basic_time(text: str) -> datetime:
    """`20261205T180000Z` or `20261205T1800Z` (UTC)."""
    match = _BASIC_TIME.match(text)
    if match is None:
        raise AdoptionError(
            f"label {LABEL_DEADLINE}: {text!r} is not a UTC time in ISO 8601 basic form, e.g. 20261205T180000Z "
            "(a label value cannot hold ':')"
        )
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups())
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise AdoptionError(f"label {LABEL_DEADLINE}: {text!r} is not a valid time ({exc})") from None


def format_basic_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _duration(labels: Mapping[str, str], key: str) -> timedelta | None:
    text = labels.get(key)
    if text is None:
        return None
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise AdoptionError(f"label {key}: {text!r} is not a duration such as 24h, 90m or 1h30m ({exc})") from None
    if value <= timedelta(0):
        raise AdoptionError(f"label {key}: {text!r} must be positive")
    return value


def terms(
    labels: Mapping[str, str], *, created: datetime, policy: PolicyDefaults | None, now: datetime | None = None
) -> AdoptionTerms:
    """The terms the labels (and the policy they name) ask for; AdoptionError says what is wrong.

    `created`: the workload's creation (max-delay counts from it). `now`: when given (at admission), a deadline
    that the duration cannot meet from now is refused, as for a CarbonAwareJob."""
    named = labels.get(LABEL_POLICY)
    if named is not None and (policy is None or policy.name != named):
        raise AdoptionError(f"label {LABEL_POLICY}: CarbonWindowPolicy {named!r} not found")
    if not opted_in(labels):
        raise AdoptionError(f"set one of the labels {', '.join(OPT_IN)}")
    if LABEL_MAX_DELAY in labels and LABEL_DEADLINE in labels:
        raise AdoptionError(f"set one of the labels {LABEL_MAX_DELAY} or {LABEL_DEADLINE}, not both")
    duration = _duration(labels, LABEL_DURATION) or (policy.duration if policy else None)
    if duration is None:
        where = f"CarbonWindowPolicy {policy.name!r} has no defaultDuration" if policy else "no policy named"
        raise AdoptionError(
            f"label {LABEL_DURATION} is required (the expected run time at full speed, e.g. 4h), which the plan "
            f"needs; {where}"
        )
    if LABEL_DEADLINE in labels:
        deadline = parse_basic_time(labels[LABEL_DEADLINE])
    else:
        delay = _duration(labels, LABEL_MAX_DELAY) or (policy.max_delay if policy else None)
        assert delay is not None  # opted in: max-delay, deadline or a policy
        deadline = created + delay
    flag = labels.get(LABEL_INTERRUPTIBLE)
    if flag is not None and flag not in ("true", "false"):
        raise AdoptionError(f'label {LABEL_INTERRUPTIBLE}: {flag!r} must be "true" or "false"')
    interruptible = (policy.interruptible if policy else False) if flag is None else flag == "true"
    if now is not None and now + duration > deadline:
        when = deadline.isoformat().replace("+00:00", "Z")
        run = labels.get(LABEL_DURATION) or duration
        raise AdoptionError(f"deadline {when} cannot be met: {run} of run time from now ends after it")
    return AdoptionTerms(deadline=deadline, duration=duration, interruptible=interruptible, policy=named)
