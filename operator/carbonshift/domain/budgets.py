"""EnergyBudgets: periods, usage from the jobs' receipts, projections, and whether a job is held.

Pure: the jobs' usage comes in as `JobUsage` (built from each CarbonAwareJob's status, never from memory, so a
restarted operator computes the same numbers), `now` is passed in.

- Periods: Daily, Weekly (ISO weeks, Monday 00:00) and Monthly are calendar periods in UTC; anything else is a
  rolling duration ending now (e.g. 72h).
- Usage in a period: each run chunk's energy and emissions, pro rata to the part of the chunk inside the period
  (energy is spread evenly over a chunk: the status keeps chunks, not samples).
- Projected exhaustion: at the average rate since the period started (rolling: over the window), when the limit
  would be reached, if before the period ends.
- Holds, once a limit is reached: Suspend holds jobs that have not started and suspends interruptible running ones
  until the period ends (rolling: until enough usage has slid out of the window); Defer lets jobs run only while the
  grid intensity is below deferBelowIntensity; Notify never holds. A non-interruptible job that already runs is
  never stopped by a budget.
- Admission (`admit`, below): before a job starts or resumes, its projected use must fit what is left of every
  budget that selects it, counting what the other jobs used and were admitted for (the ledger in the budget's
  status, keyed by job UID), and its own cap.
- The verdict of one reconcile pass (`verdict`, at the end): from the budget facts the decision core's snapshot
  carries (`BudgetFacts`: the selecting budgets' specs and ledgers as read, the job's cap and usage so far), the
  admission of a (re)start or the hold of a budget already exceeded, and what it implies (DeadlineAtRisk when the
  hold outlasts the latest safe start). domain/core.py applies it to the pass's decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from carbonshift.domain.series import require_utc

CALENDAR = ("Daily", "Weekly", "Monthly")


@dataclass(frozen=True, slots=True)
class UsageChunk:
    start: datetime
    end: datetime
    kwh: float
    grams: float


@dataclass(frozen=True, slots=True)
class JobUsage:
    namespace: str
    name: str
    labels: dict[str, str]
    chunks: tuple[UsageChunk, ...]


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    namespace: str
    name: str
    period: str  # Daily | Weekly | Monthly | a rolling duration
    rolling: timedelta | None
    energy_kwh: float | None
    emissions_kg: float | None
    action: str  # Suspend | Defer | Notify
    defer_below_g_per_kwh: float | None = None


@dataclass(frozen=True, slots=True)
class BudgetState:
    period_start: datetime
    period_end: datetime
    used_kwh: float
    used_kg: float
    remaining_kwh: float | None
    remaining_kg: float | None
    used_ratio: float
    exceeded: bool
    projected_exhaustion: datetime | None


@dataclass(frozen=True, slots=True)
class Hold:
    """A budget holds the job: don't start or resume it (and suspend it if `suspend_running`) until `until`."""

    budget: str  # namespace/name of the EnergyBudget
    reason: str
    until: datetime | None  # None: until the intensity condition changes (Defer), or until the limit is raised
    suspend_running: bool
    until_raised: bool = False  # held until the budget's limit or the job's cap is raised (time does not free it)


def period_bounds(period: str, rolling: timedelta | None, now: datetime) -> tuple[datetime, datetime]:
    """[start, end) of the period containing `now` (rolling: (now - duration, now])."""
    now = require_utc(now)
    if period == "Daily":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    if period == "Weekly":
        day = now.replace(hour=0, minute=0, second=0, microsecond=0)
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "Monthly":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return start, end
    if rolling is None or rolling <= timedelta(0):
        raise ValueError(f"period {period!r} is neither {', '.join(CALENDAR)} nor a positive duration")
    return now - rolling, now


def chunk_share(chunk: UsageChunk, begin: datetime, end: datetime) -> float:
    """Fraction of a chunk inside [begin, end) (a chunk of zero length counts by its start)."""
    span = (chunk.end - chunk.start).total_seconds()
    if span <= 0:
        return 1.0 if begin <= chunk.start < end else 0.0
    overlap = (min(chunk.end, end) - max(chunk.start, begin)).total_seconds()
    return min(max(overlap / span, 0.0), 1.0)


