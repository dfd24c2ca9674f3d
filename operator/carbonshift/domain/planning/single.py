"""Planning one job: when to run it (and where, among candidate clusters) to emit the least CO2e.

`plan_job(job, clusters, forecasts, now, margin)` is pure and deterministic. The steps:

1. Safety first. The latest safe start is deadline - remaining - overhead (when starting means resuming)
   - margin. A deadline already passed, or a job longer than the time left, gets a best-effort plan that
   runs now, flagged infeasible. A job at or past its latest safe start runs now, whatever the forecast.
2. For each candidate cluster with enough free GPUs, build the planning grid of its zone's forecast
   (carbonshift.domain.planning.grid) up to deadline - margin and search it with the job's policy:
   Optimal non-interruptible -> cheapest contiguous window; Optimal interruptible -> the chunked dynamic
   programme (or the k cheapest slots when suspending is free); Threshold -> run at or below the job's
   max intensity, forced by the deadline; Immediate -> now.
3. Keep the cluster whose plan has the lowest forecast emissions (energy x PUE x intensity), earliest
   cluster in the given order on ties. With no forecast for any cluster the job runs at its latest safe
   start (reason NoData).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import numpy as np

from carbonshift.domain.planning import search as search_module
from carbonshift.domain.planning.grid import BoolArray, Grid, planning_grid
from carbonshift.domain.planning.model import Cluster, Flag, Job, Plan, PlanningError, Policy, Reason, RunWindow
from carbonshift.domain.planning.search import (
    EPS,
    ChunkedSearch,
    Selection,
    cheapest_slots,
    runs_of,
    threshold_runs,
    whole_slots,
    window_costs,
)
from carbonshift.domain.series import FloatArray, IntensitySeries, require_utc

DEFAULT_CLUSTER = Cluster(name="local", zone="local")


def latest_safe_start(job: Job, margin: timedelta = timedelta(0)) -> datetime:
    """The last moment the job can (re)start and still finish by its deadline, keeping `margin` spare.

    A running job continues for free; a suspended one pays its overhead when it resumes."""
    overhead = timedelta(0) if job.running or not job.started else job.overhead
    return job.deadline - job.remaining - overhead - margin


def plan_job(
    job: Job,
    clusters: Sequence[Cluster],
    forecasts: Mapping[str, IntensitySeries | None],
    now: datetime,
    margin: timedelta = timedelta(0),
    *,
    on_forecast_slots: bool = True,
) -> Plan:
    """The plan for `job` over `clusters`, with `forecasts` keyed by zone (None or absent = no data).

    `on_forecast_slots=False` plans on the grid from `now` only (the planner before the forecast's own slots were
    tried; kept to measure the decisions from before the core)."""
    now = require_utc(now, "planning time")
    if margin < timedelta(0):
        raise PlanningError(f"safety margin must not be negative, got {margin}")
    candidates = list(clusters) or [DEFAULT_CLUSTER]
    usable = [c for c in candidates if c.free_gpus is None or c.free_gpus >= job.gpus or c.free_gpus_by_slot]
    if job.remaining <= timedelta(0):
        return _empty(job, usable[0] if usable else candidates[0], now, margin, Reason.DONE, feasible=True)
    if not usable:
        return _empty(job, candidates[0], now, margin, Reason.NO_CAPACITY, feasible=False)
    planner = _plan_on_boundaries if on_forecast_slots else _plan_on
    plans = [planner(job, cluster, forecasts.get(cluster.zone), now, margin) for cluster in usable]
    return min(plans, key=_rank)


def _plan_on_boundaries(
    job: Job, cluster: Cluster, forecast: IntensitySeries | None, now: datetime, margin: timedelta
) -> Plan:
    """The plan on the grid from `now`, or, when `now` falls inside a forecast slot, the plan on the forecast's own
    slots when it is cheaper: planned from the start of the slot holding `now` with the part already gone added to
    the work, then clipped to `now` (a plan that uses that slot) or trimmed at its end by that part (one that does
    not). Slots that straddle two forecast slots mix their intensities, so the grid from `now` can miss a clean
    hour by half of it."""
    plan = _plan_on(job, cluster, forecast, now, margin)
    if forecast is None or len(forecast) == 0 or plan.reason is not Reason.OPTIMAL or not plan.windows:
        return plan
    if cluster.free_gpus_by_slot is not None:  # (its slots are counted from `now`)
        return plan
    step = forecast.resolution
    aligned = forecast.start + step * math.floor((now - forecast.start) / step)
    elapsed = now - aligned
    if elapsed <= timedelta(0) or aligned < forecast.start:
        return plan
    power = job.power_kw * cluster.pue
    padded = _plan_on(replace(job, remaining=job.remaining + elapsed), cluster, forecast, aligned, margin)
    if padded.reason is not Reason.OPTIMAL or not padded.windows or not math.isfinite(padded.planned_grams):
        return plan
    windows = list(padded.windows)
    popped = 0
    if windows[0].start <= now:
        cut = _forecast_grams(forecast, windows[0].start, now, power)
        windows[0] = replace(windows[0], start=now)
    else:
        cut, left = 0.0, elapsed
        popped = 0
        while left > timedelta(0) and windows:
            last = windows[-1]
            take = min(left, last.end - last.start)
            cut += _forecast_grams(forecast, last.end - take, last.end, power)
            left -= take
            if take >= last.end - last.start:
                windows.pop()
                popped += 1
                if windows:  # a resumed chunk dropped: its overhead time and energy are spare too
                    left += job.overhead
                    index = forecast.index_of(last.start)
                    if 0 <= index < len(forecast):
                        cut += job.overhead_kwh * cluster.pue * float(forecast.values[index])
            else:
                windows[-1] = replace(last, end=last.end - take)
    grams = padded.planned_grams - cut
    if not (math.isfinite(grams) and windows and grams < plan.planned_grams - EPS * max(1.0, abs(plan.planned_grams))):
        return plan
    cycles = max(padded.cycles - popped, 0)
    hours = sum((w.end - w.start).total_seconds() for w in windows) / 3600.0
    energy = job.power_kw * hours + cycles * job.overhead_kwh
    return replace(
        padded,
        windows=tuple(windows),
        planned_grams=grams,
        baseline_grams=plan.baseline_grams,
        latest_safe_start=plan.latest_safe_start,
        energy_kwh=energy,
        cycles=cycles,
    )


def _forecast_grams(forecast: IntensitySeries, begin: datetime, end: datetime, power_kw: float) -> float:
    """Forecast emissions of running `power_kw` over [begin, end) (NaN where the forecast has no value)."""
    total = 0.0
    moment = begin
    while moment < end:
        index = forecast.index_of(moment)
        if index < 0 or index >= len(forecast):
            return math.nan
        stop = min(end, forecast.slot_start(index + 1))
        total += float(forecast.values[index]) * (stop - moment).total_seconds() / 3600.0
        moment = stop
    return total * power_kw


def _rank(plan: Plan) -> tuple[int, float]:
    if plan.reason is Reason.NO_CAPACITY:
        return (2, 0.0)
    if math.isnan(plan.planned_grams):
        return (1, 0.0)
    return (0, plan.planned_grams)


def _empty(job: Job, cluster: Cluster, now: datetime, margin: timedelta, reason: Reason, *, feasible: bool) -> Plan:
    return Plan(
        job=job.name,
        cluster=cluster.name,
        zone=cluster.zone,
        windows=(),
        planned_grams=0.0 if reason is Reason.DONE else math.nan,
        baseline_grams=0.0 if reason is Reason.DONE else math.nan,
        latest_safe_start=latest_safe_start(job, margin),
        reason=reason,
        feasible=feasible,
    )


@dataclass(frozen=True, slots=True)
class _Costs:
    """Per-slot numbers for one job on one cluster's grid."""

    grid: Grid
    grams_per_slot: FloatArray  # emissions of one whole slot of running (inf = no free GPUs)
    resume_grams: FloatArray  # emissions of the per-cycle overhead energy when a chunk starts there
    horizon: int  # slots usable before deadline - margin


