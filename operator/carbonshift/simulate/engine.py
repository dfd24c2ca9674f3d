"""The replay engine: a trace and a job mix through the real planner, accounted on the actual intensity.

For each policy and each job, at the job's arrival the forecast model issues a forecast (never the
actual future, unless the model or the policy is the oracle, which is then labelled as such), the
planner (carbonshift.domain.planning.plan_job) makes its plan once, and the plan's run windows are charged
on the ACTUAL intensity of the trace: grams = energy x PUE x actual gCO2e/kWh, slot by slot. Plans are
made once at arrival, as in Let's Wait Awhile; the operator re-plans every tick, which the planner's
property tests cover.

Policies:
- `run-now`: start at the job's nominal start and run to completion (the baseline of every saving).
- `threshold`: run while the forecast is at or below a threshold, forced by the latest safe start.
- `lowest-slot`: start in the slot with the lowest forecast that still lets the job finish (a naive
  rule many tools use), then run to completion.
- `lowest-window`: the contiguous window with the lowest forecast mean (non-interruptible).
- `optimal`: the planner's Optimal policy for a non-interruptible job.
- `optimal-interruptible`: the planner's Optimal policy, suspending where it pays (with the configured
  overhead per cycle and minimum chunk), for jobs that can be interrupted.
- `oracle`: `optimal-interruptible` planned on the actual future (perfect information). Labelled
  "oracle" everywhere it appears; an upper bound, not an achievable result.

Jobs whose window starts before the trace or ends after it cannot be accounted and are dropped (and
counted). Gaps in the actual trace are filled by linear interpolation for accounting only (counted).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import numpy as np

from carbonshift.domain import forecast_skill
from carbonshift.domain.forecasting import ForecastModel, OracleForecast, expected_error
from carbonshift.domain.planning import Cluster, Job, Plan, Policy, Reason, plan_job
from carbonshift.domain.series import FloatArray, IntensitySeries
from carbonshift.simulate.jobs import SimJob

POLICIES = (
    "run-now",
    "threshold",
    "lowest-slot",
    "lowest-window",
    "optimal",
    "optimal-interruptible",
    "oracle",
)
ORACLE_LABEL = "oracle (perfect information)"


class SimulationError(ValueError):
    """A simulation that cannot be run as asked (unknown policy, empty trace, no job inside the trace)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """How jobs are planned. `paper_quirks` reproduces Let's Wait Awhile exactly: every window (the
    run-now baseline's too) holds one extra slot past the deadline; see docs/reproduction.md."""

    overhead: timedelta = timedelta(0)
    overhead_kwh: float = 0.0
    min_run: timedelta = timedelta(0)
    margin: timedelta = timedelta(0)
    threshold_g_per_kwh: float | None = None
    pue: float = 1.0
    paper_quirks: bool = False
    # Closed loop (see simulate/closed_loop.py): the policies the operator runs (optimal, optimal-interruptible,
    # threshold) are driven through the decision core at every tick; "open" plans each job once at arrival.
    loop: str = "open"
    tick: timedelta = timedelta(minutes=5)
    start_delay: timedelta = timedelta(seconds=30)
    grace: timedelta = timedelta(minutes=2)
    commit_gain: float = 0.01
    recheck_every: timedelta = timedelta(hours=1)  # CoreSettings.recheck_every: a commitment meets new forecasts hourly
    do_no_harm: bool = True
    harm_factor: float = 1.5
    skill_gate: bool = True  # closed loop: defer only on a forecast that has shown skill lately (SkillEstimate)
    skill_z: float = forecast_skill.Z  # the skill is counted this many standard errors low
    # Closed loop: measure the skill of a model that declares its error too (realistic), as the operator does for
    # every provider's forecast (no provider declares its error: carbonshift.domain.forecast_trust). False: such a
    # model is trusted on its declared error alone.
    gate_declared: bool = False
    min_skill: float = 0.0
    legacy: bool = False  # closed loop with the decisions from before the core (to measure what it fixed)
    workers: int = 1  # closed loop: processes the jobs are split across (each job's loop is independent)
    # Closed loop speed-ups that change no decision (False: the plain path, kept as the reference the tests compare
    # against): re-plans proved to keep the commitment are not computed (CoreSettings.skip_kept_replans).
    fast: bool = True
    # Closed loop: visit only the ticks where something can change (False: every tick, the reference).
    skip_quiet_ticks: bool = True


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What happened to one job under one policy."""

    job: str
    windows: tuple[tuple[datetime, datetime], ...]
    grams: float
    baseline_grams: float
    energy_kwh: float
    finish: datetime
    deadline: datetime
    delay_hours: float
    cycles: int
    slack_hours: float
    claimed_baseline_grams: float = math.nan  # what the operator's receipt would price as run-now
    meetable: bool = True  # closed loop: slack of at least the pod start delay (else it cannot be met at all)

    @property
    def missed(self) -> bool:
        return self.finish > self.deadline


@dataclass(slots=True)
class PolicyResult:
    """A policy's totals over the job mix (means over seeds when the forecast is random)."""

    policy: str
    forecast: str
    oracle: bool
    emissions_kg: float
    energy_kwh: float
    deadline_misses: int
    mean_delay_h: float
    cycles: int
    jobs: int
    saved_pct_vs_run_now: float = math.nan
    outcomes: list[JobOutcome] = field(default_factory=list)
    loop: str = "open"
    optimum_saved_pct: float = math.nan  # perfect-information optimum of the same kind (interruptible or not)
    optimum_cycles: int = 0  # and its suspend/resume cycles
    unmeetable_jobs: int = 0  # closed loop: jobs with less slack than the pod start delay (not counted as misses)
    claimed_avoided_kg: float = math.nan  # closed loop: avoided emissions the receipts would claim
    true_avoided_kg: float = math.nan  # and the true ones (run-now on the actuals minus what was emitted)


