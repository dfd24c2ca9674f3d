"""Planning a fleet: many jobs sharing finite GPUs per cluster and slot.

Two planners over the same grid (slot i = [now + i*resolution, now + (i+1)*resolution) on every cluster,
forecasts at one common resolution) and the same objective (forecast grams of CO2e):

- `plan_fleet_greedy`: jobs in order of least slack (latest safe start - now, then name), each placed at
  its cheapest option that still fits the GPUs left by the jobs before it (cluster and slots chosen as
  `plan_job` would, capacity permitting). Per-cluster cumulative sums are shared by all jobs and a plan is
  reused for identical jobs while its slots still fit (capacity only shrinks, so it stays optimal), so
  10,000 jobs re-plan in a fraction of a second.
- `plan_fleet_milp`: the exact optimum by mixed-integer programming with HiGHS, for small fleets, and the
  greedy plan's optimality gap against it. Non-interruptible jobs choose one (cluster, start); interruptible
  jobs choose a cluster and any slots (suspension is free in this model: per-cycle overheads and minimum
  chunks are handled by the single-job dynamic programme and the greedy planner, not by the MILP).

Capacity is never exceeded: a job that cannot fit by its deadline is reported as unplaced, not squeezed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from carbonshift.domain.planning.grid import Grid, planning_grid
from carbonshift.domain.planning.model import Cluster, Job, PlanningError, Policy, RunWindow
from carbonshift.domain.planning.search import EPS, ChunkedSearch, chunked_runs, runs_of, whole_slots, window_costs
from carbonshift.domain.planning.single import latest_safe_start
from carbonshift.domain.series import FloatArray, IntensitySeries, require_utc


@dataclass(frozen=True, slots=True)
class FleetSlot:
    """Where and when one job of the fleet runs: a cluster and planning-slot indices (sorted)."""

    job: str
    cluster: str
    slots: tuple[int, ...]
    grams: float

    def windows(self, now: datetime, resolution: timedelta) -> tuple[RunWindow, ...]:
        """The slots as run windows (mean intensity not carried here: NaN)."""
        return tuple(
            RunWindow(start=now + resolution * a, end=now + resolution * b, mean_g_per_kwh=math.nan)
            for a, b in runs_of(self.slots)
        )


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """The fleet's placements, GPUs used per cluster and slot, and what could not be placed."""

    now: datetime
    resolution: timedelta
    placements: tuple[FleetSlot, ...]
    unplaced: tuple[str, ...]
    usage: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)
    method: str = "greedy"
    optimality_gap: float | None = None  # (greedy - optimum) / optimum, MILP only
    greedy_grams: float | None = None

    @property
    def total_grams(self) -> float:
        return float(sum(p.grams for p in self.placements))


@dataclass(slots=True)
class _ClusterState:
    cluster: Cluster
    grid: Grid
    weighted: FloatArray  # g/kWh x PUE per slot
    cumulative: FloatArray  # cumulative sum of `weighted`, leading 0
    free: FloatArray  # free GPUs per slot (inf = unlimited)
    capacity: FloatArray
    min_free: float
    used: npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class _JobShape:
    """A job as numbers on the common grid."""

    job: Job
    horizon: int  # usable slots before deadline - margin
    work: float  # slots of work
    overhead: float  # slots of overhead per paying chunk
    min_run: int
    factor: float  # kW x hours per slot (grams = factor x g/kWh x PUE)
    slack_seconds: float


def _common_grids(
    clusters: Sequence[Cluster], forecasts: Mapping[str, IntensitySeries | None], now: datetime, end: datetime
) -> list[_ClusterState]:
    states: list[_ClusterState] = []
    resolution: timedelta | None = None
    for cluster in clusters:
        grid = planning_grid(forecasts.get(cluster.zone), now, end)
        if grid is None:
            continue
        if resolution is not None and grid.resolution != resolution:
            raise PlanningError(
                f"fleet planning needs one forecast resolution; {cluster.zone} has {grid.resolution}, "
                f"others {resolution} (resample the forecasts first)"
            )
        resolution = grid.resolution
        weighted = grid.g_per_kwh * cluster.pue
        capacity = np.full(len(grid), math.inf if cluster.free_gpus is None else float(cluster.free_gpus))
        if cluster.free_gpus_by_slot is not None:
            known = min(len(grid), len(cluster.free_gpus_by_slot))
            capacity[:known] = np.asarray(cluster.free_gpus_by_slot[:known], dtype=np.float64)
        states.append(
            _ClusterState(
                cluster=cluster,
                grid=grid,
                weighted=weighted,
                cumulative=np.concatenate(([0.0], np.cumsum(weighted))),
                free=capacity.copy(),
                capacity=capacity,
                min_free=float(capacity.min()),
                used=np.zeros(len(grid), dtype=np.int64),
            )
        )
    return states