def usage(jobs: list[JobUsage], begin: datetime, end: datetime) -> tuple[float, float]:
    """(kWh, kgCO2e) of the jobs' chunks inside [begin, end)."""
    kwh = grams = 0.0
    for job in jobs:
        for chunk in job.chunks:
            share = chunk_share(chunk, begin, end)
            kwh += chunk.kwh * share
            grams += chunk.grams * share
    return kwh, grams / 1000


def _ratio(used: float, limit: float | None) -> float:
    if limit is None:
        return 0.0
    if limit <= 0:
        return math.inf if used > 0 else 1.0
    return used / limit


def evaluate(spec: BudgetSpec, jobs: list[JobUsage], now: datetime) -> BudgetState:
    """The budget's state at `now` from the jobs' usage (jobs must already be the selected ones)."""
    start, end = period_bounds(spec.period, spec.rolling, now)
    window_end = now if spec.rolling is None else end
    used_kwh, used_kg = usage(jobs, start, window_end + timedelta(microseconds=1))
    ratio = max(_ratio(used_kwh, spec.energy_kwh), _ratio(used_kg, spec.emissions_kg))
    exceeded = ratio >= 1.0
    elapsed = (now - start).total_seconds()
    projected: datetime | None = None
    if not exceeded and elapsed > 0 and ratio > 0:
        seconds_to_limit = elapsed * (1 - ratio) / ratio  # at the average rate so far
        moment = now + timedelta(seconds=seconds_to_limit)
        horizon = end if spec.rolling is None else now + spec.rolling
        if moment < horizon:
            projected = moment
    elif exceeded:
        projected = now
    period_end = end if spec.rolling is None else release_time(spec, jobs, now)
    return BudgetState(
        period_start=start,
        period_end=period_end,
        used_kwh=used_kwh,
        used_kg=used_kg,
        remaining_kwh=None if spec.energy_kwh is None else max(spec.energy_kwh - used_kwh, 0.0),
        remaining_kg=None if spec.emissions_kg is None else max(spec.emissions_kg - used_kg, 0.0),
        used_ratio=ratio,
        exceeded=exceeded,
        projected_exhaustion=projected,
    )


def release_time(spec: BudgetSpec, jobs: list[JobUsage], now: datetime) -> datetime:
    """When the budget next has room again with no new usage: the period end (calendar), or for a rolling window
    the first moment enough of the usage has slid out of it (to the second)."""
    if spec.rolling is None:
        return period_bounds(spec.period, None, now)[1]
    window = spec.rolling

    def over(moment: datetime) -> bool:
        kwh, kg = usage(jobs, moment - window, moment)
        return max(_ratio(kwh, spec.energy_kwh), _ratio(kg, spec.emissions_kg)) >= 1.0

    if not over(now):
        return now
    low, high = now, now + window
    while (high - low) > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if over(mid):
            low = mid
        else:
            high = mid
    return high.astimezone(UTC)


def hold_for(
    spec: BudgetSpec,
    state: BudgetState,
    *,
    g_per_kwh: float | None,
    interruptible: bool,
    running: bool,
) -> Hold | None:
    """Whether this budget holds a job now, given the budget's state and the grid's current intensity."""
    if not state.exceeded or spec.action == "Notify":
        return None
    budget = f"{spec.namespace}/{spec.name}"
    what = _limits_text(spec, state)
    if spec.action == "Defer":
        limit = spec.defer_below_g_per_kwh
        if limit is not None and g_per_kwh is not None and math.isfinite(g_per_kwh) and g_per_kwh < limit:
            return None
        if running and not interruptible:
            return None
        now_text = f"{g_per_kwh:.0f}" if g_per_kwh is not None and math.isfinite(g_per_kwh) else "unknown"
        reason = f"EnergyBudget {budget} exhausted ({what}); runs only below {limit:g} g/kWh (now {now_text})"
        return Hold(budget, reason, None, suspend_running=running and interruptible)
    if running and not interruptible:
        return None
    reason = f"EnergyBudget {budget} exhausted ({what}); held until {state.period_end.isoformat()}"
    return Hold(budget, reason, state.period_end, suspend_running=running)


def _limits_text(spec: BudgetSpec, state: BudgetState) -> str:
    parts = []
    if spec.energy_kwh is not None:
        parts.append(f"{state.used_kwh:.3f} of {spec.energy_kwh:g} kWh")
    if spec.emissions_kg is not None:
        parts.append(f"{state.used_kg:.3f} of {spec.emissions_kg:g} kgCO2e")
    return ", ".join(parts)