@dataclass(slots=True)
class Report:
    """Everything a simulation run produced."""

    trace: str
    zone: str
    scenario: str
    forecast: str
    forecast_is_oracle: bool
    seeds: int
    jobs: int
    dropped: int
    interpolated_slots: int
    settings: Settings
    results: list[PolicyResult]
    actual: IntensitySeries
    loop: str = "open"

    def result(self, policy: str) -> PolicyResult:
        for r in self.results:
            if r.policy == policy:
                return r
        raise KeyError(policy)


class _Ledger:
    """Actual intensity as a cumulative integral, to charge any [start, end) exactly."""

    def __init__(self, actual: IntensitySeries) -> None:
        values = actual.values.astype(np.float64, copy=True)
        missing = np.isnan(values)
        self.interpolated = int(np.count_nonzero(missing))
        if missing.all():
            raise SimulationError(f"trace for zone {actual.zone} holds no values")
        if self.interpolated:
            known = np.flatnonzero(~missing)
            values[missing] = np.interp(np.flatnonzero(missing), known, values[known])
        self.values = values
        self.cumulative = np.concatenate(([0.0], np.cumsum(values)))
        self.start = actual.start
        self.step = actual.resolution_seconds

    def slot_sum(self, begin: datetime, end: datetime) -> float:
        """Integral of the intensity over [begin, end) in (gCO2e/kWh) x slots."""
        return self._position(end) - self._position(begin)

    def _position(self, moment: datetime) -> float:
        offset = (moment - self.start).total_seconds() / self.step
        index = min(max(math.floor(offset), 0), self.values.shape[0] - 1)
        return float(self.cumulative[index] + (offset - index) * self.values[index])

    def at(self, moment: datetime) -> float:
        offset = (moment - self.start).total_seconds() / self.step
        index = min(max(math.floor(offset), 0), self.values.shape[0] - 1)
        return float(self.values[index])


ProgressHook = Callable[[int], None]