def _shapes(jobs: Sequence[Job], now: datetime, margin: timedelta, resolution: timedelta) -> list[_JobShape]:
    res = resolution.total_seconds()
    shapes = []
    for job in jobs:
        horizon = max(0, math.floor((job.deadline - margin - now).total_seconds() / res + 1e-9))
        shapes.append(
            _JobShape(
                job=job,
                horizon=horizon,
                work=job.remaining.total_seconds() / res,
                overhead=job.overhead.total_seconds() / res,
                min_run=max(1, math.ceil(job.min_run.total_seconds() / res - EPS)),
                factor=job.power_kw * res / 3600.0,
                slack_seconds=(latest_safe_start(job, margin) - now).total_seconds(),
            )
        )
    shapes.sort(key=lambda s: (s.slack_seconds, s.job.name))
    return shapes


def _pays_first(job: Job, start: int) -> bool:
    return start > 0 if job.running else job.started


_Passes = dict[tuple[object, ...], ChunkedSearch]


def _choose(
    shape: _JobShape, state: _ClusterState, passes: _Passes, cluster_index: int
) -> tuple[tuple[int, ...], float] | None:
    """Cheapest feasible slots for one job on one cluster given its free GPUs, and their g/kWh x PUE sum."""
    job = shape.job
    n = min(shape.horizon, len(state.grid))
    must_run_now = shape.slack_seconds <= 0
    blocked = state.free[:n] < job.gpus if state.min_free < job.gpus else None
    if must_run_now or job.policy is Policy.IMMEDIATE:
        need = shape.work + (shape.overhead if _pays_first(job, 0) else 0.0)
        whole = whole_slots(need)
        if whole > len(state.grid) or (state.free[:whole] < job.gpus).any():
            return None
        return tuple(range(whole)), _partial_sum(state.weighted, 0, need)
    weighted = state.weighted[:n]
    if not job.interruptible or job.policy is Policy.THRESHOLD:
        costs = weighted if blocked is None else np.where(blocked, np.inf, weighted)
        return _cheapest_block(shape, state, costs, n, blocked is None)
    count = whole_slots(shape.work)
    if shape.overhead <= 0 and job.overhead_kwh <= 0 and shape.min_run <= 1:
        costs = weighted if blocked is None else np.where(blocked, np.inf, weighted)
        if count > n or (blocked is not None and n - int(np.count_nonzero(blocked)) < count):
            return None
        chosen = np.sort(np.argsort(costs, kind="stable")[:count])
        return tuple(chosen.tolist()), float(costs[chosen].sum())
    energy_ratio = job.overhead_kwh / shape.factor if shape.factor > 0 else 0.0
    first_free = not job.started and not job.running
    key: tuple[object, ...] = (cluster_index, round(shape.work, 9), round(shape.overhead, 9), shape.min_run)
    key += (energy_ratio, first_free, job.running)
    search = passes.get(key)
    if search is None:
        search = ChunkedSearch(
            state.weighted,
            shape.work,
            overhead_slots=shape.overhead,
            resume_costs=state.weighted * energy_ratio,
            min_run_slots=shape.min_run,
            first_start_free=first_free,
            running=job.running,
        )
        passes[key] = search
    # The best plan ignoring capacity is still the best if its slots are free (capacity only removes
    # options); otherwise search again on the blocked costs.
    selection = search.best(n)
    if selection is not None and blocked is not None and blocked[list(selection.slots)].any():
        selection = chunked_runs(
            np.where(blocked, np.inf, weighted),
            shape.work,
            overhead_slots=shape.overhead,
            resume_costs=weighted * energy_ratio,
            min_run_slots=shape.min_run,
            first_start_free=first_free,
            running=job.running,
        )
    if selection is None:
        return None
    return selection.slots, float(state.weighted[list(selection.slots)].sum())