# -- Admission ----------------------------------------------------------------------------------------------------
# A job starts or resumes only if its projected use fits what is left of every budget that selects it, counting
# what the running and already admitted jobs will still use. What each job used and what it was admitted for live in
# the budget's own status, as a ledger keyed by the job's UID (one entry per job and bucket: a calendar budget's
# bucket is its period; a rolling budget's is an eighth of its window). Deleting a job, re-creating one of the same
# name (a new UID), relabelling it out of the selector or restarting the operator therefore loses nothing and
# counts nothing twice: an entry is only ever rewritten by the job of its UID, and frozen when that job is gone.

ROLLING_BUCKETS = 8  # buckets per rolling window: the ledger's resolution in time
HISTORY_PERIODS = 12  # past buckets kept in the status as totals
EPSILON = 1e-9  # rounding of float sums: a projection that fits exactly is admitted


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One job's use of one bucket: what it used so far, and what it was admitted for.

    `reserved_*` is the projected use from the admission on and `base_*` what the job had used at that moment, so
    the part still to come is reserved - (used - base), never below 0. An entry that is not `active` (the job
    finished, was deleted or is no longer selected) counts what it used and nothing more."""

    uid: str
    job: str
    bucket: datetime
    used_kwh: float = 0.0
    used_kg: float = 0.0
    used_from: datetime | None = None
    used_to: datetime | None = None
    reserved_kwh: float = 0.0
    reserved_kg: float = 0.0
    reserved_from: datetime | None = None
    reserved_to: datetime | None = None
    base_kwh: float = 0.0
    base_kg: float = 0.0
    active: bool = True

    def outstanding(self) -> tuple[float, float]:
        """(kWh, kgCO2e) admitted but not yet used."""
        if not self.active:
            return 0.0, 0.0
        kwh = max(self.reserved_kwh - max(self.used_kwh - self.base_kwh, 0.0), 0.0)
        kg = max(self.reserved_kg - max(self.used_kg - self.base_kg, 0.0), 0.0)
        return kwh, kg


@dataclass(frozen=True, slots=True)
class PastBucket:
    """What a bucket that has left the budget's window used, in total (the ledger keeps no per-job entry of it)."""

    start: datetime
    end: datetime
    kwh: float
    kg: float
    jobs: int


@dataclass(frozen=True, slots=True)
class Ledger:
    entries: tuple[LedgerEntry, ...] = ()
    history: tuple[PastBucket, ...] = ()


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as the budget's sync sees it now: selected by the budget, with its usage from its status."""

    uid: str
    name: str
    chunks: tuple[UsageChunk, ...]
    finished: bool


@dataclass(frozen=True, slots=True)
class Candidate:
    """A job asking to start or resume: its usage so far and the projection of its planned windows."""

    uid: str
    name: str
    used: tuple[UsageChunk, ...]
    projection: tuple[UsageChunk, ...]


