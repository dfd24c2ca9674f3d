"""The planner's inputs and outputs: a job to place, candidate clusters, and the resulting plan.

Small frozen dataclasses, so that a plan is a pure function of (job, clusters, forecasts, now, margin) and
the same inputs always give the same plan. Times are timezone-aware UTC datetimes; durations are
timedeltas; power in watts, energy in kWh, emissions in grams of CO2e, intensity in gCO2e/kWh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from carbonshift.domain.series import require_utc


class PlanningError(ValueError):
    """Inputs the planner cannot work with (negative durations, a threshold policy without a threshold...)."""


class Policy(StrEnum):
    """How a job wants to be scheduled (mirrors `spec.policy` of a CarbonAwareJob)."""

    OPTIMAL = "Optimal"
    THRESHOLD = "Threshold"
    IMMEDIATE = "Immediate"


class Reason(StrEnum):
    """Why the plan is what it is: the one-word summary a condition or an event carries."""

    OPTIMAL = "Optimal"  # lowest forecast emissions within the deadline
    THRESHOLD = "Threshold"  # runs while the forecast is at or below the job's max intensity
    IMMEDIATE = "Immediate"  # the job asked to run now
    WITHIN_ERROR = "WithinForecastError"  # do no harm: the best deferral's forecast gain is within the forecast's error
    WITHOUT_SKILL = "ForecastWithoutSkill"  # do no harm: the forecast's recent gains did not come true (no shown skill)
    LATEST_SAFE_START = "LatestSafeStart"  # no slack left: must run now to meet the deadline
    NO_DATA = "NoData"  # no forecast at all: runs at its latest safe start
    INFEASIBLE_DEADLINE = "InfeasibleDeadline"  # cannot finish by the deadline even starting now
    DEADLINE_PASSED = "DeadlinePassed"  # the deadline is already behind us
    NO_CAPACITY = "NoCapacity"  # no candidate cluster has enough free GPUs in time
    DONE = "Done"  # nothing left to run


class Flag(StrEnum):
    """Facts about the inputs that a user should see next to the plan."""

    PARTIAL_FORECAST = "partial-forecast"  # some slots before the deadline had no forecast (filled high)
    NO_FORECAST = "no-forecast"  # the forecast held no value at all before the deadline
    FORCED = "forced"  # some run time was forced by the latest safe start (threshold policy)
    BEST_EFFORT = "best-effort"  # the deadline cannot be met; the job runs as soon as possible
    # the first deferral of a job that cannot be interrupted was taken without the provider's current measurement
    # to check the forecast against (the core's anchored veto, domain/core.py), none being available
    UNANCHORED = "unanchored"


@dataclass(frozen=True, slots=True)
class Job:
    """One job's scheduling needs at the moment of planning.

    `remaining` is the run time still needed at full speed. `overhead` is the time lost by each suspend and
    resume cycle (checkpoint, restart, redone work): a resumed chunk must run `overhead` longer.
    `overhead_kwh` is extra energy per cycle on top of that (e.g. writing the checkpoint). `min_run` is
    the shortest useful chunk. `started` says the job has a checkpoint (resuming it costs the overhead);
    `running` says it is running right now (continuing costs nothing, stopping and resuming later does).
    """

    name: str
    remaining: timedelta
    deadline: datetime
    interruptible: bool = False
    overhead: timedelta = timedelta(0)
    overhead_kwh: float = 0.0
    min_run: timedelta = timedelta(0)
    gpus: int = 1
    watts_per_gpu: float = 700.0
    policy: Policy = Policy.OPTIMAL
    max_intensity_g_per_kwh: float | None = None
    running: bool = False
    started: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "deadline", require_utc(self.deadline, f"deadline of job {self.name}"))
        if self.remaining < timedelta(0):
            raise PlanningError(f"job {self.name}: remaining run time {self.remaining} is negative")
        if self.overhead < timedelta(0) or self.min_run < timedelta(0):
            raise PlanningError(f"job {self.name}: overhead and min_run must not be negative")
        if self.overhead_kwh < 0 or not math.isfinite(self.overhead_kwh):
            raise PlanningError(f"job {self.name}: overhead_kwh must be a finite number >= 0")
        if self.gpus < 1:
            raise PlanningError(f"job {self.name}: gpus must be at least 1, got {self.gpus}")
        if not (self.watts_per_gpu > 0 and math.isfinite(self.watts_per_gpu)):
            raise PlanningError(f"job {self.name}: watts_per_gpu must be positive, got {self.watts_per_gpu}")
        if self.policy is Policy.THRESHOLD and self.max_intensity_g_per_kwh is None:
            raise PlanningError(f"job {self.name}: policy Threshold needs max_intensity_g_per_kwh")

    @property
    def power_kw(self) -> float:
        """Power drawn while running, in kW (all GPUs)."""
        return self.gpus * self.watts_per_gpu / 1000.0

    @property
    def resumes_cost_overhead(self) -> bool:
        """Whether the first chunk of a plan that does not continue right now pays the overhead."""
        return self.started or self.running


@dataclass(frozen=True, slots=True)
class Cluster:
    """A candidate place to run: its grid zone, PUE and free GPUs.

    `free_gpus` is the free GPU count (None = unlimited). `free_gpus_by_slot`, when given, overrides it
    slot by slot on the planning grid (slot i = [now + i*resolution, now + (i+1)*resolution)); slots past
    its end use `free_gpus`.
    """

    name: str
    zone: str
    pue: float = 1.0
    free_gpus: int | None = None
    free_gpus_by_slot: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not (self.pue >= 1.0 and math.isfinite(self.pue)):
            raise PlanningError(f"cluster {self.name}: PUE must be >= 1, got {self.pue}")
        if self.free_gpus is not None and self.free_gpus < 0:
            raise PlanningError(f"cluster {self.name}: free_gpus must not be negative")


@dataclass(frozen=True, slots=True)
class RunWindow:
    """One run chunk [start, end) with the mean forecast intensity over it (gCO2e/kWh)."""

    start: datetime
    end: datetime
    mean_g_per_kwh: float

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer for one job.

    `planned_grams` are the forecast emissions of the windows (incl. PUE and overheads; NaN with no data),
    `baseline_grams` those of running the whole remaining time now on the same cluster. `feasible` is false
    when the deadline cannot be met (the windows then say how to finish as soon as possible).
    """

    job: str
    cluster: str | None
    zone: str | None
    windows: tuple[RunWindow, ...]
    planned_grams: float
    baseline_grams: float
    latest_safe_start: datetime
    reason: Reason
    feasible: bool = True
    flags: frozenset[Flag] = field(default_factory=frozenset)
    energy_kwh: float = 0.0
    cycles: int = 0

    @property
    def start(self) -> datetime | None:
        return self.windows[0].start if self.windows else None

    @property
    def end(self) -> datetime | None:
        return self.windows[-1].end if self.windows else None

    @property
    def avoided_grams(self) -> float:
        return self.baseline_grams - self.planned_grams

    def runs_at(self, moment: datetime) -> bool:
        """Whether the plan has the job running at `moment`."""
        return any(w.start <= moment < w.end for w in self.windows)

    def run_time(self) -> timedelta:
        return sum((w.duration for w in self.windows), timedelta(0))