def simulate(
    actual: IntensitySeries,
    jobs: Sequence[SimJob],
    policies: Sequence[str],
    forecast_models: Sequence[ForecastModel],
    *,
    settings: Settings = Settings(),
    trace_name: str = "",
    scenario: str = "",
    progress: ProgressHook | None = None,
) -> Report:
    """Replay `jobs` under each policy; with several forecast models (one per seed) results are averaged."""
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise SimulationError(f"unknown policy {', '.join(unknown)}; expected some of: {', '.join(POLICIES)}")
    if not forecast_models:
        raise SimulationError("at least one forecast model is needed")
    ledger = _Ledger(actual)
    step = actual.resolution
    kept = [j for j in jobs if j.arrival >= actual.start and j.deadline + _extra(j, settings, step) <= actual.end]
    if not kept:
        raise SimulationError(f"no job of the mix lies inside the trace ({actual.start} .. {actual.end})")
    threshold = settings.threshold_g_per_kwh
    if threshold is None:
        threshold = float(np.nanmedian(actual.values))
    settings = replace(settings, threshold_g_per_kwh=threshold)
    oracle_model = OracleForecast()
    forecast_is_oracle = all(m.is_oracle for m in forecast_models)
    ordered = ["run-now", *[p for p in policies if p != "run-now"]]
    results: list[PolicyResult] = []
    for policy in ordered:
        models: Sequence[ForecastModel] = [oracle_model] if policy in ("oracle", "run-now") else forecast_models
        mix = _paper_baseline_jobs(jobs, kept, actual, settings) if policy == "run-now" else kept
        runs = [_run_policy(policy, mix, actual, model, ledger, settings, progress) for model in models]
        results.append(_average(policy, runs, models))
    baseline = results[0].emissions_kg
    for r in results:
        r.saved_pct_vs_run_now = (1.0 - r.emissions_kg / baseline) * 100.0 if baseline > 0 else math.nan
    _optimum_figures(results, kept, actual, ledger, settings, baseline)
    closed = settings.loop == "closed" and not settings.paper_quirks
    for r in results:
        r.loop = "closed" if closed and r.policy in CLOSED_POLICIES else "open"
        if r.loop == "open":
            r.claimed_avoided_kg = math.nan
    if "run-now" not in policies:
        results = results[1:]
    return Report(
        trace=trace_name or actual.provider,
        zone=actual.zone,
        scenario=scenario,
        forecast=ORACLE_LABEL if forecast_is_oracle else forecast_models[0].name.split(" seed=")[0],
        forecast_is_oracle=forecast_is_oracle,
        seeds=len(forecast_models),
        jobs=len(kept),
        dropped=len(jobs) - len(kept),
        interpolated_slots=ledger.interpolated,
        settings=settings,
        results=results,
        actual=actual,
        loop="closed" if closed else "open",
    )


def _baseline_start(sim: SimJob, settings: Settings) -> datetime:
    """When running at once (the baseline of every saving) starts the job's pods: at its nominal start (its arrival)
    in the open loop; in the closed loop, `start_delay` later, as the loop starts every Job's pods: a plain Job
    created at arrival waits for its pods as long as the one carbonshift creates. (Without the delay, every job the
    closed loop runs at once was charged 30 s later than its baseline: -0.001 % "lost" on a Nordic year with
    persistence forecasts by jobs that did exactly what running at once does.)"""
    closed = settings.loop == "closed" and not settings.paper_quirks
    return sim.baseline_start + settings.start_delay if closed else sim.baseline_start


def _extra(sim: SimJob, settings: Settings, step: timedelta) -> timedelta:
    """The paper's extra slot past the deadline: for jobs planned from their arrival (scenario II), not for
    jobs announced ahead with a nominal start (scenario I), as in the paper's code."""
    return step if settings.paper_quirks and sim.nominal_start is None else timedelta(0)


def _paper_baseline_jobs(
    jobs: Sequence[SimJob], kept: list[SimJob], actual: IntensitySeries, settings: Settings
) -> list[SimJob]:
    """With paper quirks, a job announced ahead whose window opens before the trace but whose nominal run
    lies inside it stays in the run-now baseline (the paper's scenario I divides by all 365 nightly jobs)."""
    if not settings.paper_quirks:
        return kept
    inside = {id(j) for j in kept}

    def nominal_run_inside(j: SimJob) -> bool:
        return j.nominal_start is not None and actual.start <= j.nominal_start <= actual.end - j.duration

    return [j for j in jobs if id(j) in inside or nominal_run_inside(j)]


CLOSED_POLICIES = ("optimal", "optimal-interruptible", "threshold")
INTERRUPTIBLE_KIND = ("optimal-interruptible", "oracle", "threshold")


def _optimum_figures(
    results: list[PolicyResult],
    jobs: Sequence[SimJob],
    actual: IntensitySeries,
    ledger: _Ledger,
    settings: Settings,
    baseline_kg: float,
) -> None:
    """Each result's same-kind perfect-information optimum (planned once on the actuals, same overheads, minimum
    chunk and margin; open loop, since with perfect information re-planning changes nothing)."""
    if baseline_kg <= 0:
        return
    open_settings = replace(settings, loop="open")
    cache: dict[str, tuple[float, int]] = {}
    for r in results:
        if r.policy == "run-now":
            continue
        kind = "optimal-interruptible" if r.policy in INTERRUPTIBLE_KIND else "optimal"
        if kind not in cache:
            outcomes = _run_policy(kind, jobs, actual, OracleForecast(), ledger, open_settings, None)
            saved = (1.0 - sum(o.grams for o in outcomes) / 1000.0 / baseline_kg) * 100.0
            cache[kind] = (saved, sum(o.cycles for o in outcomes))
        r.optimum_saved_pct, r.optimum_cycles = cache[kind]