@dataclass(frozen=True, slots=True)
class Cap:
    """A CarbonAwareJob's own cap on its whole run (used so far + projected), with a budget's actions."""

    energy_kwh: float | None
    emissions_kg: float | None
    action: str  # Suspend | Defer | Notify
    defer_below_g_per_kwh: float | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer: admitted (with each budget's ledger holding the job's reservation) or held, and why."""

    admitted: bool
    hold: Hold | None
    ledgers: dict[str, Ledger]  # "namespace/name" of each budget -> its new ledger (only when admitted)
    notes: tuple[str, ...] = ()  # Notify budgets and caps the job would exceed: reported, not held


def bucket_bounds(spec: BudgetSpec, moment: datetime) -> tuple[datetime, datetime]:
    """The ledger bucket holding `moment`: the calendar period, or an eighth of a rolling window (epoch-aligned)."""
    if spec.rolling is None:
        return period_bounds(spec.period, None, moment)
    size = spec.rolling / ROLLING_BUCKETS
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    start = epoch + size * math.floor((require_utc(moment) - epoch) / size)
    return start, start + size


def window_start(spec: BudgetSpec, now: datetime) -> datetime:
    return period_bounds(spec.period, spec.rolling, now)[0]


def split(spec: BudgetSpec, chunks: tuple[UsageChunk, ...] | list[UsageChunk]) -> dict[datetime, UsageChunk]:
    """Chunks summed per bucket (pro rata), each sum spanning the part of its bucket the chunks cover."""
    out: dict[datetime, UsageChunk] = {}
    for chunk in chunks:
        begin, end = bucket_bounds(spec, chunk.start)
        while True:
            share = chunk_share(chunk, begin, end)
            if share > 0:
                part = UsageChunk(max(chunk.start, begin), min(max(chunk.end, chunk.start), end),
                                  chunk.kwh * share, chunk.grams * share)  # fmt: skip
                have = out.get(begin)
                out[begin] = part if have is None else UsageChunk(
                    min(have.start, part.start), max(have.end, part.end), have.kwh + part.kwh, have.grams + part.grams
                )  # fmt: skip
            if end >= chunk.end:
                break
            begin, end = bucket_bounds(spec, end)
    return out


def sync(spec: BudgetSpec, ledger: Ledger, jobs: list[JobRecord], now: datetime, *, complete: bool = True) -> Ledger:
    """The ledger after reading the selected jobs' usage from their status.

    Each selected job's entries of the buckets still in the window take its usage; entries of jobs not in `jobs`
    (deleted, relabelled out of the selector) keep what they used and stop counting any reservation; buckets that
    have left the window are summed into the history (at most HISTORY_PERIODS of them). `complete=False`: `jobs`
    may miss some (an operator that has just started and not yet seen every job): absent jobs are left alone."""
    begin = window_start(spec, now)
    by_key = {(e.uid, e.bucket): e for e in ledger.entries}
    present = {j.uid for j in jobs}
    for key, entry in list(by_key.items()):
        if complete and entry.uid not in present and entry.active:
            by_key[key] = _replace(entry, active=False, reserved_kwh=0.0, reserved_kg=0.0,
                                   reserved_from=None, reserved_to=None, base_kwh=0.0, base_kg=0.0)  # fmt: skip
    buckets: dict[str, list[datetime]] = {}
    for uid, bucket in by_key:
        buckets.setdefault(uid, []).append(bucket)
    for job in jobs:
        parts = split(spec, job.chunks)
        for bucket in buckets.get(job.uid, []):
            if bucket not in parts and bucket_bounds(spec, bucket)[1] > begin:
                key = (job.uid, bucket)
                by_key[key] = _used(by_key[key], None, active=not job.finished)  # usage corrected away
        for bucket, part in parts.items():
            if bucket_bounds(spec, bucket)[1] <= begin:
                continue  # already summed into the history, or never in this budget's window
            entry = by_key.get((job.uid, bucket)) or LedgerEntry(job.uid, job.name, bucket)
            by_key[(job.uid, bucket)] = _used(entry, part, active=not job.finished)
    keep: list[LedgerEntry] = []
    past: dict[datetime, list[LedgerEntry]] = {}
    for entry in by_key.values():
        if bucket_bounds(spec, entry.bucket)[1] <= begin:
            past.setdefault(entry.bucket, []).append(entry)
        elif entry.active or entry.used_kwh > 0 or entry.used_kg > 0:
            keep.append(entry)
    history = {h.start: h for h in ledger.history}
    for bucket, entries in past.items():
        old = history.get(bucket)
        kwh = sum(e.used_kwh for e in entries) + (old.kwh if old else 0.0)
        kg = sum(e.used_kg for e in entries) + (old.kg if old else 0.0)
        count = len({e.uid for e in entries}) + (old.jobs if old else 0)
        history[bucket] = PastBucket(bucket, bucket_bounds(spec, bucket)[1], kwh, kg, count)
    kept_history = tuple(sorted(history.values(), key=lambda h: h.start)[-HISTORY_PERIODS:])
    return Ledger(tuple(sorted(keep, key=lambda e: (e.bucket, e.uid))), kept_history)


def _replace(entry: LedgerEntry, **changes: Any) -> LedgerEntry:
    return replace(entry, **changes)


def _used(entry: LedgerEntry, part: UsageChunk | None, *, active: bool) -> LedgerEntry:
    if part is None:
        return _replace(entry, used_kwh=0.0, used_kg=0.0, used_from=None, used_to=None, active=active)
    return _replace(entry, used_kwh=part.kwh, used_kg=part.grams / 1000, used_from=part.start, used_to=part.end,
                    active=active)  # fmt: skip


def used_chunks(ledger: Ledger) -> list[UsageChunk]:
    """What the ledger's jobs used, as chunks (for `evaluate`)."""
    return [
        UsageChunk(e.used_from or e.bucket, e.used_to or e.used_from or e.bucket, e.used_kwh, e.used_kg * 1000)
        for e in ledger.entries
        if e.used_kwh > 0 or e.used_kg > 0
    ]