def _costs(job: Job, cluster: Cluster, grid: Grid, horizon: int) -> _Costs:
    factor = job.power_kw * grid.hours_per_slot * cluster.pue
    grams = grid.g_per_kwh * factor
    if cluster.free_gpus_by_slot is not None or cluster.free_gpus is not None:
        free = np.full(len(grid), np.inf if cluster.free_gpus is None else float(cluster.free_gpus))
        if cluster.free_gpus_by_slot is not None:
            known = min(len(grid), len(cluster.free_gpus_by_slot))
            free[:known] = np.asarray(cluster.free_gpus_by_slot[:known], dtype=np.float64)
        grams = np.where(free >= job.gpus, grams, np.inf)
    resume = grid.g_per_kwh * (job.overhead_kwh * cluster.pue)
    return _Costs(grid=grid, grams_per_slot=grams, resume_grams=resume, horizon=horizon)


def _plan_on(job: Job, cluster: Cluster, forecast: IntensitySeries | None, now: datetime, margin: timedelta) -> Plan:
    lss = latest_safe_start(job, margin)
    continuing = job.running or not job.started
    need_now = job.remaining + (timedelta(0) if continuing else job.overhead)
    flags: set[Flag] = set()
    feasible = True
    reason: Reason | None = None
    if job.deadline <= now:
        reason, feasible = Reason.DEADLINE_PASSED, False
    elif now + need_now > job.deadline:
        reason, feasible = Reason.INFEASIBLE_DEADLINE, False
    elif job.policy is Policy.IMMEDIATE:
        reason = Reason.IMMEDIATE
    elif now >= lss:
        reason = Reason.LATEST_SAFE_START
    if not feasible:
        flags.add(Flag.BEST_EFFORT)
    horizon_end = max(job.deadline - margin, now + need_now)
    grid = planning_grid(forecast, now, horizon_end)
    if grid is None:
        flags.add(Flag.NO_FORECAST)
        start = now if reason is not None else lss
        window = RunWindow(start=start, end=start + need_now, mean_g_per_kwh=math.nan)
        return Plan(
            job=job.name,
            cluster=cluster.name,
            zone=cluster.zone,
            windows=(window,),
            planned_grams=math.nan,
            baseline_grams=math.nan,
            latest_safe_start=lss,
            reason=reason or Reason.NO_DATA,
            feasible=feasible,
            flags=frozenset(flags),
            energy_kwh=job.power_kw * need_now.total_seconds() / 3600.0,
        )
    horizon = grid.slots_between(job.deadline - margin)
    if not grid.known[: max(horizon, 1)].all():
        flags.add(Flag.PARTIAL_FORECAST)
    costs = _costs(job, cluster, grid, horizon)
    res = grid.resolution.total_seconds()
    work = job.remaining.total_seconds() / res
    overhead = job.overhead.total_seconds() / res
    now_need = work + (0.0 if continuing else overhead)
    now_paying = 0 if continuing else 1
    baseline = _contiguous(costs, 0, now_need, paying=now_paying)
    selection: Selection | None = None
    searches: dict[str, ChunkedSearch] = {}  # the chunked search, shared with the sub-slot overhead variant
    if reason is None:
        selection, reason = _search(job, costs, work, overhead, flags, searches)
    searched = reason is Reason.OPTIMAL  # (also when the whole slots before the deadline hold no block)
    if selection is None:
        # Run now: forced by the latest safe start, best effort, Immediate, or a grid too tight to search.
        if not math.isfinite(baseline):
            return _empty(job, cluster, now, margin, Reason.NO_CAPACITY, feasible=False)
        selection = Selection(tuple(range(whole_slots(now_need))), now_paying)
        if reason is None or reason in (Reason.OPTIMAL, Reason.THRESHOLD):
            reason = Reason.LATEST_SAFE_START
    windows, planned, energy = _windows(job, costs, selection, work, overhead)
    cycles = selection.paying_chunks
    if reason is Reason.OPTIMAL and job.interruptible and 0.0 < overhead < 1.0:
        shifted = _shifted_overhead(job, costs, work, overhead, searches)
        if shifted is not None and shifted[1] < planned - EPS * max(1.0, abs(planned)):
            windows, planned, energy, cycles = shifted
    if searched and not job.running and not job.started:  # (a first block pays no overhead)
        limit = (job.deadline - margin - grid.now).total_seconds() / res
        ending = _sub_slot_block(job, costs, work, limit)
        if ending is not None and ending[1] < planned - EPS * max(1.0, abs(planned)):
            windows, planned, energy = ending
            cycles, reason = 0, Reason.OPTIMAL
    return Plan(
        job=job.name,
        cluster=cluster.name,
        zone=cluster.zone,
        windows=windows,
        planned_grams=planned,
        baseline_grams=baseline,
        latest_safe_start=lss,
        reason=reason,
        feasible=feasible,
        flags=frozenset(flags),
        energy_kwh=energy,
        cycles=cycles,
    )