def _average(policy: str, runs: list[list[JobOutcome]], models: Sequence[ForecastModel]) -> PolicyResult:
    grams = [sum(o.grams for o in run) for run in runs]
    first = runs[0]
    oracle = all(m.is_oracle for m in models)
    label = ORACLE_LABEL if oracle else models[0].name.split(" seed=")[0]
    if policy == "run-now":
        label = "-"
        oracle = False
    claimed = [sum(o.claimed_baseline_grams - o.grams for o in run) for run in runs]
    true = [sum(o.baseline_grams - o.grams for o in run) for run in runs]
    return PolicyResult(
        claimed_avoided_kg=float(np.mean(claimed)) / 1000.0,
        true_avoided_kg=float(np.mean(true)) / 1000.0,
        policy=policy,
        forecast=label,
        oracle=oracle and policy != "run-now",
        emissions_kg=float(np.mean(grams)) / 1000.0,
        energy_kwh=float(np.mean([sum(o.energy_kwh for o in run) for run in runs])),
        deadline_misses=max(sum(o.missed and o.meetable for o in run) for run in runs),
        unmeetable_jobs=sum(not o.meetable for o in first),
        mean_delay_h=float(np.mean([np.mean([o.delay_hours for o in run]) for run in runs])),
        cycles=round(float(np.mean([sum(o.cycles for o in run) for run in runs]))),
        jobs=len(first),
        outcomes=first,
    )


def _run_policy(
    policy: str,
    jobs: Sequence[SimJob],
    actual: IntensitySeries,
    model: ForecastModel,
    ledger: _Ledger,
    settings: Settings,
    progress: ProgressHook | None,
) -> list[JobOutcome]:
    outcomes = []
    step = actual.resolution
    cluster = Cluster(name="sim", zone=actual.zone, pue=settings.pue)
    if settings.loop == "closed" and policy in CLOSED_POLICIES and not settings.paper_quirks:
        return _run_closed(policy, jobs, actual, model, ledger, settings, cluster, progress)
    for index, sim in enumerate(jobs):
        extra = _extra(sim, settings, step)
        deadline = sim.deadline + extra
        if policy == "run-now":
            now = _baseline_start(sim, settings)
            if extra:
                # The paper's baseline: the cheaper of starting now or one slot later.
                job = _job(sim, now + sim.duration + extra, "optimal", settings)
            else:
                job = _job(sim, deadline, policy, settings)
        else:
            now = sim.arrival
            job = _job(sim, deadline, policy, settings)
        forecast = model.forecast(actual, now, max(deadline - now, step))
        if policy == "lowest-slot":
            plan = _lowest_slot(job, cluster, forecast, now, settings.margin)
        else:
            plan = plan_job(job, [cluster], {actual.zone: forecast}, now, settings.margin)
            if not settings.paper_quirks:
                plan = _or_from_next_boundary(plan, job, cluster, forecast, now, settings.margin)
        outcomes.append(_account(sim, job, plan, ledger, settings, deadline))
        if progress is not None and index % 64 == 63:
            progress(64)
    if progress is not None:
        progress(len(jobs) % 64)
    return outcomes


