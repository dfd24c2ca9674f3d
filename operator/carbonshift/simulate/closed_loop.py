"""The closed loop: one job driven through the operator's decision core (carbonshift.domain.core) over a trace.

At every point where the operator would decide (every tick, 5 minutes by default, and every transition the core
asks to be woken for), the forecast model issues a forecast at that moment (`model.forecast(actual, now,
horizon)`), the core reconciles, and its actions are applied to a simulated workload that behaves like the real
one: a resumed Job's pods start `start_delay` later, the first `overhead` of every resumed chunk of a job that ran
before does no work (restoring the checkpoint), the job completes when its true work reaches its duration, and
the operator only learns what happened at its next pass. Emissions are charged on the ACTUAL intensity for the
time the pods ran (overhead included), plus `overhead_kwh` per resume.

Speed: forecasts of every bundled model change only when the issue time enters a new forecast slot, and the
core's decision does not change between ticks when neither its inputs nor a planned transition do. With
`skip_quiet_ticks` (the default) the loop therefore jumps from a decision to the first tick of the next forecast
slot (or, while the core keeps its commitment without looking at newer forecasts, `CoreSettings.recheck_every`,
of the first slot it will look again: `core.recheck_at`), the next wake the core asked for, or the next change of
the workload (pods starting, the job completing), or the pass after one whose commitment the core will drop
(`deferred_for_capacity_only`), whichever comes first. `tests/unit/test_core.py` and
`tests/simulate/test_closed_loop_skips.py` check that this gives the same outcome as calling the core at every tick
(with `recheck_every` 0 the core weighs the forecast at every pass, and a pass within a slot may decide differently
from the slot's first: the skip is then close, not exact). The engine also sets `CoreSettings.skip_kept_replans`
(re-plans proved to keep the commitment are not computed; `Settings.fast`), which
`tests/simulate/test_closed_loop_skips.py` checks against the plain path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import partial

import numpy as np

from carbonshift.domain import forecast_skill
from carbonshift.domain.core import (
    CoreSettings,
    CoreStatus,
    JobNeeds,
    Outcome,
    Snapshot,
    deferred_for_capacity_only,
    recheck_at,
    reconcile,
)
from carbonshift.domain.forecasting import ForecastModel
from carbonshift.domain.lifecycle import Accounting, Observed, Phase, decide, remaining
from carbonshift.domain.planning import Cluster, Job, plan_job
from carbonshift.domain.series import FloatArray, IntensitySeries

WEEK = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class LoopSettings:
    tick: timedelta = timedelta(minutes=5)
    start_delay: timedelta = timedelta(seconds=30)
    skip_quiet_ticks: bool = True
    max_passes: int = 200_000


@dataclass(frozen=True, slots=True)
class LoopResult:
    """What happened to one job in the closed loop."""

    windows: tuple[tuple[datetime, datetime], ...]  # when its pods ran (overhead included)
    grams: float
    energy_kwh: float
    finish: datetime
    resumes: int  # chunks that paid the overhead
    passes: int  # core calls
    credited_work_seconds: float  # the work the operator's status credits at the end
    announced_ahead: tuple[float, ...]  # for each suspension, seconds between its announcement and the suspension
    min_chunk_seconds: float  # the shortest chunk that was suspended (inf if none)


def _view(model: ForecastModel, actual: IntensitySeries) -> FloatArray:
    """The model's forecast of the whole trace: its `noisy_view`, or, for a model without one, the forecasts it
    issues at each midnight for the day ahead, end to end."""
    try:
        return np.asarray(model.noisy_view(actual), dtype=np.float64)
    except (NotImplementedError, ValueError):
        pass
    view = np.full(len(actual), np.nan)
    day = timedelta(days=1)
    moment = actual.start
    while moment < actual.end:
        issued = model.forecast(actual, moment, day)
        first = actual.index_of(issued.start)
        count = min(len(issued), len(actual) - first)
        if count > 0 and first >= 0:
            view[first : first + count] = issued.values[:count]
        moment += day
    return view


class ErrorEstimate:
    """The forecast's expected error at the scale of a decision: over the week before `moment` (causal), the mean
    absolute error of the model's forecast averaged over runs of `length` (a job's remaining run time). White noise
    averages out over a long run, errors that persist for hours do not; 0 for the oracle."""

    def __init__(self, model: ForecastModel, actual: IntensitySeries) -> None:
        self.start = actual.start
        self.step = actual.resolution_seconds
        self.width = int(WEEK.total_seconds() // self.step)
        self.oracle = model.is_oracle
        self._at: dict[tuple[int, int], float] = {}
        if self.oracle:
            self.diff: FloatArray = np.zeros(len(actual))
            return
        diff = _view(model, actual) - actual.values
        self.diff = diff
        self.cumulative = np.concatenate(([0.0], np.cumsum(np.nan_to_num(diff, nan=0.0))))
        self.counts = np.concatenate(([0], np.cumsum(~np.isnan(diff))))
        first = np.flatnonzero(~np.isnan(diff))
        self.first = int(first[0]) if first.size else len(actual)

    def at(self, moment: datetime, length: timedelta = timedelta(hours=1)) -> float:
        if self.oracle:
            return 0.0
        n = self.diff.shape[0]
        index = min(max(math.floor((moment - self.start).total_seconds() / self.step), 0), n)
        # The estimate depends on `moment` only through its slot and on `length` only through its slots: kept per
        # (slot, slots), shared by the passes of every job in that slot whose run time rounds to as many slots.
        key = (index, round(length.total_seconds() / self.step))
        cached = self._at.get(key)
        if cached is None:
            if len(self._at) >= 1 << 18:
                self._at.clear()
            cached = self._at[key] = self._estimate(index, length)
        return cached

    def _estimate(self, index: int, length: timedelta) -> float:
        n = self.diff.shape[0]
        lo = max(index - self.width, self.first)
        if index - lo < self.width // 2:  # less than half a week of history: use the first week there is
            lo, index = self.first, min(self.first + self.width, n)
        span = max(1, min(round(length.total_seconds() / self.step), max(index - lo, 1)))
        if index - lo < span:
            return 0.0
        sums = self.cumulative[lo + span : index + 1] - self.cumulative[lo : index + 1 - span]
        counts = self.counts[lo + span : index + 1] - self.counts[lo : index + 1 - span]
        valid = counts > 0
        if valid.all():  # (no gap: the same values as the selection below, without copying them; np.mean's sum)
            return float(np.add.reduce(np.abs(sums / counts)) / sums.shape[0])
        if not valid.any():
            return 0.0
        return float(np.mean(np.abs(sums[valid] / counts[valid])))


class SkillEstimate:
    """How much of what the forecast promises has come true lately, for a decision of a given shape: a backtest of
    the model's own forecasts over the past `history` (all causal: only decisions whose window has ended by
    `moment`, so the actuals they are scored on were known then).

    For a job of `length` with `window` to its deadline, each backtest issue time t_k (every `stride`) takes the
    forecast the model issued at t_k and makes the decision the planner would (non-interruptible: the cheapest
    start of one block; interruptible: the cheapest slots), and records the forecast gain g_k over running at
    once (g/kWh) and the gain r_k the actuals then gave. The skill is the slope of realized on promised gain
    (sum r g / sum g^2) less `z` standard errors: the expected share of a promised gain that comes true, counted
    low. A forecast with no shown skill (or no history yet) gives 0 or less, and the core then runs at once.
    The math is carbonshift.domain.forecast_skill's, shared with the operator's `ForecastRecord.skill`."""

    def __init__(
        self,
        model: ForecastModel,
        actual: IntensitySeries,
        *,
        history: timedelta = forecast_skill.HISTORY,
        stride: timedelta = forecast_skill.STRIDE,
        z: float = forecast_skill.Z,
    ) -> None:
        self.model = model
        self.actual = actual
        self.oracle = model.is_oracle
        self.history = history
        self.stride = stride
        self.z = z
        self.step = actual.resolution
        self._samples: dict[tuple[int, int, int, bool], tuple[float, float] | None] = {}
        self._skills: dict[tuple[int, int, int, bool], tuple[float, float]] = {}

    def _sample(self, issue: int, length: int, window: int, interruptible: bool) -> tuple[float, float] | None:
        key = (issue, length, window, interruptible)
        if key in self._samples:
            return self._samples[key]
        actual = self.actual
        at = actual.start + self.stride * issue
        first = actual.index_of(at)
        out: tuple[float, float] | None = None
        if first >= 0 and first + window <= len(actual) and 0 < length < window:
            issued = self.model.forecast(actual, at, self.step * window)
            out = forecast_skill.sample(
                issued.values[:window], actual.values[first : first + window], length, interruptible
            )
        self._samples[key] = out
        return out

    def at(self, moment: datetime, length: timedelta, window: timedelta, interruptible: bool) -> tuple[float, float]:
        """(skill, error) for this decision shape at `moment`: the lower bound of the realized share of promised
        gains, and the spread (g/kWh) of the realized gain around skill x promised."""
        if self.oracle:
            return 1.0, 0.0
        n_len, n_win = forecast_skill.shape_slots(length, window, self.step)  # shapes rounded to whole hours
        if n_len >= n_win:
            return 1.0, 0.0  # nothing to choose: no forecast is acted on
        last = math.floor((moment - self.step * n_win - self.actual.start) / self.stride)
        key = (last, n_len, n_win, interruptible)
        if key in self._skills:
            return self._skills[key]
        count = int(self.history / self.stride)
        pairs = [self._sample(k, n_len, n_win, interruptible) for k in range(max(last - count + 1, 0), last + 1)]
        result = forecast_skill.skill_of(pairs, self.z)
        self._skills[key] = result
        return result


def _slot_error(
    model: ForecastModel,
    actual: IntensitySeries,
    error: ErrorEstimate | None,
    t: datetime,
    deadline: datetime,
    step: timedelta,
) -> float:
    """The forecast's expected error for the difference an extra chunk bets on (g/kWh): for a model that declares
    its error by lead time (realistic), the std of the difference between two slots a few hours apart at the
    middle of the job's window, x the trace's mean; otherwise the measured one-slot error."""
    if error is None:
        return 0.0
    params_for = getattr(model, "params_for", None)
    params = params_for(actual) if callable(params_for) else getattr(model, "params", None)
    difference = getattr(params, "difference_sigma", None)
    if callable(difference) and not model.is_oracle:
        lead = max(deadline - t, timedelta(0)) / 2
        key = (params, lead)  # (the parameters are a frozen dataclass: equal ones give equal sigmas)
        try:
            sigma = _DIFFERENCES.get(key)
        except TypeError:  # (parameters that cannot be hashed: not kept)
            return float(difference(lead, lead + DIFFERENCE_APART)) * _mean_of(actual)
        if sigma is None:
            if len(_DIFFERENCES) >= 1 << 16:
                _DIFFERENCES.clear()
            sigma = _DIFFERENCES[key] = float(difference(lead, lead + DIFFERENCE_APART))
        return sigma * _mean_of(actual)
    return error.at(t, step)


DIFFERENCE_APART = timedelta(hours=6)
_MEANS: dict[int, tuple[IntensitySeries, float]] = {}
_DIFFERENCES: dict[tuple[object, timedelta], float] = {}


def _mean_of(actual: IntensitySeries) -> float:
    entry = _MEANS.get(id(actual))
    if entry is None or entry[0] is not actual:
        entry = (actual, actual.mean())
        _MEANS[id(actual)] = entry
    return entry[1]


class Workload:
    """The Job as a cluster runs it: suspended or resumed, pods starting late, overhead lost after resumes."""

    def __init__(self, duration: timedelta, overhead: timedelta, start_delay: timedelta) -> None:
        self.duration = duration.total_seconds()
        self.overhead = overhead.total_seconds()
        self.start_delay = start_delay
        self.exists = False
        self.suspended = True
        self.pods_at: datetime | None = None  # when the current pods start (or started)
        self.lost_left = 0.0
        self.work = 0.0
        self.ran = False
        self.clock: datetime | None = None
        self.finished_at: datetime | None = None
        self.intervals: list[tuple[datetime, datetime]] = []
        self.resume_starts: list[datetime] = []

    @property
    def running(self) -> bool:
        return self.exists and not self.suspended and self.finished_at is None

    def completion_time(self) -> datetime | None:
        if not self.running or self.pods_at is None or self.clock is None:
            return None
        begin = max(self.clock, self.pods_at)
        return begin + timedelta(seconds=self.lost_left + (self.duration - self.work))

    def advance(self, t: datetime) -> None:
        if self.clock is not None and self.running and self.pods_at is not None and t > self.pods_at:
            begin = max(self.clock, self.pods_at)
            span = (t - begin).total_seconds()
            if span > 0:
                lost = min(self.lost_left, span)
                self.lost_left -= lost
                self.work += span - lost
                if self.work >= self.duration - 1e-6:
                    self.work = self.duration
                    self.finished_at = t
                    self._close(t)
        self.clock = t

    def resume(self, t: datetime) -> None:
        self.suspended = False
        self.pods_at = t + self.start_delay
        self.lost_left = self.overhead if self.ran else 0.0
        if self.ran:
            self.resume_starts.append(self.pods_at)
        self.ran = True

    def suspend(self, t: datetime) -> None:
        self._close(t)
        self.suspended = True
        self.pods_at = None

    def _close(self, t: datetime) -> None:
        if self.pods_at is not None and t > self.pods_at:
            self.intervals.append((self.pods_at, t))

    def observed(self, t: datetime) -> Observed:
        if not self.exists:
            return Observed(exists=False)
        if self.finished_at is not None:
            return Observed(exists=True, suspended=False, complete=True, completed_at=self.finished_at)
        ready = 1 if self.running and self.pods_at is not None and self.pods_at <= t else 0
        return Observed(
            exists=True,
            suspended=self.suspended,
            active_pods=0 if self.suspended else 1,
            ready_pods=ready,
            desired_pods=1,
            running_since=self.pods_at if ready else None,
        )


class LegacyLoop:
    """The operator's decisions before the decision core (kept to measure what the core fixed): run time accrues
    whenever a pod is ready (overhead included), the planner re-plans from `now` on every pass with no
    commitment, and `lifecycle.decide` acts on that plan."""

    def __init__(self) -> None:
        self.acc = Accounting()

    def __call__(self, snapshot: Snapshot, settings: CoreSettings) -> Outcome:
        needs, observed, now = snapshot.job, snapshot.observed, snapshot.now
        acc = self.acc
        finished = observed.complete or observed.failed
        running = observed.exists and not observed.suspended and not finished
        working = running and observed.ready_pods > 0
        if working and acc.running_since is None:
            acc = acc.resumed(now)
        if not working and acc.running_since is not None:
            acc = acc.stopped(now) if finished or running else acc.suspended(now)
        self.acc = acc
        status = snapshot.status
        if finished:
            return Outcome(False, False, None, Phase.SUCCEEDED, status, None, None, "done")
        job = Job(
            name=needs.name,
            remaining=remaining(needs.duration, acc, now),
            deadline=needs.deadline,
            interruptible=needs.interruptible,
            overhead=needs.overhead if needs.interruptible else timedelta(0),
            min_run=needs.min_run if needs.interruptible else timedelta(0),
            gpus=needs.gpus,
            watts_per_gpu=needs.watts_per_gpu,
            policy=needs.policy,
            max_intensity_g_per_kwh=needs.max_intensity_g_per_kwh,
            running=running,
            started=acc.run_seconds > 0 or acc.running_since is not None,
        )
        plan = plan_job(job, list(snapshot.clusters), snapshot.forecasts, now, settings.margin, on_forecast_slots=False)
        create = not observed.exists
        seen = Observed(exists=True, suspended=True) if create else observed
        d = decide(plan, seen, now, interruptible=needs.interruptible, grace=needs.grace,
                   has_run=acc.run_seconds > 0 or acc.running_since is not None)  # fmt: skip
        return Outcome(d.resume, d.suspend, d.annotate_suspend_at, d.phase, status, plan,
                       min(d.next_transition or now + settings.tick, now + settings.tick), d.why, create=create,
                       transition_at=d.next_transition)  # fmt: skip


Core = Callable[[Snapshot, CoreSettings], Outcome]


def _next_tick_after(t: datetime, boundary: datetime, tick: timedelta) -> datetime:
    steps = max(1, math.ceil((boundary - t) / tick - 1e-9))
    return t + tick * steps


def run_job(
    needs: JobNeeds,
    arrival: datetime,
    actual: IntensitySeries,
    model: ForecastModel,
    cluster: Cluster,
    price: Callable[[datetime, datetime], float],
    core: CoreSettings,
    loop: LoopSettings,
    error: ErrorEstimate | None = None,
    core_fn: Core | None = None,
    skill: SkillEstimate | None = None,
) -> LoopResult:
    """Drive one job from `arrival` to completion. `price(begin, end)` gives the actual grams per kW over an
    interval (PUE included)."""
    work = Workload(needs.duration, needs.overhead if needs.interruptible else timedelta(0), loop.start_delay)
    status = CoreStatus()
    t = arrival
    step = actual.resolution
    power_kw = needs.gpus * needs.watts_per_gpu / 1000.0
    passes = 0
    forecast: IntensitySeries | None = None
    forecast_slot: int | None = None
    announced: dict[datetime, datetime] = {}
    announced_ahead: list[float] = []
    shortest = math.inf
    chunk_began: datetime | None = None
    last: Outcome | None = None
    skip = loop.skip_quiet_ticks and core_fn is None  # (the decisions before the core re-planned every tick)
    # The forecast's shown skill for this job's decision, from the backtest at its arrival (it changes slowly).
    shown, _ = (
        skill.at(arrival, needs.duration, needs.deadline - core.margin - arrival, needs.interruptible)
        if skill is not None
        else (None, None)
    )
    while passes < loop.max_passes:
        work.advance(t)
        slot = actual.index_of(t)
        if forecast is None or slot != forecast_slot or not skip:
            horizon = max(needs.deadline - t, timedelta(0)) + step
            forecast = model.forecast(actual, t, horizon)
            forecast_slot = slot
        # The provider's current value: the measured slot the pass is in (the oracle's forecast is that already).
        latest = (
            {}
            if model.is_oracle or not 0 <= slot < len(actual)
            else {cluster.zone: (actual.slot_start(slot), float(actual.values[slot]))}
        )
        snapshot = Snapshot(
            job=needs,
            status=status,
            observed=work.observed(t),
            now=t,
            clusters=(cluster,),
            forecasts={cluster.zone: forecast},
            forecast_error_g_per_kwh=error.at(t, needs.duration) if error is not None else 0.0,
            forecast_error_for=partial(error.at, t) if error is not None else None,
            watching_since=arrival,
            slot_error_g_per_kwh=_slot_error(model, actual, error, t, needs.deadline, step),
            forecast_skill=shown,
            latest_actual=latest,
        )
        out = (core_fn or reconcile)(snapshot, core)
        passes += 1
        last = out
        status = out.status
        if work.finished_at is not None or out.phase.value in ("Succeeded", "Failed"):
            break
        if out.create:
            work.exists = True  # the Job is created suspended, then acted on in the same pass
        if out.announce_suspend_at is not None and out.announce_suspend_at not in announced:
            announced[out.announce_suspend_at] = t
        if out.resume:
            work.resume(t)
            chunk_began = t
        elif out.suspend:
            first = min((a for a in announced.values()), default=t)
            announced_ahead.append((t - first).total_seconds())
            announced.clear()
            if chunk_began is not None:
                shortest = min(shortest, (t - chunk_began).total_seconds())
            work.suspend(t)
        elif out.announce_suspend_at is None:
            announced.clear()
        # When to decide next.
        nxt = t + loop.tick
        wake = out.next_wake
        if skip and not out.resume and not out.suspend:
            boundary = actual.slot_start(slot + 1)
            again = recheck_at(out.status.commitment, core)
            if again is not None and again > boundary:  # (the core keeps its commitment until then, unlooked at)
                later = actual.index_of(again)
                boundary = actual.slot_start(later if actual.slot_start(later) >= again else later + 1)
            # Only a forecast that never changes (the oracle's) makes the slot boundaries quiet. One exact for a day
            # (persistence) is not enough: the commitment may rest on an older issue that reached further ahead, and
            # the pass that weighs today's against it can re-plan (2-12 jobs in 211 differed on GB 2023).
            static = model.exact_view_horizon is None
            candidates = [] if static and out.plan is not None else [_next_tick_after(t, boundary, loop.tick)]
            if out.transition_at is not None:
                candidates.append(max(out.transition_at, t + timedelta(seconds=1)))
            if work.running and work.pods_at is not None and work.pods_at > t:
                candidates.append(_next_tick_after(t, work.pods_at, loop.tick))
            if out.announce_suspend_at is not None:
                candidates.append(t + loop.tick)
            if deferred_for_capacity_only(out.status.commitment, t + loop.tick):
                candidates.append(t + loop.tick)  # (the next pass drops the commitment and re-plans: not quiet)
            if candidates:
                nxt = min(candidates)
            elif static and work.running:
                nxt = needs.deadline + timedelta(days=365)  # nothing to decide before it completes (below)
            else:
                nxt = _next_tick_after(t, boundary, loop.tick)
        elif wake is not None and t < wake < nxt:
            nxt = wake
        done = work.completion_time()
        if done is not None and done < nxt:
            nxt = max(done, t + timedelta(seconds=1))
        t = nxt
    else:
        raise RuntimeError(f"job {needs.name}: the closed loop did not finish in {loop.max_passes} passes")
    work.advance(t)
    finish = work.finished_at or t
    intervals = tuple(work.intervals)
    grams = sum(price(b, e) for b, e in intervals) * power_kw
    if needs.overhead_kwh > 0:
        grams += sum(
            needs.overhead_kwh * price(s, s + step) / (step.total_seconds() / 3600.0) for s in work.resume_starts
        )
    energy = power_kw * sum((e - b).total_seconds() for b, e in intervals) / 3600.0
    energy += needs.overhead_kwh * len(work.resume_starts)
    credited = last.status.progress.work_seconds if last is not None else 0.0
    return LoopResult(
        windows=intervals,
        grams=grams,
        energy_kwh=energy,
        finish=finish,
        resumes=len(work.resume_starts),
        passes=passes,
        credited_work_seconds=credited,
        announced_ahead=tuple(announced_ahead),
        min_chunk_seconds=shortest,
    )


def with_grace(needs: JobNeeds, grace: timedelta) -> JobNeeds:
    return replace(needs, grace=grace)
