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
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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
    until: datetime | None  # None: until the intensity condition changes (Defer)
    suspend_running: bool


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