def commitments(ledger: Ledger, now: datetime, *, exclude_uid: str | None = None) -> list[UsageChunk]:
    """What the ledger's jobs used plus what the active ones were admitted for and have not used yet."""
    chunks = [
        UsageChunk(e.used_from or e.bucket, e.used_to or e.used_from or e.bucket, e.used_kwh, e.used_kg * 1000)
        for e in ledger.entries
        if e.uid != exclude_uid and (e.used_kwh > 0 or e.used_kg > 0)
    ]
    for e in ledger.entries:
        if e.uid == exclude_uid:
            continue
        kwh, kg = e.outstanding()
        if kwh > 0 or kg > 0:
            start = max(e.reserved_from or now, now)
            chunks.append(UsageChunk(start, max(e.reserved_to or start, start), kwh, kg * 1000))
    return chunks


def reserved(ledger: Ledger) -> tuple[float, float, int]:
    """(kWh, kgCO2e, jobs) admitted and not yet used."""
    kwh = kg = 0.0
    jobs = set()
    for e in ledger.entries:
        k, g = e.outstanding()
        if k > 0 or g > 0:
            kwh, kg = kwh + k, kg + g
            jobs.add(e.uid)
    return kwh, kg, len(jobs)


def project(windows: list[tuple[datetime, datetime, float]], gpus: int, watts: float, pue: float,
            now: datetime) -> tuple[UsageChunk, ...]:  # fmt: skip
    """The use of planned windows (start, end, forecast gCO2e/kWh) from `now` on: GPUs x watts x time, the energy
    the receipts measure (GPU energy), and its emissions x PUE x the forecast intensity (NaN: no forecast)."""
    chunks = []
    for start, end, g_per_kwh in windows:
        begin = max(start, now)
        if end <= begin:
            continue
        kwh = gpus * watts * (end - begin).total_seconds() / 3.6e6
        chunks.append(UsageChunk(begin, end, kwh, kwh * pue * g_per_kwh))
    return tuple(chunks)