def _cheapest_block(
    shape: _JobShape, state: _ClusterState, costs: FloatArray, n: int, unblocked: bool
) -> tuple[tuple[int, ...], float] | None:
    """Cheapest contiguous run (earliest on ties); a later start may pay the resume overhead."""
    job = shape.job
    best: tuple[float, int, float] | None = None
    first, later = _pays_first(job, 0), _pays_first(job, 1)
    passes = ((0, first),) if first == later else ((0, first), (1, later))
    for start_at, pays in passes:
        need = shape.work + (shape.overhead if pays else 0.0)
        span = whole_slots(need)
        starts = n - span + 1
        if unblocked and starts > 0:
            full = math.floor(need + EPS)
            totals = state.cumulative[full : full + starts] - state.cumulative[:starts]
            fraction = need - full
            if fraction > EPS:
                totals = totals + fraction * state.weighted[full : full + starts]
        else:
            totals = window_costs(costs, need)
        stop = totals.shape[0] if (start_at == 1 or len(passes) == 1) else min(1, totals.shape[0])
        if stop <= start_at:
            continue
        part = totals[start_at:stop]
        low = float(part.min())
        if not math.isfinite(low):
            continue
        index = int((part <= low + 1e-9 * max(1.0, abs(low))).argmax()) + start_at
        if best is None or low < best[0] - 1e-9 * max(1.0, abs(low)):
            best = (low, index, need)
    if best is None:
        return None
    low, start, need = best
    return tuple(range(start, start + whole_slots(need))), low


def _partial_sum(weighted: FloatArray, start: int, need: float) -> float:
    full = math.floor(need + EPS)
    total = float(weighted[start : start + full].sum())
    fraction = need - full
    if fraction > EPS and start + full < weighted.shape[0]:
        total += fraction * float(weighted[start + full])
    return total


def _fits(slots: tuple[int, ...], state: _ClusterState, gpus: int) -> bool:
    if state.min_free >= gpus:
        return True
    return bool((state.free[list(slots)] >= gpus).all())


def plan_fleet_greedy(
    jobs: Sequence[Job],
    clusters: Sequence[Cluster],
    forecasts: Mapping[str, IntensitySeries | None],
    now: datetime,
    margin: timedelta = timedelta(0),
) -> FleetPlan:
    """Greedy by least slack: each job takes its cheapest option in the capacity left (see module doc)."""
    now = require_utc(now, "planning time")
    if not jobs:
        return FleetPlan(now=now, resolution=timedelta(minutes=15), placements=(), unplaced=())
    end = max(max(j.deadline for j in jobs) - margin, now + max(j.remaining + j.overhead for j in jobs))
    states = _common_grids(clusters, forecasts, now, end)
    if not states:
        raise PlanningError("no forecast for any cluster's zone: fleet planning needs at least one")
    resolution = states[0].grid.resolution
    placements: list[FleetSlot] = []
    unplaced: list[str] = []
    cache: dict[tuple[object, ...], list[tuple[tuple[int, ...], float] | None]] = {}
    passes: _Passes = {}
    for shape in _shapes(jobs, now, margin, resolution):
        job = shape.job
        key = (
            shape.horizon, round(shape.work, 9), round(shape.overhead, 9), shape.min_run, job.interruptible,
            job.policy, job.running, job.started, job.overhead_kwh / shape.factor, job.gpus, shape.slack_seconds <= 0,
        )  # fmt: skip
        options = cache.get(key)
        if options is None or any(
            o is not None and not _fits(o[0], s, job.gpus) for o, s in zip(options, states, strict=True)
        ):
            options = [_choose(shape, state, passes, i) for i, state in enumerate(states)]
            cache[key] = options
        best_index, best_value = -1, math.inf
        for index, option in enumerate(options):
            if option is not None and option[1] < best_value - 1e-12:
                best_index, best_value = index, option[1]
        if best_index < 0:
            unplaced.append(job.name)
            continue
        slots, value = options[best_index]  # type: ignore[misc]
        state = states[best_index]
        taken = np.array(slots, dtype=np.intp)
        state.used[taken] += job.gpus
        if math.isfinite(state.min_free):
            state.free[taken] -= job.gpus
            state.min_free = min(state.min_free, float(state.free[taken].min()))
        placements.append(FleetSlot(job=job.name, cluster=state.cluster.name, slots=slots, grams=value * shape.factor))
    usage = {s.cluster.name: s.used for s in states}
    return FleetPlan(
        now=now,
        resolution=resolution,
        placements=tuple(placements),
        unplaced=tuple(unplaced),
        usage=usage,
        method="greedy",
    )