def _chunked_search(job: Job, costs: _Costs, work: float, overhead: float) -> ChunkedSearch:
    horizon = costs.horizon
    return ChunkedSearch(
        costs.grams_per_slot[:horizon],
        work,
        overhead_slots=overhead,
        resume_costs=costs.resume_grams[:horizon],
        min_run_slots=_min_run_slots(job, costs),
        first_start_free=not job.started and not job.running,
        running=job.running,
    )


def _search(
    job: Job, costs: _Costs, work: float, overhead: float, flags: set[Flag], searches: dict[str, ChunkedSearch]
) -> tuple[Selection | None, Reason]:
    """Run the policy's search on the usable part of the grid; None when the grid cannot hold the job."""
    usable = costs.grams_per_slot[: costs.horizon]
    if job.policy is Policy.THRESHOLD:
        threshold = float(job.max_intensity_g_per_kwh or 0.0)
        g = costs.grid.g_per_kwh[: costs.horizon]
        allowed = (g <= threshold) & costs.grid.known[: costs.horizon]
        if not job.interruptible:
            start = _threshold_start(usable, allowed, work, overhead, job)
            if start is None:
                return None, Reason.LATEST_SAFE_START
            whole = whole_slots(work + (overhead if _pays_first(job, start) else 0.0))
            if not bool(allowed[start]):
                flags.add(Flag.FORCED)
            return Selection(tuple(range(start, start + whole)), int(_pays_first(job, start))), Reason.THRESHOLD
        result = threshold_runs(
            usable,
            g,
            allowed,
            work,
            overhead_slots=overhead,
            min_run_slots=_min_run_slots(job, costs),
            first_start_free=not job.started or job.running,
            running=job.running,
        )
        if result is None:
            return None, Reason.LATEST_SAFE_START
        selection, forced = result
        if forced:
            flags.add(Flag.FORCED)
        return selection, Reason.THRESHOLD
    if not job.interruptible:
        return _best_block(job, usable, work, overhead, costs.resume_grams), Reason.OPTIMAL
    free_to_split = overhead <= 0 and job.overhead_kwh <= 0 and _min_run_slots(job, costs) <= 1
    if free_to_split:
        slots = cheapest_slots(usable, whole_slots(work))
        if slots is None:
            return None, Reason.LATEST_SAFE_START
        chunked: Selection | None = Selection(slots, _paying_chunks(job, slots))
    else:
        search = searches["chunked"] = _chunked_search(job, costs, work, overhead)
        chunked = search.best(usable.shape[0])
    block = _best_block(job, usable, work, overhead, costs.resume_grams)
    if chunked is None:
        return block, Reason.OPTIMAL
    if block is not None:
        block_grams = _windows(job, costs, block, work, overhead)[1]
        if block_grams <= _windows(job, costs, chunked, work, overhead)[1] + EPS:
            return block, Reason.OPTIMAL
    return chunked, Reason.OPTIMAL