def shortfall(spec: BudgetSpec, others: list[UsageChunk], own: list[UsageChunk],
              projection: tuple[UsageChunk, ...], now: datetime) -> str | None:  # fmt: skip
    """Why the job's projection does not fit this budget (None: it fits). Every period (rolling: every window) the
    projection touches is checked, with everything the others used and were admitted for."""
    if not projection:  # nothing planned (its run time is used up, yet it has not finished): only if not used up
        begin, end = period_bounds(spec.period, spec.rolling, now)
        kwh, kg = usage([JobUsage("", "", {}, tuple(others + own))], begin, max(end, now) + timedelta(microseconds=1))
        if _ratio(kwh, spec.energy_kwh) >= 1.0 or _ratio(kg, spec.emissions_kg) >= 1.0:
            return f"the budget is used up ({kwh:.3f} kWh, {kg:.3f} kgCO2e used and admitted)"
        return None
    if spec.emissions_kg is not None and any(not math.isfinite(c.grams) for c in projection):
        return "no intensity forecast for its planned windows, so its emissions cannot be projected"
    everything = others + own + list(projection)
    last = max(c.end for c in projection)
    windows: list[tuple[datetime, datetime]] = []
    if spec.rolling is None:
        begin, end = period_bounds(spec.period, None, max(min(c.start for c in projection), now))
        while begin <= last:
            windows.append((begin, end))
            begin, end = period_bounds(spec.period, None, end)
    else:
        span = spec.rolling
        first = min(c.start for c in projection)
        moments = {last, first + timedelta(microseconds=1)}
        for c in everything:
            for edge in (c.start, c.end, c.start + span, c.end + span):
                if first < edge <= last + span:
                    moments.add(edge)
        windows = [(t - span, t) for t in sorted(moments)]
    for begin, end in windows:
        mine = usage([JobUsage("", "", {}, projection)], begin, end + timedelta(microseconds=1))
        if mine == (0.0, 0.0):
            continue
        kwh, kg = usage([JobUsage("", "", {}, tuple(everything))], begin, end + timedelta(microseconds=1))
        checks = ((kwh, spec.energy_kwh, "kWh", mine[0]), (kg, spec.emissions_kg, "kgCO2e", mine[1]))
        for total, limit, unit, own_part in checks:
            if limit is not None and total > limit * (1 + EPSILON) + EPSILON:
                left = max(limit - (total - own_part), 0.0)
                when = f"the period from {_text(begin)}" if spec.rolling is None else f"the window ending {_text(end)}"
                if own_part > limit * (1 + EPSILON) + EPSILON:  # waiting for others to finish cannot make room
                    per = "a period" if spec.rolling is None else f"per {spec.period} window"
                    return (f"its projected {own_part:.3f} {unit} in {when} is more than the budget's whole limit of "
                            f"{limit:g} {unit} {per}: it is held until the limit is raised or a later plan spreads "
                            "it over several periods")  # fmt: skip
                return (f"its projected {own_part:.3f} {unit} does not fit the {left:.3f} {unit} left of {limit:g} "
                        f"in {when} (used and admitted: {total - own_part:.3f})")  # fmt: skip
    return None


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def reserve(spec: BudgetSpec, ledger: Ledger, job: Candidate, now: datetime) -> Ledger:
    """The ledger with the job's usage so far and its projection reserved (replacing any earlier reservation)."""
    begin = window_start(spec, now)
    used = split(spec, job.used)
    ahead = split(spec, job.projection)
    by_key = {(e.uid, e.bucket): e for e in ledger.entries}
    for key, entry in list(by_key.items()):
        if entry.uid == job.uid:
            by_key[key] = _replace(entry, reserved_kwh=0.0, reserved_kg=0.0, reserved_from=None, reserved_to=None,
                                   base_kwh=0.0, base_kg=0.0, active=True)  # fmt: skip
    for bucket in sorted(set(used) | set(ahead)):
        if bucket_bounds(spec, bucket)[1] <= begin:
            continue
        entry = by_key.get((job.uid, bucket)) or LedgerEntry(job.uid, job.name, bucket)
        part = used.get(bucket)
        entry = _used(entry, part, active=True) if part is not None else entry
        plan = ahead.get(bucket)
        if plan is not None:
            entry = _replace(entry, reserved_kwh=plan.kwh, reserved_kg=plan.grams / 1000, reserved_from=plan.start,
                             reserved_to=plan.end, base_kwh=entry.used_kwh, base_kg=entry.used_kg)  # fmt: skip
        by_key[(job.uid, bucket)] = entry
    return Ledger(tuple(sorted(by_key.values(), key=lambda e: (e.bucket, e.uid))), ledger.history)


def release(ledger: Ledger, uid: str) -> Ledger:
    """The ledger without the job's reservations (what it used stays)."""
    entries = tuple(
        _replace(e, reserved_kwh=0.0, reserved_kg=0.0, reserved_from=None, reserved_to=None, base_kwh=0.0, base_kg=0.0)
        if e.uid == uid else e
        for e in ledger.entries
    )  # fmt: skip
    return Ledger(entries, ledger.history)


def admit(
    job: Candidate,
    budgets: list[tuple[BudgetSpec, Ledger]],
    cap: Cap | None,
    now: datetime,
    *,
    g_per_kwh: float | None,
) -> Admission:
    """Whether the job may start or resume now: its projection must fit every budget that selects it (`budgets`,
    with their ledgers as last read) and its own cap. Admitted: each budget's new ledger holds its reservation, to
    be written (with the budget's resourceVersion) before the job is resumed. Held: the hold that lasts longest."""
    holds: list[Hold] = []
    notes: list[str] = []
    own_used = list(job.used)
    for spec, ledger in budgets:
        why = shortfall(spec, commitments(ledger, now, exclude_uid=job.uid), own_used, job.projection, now)
        if why is None:
            continue
        budget = f"{spec.namespace}/{spec.name}"
        if spec.action == "Notify":
            notes.append(f"EnergyBudget {budget} (Notify): {why}")
            continue
        if spec.action == "Defer":
            limit = spec.defer_below_g_per_kwh
            if limit is not None and g_per_kwh is not None and math.isfinite(g_per_kwh) and g_per_kwh < limit:
                notes.append(f"EnergyBudget {budget}: {why}; admitted while the grid is below {limit:g} g/kWh")
                continue
            holds.append(Hold(budget, f"EnergyBudget {budget}: {why}; runs only below {limit:g} g/kWh", None, False))
            continue
        until = bucket_bounds(spec, now)[1] if spec.rolling is not None else period_bounds(spec.period, None, now)[1]
        holds.append(Hold(budget, f"EnergyBudget {budget}: {why}", until, False))
    if cap is not None:
        verdict = cap_check(cap, own_used, job.projection)
        if verdict is not None:
            hold = _cap_hold(cap, verdict, g_per_kwh, f"CarbonAwareJob {job.name}", running=False, interruptible=False)
            if hold is None:
                notes.append(f"cap of CarbonAwareJob {job.name}: {verdict}")
            else:
                holds.append(hold)
    if holds:
        return Admission(False, _longest(holds), {}, tuple(notes))
    ledgers = {f"{spec.namespace}/{spec.name}": reserve(spec, ledger, job, now) for spec, ledger in budgets}
    return Admission(True, None, ledgers, tuple(notes))