def plan_fleet_milp(
    jobs: Sequence[Job],
    clusters: Sequence[Cluster],
    forecasts: Mapping[str, IntensitySeries | None],
    now: datetime,
    margin: timedelta = timedelta(0),
    *,
    time_limit_seconds: float = 60.0,
) -> FleetPlan:
    """The exact plan by MILP (HiGHS), with the greedy plan's optimality gap. For small fleets.

    Interruptible jobs are modelled with free suspension; a job with a per-cycle overhead or a minimum
    chunk is refused (PlanningError) rather than silently simplified."""
    import highspy  # local import: only the MILP needs the solver

    now = require_utc(now, "planning time")
    for job in jobs:
        if job.interruptible and (job.overhead > timedelta(0) or job.overhead_kwh > 0 or job.min_run > timedelta(0)):
            raise PlanningError(
                f"job {job.name}: the MILP models interruptible jobs with free suspension only; "
                "plan jobs with overheads or minimum chunks with plan_fleet_greedy"
            )
    greedy = plan_fleet_greedy(jobs, clusters, forecasts, now, margin)
    if not jobs:
        return greedy
    end = max(max(j.deadline for j in jobs) - margin, now + max(j.remaining + j.overhead for j in jobs))
    states = _common_grids(clusters, forecasts, now, end)
    shapes = _shapes(jobs, now, margin, states[0].grid.resolution)
    model = _MilpBuilder(states)
    for shape in shapes:
        model.add_job(shape)
    solution = model.solve(highspy, time_limit_seconds)
    placements, unplaced = model.decode(solution)
    placed = sum(p.grams for p in placements)
    greedy_total = greedy.total_grams
    gap = (greedy_total - placed) / placed if placed > 0 and len(unplaced) == len(greedy.unplaced) else None
    usage = {s.cluster.name: np.zeros(len(s.grid), dtype=np.int64) for s in states}
    gpus = {j.name: j.gpus for j in jobs}
    for p in placements:
        usage[p.cluster][list(p.slots)] += gpus[p.job]
    return FleetPlan(
        now=now,
        resolution=states[0].grid.resolution,
        placements=tuple(placements),
        unplaced=tuple(unplaced),
        usage=usage,
        method="milp",
        optimality_gap=gap,
        greedy_grams=greedy_total,
    )