def _min_run_slots(job: Job, costs: _Costs) -> int:
    return max(1, math.ceil(job.min_run / costs.grid.resolution - EPS))


def _pays_first(job: Job, start: int) -> bool:
    """Whether a chunk starting at `start` pays the overhead."""
    if job.running:
        return start > 0
    return job.started


def _paying_chunks(job: Job, slots: tuple[int, ...]) -> int:
    """How many chunks of `slots` pay the suspend/resume overhead."""
    chunks = runs_of(slots)
    if not chunks:
        return 0
    return len(chunks) - (0 if _pays_first(job, chunks[0][0]) else 1)


def _best_block(job: Job, usable: FloatArray, work: float, overhead: float, resume: FloatArray) -> Selection | None:
    """The cheapest single contiguous run, earliest on ties; a start that means resuming needs the
    overhead time and energy too (for a running job, every start but slot 0)."""
    n = usable.shape[0]
    totals = np.full(n, np.inf)
    for start_at, pays in ((0, _pays_first(job, 0)), (1, _pays_first(job, 1))):
        need = work + (overhead if pays else 0.0)
        windows = window_costs(usable, need)
        stop = windows.shape[0] if start_at == 1 else min(1, windows.shape[0])
        if stop > start_at:
            totals[start_at:stop] = windows[start_at:stop] + (resume[start_at:stop] if pays else 0.0)
    if not np.isfinite(totals).any():
        return None
    best = float(np.min(totals))
    start = int(np.flatnonzero(totals <= best + 1e-9 * max(1.0, abs(best)))[0])
    pays = _pays_first(job, start)
    return Selection(tuple(range(start, start + whole_slots(work + (overhead if pays else 0.0)))), int(pays))