def cap_check(cap: Cap, used: list[UsageChunk], projection: tuple[UsageChunk, ...]) -> str | None:
    """Why the job's whole run (used + projected) exceeds its cap (None: within it)."""
    kwh = sum(c.kwh for c in used) + sum(c.kwh for c in projection)
    grams = sum(c.grams for c in used) + sum(c.grams for c in projection)
    parts = []
    if cap.energy_kwh is not None and kwh > cap.energy_kwh * (1 + EPSILON) + EPSILON:
        parts.append(f"projected {kwh:.3f} kWh exceeds its cap of {cap.energy_kwh:g} kWh")
    if cap.emissions_kg is not None:
        if not math.isfinite(grams):
            parts.append("its emissions cannot be projected (no intensity forecast)")
        elif grams / 1000 > cap.emissions_kg * (1 + EPSILON) + EPSILON:
            parts.append(f"projected {grams / 1000:.3f} kgCO2e exceeds its cap of {cap.emissions_kg:g} kgCO2e")
    return "; ".join(parts) or None


def cap_hold(cap: Cap, used: list[UsageChunk], projection: tuple[UsageChunk, ...], g_per_kwh: float | None,
             job: str, *, running: bool, interruptible: bool) -> tuple[Hold | None, str | None]:  # fmt: skip
    """A running job's cap, projected ahead: (the hold, or None; the note when it is exceeded but not held)."""
    verdict = cap_check(cap, used, projection)
    if verdict is None:
        return None, None
    hold = _cap_hold(cap, verdict, g_per_kwh, job, running=running, interruptible=interruptible)
    return hold, None if hold is not None else f"cap of {job}: {verdict}"


def _cap_hold(cap: Cap, verdict: str, g_per_kwh: float | None, job: str, *, running: bool,
              interruptible: bool) -> Hold | None:  # fmt: skip
    if cap.action == "Notify" or (running and not interruptible):
        return None
    if cap.action == "Defer":
        limit = cap.defer_below_g_per_kwh
        if limit is not None and g_per_kwh is not None and math.isfinite(g_per_kwh) and g_per_kwh < limit:
            return None
        return Hold(f"cap of {job}", f"cap of {job}: {verdict}; runs only below {limit:g} g/kWh", None, running)
    return Hold(f"cap of {job}", f"cap of {job}: {verdict}; raise spec.cap to let it run", None, running, True)


def sure_holds(facts: BudgetFacts, projection: tuple[UsageChunk, ...], job: str, now: datetime) -> list[Hold]:
    """The holds a job that waits for its planned windows will meet when they open, whatever the other jobs do: a
    Suspend budget whose limit its planned run alone exceeds within one period (or rolling window), and a Suspend
    cap that its use so far plus its plan exceeds. Said now, not hours later at the window: the user (and the
    DeadlineAtRisk alert) learn at once that the job cannot run until a limit is raised."""
    holds = []
    for spec, _ledger in facts.budgets:
        if spec.action != "Suspend":
            continue
        why = shortfall(spec, [], [], projection, now)  # nothing of the others', nor of its own past use
        if why is not None:
            budget = f"{spec.namespace}/{spec.name}"
            holds.append(Hold(budget, f"EnergyBudget {budget}: {why}", None, False, True))
    if facts.cap is not None and facts.cap.action == "Suspend":
        verdict = cap_check(facts.cap, list(facts.used), projection)
        if verdict is not None:
            hold = _cap_hold(facts.cap, verdict, None, f"CarbonAwareJob {job}", running=False, interruptible=False)
            holds += [hold] if hold is not None else []
    return holds