def _run_closed(
    policy: str,
    jobs: Sequence[SimJob],
    actual: IntensitySeries,
    model: ForecastModel,
    ledger: _Ledger,
    settings: Settings,
    cluster: Cluster,
    progress: ProgressHook | None,
) -> list[JobOutcome]:
    from carbonshift.domain.core import CoreSettings, JobNeeds
    from carbonshift.simulate.closed_loop import ErrorEstimate, LegacyLoop, LoopSettings, SkillEstimate, run_job

    if settings.workers > 1 and len(jobs) > 1:
        return _run_closed_parallel(policy, jobs, actual, model, settings, cluster, progress)

    core = CoreSettings(
        tick=settings.tick,
        margin=settings.margin,
        commit_gain=settings.commit_gain,
        recheck_every=settings.recheck_every,
        do_no_harm=settings.do_no_harm,
        harm_factor=settings.harm_factor,
        min_skill=settings.min_skill,
        # (passes the loop skips are observed in effect: the gap between two passes is at most a slot, or the time
        # the core keeps a commitment without re-checking it, plus a tick)
        max_unobserved=max(actual.resolution, settings.recheck_every, settings.tick) + settings.tick,
        start_allowance=settings.start_delay,
        skip_kept_replans=settings.fast,
    )
    loop = LoopSettings(
        tick=settings.tick, start_delay=settings.start_delay, skip_quiet_ticks=settings.skip_quiet_ticks
    )
    error = ErrorEstimate(model, actual) if settings.do_no_harm else None
    # Skill is measured for models that do not declare their error (persistence, recorded files, gaussian), and
    # for every model with `gate_declared` (as the operator gates a provider's forecast).
    undeclared = settings.gate_declared or expected_error(model, timedelta(0)) is None
    measured = settings.do_no_harm and settings.skill_gate and undeclared
    skill = SkillEstimate(model, actual, z=settings.skill_z) if measured else None
    hours_per_slot = ledger.step / 3600.0

    def price(begin: datetime, end: datetime) -> float:
        return ledger.slot_sum(begin, end) * hours_per_slot * settings.pue

    outcomes = []
    for index, sim in enumerate(jobs):
        job = _job(sim, sim.deadline, policy, settings)
        needs = JobNeeds(
            name=sim.name,
            duration=sim.duration,
            deadline=sim.deadline,
            interruptible=job.interruptible,
            overhead=job.overhead,
            overhead_kwh=job.overhead_kwh,
            min_run=job.min_run,
            grace=settings.grace if job.interruptible else timedelta(0),
            gpus=sim.gpus,
            watts_per_gpu=sim.watts_per_gpu,
            policy=job.policy,
            max_intensity_g_per_kwh=job.max_intensity_g_per_kwh,
        )
        legacy = LegacyLoop() if settings.legacy else None
        result = run_job(
            needs, sim.arrival, actual, model, cluster, price, core, loop, error, core_fn=legacy, skill=skill
        )
        power_kw = job.power_kw
        baseline_start = _baseline_start(sim, settings)
        baseline_end = baseline_start + sim.duration
        baseline = price(baseline_start, baseline_end) * power_kw
        # A receipt prices the work the operator credited, as if run from submission (accounting.py).
        claimed_end = sim.baseline_start + timedelta(seconds=result.credited_work_seconds)
        claimed = price(sim.baseline_start, claimed_end) * power_kw if not settings.legacy else math.nan
        outcomes.append(
            JobOutcome(
                job=sim.name,
                windows=result.windows,
                grams=result.grams,
                baseline_grams=baseline,
                energy_kwh=result.energy_kwh,
                finish=result.finish,
                deadline=sim.deadline,
                delay_hours=(result.finish - baseline_end).total_seconds() / 3600.0,
                cycles=result.resumes,
                slack_hours=(sim.deadline - sim.arrival - sim.duration).total_seconds() / 3600.0,
                claimed_baseline_grams=claimed,
                meetable=sim.deadline - sim.arrival - sim.duration >= settings.start_delay,
            )
        )
        if progress is not None and index % 64 == 63:
            progress(64)
    if progress is not None:
        progress(len(jobs) % 64)
    return outcomes


def _closed_part(
    policy: str, jobs: Sequence[SimJob], actual: IntensitySeries, model: ForecastModel, settings: Settings,
    cluster: Cluster,
) -> list[JobOutcome]:  # fmt: skip
    """One worker's share of the closed loop (a process of its own: the ledger is rebuilt there)."""
    return _run_closed(policy, jobs, actual, model, _Ledger(actual), replace(settings, workers=1), cluster, None)