def _sub_slot_block(
    job: Job, costs: _Costs, work: float, limit: float
) -> tuple[tuple[RunWindow, ...], float, float] | None:
    """The cheapest single block of `work` slots that `_best_block` does not try, or None: those that start part-way
    into a slot and *end* on a slot boundary, and, when `limit` (deadline - margin, in slots from the grid's start)
    is not a boundary, those that end in the part-slot before it (from a boundary, and the latest). `_best_block`
    starts blocks on boundaries within the whole slots before `limit`. On slot-wise constant costs a block's cost
    is piecewise linear in its start, so its minimum is where its start or its end is on a boundary, or at the
    latest start: with both searches every start is covered. (For a job that has not started: the block pays no
    overhead; charged the used parts of its first and last slots.)"""
    per_slot = costs.grams_per_slot
    usable = per_slot[: costs.horizon]
    full = math.floor(work + EPS)
    fraction = work - full
    best, begin = math.inf, -1.0
    n = usable.shape[0]
    if EPS < fraction < 1.0 - EPS and n >= full + 1:
        # Start in slot s (its last `fraction`), then the whole slots s+1 .. s+full: n - full starts.
        following = window_costs(usable, float(full))[1:] if full > 0 else np.zeros(n)
        totals = fraction * usable[: n - full] + following
        totals = np.where(np.isfinite(totals), totals, np.inf)
        if np.isfinite(totals).any():
            best = float(np.min(totals))
            first = int(np.flatnonzero(totals <= best + 1e-9 * max(1.0, abs(best)))[0])
            begin = first + 1.0 - fraction
    latest = limit - work
    if latest >= 0 and abs(limit - round(limit)) > EPS and math.ceil(limit - EPS) <= per_slot.shape[0]:
        # Blocks that end in the part-slot before `limit`: from a boundary, and the latest one.
        candidates = [
            float(b) for b in range(max(math.ceil(costs.horizon - work - EPS), 0), math.floor(latest + EPS) + 1)
        ]
        for start in [*candidates, latest]:
            cost = _span_cost(per_slot, start, start + work)
            if math.isfinite(cost) and (not math.isfinite(best) or cost < best - 1e-9 * max(1.0, abs(best))):
                best, begin = cost, start
    if not math.isfinite(best) or begin < 0:
        return None
    grid = costs.grid
    mean = _span_cost(grid.g_per_kwh, begin, begin + work) / work
    window = RunWindow(start=grid.slot_start(begin), end=grid.slot_start(begin + work), mean_g_per_kwh=mean)
    return (window,), best, job.power_kw * work * grid.hours_per_slot