def _longest(holds: list[Hold]) -> Hold:
    # The one that holds longest (None = until something changes: the intensity, or the cap: ranked last).
    return max(holds, key=lambda h: h.until or datetime.max.replace(tzinfo=UTC))


# -- The verdict of a reconcile pass ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetFacts:
    """What the budget rule reads in a reconcile pass (part of the decision core's snapshot): the EnergyBudgets that
    select the job, each with its ledger as last read; the job's own cap, UID and usage so far; each cluster's PUE
    (the projection's emissions; `default_pue` for a cluster not listed, or no cluster yet)."""

    uid: str = ""
    budgets: tuple[tuple[BudgetSpec, Ledger], ...] = ()
    cap: Cap | None = None
    used: tuple[UsageChunk, ...] = ()
    pue_by_cluster: Mapping[str, float] = field(default_factory=dict)
    default_pue: float = 1.0


@dataclass(frozen=True, slots=True)
class BudgetVerdict:
    """The budgets' say in one pass: the hold (None: none holds the job), and what it implies.

    `admission`: a (re)start was asked: the ledgers to record before the Job is resumed (admitted: the job's
    reservation; held: its reservation released). `notes`: limits that do not hold jobs (Notify, a Defer budget
    while the grid is clean) the admission went over. `deadline_at_risk`: the hold outlasts the latest safe start
    (the budget wins over the deadline, and says so). `message`: the hold, as the BudgetHeld condition says it."""

    hold: Hold | None = None
    admission: Admission | None = None
    notes: tuple[str, ...] = ()
    deadline_at_risk: bool = False
    message: str = ""


def verdict(
    facts: BudgetFacts,
    *,
    job: str,
    windows: list[tuple[datetime, datetime, float]],
    gpus: int,
    watts: float,
    pue: float,
    g_per_kwh: float | None,
    interruptible: bool,
    resuming: bool,
    running: bool,
    latest_safe_start: datetime,
    now: datetime,
) -> BudgetVerdict:
    """The budgets' verdict on a pass that plans `windows` (start, end, forecast g/kWh) for the job `job`.

    Resuming: the admission rule (`admit`) on the budgets as read and the cap. Otherwise: the hold of a budget
    already exceeded (`hold_for`), and of the job's own cap while it runs (projected ahead). The hold that lasts
    longest wins."""
    if not facts.budgets and facts.cap is None:
        return BudgetVerdict(None, Admission(True, None, {}) if resuming else None)
    ahead = project(windows, gpus, watts, pue, now)
    answer: Admission | None = None
    if resuming:
        answer = admit(Candidate(facts.uid, job, facts.used, ahead), list(facts.budgets), facts.cap, now,
                       g_per_kwh=g_per_kwh)  # fmt: skip
        # Held: the same words as while it waited, when a limit holds it whatever time brings (`sure_holds`).
        hold = _longest([answer.hold, *sure_holds(facts, ahead, job, now)]) if answer.hold is not None else None
    else:
        holds = []
        for spec, ledger in facts.budgets:
            state = evaluate(spec, [JobUsage(spec.namespace, "ledger", {}, tuple(used_chunks(ledger)))], now)
            held = hold_for(spec, state, g_per_kwh=g_per_kwh, interruptible=interruptible, running=running)
            if held is not None:
                holds.append(held)
        if facts.cap is not None and running:
            held, _ = cap_hold(facts.cap, list(facts.used), ahead, g_per_kwh, f"CarbonAwareJob {job}", running=True,
                               interruptible=interruptible)  # fmt: skip
            if held is not None:
                holds.append(held)
        if not running:
            holds += sure_holds(facts, ahead, job, now)
        hold = _longest(holds) if holds else None
    notes = answer.notes if answer is not None else ()
    if hold is None:
        return BudgetVerdict(None, answer, notes)
    if hold.until is not None:
        until = f"; until {_text(hold.until)}"
    else:  # a raised limit frees it (its reason says so), or a cleaner grid (Defer)
        until = "" if hold.until_raised else "; until the grid is below the budget's intensity limit"
    message = f"held by {hold.reason}{until}"  # (the reason names its budget or cap)
    at_risk = hold.until is None or hold.until > latest_safe_start
    return BudgetVerdict(hold, answer, notes, at_risk, message)