def _run_closed_parallel(
    policy: str,
    jobs: Sequence[SimJob],
    actual: IntensitySeries,
    model: ForecastModel,
    settings: Settings,
    cluster: Cluster,
    progress: ProgressHook | None,
) -> list[JobOutcome]:
    """The closed loop with the jobs split across `settings.workers` processes, interleaved (job i to worker
    i mod w, so that long and short stretches of the year are shared out) and put back in order: each job's loop
    depends only on the job, the trace and the (seeded) forecast model, so the outcomes are those of one process."""
    from concurrent.futures import ProcessPoolExecutor

    workers = min(settings.workers, len(jobs))
    parts = [list(jobs[k::workers]) for k in range(workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_closed_part, policy, part, actual, model, settings, cluster) for part in parts]
        results = [f.result() for f in futures]
    outcomes: list[JobOutcome] = []
    for index in range(len(jobs)):
        outcomes.append(results[index % workers][index // workers])
    if progress is not None:
        progress(len(jobs))
    return outcomes


def _job(sim: SimJob, deadline: datetime, policy: str, settings: Settings) -> Job:
    interruptible = sim.interruptible and policy in ("optimal-interruptible", "oracle", "threshold")
    policies = {"run-now": Policy.IMMEDIATE, "threshold": Policy.THRESHOLD}
    return Job(
        name=sim.name,
        remaining=sim.duration,
        deadline=deadline,
        interruptible=interruptible,
        overhead=settings.overhead if interruptible else timedelta(0),
        overhead_kwh=settings.overhead_kwh if interruptible else 0.0,
        min_run=settings.min_run if interruptible else timedelta(0),
        gpus=sim.gpus,
        watts_per_gpu=sim.watts_per_gpu,
        policy=policies.get(policy, Policy.OPTIMAL),
        max_intensity_g_per_kwh=settings.threshold_g_per_kwh if policy == "threshold" else None,
    )


def _or_from_next_boundary(
    plan: Plan, job: Job, cluster: Cluster, forecast: IntensitySeries, now: datetime, margin: timedelta
) -> Plan:
    """For a block that cannot be interrupted, planned at an arrival inside a forecast slot: the cheaper of that plan
    and the plan from the next boundary (what the closed loop's core does, `core._aligned_plan`). The planner's
    own variant on the forecast's slots pads the work by the part of the slot gone, which charges a later block
    for that part at its end; without this the open loop's oracle, the optimum every share is measured against,
    was beaten by the closed loop's (1.009 of it, session 12)."""
    if job.interruptible or job.policy is not Policy.OPTIMAL or plan.reason is not Reason.OPTIMAL or not len(forecast):
        return plan
    from carbonshift.domain.core import slot_holding  # (the core's arithmetic; imported here as _run_closed does)

    holding = slot_holding(forecast, now)
    boundary = holding + forecast.resolution
    if holding == now or boundary >= job.deadline - margin:
        return plan
    later = plan_job(job, [cluster], {cluster.zone: forecast}, boundary, margin)
    if later.reason is Reason.OPTIMAL and later.windows and later.planned_grams < plan.planned_grams - 1e-9:
        return replace(later, baseline_grams=plan.baseline_grams, latest_safe_start=plan.latest_safe_start)
    return plan


def _lowest_slot(job: Job, cluster: Cluster, forecast: IntensitySeries, now: datetime, margin: timedelta) -> Plan:
    """Naive rule: start in the lowest-forecast slot from which the job still finishes, then run."""
    latest = job.deadline - margin - job.remaining
    window = forecast.window(now, latest + forecast.resolution)
    values: FloatArray = np.where(np.isnan(window.values), np.inf, window.values)
    start = now
    if len(window) and np.isfinite(values).any():
        best = int(np.argmin(values))
        start = min(max(window.slot_start(best), now), latest) if latest >= now else now
    shifted = replace(job, policy=Policy.IMMEDIATE)
    return plan_job(shifted, [cluster], {cluster.zone: forecast}, start, margin)


def _account(sim: SimJob, job: Job, plan: Plan, ledger: _Ledger, settings: Settings, deadline: datetime) -> JobOutcome:
    power_kw = job.power_kw
    hours_per_slot = ledger.step / 3600.0
    grams = 0.0
    windows = tuple((w.start, w.end) for w in plan.windows)
    for index, (begin, end) in enumerate(windows):
        grams += ledger.slot_sum(begin, end) * power_kw * hours_per_slot * settings.pue
        pays = index > 0 or (job.started and not job.running)
        if pays and job.overhead_kwh > 0:
            grams += job.overhead_kwh * settings.pue * ledger.at(begin)
    start = _baseline_start(sim, settings)
    baseline_end = start + sim.duration
    baseline = ledger.slot_sum(start, baseline_end) * power_kw * hours_per_slot * settings.pue
    finish = windows[-1][1] if windows else start
    run_hours = sum((e - b).total_seconds() for b, e in windows) / 3600.0
    return JobOutcome(
        job=sim.name,
        windows=windows,
        grams=grams,
        baseline_grams=baseline,
        energy_kwh=power_kw * run_hours + plan.cycles * job.overhead_kwh,
        finish=finish,
        deadline=deadline,
        delay_hours=(finish - baseline_end).total_seconds() / 3600.0,
        cycles=plan.cycles,
        slack_hours=(sim.deadline - sim.arrival - sim.duration).total_seconds() / 3600.0,
        # (running at once in the closed loop misses a job with less slack than its pods take to start, as the
        # loop does: unmeetable, not a miss)
        meetable=start == sim.baseline_start or sim.deadline - sim.arrival - sim.duration >= settings.start_delay,
    )