def _window_total(usable: FloatArray, start: int, need: float) -> float:
    full = math.floor(need + EPS)
    fraction = max(0.0, need - full)
    total = float(np.add.reduce(usable[start : start + full]))
    if fraction > EPS and start + full < usable.shape[0]:
        total += fraction * float(usable[start + full])
    return total


def _threshold_start(usable: FloatArray, allowed: BoolArray, work: float, overhead: float, job: Job) -> int | None:
    """First slot at or below the threshold where the whole job fits, else the latest slot that fits."""
    latest: int | None = None
    for start in range(usable.shape[0]):
        need = work + (overhead if _pays_first(job, start) else 0.0)
        end = start + whole_slots(need)
        if end > usable.shape[0]:
            continue
        if not np.isfinite(usable[start:end]).all():
            continue
        if bool(allowed[start]):
            return start
        latest = start
    return latest


def _contiguous_cost(costs: _Costs, start: int, need: float) -> float:
    return (
        _window_total(costs.grams_per_slot, start, need) if start + whole_slots(need) <= len(costs.grid) else math.inf
    )


def _contiguous(costs: _Costs, start: int, need: float, *, paying: int) -> float:
    total = _contiguous_cost(costs, start, need)
    return total + paying * float(costs.resume_grams[start]) if math.isfinite(total) else math.inf


def _windows(
    job: Job, costs: _Costs, selection: Selection, work: float, overhead: float
) -> tuple[tuple[RunWindow, ...], float, float]:
    """Turn slot indices into run windows, trimming the unused end of the last slot, with their
    forecast emissions (incl. per-cycle overhead energy) and energy."""
    grid = costs.grid
    chunks = runs_of(list(selection.slots))
    need = work + selection.paying_chunks * overhead  # slots of run time, overheads included
    skip = len(chunks) - selection.paying_chunks
    windows: list[RunWindow] = []
    grams = 0.0
    factor = costs.grams_per_slot  # grams per whole slot
    used = 0.0
    for index, (first, stop) in enumerate(chunks):
        length = min(float(stop - first), max(need - used, 0.0))
        if length <= EPS:
            break
        used += length
        full = math.floor(length + EPS)
        fraction = max(0.0, length - full)
        g = grid.g_per_kwh
        total_g = float(np.add.reduce(g[first : first + full]))  # (np.sum without its wrapper)
        chunk_grams = float(np.add.reduce(factor[first : first + full]))
        if fraction > EPS:
            total_g += fraction * float(g[first + full])
            chunk_grams += fraction * float(factor[first + full])
        if index >= skip:
            chunk_grams += float(costs.resume_grams[first])
        grams += chunk_grams
        windows.append(
            RunWindow(
                start=grid.slot_start(first),
                end=grid.slot_start(first + length),
                mean_g_per_kwh=total_g / length,
            )
        )
    energy = job.power_kw * used * grid.hours_per_slot + selection.paying_chunks * job.overhead_kwh
    return tuple(windows), grams, energy