class _MilpBuilder:
    """Column-wise model: one binary per (job, cluster, start) or (job, cluster, slot) plus cluster choices."""

    def __init__(self, states: list[_ClusterState]) -> None:
        self.states = states
        self.costs: list[float] = []
        self.columns: list[dict[int, float]] = []
        self.meaning: list[tuple[str, int, str, tuple[int, ...], float]] = []  # job, cluster, kind, slots, grams
        self.row_lower: list[float] = []
        self.row_upper: list[float] = []
        self.capacity_rows: dict[tuple[int, int], int] = {}
        self.penalty = 0.0

    def _row(self, lower: float, upper: float) -> int:
        self.row_lower.append(lower)
        self.row_upper.append(upper)
        return len(self.row_lower) - 1

    def _capacity_row(self, cluster: int, slot: int) -> int | None:
        cap = self.states[cluster].capacity[slot]
        if not math.isfinite(cap):
            return None
        key = (cluster, slot)
        if key not in self.capacity_rows:
            self.capacity_rows[key] = self._row(-math.inf, float(cap))
        return self.capacity_rows[key]

    def _column(
        self, cost: float, entries: dict[int, float], meaning: tuple[str, int, str, tuple[int, ...], float]
    ) -> int:
        self.costs.append(cost)
        self.columns.append(entries)
        self.meaning.append(meaning)
        return len(self.costs) - 1

    def add_job(self, shape: _JobShape) -> None:
        job = shape.job
        assign = self._row(1.0, 1.0)
        # "unplaced" column with a large cost, so an infeasible fleet still solves and says who is left out
        self._column(math.nan, {assign: 1.0}, (job.name, -1, "unplaced", (), 0.0))
        must_now = shape.slack_seconds <= 0 or job.policy is Policy.IMMEDIATE
        for c, state in enumerate(self.states):
            n = min(shape.horizon, len(state.grid))
            if job.interruptible and not must_now:
                count = whole_slots(shape.work)
                if count > n:
                    continue
                link = self._row(0.0, 0.0)
                self._column(0.0, {assign: 1.0, link: -float(count)}, (job.name, c, "choose", (), 0.0))
                for t in range(n):
                    grams = float(state.weighted[t]) * shape.factor
                    entries = {link: 1.0}
                    row = self._capacity_row(c, t)
                    if row is not None:
                        entries[row] = float(job.gpus)
                    self._column(grams, entries, (job.name, c, "slot", (t,), grams))
                    self.penalty = max(self.penalty, grams * count)
                continue
            pays0 = _pays_first(job, 0)
            for start in range(1 if must_now else n):
                need = shape.work + (shape.overhead if _pays_first(job, start) or (start == 0 and pays0) else 0.0)
                whole = whole_slots(need)
                limit = len(state.grid) if must_now else n
                if start + whole > limit:
                    break
                grams = _partial_sum(state.weighted, start, need) * shape.factor
                entries = {assign: 1.0}
                for t in range(start, start + whole):
                    row = self._capacity_row(c, t)
                    if row is not None:
                        entries[row] = float(job.gpus)
                slots = tuple(range(start, start + whole))
                self._column(grams, entries, (job.name, c, "block", slots, grams))
                self.penalty = max(self.penalty, grams)

    def solve(self, highspy: object, time_limit_seconds: float) -> list[float]:
        hs: object = highspy
        big = 10.0 * self.penalty + 1.0
        costs = np.array([big if math.isnan(c) else c for c in self.costs])
        starts, index, value = [0], [], []
        for entries in self.columns:
            for row, coefficient in sorted(entries.items()):
                index.append(row)
                value.append(coefficient)
            starts.append(len(index))
        lp = hs.HighsLp()  # type: ignore[attr-defined]
        lp.num_col_ = len(costs)
        lp.num_row_ = len(self.row_lower)
        lp.col_cost_ = costs
        lp.col_lower_ = np.zeros(len(costs))
        lp.col_upper_ = np.ones(len(costs))
        inf = hs.kHighsInf  # type: ignore[attr-defined]
        lp.row_lower_ = np.array([-inf if math.isinf(x) else x for x in self.row_lower])
        lp.row_upper_ = np.array([inf if math.isinf(x) else x for x in self.row_upper])
        lp.a_matrix_.format_ = hs.MatrixFormat.kColwise  # type: ignore[attr-defined]
        lp.a_matrix_.start_ = np.array(starts, dtype=np.int32)
        lp.a_matrix_.index_ = np.array(index, dtype=np.int32)
        lp.a_matrix_.value_ = np.array(value, dtype=np.float64)
        lp.integrality_ = [hs.HighsVarType.kInteger] * len(costs)  # type: ignore[attr-defined]
        solver = hs.Highs()  # type: ignore[attr-defined]
        solver.setOptionValue("output_flag", False)
        solver.setOptionValue("time_limit", float(time_limit_seconds))
        solver.setOptionValue("mip_rel_gap", 1e-7)
        solver.passModel(lp)
        solver.run()
        status = solver.getModelStatus()
        if status not in (hs.HighsModelStatus.kOptimal, hs.HighsModelStatus.kTimeLimit):  # type: ignore[attr-defined]
            raise PlanningError(f"MILP solver stopped without a plan: {solver.modelStatusToString(status)}")
        return list(solver.getSolution().col_value)

    def decode(self, solution: list[float]) -> tuple[list[FleetSlot], list[str]]:
        chosen: dict[str, tuple[int, list[int], float]] = {}
        unplaced: list[str] = []
        for value, (job, cluster, kind, slots, grams) in zip(solution, self.meaning, strict=True):
            if value < 0.5:
                continue
            if kind == "unplaced":
                unplaced.append(job)
            elif kind in ("block", "slot"):
                entry = chosen.setdefault(job, (cluster, [], 0.0))
                chosen[job] = (cluster, entry[1] + list(slots), entry[2] + grams)
        placements = [
            FleetSlot(job=job, cluster=self.states[c].cluster.name, slots=tuple(sorted(slots)), grams=grams)
            for job, (c, slots, grams) in chosen.items()
        ]
        return placements, unplaced
