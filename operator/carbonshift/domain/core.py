"""The decision core: one reconcile pass of a CarbonAwareJob as a pure function of what was read.

`reconcile(snapshot, settings)` takes everything a pass reads (the job's needs, its status so far, the Job as
the cluster shows it, candidate clusters, the forecasts issued at `now`, the forecast's expected error) and
returns what to do (resume, announce a suspension, suspend) and the new status. It never reads a clock and never
touches an API, so the operator (handlers), the closed-loop simulator (carbonshift.simulate.closed_loop) and the
tests all run the very same decisions.

Rules it keeps (docs/design/operator.md, "The decision core"):

- Progress is true work. Run time accrues from the last observation to this one at the fraction of the Job's pods
  that ran at both ends (or from when the pods started, if known), never across a gap longer than
  `max_unobserved` (an operator outage is not credited). The first `overhead` of run time after each resume of a
  job that has run before is lost (restoring the checkpoint, redoing work) and is not counted as work; the
  remaining work the planner sees includes what is left of the current chunk's overhead.
- Windows are committed. A plan, once made, is kept while it still holds the remaining work by the deadline and
  the forecast does not show a better one by more than `commit_gain` (relative) and more than the forecast's
  expected error; re-plans that only slide a window are ignored. A commitment is weighed against newer forecasts at
  most once per `recheck_every` (1 h), counted in forecast slots (`issue_slot`), so the passes between decide what
  the last weighing did, whenever they fall; one that no longer holds the work is re-planned at once.
- Do no harm: a plan that defers or suspends is taken only when its forecast gain per kWh over running now exceeds
  the forecast's expected error and, when the forecast's recent skill is measured (`Snapshot.forecast_skill`: the
  share of its promised gains that came true in a backtest of its own recent forecasts, counted low), only from a
  forecast that has shown skill; otherwise the job runs now (a poor forecast degrades to running at once). A plan
  bets only on the run time it moves out of running now's block (a later start of one block, or the chunks an
  interruptible job moves): with the forecast's error by run length (`Snapshot.forecast_error_for`) and a
  forecast that declares its error or has shown skill (`trusted_skill`), their gain per kWh moved is weighed
  against the error for runs that long (for interruptible jobs since session 14). Once a job that cannot be
  interrupted has committed to a later start, running now (a fresh deferral that do no harm declined) replaces
  the commitment only when it beats it by the commitment threshold. An interruptible job with committed windows
  gives them up for a declined deferral only when running now is forecast to emit less than they would, or when
  the forecast has not shown skill (`trusted_skill`): a gain too small to start a bet on is not evidence against a
  bet already made, and ending it at the first hourly re-check whose gain dipped within the error cost 0.014 of
  the optimum (docs/simulator.md, session 14).
- The first deferral of a job that cannot be interrupted (a bet a later re-plan cannot take back once the job
  starts) must also gain on the forecast anchored to the newest measurement
  (`Snapshot.latest_actual`, the provider's current value; `anchored`: each slot moved by the forecast's error
  on the measured slot, fading by `anchor_per_hour` for every hour of lead). A forecast already off now, as
  persistence is on the day the weather turns, is not bet on; a forecast that is right now is unchanged. Only a veto,
  and only at the first decision (no commitment yet): planned on the anchored forecast instead, the loop lost up to
  0.66 % with persistence on NO's flat grid (docs/simulator.md).
- Each extra chunk must gain more than the forecast's error for the difference it bets on
  (`slot_error_g_per_kwh`), over a minimum chunk's energy, on top of its overhead.
- Every suspension is announced at least `grace` ahead (the suspend-at annotation), and every chunk runs at least
  `min_run` before it is suspended; the core wakes at the window's end minus `grace` to announce it.
- A job whose work reached spec.duration but whose Job has not completed is overrunning: DeadlineAtRisk with its
  own reason (`Overrun`), it keeps running (and its GPUs reserved), and it is re-planned on an estimate of the time
  left from the overrun seen so far.
- EnergyBudgets and the job's cap (`Snapshot.budget`, domain/budgets.py) admit a (re)start or hold it: a held job is
  not resumed (Waiting, or Suspended if it ran before), a running interruptible job is suspended when its budget
  says so (unannounced: the budget is used up now), a running non-interruptible one finishes; a hold that outlasts
  the latest safe start puts the deadline at risk. The verdict (`Outcome.budget`) carries the ledgers to record.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from carbonshift.domain.budgets import BudgetFacts, BudgetVerdict
from carbonshift.domain.budgets import verdict as budget_verdict
from carbonshift.domain.lifecycle import Observed, Phase
from carbonshift.domain.planning.model import Cluster, Flag, Job, Plan, Policy, Reason, RunWindow
from carbonshift.domain.planning.single import optimal_bounds, plan_job
from carbonshift.domain.series import IntensitySeries

EPS_SECONDS = 1e-6


class AtRisk:
    """Reasons a DeadlineAtRisk condition carries when the core sets it."""

    OVERRUN = "Overrun"  # run time reached spec.duration but the Job has not completed
    INFEASIBLE = "InfeasibleDeadline"
    DEADLINE_PASSED = "DeadlinePassed"
    NO_CAPACITY = "NoCapacity"
    NO_NODE_FITS = "NoNodeFits"  # one pod asks for more GPUs than the largest node of any allowed cluster has


@dataclass(frozen=True, slots=True)
class JobNeeds:
    """What the spec asks for, in planner units (see handlers/translate.py for the CarbonAwareJob mapping)."""

    name: str
    duration: timedelta
    deadline: datetime
    interruptible: bool = False
    overhead: timedelta = timedelta(0)
    overhead_kwh: float = 0.0
    min_run: timedelta = timedelta(0)
    grace: timedelta = timedelta(0)
    gpus: int = 1
    watts_per_gpu: float = 700.0
    policy: Policy = Policy.OPTIMAL
    max_intensity_g_per_kwh: float | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """Work done so far, kept in status so that a restarted operator continues exactly.

    `work_seconds` is true work (run time net of each resumed chunk's overhead). The current chunk's run time and
    whether it pays the overhead are kept so that the overhead is subtracted once. `observed_at` and `rate` are the
    last observation (time, fraction of pods running)."""

    work_seconds: float = 0.0
    run_seconds: float = 0.0
    chunk_run_seconds: float = 0.0
    chunk_pays: bool = False
    chunk_started_at: datetime | None = None
    observed_at: datetime | None = None
    rate: float = 0.0
    resumes: int = 0  # chunks that paid the overhead
    ran: bool = False

    def overhead_left(self, overhead: timedelta) -> float:
        """Seconds of the current chunk's overhead still to be run through."""
        if not self.chunk_pays:
            return 0.0
        return max(overhead.total_seconds() - self.chunk_run_seconds, 0.0)


@dataclass(frozen=True, slots=True)
class Commitment:
    """The plan the job follows: absolute windows, kept until a re-plan beats them by the threshold."""

    windows: tuple[RunWindow, ...]
    cluster: str | None
    zone: str | None
    made_at: datetime
    forecast_key: tuple[object, ...] = ()
    remaining_at_plan: float = 0.0
    # The forecasts the plan was made on (in memory only; a restarted operator re-plans once): a later forecast
    # that says the same for every slot they share changes nothing, and the plan is not recomputed.
    forecasts: Mapping[str, IntensitySeries | None] = field(default_factory=dict, compare=False)
    # The forecast gain the plan last reported on this commitment promised: its emissions, and running at once's
    # (the status's plan.plannedEmissionsGrams / runNowEmissionsGrams; NaN: not known). See
    # `deferred_for_capacity_only`.
    planned_grams: float = field(default=math.nan, compare=False)
    run_now_grams: float = field(default=math.nan, compare=False)
    # The forecast slot (`issue_slot`) of the pass that last weighed the commitment against the forecast (a re-plan,
    # or the check that the change is too small to move it); with `CoreSettings.recheck_every`, forecasts issued in
    # later slots are not looked at until that much later. A slot, not the pass's time, so that when it is re-checked
    # does not depend on when the passes fall. Kept in the CarbonAwareJob's status (commitment.checkedAt).
    # None: the next pass weighs it.
    checked_at: datetime | None = None
    # When the commitment was last weighed, the first forecast slot from then to its next start in which some
    # cluster had the job's GPUs free (its next start where none had; None: not known). GPUs freed earlier than
    # that since let the job start earlier than it was planned to: the next pass weighs it again (`_room_grew`).
    # Kept in the status (commitment.fitsFrom).
    fits_from: datetime | None = None
    # The plan's flags when it was made (partial forecast, forced, unanchored...): a kept plan still reports them.
    # Kept in the status (commitment.flags).
    flags: frozenset[Flag] = frozenset()


@dataclass(frozen=True, slots=True)
class CoreStatus:
    progress: Progress = field(default_factory=Progress)
    commitment: Commitment | None = None
    suspend_at: datetime | None = None  # announced suspension (the Job's suspend-at annotation)
    announced_at: datetime | None = None
    phase: Phase = Phase.PENDING
    first_baseline_grams: float = math.nan  # forecast run-now emissions at the first plan (what a receipt claims)
    first_planned_grams: float = math.nan


@dataclass(frozen=True, slots=True)
class CoreSettings:
    tick: timedelta = timedelta(minutes=5)
    margin: timedelta = timedelta(minutes=10)
    commit_gain: float = 0.01  # a committed plan moves only for a relative forecast gain above this
    max_unobserved: timedelta = timedelta(minutes=61)  # longer gaps between observations are not credited
    start_allowance: timedelta = timedelta(0)  # expected pod start delay, planned as part of each resume
    do_no_harm: bool = True
    harm_factor: float = 1.5  # defer only for a forecast gain above this many times the forecast's expected error
    chunk_factor: float = 1.5  # an extra chunk must gain this many times the error of the difference it bets on
    min_skill: float = 0.0  # with a measured skill (Snapshot.forecast_skill): defer only above this
    # Do no harm weighs the run time a plan moves: the gain per kWh moved against the error for the moved length.
    harm_on_moved: bool = True
    commit: bool = True
    overrun_floor: timedelta = timedelta(minutes=10)
    extend_limit: timedelta = timedelta(minutes=15)  # a committed plan short by up to this is extended at its end
    # The veto of a first deferral by the forecast anchored to the newest measurement (`anchored`): the share of
    # the error on the measured slot kept per hour of lead (0: no veto). Fitted, not tuned: the lag regression of
    # day-ahead persistence errors on the ten bundled traces gives 0.88 to 0.96 per hour (median 0.93); see
    # docs/simulator.md.
    anchor_per_hour: float = 0.93
    # Speed (the simulator): a re-plan whose outcome bounds show the commitment is kept is not computed; the same
    # decisions and status, but the plan returned then carries no forecast figures (planned/baseline grams NaN).
    skip_kept_replans: bool = False
    # A committed plan is weighed against newly issued forecasts at most once per `recheck_every` (0: at every pass),
    # counted in forecast slots (`issue_slot`). Within it the commitment is kept as it is; transitions, progress,
    # overruns, budgets, and a commitment that no longer holds the work or whose GPUs were taken are still acted on
    # at every pass. Measured (docs/simulator.md, "Re-checking a commitment"): on the ten bundled traces, hourly
    # saved the same as weighing every 15-minute forecast (within 0.002 of the optimum), with a third of the CPU.
    recheck_every: timedelta = timedelta(hours=1)
    # A forecast whose measured skill (`Snapshot.forecast_skill`: the share of its promised gains that came true
    # lately, counted low) is above this is trusted as one that declares its error: a plan is weighed on the run
    # time it moves (`harm_on_moved`), and an interruptible job's committed windows survive a deferral that do no
    # harm declined for its gain (`_replan`). Measured with persistence and with realistic forecasts gated as the
    # operator gates a provider's (docs/simulator.md, session 14): 0.3, 0.5 and 0.7 all keep every trace at or
    # above running at once; with no bar GB 2023 fell to -0.13 % (persistence, interruptible).
    trusted_skill: float = 0.5


@dataclass(frozen=True, slots=True)
class Snapshot:
    job: JobNeeds
    status: CoreStatus
    observed: Observed
    now: datetime
    clusters: Sequence[Cluster] = ()
    forecasts: Mapping[str, IntensitySeries | None] = field(default_factory=dict)
    forecast_error_g_per_kwh: float = 0.0  # the forecast's expected absolute error (0 = trusted)
    watching_since: datetime | None = None  # since when this operator process has watched the job without a break
    slot_error_g_per_kwh: float = 0.0  # the forecast's expected absolute error for one slot (for extra chunks)
    # The forecast's expected absolute error (g/kWh) averaged over a run of the given length, for do no harm to
    # weigh the part of the run a deferral moves (None: `forecast_error_g_per_kwh` for the whole run).
    forecast_error_for: Callable[[timedelta], float] | None = field(default=None, compare=False)
    # The share of its promised gains the forecast has lately delivered, counted low (a backtest of its own recent
    # forecasts against the actuals, e.g. carbonshift.simulate.closed_loop.SkillEstimate); None = not measured.
    forecast_skill: float | None = None
    # Node fit: the most GPUs one pod of the workload asks for (0: not checked), and each cluster's largest node
    # (by cluster name; a cluster not named, or None, is not known and fits).
    pod_gpus: int = 0
    largest_node_gpus: Mapping[str, int | None] = field(default_factory=dict)
    # The EnergyBudgets that select the job and its cap (None: no budget rule, e.g. the simulator).
    budget: BudgetFacts | None = None
    # The newest measured intensity of each zone (its slot's start, g/kWh): the provider's current value, for the
    # anchored veto of a first deferral (`anchored`). A zone not named is not checked.
    latest_actual: Mapping[str, tuple[datetime, float]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    resume: bool
    suspend: bool
    announce_suspend_at: datetime | None  # write the suspend-at annotation with this time (None: leave/remove)
    phase: Phase
    status: CoreStatus
    plan: Plan | None
    next_wake: datetime | None
    why: str
    at_risk: str | None = None
    replanned: bool = False
    create: bool = False  # create the Job (suspended) before acting: it does not exist yet
    transition_at: datetime | None = None  # the next planned change (window start, announcement, suspension)
    budget: BudgetVerdict | None = None  # the budgets' verdict (with Snapshot.budget and a plan)
    budget_held: bool = False  # a resume the plan wanted, held by a budget (the job does not use its GPUs)


# -- progress -------------------------------------------------------------------------------------------------


def pods_rate(observed: Observed) -> float:
    running = observed.exists and not observed.suspended and not observed.complete and not observed.failed
    if not running or observed.ready_pods <= 0:
        return 0.0
    return min(observed.ready_pods / max(observed.desired_pods, 1), 1.0)


def observe(
    progress: Progress,
    observed: Observed,
    now: datetime,
    needs: JobNeeds,
    settings: CoreSettings,
    watching_since: datetime | None = None,
) -> Progress:
    """Credit the run time since the last observation, at the lower of the two rates seen (or from when the pods
    started, when the cluster says so), never across an unobserved gap (longer than `max_unobserved` and not
    watched throughout by this process); overhead first, then work."""
    rate = pods_rate(observed)
    credit = 0.0
    if progress.observed_at is not None:
        gap = (now - progress.observed_at).total_seconds()
        watched = watching_since is not None and watching_since <= progress.observed_at
        if gap > 0 and (watched or gap <= settings.max_unobserved.total_seconds()):
            if progress.rate > 0 and rate > 0:
                credit = gap * min(progress.rate, rate)
            elif progress.rate > 0 and observed.complete and observed.completed_at is not None:
                # It ran to completion since the last pass: credit up to the completion, at the rate seen then.
                ran = (min(observed.completed_at, now) - progress.observed_at).total_seconds()
                credit = max(ran, 0.0) * progress.rate
            elif rate > 0 and observed.running_since is not None:
                since = max(observed.running_since, progress.observed_at)
                credit = max((now - since).total_seconds(), 0.0) * rate
    if credit <= 0:
        return replace(progress, observed_at=now, rate=rate)
    chunk = progress.chunk_run_seconds + credit
    if progress.chunk_pays:
        oh = needs.overhead.total_seconds()
        work = max(chunk - oh, 0.0) - max(progress.chunk_run_seconds - oh, 0.0)
    else:
        work = credit
    return replace(
        progress,
        work_seconds=progress.work_seconds + work,
        run_seconds=progress.run_seconds + credit,
        chunk_run_seconds=chunk,
        observed_at=now,
        rate=rate,
        ran=True,
    )


def resumed(progress: Progress, now: datetime) -> Progress:
    """A new chunk begins (the Job is resumed now); it pays the overhead when the job has run before."""
    pays = progress.ran
    return replace(
        progress,
        chunk_run_seconds=0.0,
        chunk_pays=pays,
        chunk_started_at=now,
        resumes=progress.resumes + int(pays),
    )


def remaining_seconds(progress: Progress, needs: JobNeeds, running: bool) -> float:
    """Run time still needed at full speed: the work left, plus what is left of a running chunk's overhead."""
    left = needs.duration.total_seconds() - progress.work_seconds
    if running:
        left += progress.overhead_left(needs.overhead)
    return max(left, 0.0)


# -- plans ----------------------------------------------------------------------------------------------------


def anchored(
    forecasts: Mapping[str, IntensitySeries | None],
    latest: Mapping[str, tuple[datetime, float]],
    now: datetime,
    per_hour: float,
) -> Mapping[str, IntensitySeries | None]:
    """Each zone's forecast moved toward its newest measurement: every slot by the forecast's error on the measured
    slot (measured - forecast), times `per_hour` for each hour from the measured slot's start to the slot's start
    (the measured slot itself by the whole error), and kept at 0 or above. A measurement from after `now`, from
    before the slot that precedes the forecast's first, or on a slot the forecast has no value for, changes
    nothing; nor does anything when `per_hour` is 0. The mapping given is returned when nothing changed."""
    if per_hour <= 0 or not latest:
        return forecasts
    out = dict(forecasts)
    changed = False
    for zone, series in forecasts.items():
        seen = latest.get(zone)
        if series is None or seen is None or len(series) == 0:
            continue
        at, measured = seen
        if at > now or at < series.start - series.resolution or not math.isfinite(measured):
            continue
        predicted = series.at(max(at, series.start))
        error = measured - predicted
        if not math.isfinite(error) or error == 0.0:
            continue
        step_hours = series.resolution.total_seconds() / 3600.0
        hours = (series.start - at).total_seconds() / 3600.0 + step_hours * np.arange(len(series))
        values = np.maximum(series.values + error * per_hour ** np.maximum(hours, 0.0), 0.0)
        out[zone] = replace(series, values=values)
        changed = True
    return out if changed else forecasts


def forecast_key(forecasts: Mapping[str, IntensitySeries | None]) -> tuple[object, ...]:
    """What identifies the forecasts a plan was made on (zone, start, resolution, the values' bytes)."""
    key: list[object] = []
    for zone in sorted(forecasts):
        series = forecasts[zone]
        if series is None:
            key.append((zone, None))
        else:
            key.append((zone, series.start, series.resolution, hash(series.values.tobytes())))
    return tuple(key)


def _same_forecasts(old: Mapping[str, IntensitySeries | None], new: Mapping[str, IntensitySeries | None]) -> bool:
    """Whether `new` says the same as `old` for every slot they share, and holds nothing `old` did not."""
    if not old or set(old) != set(new):
        return False
    for zone, series in new.items():
        before = old[zone]
        if series is None or before is None:
            if series is not before:
                return False
            continue
        if series.resolution != before.resolution:
            return False
        offset = (series.start - before.start) / series.resolution
        if offset < 0 or offset != int(offset):
            return False
        shift = int(offset)
        if shift + len(series) > len(before):
            return False
        if len(series) and not _same_value(float(series.values[0]), float(before.values[shift])):
            return False  # (most new forecasts differ on their first slot already: no array compare)
        if not np.array_equal(series.values, before.values[shift : shift + len(series)], equal_nan=True):
            return False
    return True


def _same_value(a: float, b: float) -> bool:
    """Equal, or both NaN (np.array_equal's equal_nan for one value)."""
    return a == b or (a != a and b != b)


def _change_bound(
    commitment: Commitment, new: Mapping[str, IntensitySeries | None], power_kw: float, pue: float
) -> float:
    """An upper bound on how much cheaper than the committed windows any plan can be made by the forecast's change
    since the commitment (grams): a changed slot helps another plan only where it got cheaper outside the
    committed windows or dearer inside them. inf when the forecasts cannot be compared slot by slot."""
    old = commitment.forecasts
    if not old or set(old) != set(new) or commitment.zone is None:
        return math.inf
    for zone, series in new.items():
        if (series is None) != (old[zone] is None):
            return math.inf
    series, before = new.get(commitment.zone), old.get(commitment.zone)
    if len(new) != 1 or series is None or before is None or series.resolution != before.resolution:
        return math.inf
    offset = (series.start - before.start) / series.resolution
    if offset < 0 or offset != int(offset) or int(offset) + len(series) > len(before):
        return math.inf
    shift = int(offset)
    diff = series.values - before.values[shift : shift + len(series)]
    if np.isnan(diff).any():
        same_gaps = np.array_equal(np.isnan(series.values), np.isnan(before.values[shift : shift + len(series)]))
        if not same_gaps:
            return math.inf
        diff = np.nan_to_num(diff, nan=0.0)
    if not diff.any():
        return 0.0
    step = series.resolution
    helps = np.maximum(-diff, 0.0)  # outside the committed windows: where it got cheaper
    for w in commitment.windows:  # inside: where it got dearer
        first = max(math.floor((w.start - series.start) / step), 0)
        last = min(math.ceil((w.end - series.start) / step), len(series))
        if last > first:
            helps[first:last] = np.maximum(diff[first:last], 0.0)
    return float(np.add.reduce(helps)) * power_kw * pue * step.total_seconds() / 3600.0


def windows_grams(
    windows: Sequence[tuple[datetime, datetime]], forecast: IntensitySeries | None, power_kw: float, pue: float
) -> float:
    """Forecast emissions of running in `windows` (NaN when the forecast does not cover them)."""
    if forecast is None or len(forecast) == 0:
        return math.nan
    values = forecast.values
    if np.isnan(values).any():
        filled = np.where(np.isnan(values), np.nanmax(values) if not np.isnan(values).all() else np.nan, values)
    else:
        filled = values
    n = int(filled.shape[0])
    cumulative = np.empty(n + 1)
    cumulative[0] = 0.0
    np.cumsum(filled, out=cumulative[1:])
    step = forecast.resolution_seconds
    start = forecast.start

    def position(moment: datetime) -> float:
        offset = (moment - start).total_seconds() / step
        index = min(max(math.floor(offset), 0), n - 1)
        offset = min(max(offset, 0.0), float(n))
        return float(cumulative[index]) + (offset - index) * float(filled[index])

    total = 0.0
    for begin, end in windows:
        if end <= begin:
            continue
        total += position(end) - position(begin)
    return total * power_kw * pue * step / 3600.0


def _clipped(windows: Sequence[RunWindow], now: datetime) -> list[tuple[datetime, datetime]]:
    return [(max(w.start, now), w.end) for w in windows if w.end > now]


def _shortfall(
    commitment: Commitment, needs: JobNeeds, progress: Progress, running: bool, now: datetime, overhead: float
) -> float:
    """Seconds of work the committed windows from `now` no longer hold (each resumed chunk paying the overhead)."""
    left = remaining_seconds(progress, needs, running)
    if left <= EPS_SECONDS:
        return 0.0
    capacity = 0.0
    fresh = not progress.ran and not running
    for begin, end in _clipped(commitment.windows, now):
        length = (end - begin).total_seconds()
        continuing = running and begin <= now
        pays = not continuing and not fresh
        capacity += max(length - (overhead if pays else 0.0), 0.0)
        fresh = False
    return max(left - capacity, 0.0)


def _holding(
    commitment: Commitment,
    needs: JobNeeds,
    progress: Progress,
    running: bool,
    now: datetime,
    overhead: float,
    limit: datetime,
    tolerance: timedelta,
) -> Commitment | None:
    """The commitment if it still holds the work; extended at its end when it falls short by a little (a pod that
    started late) and that still ends by `limit`; None otherwise."""
    short = _shortfall(commitment, needs, progress, running, now, overhead)
    if short <= 1.0:
        return commitment
    if not math.isfinite(short) or short > tolerance.total_seconds() or not commitment.windows:
        return None
    last = commitment.windows[-1]
    end = max(last.end, now) + timedelta(seconds=short)
    if end > limit and last.end < limit:  # (a best-effort plan already ends past the limit: it runs on)
        return None
    windows = (*commitment.windows[:-1], RunWindow(last.start, end, last.mean_g_per_kwh))
    return replace(commitment, windows=windows)


def _run_now(job: Job) -> Job:
    return replace(job, policy=Policy.IMMEDIATE)


def _energy_kwh(job: Job) -> float:
    return job.power_kw * job.remaining.total_seconds() / 3600.0


def _plan_gain_per_kwh(plan: Plan, job: Job) -> float:
    energy = _energy_kwh(job)
    if energy <= 0 or not (math.isfinite(plan.baseline_grams) and math.isfinite(plan.planned_grams)):
        return math.nan
    return (plan.baseline_grams - plan.planned_grams) / energy


def _run_seconds(job: Job) -> float:
    return job.remaining.total_seconds()


def _moved_seconds(plan: Plan, now: datetime, job: Job) -> float:
    """Run time the plan puts outside the block that running now would take ([now, now + remaining])."""
    block_end = now + job.remaining
    moved = 0.0
    for w in plan.windows:
        inside = (min(w.end, block_end) - max(w.start, now)).total_seconds()
        moved += (w.end - w.start).total_seconds() - max(inside, 0.0)
    return moved


def _defers(plan: Plan, now: datetime, running: bool) -> bool:
    """Whether the plan does anything but run continuously from now."""
    if not plan.windows:
        return False
    if len(plan.windows) > 1:
        return True
    return (plan.windows[0].start > now + timedelta(seconds=1) and not running) or plan.windows[0].start > now


def _commitment_from(
    plan: Plan,
    now: datetime,
    key: tuple[object, ...],
    remaining: float,
    forecasts: Mapping[str, IntensitySeries | None],
) -> Commitment:
    checked = issue_slot(forecasts, plan.zone, now)
    return Commitment(
        plan.windows, plan.cluster, plan.zone, now, key, remaining, dict(forecasts), checked_at=checked,
        flags=plan.flags,
    )  # fmt: skip


def _committed_plan(commitment: Commitment, template: Plan, now: datetime) -> Plan:
    windows = tuple(RunWindow(max(w.start, now), w.end, w.mean_g_per_kwh) for w in commitment.windows if w.end > now)
    # (Constructed, not dataclasses.replace: this runs on every pass that keeps a commitment.)
    return Plan(
        job=template.job, cluster=commitment.cluster or template.cluster, zone=commitment.zone, windows=windows,
        planned_grams=template.planned_grams, baseline_grams=template.baseline_grams,
        latest_safe_start=template.latest_safe_start, reason=template.reason, feasible=template.feasible,
        flags=template.flags | commitment.flags, energy_kwh=template.energy_kwh, cycles=template.cycles,
    )  # fmt: skip


def deferred_for_capacity_only(commitment: Commitment | None, now: datetime) -> bool:
    """Whether the committed plan defers the job without saving anything (the forecast emissions its last plan
    reported are not below running at once): then only the GPUs other work held made it wait, and it is not kept
    as a commitment (the core re-plans, and the job starts as soon as the GPUs are free). Kept, such a plan held a
    job an hour past the moment its cluster emptied, for no carbon gain (e2e/test_operator_budget.py, after a
    burst). A gain not known (NaN) keeps the commitment."""
    if commitment is None or not commitment.windows or commitment.windows[0].start <= now:
        return False
    return commitment.planned_grams >= commitment.run_now_grams


# -- the pass -------------------------------------------------------------------------------------------------


def node_fit(snapshot: Snapshot) -> tuple[tuple[Cluster, ...], str | None]:
    """The clusters whose largest node can hold one pod of the job, and, when none can, why (then no cluster)."""
    clusters = tuple(snapshot.clusters)
    if snapshot.pod_gpus <= 0 or not clusters:
        return clusters, None
    sizes = snapshot.largest_node_gpus
    fit = tuple(c for c in clusters if (n := sizes.get(c.name)) is None or n >= snapshot.pod_gpus)
    if fit:
        return fit, None
    largest = max((sizes.get(c.name) or 0) for c in clusters)
    return (), f"each pod asks for {snapshot.pod_gpus} GPUs but the largest node of any allowed cluster has {largest}"


def reconcile(snapshot: Snapshot, settings: CoreSettings = CoreSettings()) -> Outcome:
    """One reconcile pass: progress, plan (committed), and the action, as described in the module doc."""
    needs, observed, now = snapshot.job, snapshot.observed, snapshot.now
    status = snapshot.status
    if deferred_for_capacity_only(status.commitment, now):
        status = replace(status, commitment=None)
    if not observed.exists:  # node fit decides where a workload may be created; one that exists is where it is
        fitting, unfit = node_fit(snapshot)
        if unfit is not None:
            pending = replace(status, phase=Phase.PENDING)
            return Outcome(False, False, None, Phase.PENDING, pending, None, now + settings.tick, unfit,
                           AtRisk.NO_NODE_FITS)  # fmt: skip
        snapshot = replace(snapshot, clusters=fitting)
    progress = observe(status.progress, observed, now, needs, settings, snapshot.watching_since)
    if observed.complete:
        return Outcome(False, False, None, Phase.SUCCEEDED, replace(status, progress=progress,
                       phase=Phase.SUCCEEDED, suspend_at=None), None, None, "the Job completed")  # fmt: skip
    if observed.failed:
        why = observed.failure_reason or "the Job failed"
        return Outcome(False, False, None, Phase.FAILED, replace(status, progress=progress, phase=Phase.FAILED,
                       suspend_at=None), None, None, why)  # fmt: skip
    running = observed.exists and not observed.suspended
    overhead = needs.overhead + settings.start_allowance if needs.interruptible else timedelta(0)
    left = remaining_seconds(progress, needs, running)
    at_risk: str | None = None
    if left <= EPS_SECONDS and observed.exists:
        # Overrun: the estimate said done but the Job runs on. Estimate what is left from the overrun so far.
        at_risk = AtRisk.OVERRUN
        overrun = max(progress.work_seconds - needs.duration.total_seconds(), 0.0)
        left = max(overrun, settings.overrun_floor.total_seconds(), 0.1 * needs.duration.total_seconds())
    job = Job(
        name=needs.name,
        remaining=timedelta(seconds=left),
        deadline=needs.deadline,
        interruptible=needs.interruptible,
        overhead=overhead,
        overhead_kwh=needs.overhead_kwh if needs.interruptible else 0.0,
        min_run=needs.min_run if needs.interruptible else timedelta(0),
        gpus=needs.gpus,
        watts_per_gpu=needs.watts_per_gpu,
        policy=Policy.IMMEDIATE if at_risk == AtRisk.OVERRUN else needs.policy,
        max_intensity_g_per_kwh=needs.max_intensity_g_per_kwh,
        running=running,
        started=progress.ran,
    )
    key = forecast_key(snapshot.forecasts)
    commitment = status.commitment
    plan: Plan | None = None
    replanned = False
    limit = needs.deadline - settings.margin
    held = (
        _holding(commitment, needs, progress, running, now, overhead.total_seconds(), limit, settings.extend_limit)
        if commitment is not None and settings.commit and at_risk is None
        else None
    )
    # (A commitment whose GPUs others have since reserved is re-planned, whatever the forecast says.)
    fits = held is not None and _gpus_free(held, snapshot, job.gpus)
    issue = issue_slot(snapshot.forecasts, held.zone, now) if held is not None else None
    # (One that waits while GPUs it could not have when planned have since been freed is weighed again too.)
    roomier = held is not None and _room_grew(held, snapshot, job.gpus)
    keep = held is not None and (
        (running and not needs.interruptible)  # it runs to completion whatever a re-plan would say
        or (fits and not roomier and _recently_checked(held, issue, settings))
    )
    if held is not None and not keep:  # the forecast is weighed against the commitment (the same one: kept)
        held = replace(held, checked_at=issue)
        keep = (
            fits
            and not roomier
            and (
                held.forecast_key == key
                or _same_forecasts(held.forecasts, snapshot.forecasts)
                or _change_too_small(held, snapshot, job, settings)
            )
        )
    if held is not None:
        commitment = held
    if keep:
        assert commitment is not None
        # (Not re-planned: the plan reports the gain it last reported on this commitment, NaN where not known.)
        template = Plan(
            job=needs.name, cluster=commitment.cluster, zone=commitment.zone, windows=(),
            planned_grams=commitment.planned_grams, baseline_grams=commitment.run_now_grams,
            latest_safe_start=_latest_safe_start(job, settings.margin), reason=Reason.OPTIMAL,
        )  # fmt: skip
        plan = _committed_plan(commitment, template, now)
    else:
        plan, commitment, replanned = _replan(snapshot, job, commitment, key, running, progress, settings, overhead)
        if commitment is not None:  # the gain this plan reports (a commitment kept unplanned keeps the last one)
            commitment = replace(
                commitment,
                planned_grams=plan.planned_grams,
                run_now_grams=plan.baseline_grams,
                fits_from=_fits_from(commitment, snapshot, job.gpus),
            )
    if plan.reason in (Reason.INFEASIBLE_DEADLINE, Reason.DEADLINE_PASSED) and at_risk is None:
        at_risk = AtRisk.INFEASIBLE if plan.reason is Reason.INFEASIBLE_DEADLINE else AtRisk.DEADLINE_PASSED
    if plan.reason is Reason.NO_CAPACITY and at_risk is None:
        at_risk = AtRisk.NO_CAPACITY
    if math.isnan(status.first_baseline_grams) and math.isfinite(plan.baseline_grams):
        status = replace(status, first_baseline_grams=plan.baseline_grams, first_planned_grams=plan.planned_grams)
    status = _with_progress(status, progress, commitment)
    create = not observed.exists and plan.cluster is not None and plan.reason is not Reason.NO_CAPACITY
    if create:  # the Job is created suspended in this pass; the decision is taken for it
        snapshot = replace(snapshot, observed=Observed(exists=True, suspended=True))
    outcome = _act(snapshot, status, plan, job, running, at_risk, replanned, settings)
    if snapshot.budget is not None:
        outcome = _budgeted(outcome, snapshot, snapshot.budget, progress, running, settings)
    return replace(outcome, create=create) if create else outcome


def slot_holding(series: IntensitySeries, now: datetime) -> datetime:
    """The start of the slot of `series`' grid that holds `now` (before the series' start too): where the aligned
    plans start, and the issue a forecast read at `now` belongs to."""
    step = series.resolution
    return series.start + step * math.floor((now - series.start) / step)


def issue_slot(forecasts: Mapping[str, IntensitySeries | None], zone: str | None, now: datetime) -> datetime | None:
    """`slot_holding` on the zone's forecast (the first zone's when `zone` has none); None without a forecast."""
    series = forecasts.get(zone) if zone else None
    if series is None:
        series = next((f for _, f in sorted(forecasts.items()) if f is not None), None)
    return slot_holding(series, now) if series is not None else None


def _recently_checked(commitment: Commitment, issue: datetime | None, settings: CoreSettings) -> bool:
    """Whether the commitment was weighed against the forecast of an issue less than `settings.recheck_every`
    before this pass's (`issue`)."""
    checked = commitment.checked_at
    if checked is None or issue is None or settings.recheck_every <= timedelta(0):
        return False
    return issue - checked < settings.recheck_every


def _gpus_free(commitment: Commitment, snapshot: Snapshot, gpus: int) -> bool:
    """Whether the committed cluster still has `gpus` free in every slot the committed windows use from now on, as
    the snapshot's clusters say (free GPUs by slot, from the start of the forecast slot holding now, net of the
    other jobs' reservations; past their end, or without them, the cluster's free count; None: unlimited). A
    commitment whose GPUs were taken is not kept unlooked at."""
    cluster = next((c for c in snapshot.clusters if c.name == commitment.cluster), None)
    if cluster is None:
        return False
    by_slot, now = cluster.free_gpus_by_slot, snapshot.now
    if by_slot is None:
        return (
            cluster.free_gpus is None or cluster.free_gpus >= gpus or not any(w.end > now for w in commitment.windows)
        )
    series = snapshot.forecasts.get(cluster.zone)
    if series is None:
        return False
    step, start = series.resolution, slot_holding(series, now)
    for w in commitment.windows:
        if w.end <= now:
            continue
        first = max(math.floor((max(w.start, now) - start) / step), 0)
        last = math.ceil((w.end - start) / step)
        for i in range(first, last):
            free = _free_in(cluster, i)
            if free is not None and free < gpus:
                return False
    return True


def _free_in(cluster: Cluster, i: int) -> int | None:
    """The cluster's free GPUs in slot `i` of the grid that starts at the forecast slot holding now: by slot where
    the snapshot says, else its free count (None: unlimited)."""
    by_slot = cluster.free_gpus_by_slot
    return by_slot[i] if by_slot is not None and 0 <= i < len(by_slot) else cluster.free_gpus


def _first_fit(snapshot: Snapshot, gpus: int, until: datetime) -> datetime:
    """The start of the first forecast slot, from the one holding now and before `until`, in which some cluster has
    `gpus` GPUs free; `until` where none has."""
    now, first = snapshot.now, until
    for cluster in snapshot.clusters:
        series = snapshot.forecasts.get(cluster.zone)
        if series is None:
            continue
        step, start = series.resolution, slot_holding(series, now)
        i = 0
        while start + i * step < first:
            free = _free_in(cluster, i)
            if free is None or free >= gpus:
                first = start + i * step
                break
            i += 1
    return first


def _fits_from(commitment: Commitment, snapshot: Snapshot, gpus: int) -> datetime | None:
    """What `Commitment.fits_from` records: `_first_fit` up to the commitment's next start, or None without one or
    where the GPUs are free from the slot holding now (no earlier room can appear, and the status does not change
    from one slot to the next)."""
    until = _next_start(commitment, snapshot.now)
    if until is None:
        return None
    first = _first_fit(snapshot, gpus, until)
    return first if first > snapshot.now else None


def _room_grew(commitment: Commitment, snapshot: Snapshot, gpus: int) -> bool:
    """Whether a waiting job's GPUs are now free in a slot before the first in which they were free when its
    commitment was last weighed (`fits_from`): it could start earlier than it was planned to."""
    before = commitment.fits_from
    if before is None or _next_start(commitment, snapshot.now) is None:
        return False
    return _first_fit(snapshot, gpus, before) < before


def recheck_at(commitment: Commitment | None, settings: CoreSettings) -> datetime | None:
    """The first moment the commitment may be weighed against a newly issued forecast again (None: any pass)."""
    if commitment is None or commitment.checked_at is None or settings.recheck_every <= timedelta(0):
        return None
    return commitment.checked_at + settings.recheck_every


def _with_progress(status: CoreStatus, progress: Progress, commitment: Commitment | None) -> CoreStatus:
    """`replace(status, progress=progress, commitment=commitment)`, constructed (every pass makes one)."""
    return CoreStatus(
        progress=progress, commitment=commitment, suspend_at=status.suspend_at, announced_at=status.announced_at,
        phase=status.phase, first_baseline_grams=status.first_baseline_grams,
        first_planned_grams=status.first_planned_grams,
    )  # fmt: skip


def _budgeted(
    outcome: Outcome,
    snapshot: Snapshot,
    facts: BudgetFacts,
    progress: Progress,
    running: bool,
    settings: CoreSettings,
) -> Outcome:
    """The pass's decision under the budgets' verdict: a held (re)start is not made (Waiting, or Suspended if it
    ran before; no chunk began: `progress` is the progress observed before the resume); a running job the hold
    may suspend (interruptible, and the budget suspends running jobs) is suspended at once; any other running job
    finishes. An overrunning job's remaining time is a guess (planned as long again as it has overrun): it is
    admitted one `overrun_floor` at a time rather than held for ever on a guess larger than the budget."""
    plan, needs, now = outcome.plan, snapshot.job, snapshot.now
    if plan is None or outcome.phase in (Phase.SUCCEEDED, Phase.FAILED):
        return outcome
    windows = plan.windows
    if outcome.at_risk == AtRisk.OVERRUN and windows:
        w = windows[0]
        windows = (RunWindow(w.start, min(w.end, max(w.start, now) + settings.overrun_floor), w.mean_g_per_kwh),)
    series = snapshot.forecasts.get(plan.zone) if plan.zone else None
    pue = facts.pue_by_cluster.get(plan.cluster, facts.default_pue) if plan.cluster else facts.default_pue
    said = budget_verdict(
        facts,
        job=needs.name,
        windows=[(w.start, w.end, w.mean_g_per_kwh) for w in windows],
        gpus=needs.gpus,
        watts=needs.watts_per_gpu,
        pue=pue,
        g_per_kwh=series.at(now) if series is not None else None,
        interruptible=needs.interruptible,
        resuming=outcome.resume,
        running=running,
        latest_safe_start=plan.latest_safe_start,
        now=now,
    )
    hold = said.hold
    if hold is None or (running and not (hold.suspend_running and needs.interruptible)):
        return replace(outcome, budget=said)  # not held; or running, and it finishes
    phase = Phase.SUSPENDED if running or outcome.phase is Phase.SUSPENDED else Phase.WAITING
    status = outcome.status
    if outcome.resume:  # no chunk began
        status = replace(status, progress=progress)
    status = replace(status, phase=phase, suspend_at=None, announced_at=None)
    return replace(outcome, resume=False, suspend=running, announce_suspend_at=None, phase=phase, status=status,
                   transition_at=hold.until, why=said.message, budget=said,
                   budget_held=outcome.resume or hold.until_raised)  # fmt: skip


def _change_too_small(commitment: Commitment, snapshot: Snapshot, job: Job, settings: CoreSettings) -> bool:
    """Whether the forecast changed too little since the commitment for any re-plan to beat it by the threshold
    (then re-planning is skipped: less work). Nearly the same answer: where do no harm declines the fresh deferral,
    a re-plan could still end an interruptible job's windows (running now forecast cheaper by less than the
    threshold, or a forecast without shown skill, `trusted_skill`), which the skip leaves to the next re-check.
    Measured on realistic forecasts: 0.870 of the optimum with the skip against 0.869 without (session 14; before
    `trusted_skill`, 0.856 against 0.834, docs/simulator.md)."""
    cluster = next((c for c in snapshot.clusters if c.name == commitment.cluster), None)
    pue = cluster.pue if cluster else 1.0
    bound = _change_bound(commitment, snapshot.forecasts, job.power_kw, pue)
    if not math.isfinite(bound):
        return False
    if bound == 0.0:
        return True
    forecast = snapshot.forecasts.get(commitment.zone or "")
    committed = windows_grams(_clipped(commitment.windows, snapshot.now), forecast, job.power_kw, pue)
    if not math.isfinite(committed):
        return False
    threshold = max(settings.commit_gain * committed, max(snapshot.forecast_error_g_per_kwh, 0.0) * _energy_kwh(job))
    return bound <= threshold


def _latest_safe_start(job: Job, margin: timedelta) -> datetime:
    overhead = timedelta(0) if job.running or not job.started else job.overhead
    return job.deadline - job.remaining - overhead - margin


def _with_cycle_penalty(job: Job, snapshot: Snapshot, error: float) -> Job:
    """The job as planned: with an uncertain forecast, each extra chunk must also gain more than the forecast's
    error for a slot over a minimum chunk's energy (planned as extra energy per cycle, priced at the slot's
    intensity), so that noise in the forecast does not buy suspensions."""
    if error <= 0 or not job.interruptible:
        return job
    series = next((snapshot.forecasts.get(c.zone) for c in snapshot.clusters), None)
    if series is None or len(series) == 0:
        return job
    gaps = np.isnan(series.values)
    if gaps.all():
        return job
    # (With no gap, np.nanmean is np.mean: the same sum and division, computed here without its wrappers.)
    values = series.values
    mean = float(np.nanmean(values)) if gaps.any() else float(np.add.reduce(values) / values.shape[0])
    if not mean > 0:
        return job
    chunk_hours = max(job.min_run, timedelta(minutes=15)).total_seconds() / 3600.0
    penalty_kwh = error * job.power_kw * chunk_hours / mean
    return replace(job, overhead_kwh=job.overhead_kwh + penalty_kwh)


def _replan(
    snapshot: Snapshot,
    job: Job,
    commitment: Commitment | None,
    key: tuple[object, ...],
    running: bool,
    progress: Progress,
    settings: CoreSettings,
    overhead: timedelta,
) -> tuple[Plan, Commitment | None, bool]:
    """A fresh plan, kept only where it beats the committed one by the threshold (or the committed one no longer
    holds the work); do no harm: deferring needs a forecast gain above the forecast's expected error."""
    now, needs = snapshot.now, snapshot.job
    clusters = list(snapshot.clusters) or [Cluster(name="local", zone="local")]
    error = max(snapshot.forecast_error_g_per_kwh, 0.0) * settings.harm_factor
    chunk_error = max(snapshot.slot_error_g_per_kwh, 0.0) * settings.chunk_factor
    planned = _with_cycle_penalty(job, snapshot, chunk_error)
    if settings.skip_kept_replans and commitment is not None and settings.commit:
        surely = _surely_kept(snapshot, job, planned, commitment, key, running, progress, settings, overhead, error)
        if surely is not None:
            return surely
    fresh = _aligned_plan(planned, clusters, snapshot.forecasts, now, settings.margin)
    declined = False  # do no harm replaced a deferring plan by running now
    if (
        settings.do_no_harm
        and job.policy is Policy.OPTIMAL
        and fresh.reason is Reason.OPTIMAL
        and _defers(fresh, now, running)
    ):
        gain, threshold = _plan_gain_per_kwh(fresh, job), error
        skill = snapshot.forecast_skill
        moved = _moved_seconds(fresh, now, job)
        if (
            settings.harm_on_moved
            and snapshot.forecast_error_for is not None
            and _trusted(skill, settings)
            and 0 < moved < _run_seconds(job)
        ):
            # A plan bets only on the run time it moves out of running now's block (the rest of the run is the same
            # either way): their forecast difference per kWh moved, against the forecast's error for runs of that
            # length. For an interruptible job's scattered chunks, the error of one run as long as all of them is
            # the cautious side (a contiguous run's error averages out least).
            # Only for a forecast whose error is modelled or that has shown skill (`trusted_skill`): persistence's
            # gains, scored this way without that bar, did not come true often enough (docs/simulator.md).
            gain *= _run_seconds(job) / moved
            threshold = max(snapshot.forecast_error_for(timedelta(seconds=moved)), 0.0) * settings.harm_factor
        # A gain above the forecast's expected error, from a forecast that has lately shown skill (when measured),
        # and, for the first deferral of a job that cannot be interrupted, on the forecast anchored to the newest
        # measurement too (an interruptible job re-plans on the next pass anyway: a veto there only delays it).
        skilled = skill is None or skill > settings.min_skill
        first_bet = gain > threshold and skilled and commitment is None and not job.interruptible
        if first_bet and snapshot.latest_actual:
            gain = min(gain, gain * _anchored_share(fresh, job, snapshot, settings))
        unchecked = (fresh.zone or "") not in snapshot.latest_actual and snapshot.forecast_error_g_per_kwh > 0
        if first_bet and gain > threshold and unchecked:
            # (Said next to the plan: a bet no later re-plan takes back, made without the check that the forecast
            # is right now.)
            fresh = replace(fresh, flags=fresh.flags | {Flag.UNANCHORED})
        if not (gain > threshold and skilled):
            at_once = _aligned_plan(_run_now(job), clusters, snapshot.forecasts, now, settings.margin)
            if at_once.reason is not Reason.NO_CAPACITY:  # (running now may not fit: others hold the GPUs)
                # Labelled as such: the job asked for Optimal, and the user should read why it runs now (a gain
                # within the error, or one from a forecast whose recent gains did not come true).
                why = Reason.WITHIN_ERROR if gain <= threshold else Reason.WITHOUT_SKILL
                fresh, declined = replace(at_once, reason=why), True
    remaining = job.remaining.total_seconds()
    if commitment is None or not settings.commit:
        return fresh, _commitment_from(fresh, now, key, remaining, snapshot.forecasts), True
    holds = _shortfall(commitment, needs, progress, running, now, overhead.total_seconds()) <= 1.0
    # A job that cannot be interrupted and waits for a committed start: running now because do no harm declined
    # the fresh deferral is an alternative like any other, and replaces the commitment only when it beats it by
    # the threshold below. The gate asks whether to leave running now for a deferral; once a deferral is committed,
    # a fresh forecast whose best deferral gains less than its error says nothing reliable against the committed
    # start either, and starting now, for good, would pick a moment nobody chose (neither at arrival nor the
    # planned start). An interruptible job's committed windows are kept the same way against a deferral declined
    # for its gain (not for the forecast's skill), but only while the fresh forecast does not put running now below
    # them (`needed` is 0: any forecast gain of running now ends them) and only from a forecast that declares its
    # error or has shown skill (`trusted_skill`); otherwise the declined plan stands, as do no harm asks. Without this,
    # each hourly re-check was a new chance for a gain that narrows as the good hours come near to dip within the
    # error and end a bet half made (docs/simulator.md, session 14).
    keeps_windows = (
        declined
        and job.interruptible
        and fresh.reason is Reason.WITHIN_ERROR
        and _trusted(snapshot.forecast_skill, settings)
    )
    comparable = (
        fresh.reason in (Reason.OPTIMAL, Reason.THRESHOLD) or (declined and not job.interruptible) or keeps_windows
    )
    if not holds or not comparable:
        return fresh, _commitment_from(fresh, now, key, remaining, snapshot.forecasts), True
    cluster = next((c for c in clusters if c.name == commitment.cluster), None)
    forecast = snapshot.forecasts.get(commitment.zone or "") if commitment.zone else None
    committed_grams = windows_grams(
        _clipped(commitment.windows, now), forecast, job.power_kw, cluster.pue if cluster else 1.0
    )
    gain = committed_grams - fresh.planned_grams
    energy = _energy_kwh(job)
    needed = 0.0 if keeps_windows else max(settings.commit_gain * committed_grams, error * energy)
    if math.isfinite(gain) and gain > needed:
        return fresh, _commitment_from(fresh, now, key, remaining, snapshot.forecasts), True
    kept = replace(commitment, forecast_key=key, forecasts=dict(snapshot.forecasts),
                   checked_at=issue_slot(snapshot.forecasts, commitment.zone, now))  # fmt: skip
    if declined and math.isfinite(committed_grams):
        # The plan followed is the committed one: it reports the committed windows' emissions on this forecast,
        # not running now's (with those, planned = run now, and the next pass took the kept start for a deferral
        # that saves nothing, `deferred_for_capacity_only`, and dropped it).
        fresh = replace(fresh, planned_grams=committed_grams, reason=Reason.OPTIMAL)
    return _committed_plan(kept, fresh, now), kept, False


def _trusted(skill: float | None, settings: CoreSettings) -> bool:
    """Whether the forecast is trusted as one that declares its error: its skill is not measured (a model that
    declares its error), or it has shown more than `trusted_skill`."""
    return skill is None or skill > settings.trusted_skill


def _anchored_share(plan: Plan, job: Job, snapshot: Snapshot, settings: CoreSettings) -> float:
    """The plan's gain over running the remaining work now in one block, on the forecasts anchored to the newest
    measurement, as a share of the same gain on the forecasts as issued (1 where nothing is anchored or either gain
    is not known, or the issued one is not positive)."""
    anchored_forecasts = anchored(snapshot.forecasts, snapshot.latest_actual, snapshot.now, settings.anchor_per_hour)
    if anchored_forecasts is snapshot.forecasts or not plan.zone:
        return 1.0
    now = snapshot.now
    cluster = next((c for c in snapshot.clusters if c.name == plan.cluster), None)
    pue = cluster.pue if cluster else 1.0
    block, windows = [(now, now + job.remaining)], _clipped(plan.windows, now)

    def gain(forecasts: Mapping[str, IntensitySeries | None]) -> float:
        series = forecasts.get(plan.zone or "")
        return windows_grams(block, series, job.power_kw, pue) - windows_grams(windows, series, job.power_kw, pue)

    issued, on_anchored = gain(snapshot.forecasts), gain(anchored_forecasts)
    return on_anchored / issued if issued > 0 and math.isfinite(on_anchored) else 1.0


def _surely_kept(
    snapshot: Snapshot,
    job: Job,
    planned: Job,
    commitment: Commitment,
    key: tuple[object, ...],
    running: bool,
    progress: Progress,
    settings: CoreSettings,
    overhead: timedelta,
    error: float,
) -> tuple[Plan, Commitment, bool] | None:
    """`_replan`'s answer when bounds on the fresh plan (planning.single.optimal_bounds) prove that it keeps the
    commitment: the fresh plan is Optimal, do no harm keeps it (its gain over running now, at worst the cheapest
    single block's, exceeds the error) and it cannot beat the committed windows by the threshold (it costs at
    least the cheapest slots holding the work). None when that is not proved (then the plan is made)."""
    now, needs = snapshot.now, snapshot.job
    clusters = tuple(snapshot.clusters)
    if len(clusters) != 1 or math.isnan(snapshot.status.first_baseline_grams) or job.remaining <= timedelta(0):
        return None
    skill = snapshot.forecast_skill
    if settings.do_no_harm and not (skill is None or skill > settings.min_skill):
        return None
    cluster = clusters[0]
    series = snapshot.forecasts.get(cluster.zone)
    if series is None or len(series) == 0 or job.deadline - settings.margin <= now:
        return None
    aligned = slot_holding(series, now)
    elapsed = now - aligned
    if aligned < series.start or elapsed < timedelta(0):
        return None
    # `_aligned_plan`: from `now` on a slot boundary, else from the slot's start with the part gone added.
    target = planned if elapsed == timedelta(0) else replace(planned, remaining=planned.remaining + elapsed)
    bounds = optimal_bounds(target, cluster, series, aligned, settings.margin)
    if bounds is None:
        return None
    if settings.do_no_harm:
        energy = _energy_kwh(job)
        if not (energy > 0 and math.isfinite(bounds.baseline_grams) and math.isfinite(bounds.upper_grams)):
            return None
        if not (bounds.baseline_grams - bounds.upper_grams) / energy > error:
            return None
    if _shortfall(commitment, needs, progress, running, now, overhead.total_seconds()) > 1.0:
        return None
    pue = cluster.pue if cluster.name == commitment.cluster else 1.0
    forecast = snapshot.forecasts.get(commitment.zone or "") if commitment.zone else None
    committed_grams = windows_grams(_clipped(commitment.windows, now), forecast, job.power_kw, pue)
    needed = max(settings.commit_gain * committed_grams, error * _energy_kwh(job))
    if not (math.isfinite(committed_grams) and committed_grams - bounds.lower_grams <= needed):
        return None
    kept = replace(commitment, forecast_key=key, forecasts=dict(snapshot.forecasts),
                   checked_at=issue_slot(snapshot.forecasts, commitment.zone, now))  # fmt: skip
    template = Plan(
        job=needs.name, cluster=cluster.name, zone=cluster.zone, windows=(), planned_grams=math.nan,
        baseline_grams=math.nan, latest_safe_start=_latest_safe_start(job, settings.margin), reason=Reason.OPTIMAL,
    )  # fmt: skip
    return _committed_plan(kept, template, now), kept, False


def _aligned_plan(
    job: Job,
    clusters: Sequence[Cluster],
    forecasts: Mapping[str, IntensitySeries | None],
    now: datetime,
    margin: timedelta,
) -> Plan:
    """`plan_job` on slots aligned to the forecast's own boundaries: planned from the start of the forecast slot
    holding `now`, with the part of that slot already gone added to the work (a plan that runs from the slot's
    start runs from `now` and ends at the same time; any other plan keeps that bit spare). Windows then start and
    end on the forecast's boundaries instead of sliding with `now` from one pass to the next."""
    series = next((forecasts.get(c.zone) for c in clusters if forecasts.get(c.zone) is not None), None)
    if series is None or len(series) == 0 or job.remaining <= timedelta(0):
        return plan_job(job, clusters, forecasts, now, margin)
    aligned = slot_holding(series, now)
    elapsed = now - aligned
    if elapsed <= timedelta(0) or aligned < series.start or job.deadline - margin <= now:
        return plan_job(job, clusters, forecasts, now, margin)
    if not job.interruptible and not job.running and job.policy is Policy.OPTIMAL:
        # One block: either it starts now, or at a later boundary of the forecast (exact, no padding needed).
        at_once = plan_job(_run_now(job), clusters, forecasts, now, margin)
        blocked = [replace(c, free_gpus_by_slot=(0, *(c.free_gpus_by_slot or ())[1:])) for c in clusters]
        later = plan_job(job, blocked, forecasts, aligned, margin)
        if (
            later.reason is Reason.OPTIMAL
            and later.windows
            and math.isfinite(later.planned_grams)
            # (starting now may not fit at all: other jobs' reservations, no free GPUs; then a later start wins)
            and (at_once.reason is Reason.NO_CAPACITY or not later.planned_grams >= at_once.planned_grams)
        ):
            return replace(
                later, baseline_grams=at_once.planned_grams, latest_safe_start=_latest_safe_start(job, margin)
            )
        return replace(at_once, reason=Reason.OPTIMAL) if at_once.reason is Reason.IMMEDIATE else at_once
    padded = replace(job, remaining=job.remaining + elapsed)
    plan = plan_job(padded, clusters, forecasts, aligned, margin)
    windows = tuple(RunWindow(max(w.start, now), w.end, w.mean_g_per_kwh) for w in plan.windows if w.end > now)
    return replace(plan, windows=windows, latest_safe_start=_latest_safe_start(job, margin))


def _current_end(plan: Plan, now: datetime) -> datetime | None:
    return next((w.end for w in plan.windows if w.start <= now < w.end), None)


def _next_start(plan: Plan | Commitment, now: datetime) -> datetime | None:
    """The start of the next window (in time order) that has not begun (None: none)."""
    return next((w.start for w in plan.windows if w.start > now), None)


def _act(
    snapshot: Snapshot,
    status: CoreStatus,
    plan: Plan,
    job: Job,
    running: bool,
    at_risk: str | None,
    replanned: bool,
    settings: CoreSettings,
) -> Outcome:
    needs, observed, now = snapshot.job, snapshot.observed, snapshot.now
    tick_wake = now + settings.tick

    def out(
        resume: bool,
        suspend: bool,
        announce: datetime | None,
        phase: Phase,
        new: CoreStatus,
        transition: datetime | None,
        why: str,
    ) -> Outcome:
        wake = tick_wake if transition is None else max(min(transition, tick_wake), now)
        return Outcome(resume, suspend, announce, phase, new, plan, wake, why, at_risk, replanned,
                       transition_at=transition)  # fmt: skip

    def settled(phase: Phase) -> CoreStatus:  # (constructed, not dataclasses.replace: every pass settles)
        return CoreStatus(
            progress=status.progress, commitment=status.commitment, suspend_at=None, announced_at=None, phase=phase,
            first_baseline_grams=status.first_baseline_grams, first_planned_grams=status.first_planned_grams,
        )  # fmt: skip

    if plan.reason is Reason.NO_CAPACITY and not running:
        return out(False, False, None, Phase.PENDING, settled(Phase.PENDING), None,
                   "no cluster has enough GPUs")  # fmt: skip
    must_run = (
        at_risk is not None
        or plan.reason is Reason.DONE
        or plan.runs_at(now)
        or now >= plan.latest_safe_start
        or not plan.windows
    )
    if running and not needs.interruptible:
        return out(False, False, None, Phase.RUNNING, settled(Phase.RUNNING), None,
                   "running to completion (not interruptible)")  # fmt: skip
    if running:
        progress = status.progress
        end = _current_end(plan, now) if must_run else now
        if end is None:  # forced to run (latest safe start, overrun) with no planned end yet
            return out(False, False, None, Phase.RUNNING, settled(Phase.RUNNING), None,
                       "running")  # fmt: skip
        if progress.chunk_started_at is not None:
            end = max(end, progress.chunk_started_at + needs.min_run)  # every chunk runs at least min_run
        if end - now > needs.grace:
            return out(False, False, None, Phase.RUNNING, settled(Phase.RUNNING),
                       end - needs.grace, "running in a planned window")  # fmt: skip
        # The suspension is due within the grace period: announce it (once), suspend no earlier than grace later.
        announced = status.announced_at if status.suspend_at is not None else None
        if announced is None:
            announced = now
        suspend_at = max(end, announced + needs.grace)
        if now >= suspend_at:
            return out(False, True, None, Phase.SUSPENDED, settled(Phase.SUSPENDED),
                       _next_start(plan, now), "the planned window ended")  # fmt: skip
        new = replace(status, phase=Phase.RUNNING, suspend_at=suspend_at, announced_at=announced)
        return out(False, False, suspend_at, Phase.RUNNING, new, suspend_at, "running; suspension announced")
    if must_run and observed.exists:
        new = replace(
            status, progress=resumed(status.progress, now), phase=Phase.RUNNING, suspend_at=None, announced_at=None
        )
        end = _current_end(plan, now)
        transition = None if end is None else end - needs.grace
        return out(True, False, None, Phase.RUNNING, new, transition, "a planned window began")
    phase = Phase.SUSPENDED if status.progress.ran else Phase.WAITING
    nxt = _next_start(plan, now)
    transition = plan.latest_safe_start if nxt is None else min(nxt, max(plan.latest_safe_start, now))
    return out(False, False, None, phase, settled(phase), transition,
               "waiting for a cleaner window")  # fmt: skip