def _shifted_overhead(
    job: Job, costs: _Costs, work: float, overhead: float, searches: dict[str, ChunkedSearch] | None = None
) -> tuple[tuple[RunWindow, ...], float, float, int] | None:
    """The plan that ignores the overhead's time, with each chunk that pays it started `overhead` early (or
    ended that much later, whichever slot is cheaper): exact at sub-slot overheads, where the slot search can only
    add whole slots (a 16 s overhead on hourly slots would cost an hour's slot in the wrong place). None when it
    does not fit (no free time next to a chunk, or the horizon ends)."""
    horizon = costs.horizon
    usable = costs.grams_per_slot[:horizon]
    # The same layers as the search with the overhead (they do not depend on it), asked for no overhead.
    shared = (searches or {}).get("chunked") if search_module.FAST else None
    search = shared or _chunked_search(job, costs, work, 0.0)
    zero = search.best(usable.shape[0], overhead_slots=0.0)
    if zero is None or not zero.slots:
        return None
    chunks = runs_of(list(zero.slots))
    # Chunks as [begin, end) in slots, the last trimmed to the work.
    spans: list[list[float]] = [[float(a), float(b)] for a, b in chunks]
    spans[-1][1] = spans[-1][1] - (sum(b - a for a, b in chunks) - work)
    paying = 0
    grams_per_slot = costs.grams_per_slot
    for index, span in enumerate(spans):
        begin, end = span
        if index == 0 and not _pays_first(job, int(begin)):
            continue
        paying += 1
        before_limit = spans[index - 1][1] if index > 0 else 0.0
        after_limit = spans[index + 1][0] if index + 1 < len(spans) else float(horizon)
        options = []
        if begin - overhead >= before_limit - EPS:
            options.append((_span_cost(grams_per_slot, begin - overhead, begin), 0))
        if end + overhead <= after_limit + EPS:
            options.append((_span_cost(grams_per_slot, end, end + overhead), 1))
        finite = [o for o in options if math.isfinite(o[0])]
        if not finite:
            return None
        _, side = min(finite)
        if side == 0:
            span[0] = begin - overhead
        else:
            span[1] = end + overhead
    grid = costs.grid
    windows: list[RunWindow] = []
    grams = 0.0
    for index, (begin, end) in enumerate(spans):
        chunk = _span_cost(grams_per_slot, begin, end)
        pays = index > 0 or _pays_first(job, chunks[0][0])
        if pays:
            chunk += float(costs.resume_grams[min(math.floor(begin + EPS), len(grid) - 1)])
        grams += chunk
        mean = _span_cost(grid.g_per_kwh, begin, end) / (end - begin)
        windows.append(RunWindow(start=grid.slot_start(begin), end=grid.slot_start(end), mean_g_per_kwh=mean))
    used = sum(end - begin for begin, end in spans)
    energy = job.power_kw * used * grid.hours_per_slot + paying * job.overhead_kwh
    return tuple(windows), grams, energy, paying


def _span_cost(per_slot: FloatArray, begin: float, end: float) -> float:
    """The integral of a per-slot value over [begin, end) in slots (fractions of slots charged pro rata).

    Summed slot by slot from `begin`; a run of whole slots adds each value as it is (1.0 x value), read from one
    list rather than one array element at a time (the same sums in the same order)."""
    total = 0.0
    position = begin
    n = per_slot.shape[0]
    while position < end - EPS:
        index = math.floor(position + EPS)
        if index >= n or index < 0:
            return math.inf
        if position == index and index + 1 <= end:  # whole slots [index, last), each adding 1.0 x its value
            last = math.floor(min(end, n + 1.0))
            if last > n:
                return math.inf
            for value in per_slot[index:last].tolist():
                total += value
            position = float(last)
            continue
        stop = min(float(index + 1), end)
        total += (stop - position) * float(per_slot[index])
        position = stop
    return total


@dataclass(frozen=True, slots=True)
class OptimalBounds:
    """What is known, without the search, of the plan `plan_job` makes for an Optimal interruptible job on one
    cluster from a forecast-slot boundary (see `optimal_bounds`)."""

    baseline_grams: float  # exactly the plan's baseline_grams
    lower_grams: float  # the plan's planned_grams is at least this
    upper_grams: float  # ... and at most this (the cheapest single block's)


def optimal_bounds(
    job: Job, cluster: Cluster, forecast: IntensitySeries | None, now: datetime, margin: timedelta
) -> OptimalBounds | None:
    """Bounds on `plan_job(job, [cluster], {cluster.zone: forecast}, now, margin)` when its reason is surely Optimal
    (an Optimal interruptible job before its latest safe start, a forecast, a block that fits) and `now` is on a
    forecast slot boundary (so the plan is `_plan_on`'s); None otherwise. For a speed-up that skips a re-plan whose
    outcome these bounds decide (carbonshift.domain.core, `CoreSettings.skip_kept_replans`).

    The lower bound: every plan runs at least the work (and, for a suspended job that has run, one overhead) in
    slots of the horizon, each slot at most once, and pays its resumes on top (all costs are checked to be >= 0;
    at least one resume for that suspended job), so it costs at least the cheapest slots holding that time (the
    last one in part) and the cheapest resume, less rounding. The upper bound: the search keeps the cheapest single
    block unless a chunked plan (or its overhead-shifted variant) is cheaper."""
    if job.policy is not Policy.OPTIMAL or not job.interruptible or job.remaining <= timedelta(0):
        return None
    if cluster.free_gpus is not None or cluster.free_gpus_by_slot is not None or forecast is None:
        return None
    if len(forecast) == 0 or (now - forecast.start) % forecast.resolution != timedelta(0):
        return None
    # (The steps of `_plan_on` up to the search, for the case where its reason stays None.)
    lss = latest_safe_start(job, margin)
    continuing = job.running or not job.started
    need_now = job.remaining + (timedelta(0) if continuing else job.overhead)
    if job.deadline <= now or now + need_now > job.deadline or now >= lss:
        return None
    grid = planning_grid(forecast, now, max(job.deadline - margin, now + need_now))
    if grid is None:
        return None
    horizon = grid.slots_between(job.deadline - margin)
    costs = _costs(job, cluster, grid, horizon)
    usable = costs.grams_per_slot[:horizon]
    if usable.shape[0] == 0 or not (np.isfinite(usable).all() and float(usable.min()) >= 0.0):
        return None
    if not (np.isfinite(costs.resume_grams).all() and float(costs.resume_grams.min()) >= 0.0):
        return None
    res = grid.resolution.total_seconds()
    work = job.remaining.total_seconds() / res
    overhead = job.overhead.total_seconds() / res
    baseline = _contiguous(costs, 0, work + (0.0 if continuing else overhead), paying=0 if continuing else 1)
    block = _best_block(job, usable, work, overhead, costs.resume_grams)
    if block is None:
        return None
    upper = _windows(job, costs, block, work, overhead)[1]
    # A suspended job that has run pays the overhead (time and energy) at its first chunk at least.
    pays = job.started and not job.running
    units = work + overhead if pays else work
    full = math.floor(units)
    # (The plan may also use the part-slot before deadline - margin, `_sub_slot_block`: counted whole, still a bound.)
    reach = math.ceil((job.deadline - margin - now).total_seconds() / res - EPS)
    pool = costs.grams_per_slot[: max(horizon, min(reach, costs.grams_per_slot.shape[0]))]
    if not (np.isfinite(pool).all() and float(pool.min()) >= 0.0):
        return None
    if full >= pool.shape[0] + (1 if units == full else 0):
        return None
    ordered = np.sort(pool)
    lower = float(np.add.reduce(ordered[:full])) + (units - full) * (float(ordered[full]) if units > full else 0.0)
    if pays:
        lower += float(costs.resume_grams[:horizon].min())
    # Rounding: the windows drop a part of a slot under EPS per chunk; sums in another order differ by ~1e-16.
    lower -= 1e-9 * max(1.0, abs(lower)) + 2.0 * EPS * pool.shape[0] * float(ordered[-1])
    return OptimalBounds(baseline_grams=baseline, lower_grams=lower, upper_grams=upper)
