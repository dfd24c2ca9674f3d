"""Job mixes for the simulator: the Let's Wait Awhile scenarios, Poisson arrivals, or a CSV of jobs.

Scenarios I and II follow Wiesner et al., "Let's Wait Awhile: How Temporal Workload Shifting Can Reduce
Carbon Emissions in the Cloud" (Middleware '21, doi:10.1145/3464298.3493399), as described in
docs/reproduction.md, including the order of the random draws so that the same 3,387 jobs come out:

- Scenario II (ML training): numpy `default_rng(0)`; jobs per weekday from one multinomial over all
  weekdays of the year; then, for each calendar day in order, that many start times uniform over
  09:00..16:30 in 30-minute steps, sorted; then all durations at once, uniform over 4.0..89.5 h in
  30-minute steps. Deadlines: "next workday" or "semi-weekly" from the job's original finish time.
- Scenario I (nightly job): one 30-minute job at 01:00 on each of the first 365 days, free to move
  within +-w hours (it arrives w hours early and must be done w hours + 30 minutes after 01:00).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import numpy as np

HALF_HOUR = timedelta(minutes=30)


class JobMixError(ValueError):
    """A job mix that cannot be built (bad CSV row, unknown scenario or deadline rule...)."""


@dataclass(frozen=True, slots=True)
class SimJob:
    """One job of a mix: known at `arrival`, runs `duration` at full speed, must finish by `deadline`.

    `nominal_start` is when it would start without carbon awareness (the run-now baseline); it is the
    arrival except for jobs announced ahead of time (scenario I)."""

    name: str
    arrival: datetime
    duration: timedelta
    deadline: datetime
    nominal_start: datetime | None = None
    gpus: int = 1
    watts_per_gpu: float = 700.0
    interruptible: bool = True

    @property
    def baseline_start(self) -> datetime:
        return self.nominal_start or self.arrival


def _weekdays(year: int) -> list[date]:
    first = date(year, 1, 1)
    days = [first + timedelta(days=i) for i in range((date(year + 1, 1, 1) - first).days)]
    return [d for d in days if d.weekday() <= 4]


def next_workday_deadline(finish: datetime) -> datetime:
    """The paper's "next workday" rule: no slack when finishing Mon-Fri 09:00..17:00; before 09:00 on a
    weekday -> 09:00 that day; after 17:00 or on Sunday -> 09:00 next day; Saturday -> Monday 09:00."""
    nine = finish.replace(hour=9, minute=0, second=0, microsecond=0)
    hours = finish.hour + finish.minute / 60.0
    weekday = finish.weekday()
    if weekday == 5:
        return nine + timedelta(days=2)
    if weekday == 6 or hours > 17:
        return nine + timedelta(days=1)
    if hours < 9:
        return nine
    return finish


def semi_weekly_deadline(finish: datetime) -> datetime:
    """The paper's "semi-weekly" rule: finishing from Monday after 09:00 to Thursday 09:00 -> Thursday
    09:00, otherwise the next Monday 09:00 (Monday up to 09:00 -> that Monday 09:00)."""
    nine = finish.replace(hour=9, minute=0, second=0, microsecond=0)
    hours = finish.hour + finish.minute / 60.0
    weekday = finish.weekday()
    if (weekday == 0 and hours > 9) or weekday in (1, 2) or (weekday == 3 and hours <= 9):
        return nine + timedelta(days=(7 - weekday + 3) % 7)
    return nine + timedelta(days=(7 - weekday) % 7)


DEADLINE_RULES = {"next-workday": next_workday_deadline, "semi-weekly": semi_weekly_deadline}


def scenario_ii(
    year: int = 2020, deadline_rule: str = "next-workday", count: int = 3387, seed: int = 0
) -> list[SimJob]:
    """Scenario II of Let's Wait Awhile: ML training jobs submitted on workdays (see module doc)."""
    if deadline_rule not in DEADLINE_RULES:
        raise JobMixError(f"unknown deadline rule {deadline_rule!r}; expected one of {', '.join(DEADLINE_RULES)}")
    rule = DEADLINE_RULES[deadline_rule]
    rng = np.random.default_rng(seed)
    workdays = _weekdays(year)
    per_day = rng.multinomial(count, [1.0 / len(workdays)] * len(workdays))
    counts = dict(zip(workdays, (int(x) for x in per_day), strict=True))
    start_minutes = np.arange(9 * 60, 17 * 60, 30)
    arrivals: list[datetime] = []
    day = date(year, 1, 1)
    while day.year == year:
        drawn = np.sort(rng.choice(start_minutes, size=counts.get(day, 0)))
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        arrivals.extend(midnight + timedelta(minutes=int(m)) for m in drawn)
        day += timedelta(days=1)
    durations = rng.choice(np.arange(4 * 60, 90 * 60, 30), size=count)
    jobs = []
    for index, (arrival, minutes) in enumerate(zip(arrivals, durations, strict=True)):
        duration = timedelta(minutes=int(minutes))
        jobs.append(
            SimJob(name=f"ml-{index:04d}", arrival=arrival, duration=duration, deadline=rule(arrival + duration))
        )
    return jobs


def scenario_i(year: int = 2020, window: timedelta = timedelta(hours=4), days: int = 365) -> list[SimJob]:
    """Scenario I of Let's Wait Awhile: a 30-minute job at 01:00 each day, movable by +-`window`."""
    jobs = []
    for index in range(days):
        nominal = datetime(year, 1, 1, 1, 0, tzinfo=UTC) + timedelta(days=index)
        jobs.append(
            SimJob(
                name=f"nightly-{index:03d}",
                arrival=nominal - window,
                duration=HALF_HOUR,
                deadline=nominal + window + HALF_HOUR,
                nominal_start=nominal,
                interruptible=False,
            )
        )
    return jobs


def poisson_jobs(
    start: datetime,
    end: datetime,
    *,
    per_day: float = 10.0,
    mean_hours: float = 8.0,
    slack: float = 1.0,
    seed: int = 0,
    interruptible_share: float = 0.5,
) -> list[SimJob]:
    """Poisson arrivals (`per_day` on average) with log-normal durations (mean `mean_hours`, 30-minute
    steps, 30 minutes to 72 hours) and a deadline `slack` x duration after the earliest finish."""
    if per_day <= 0 or mean_hours <= 0 or slack < 0:
        raise JobMixError("poisson jobs need per_day > 0, mean_hours > 0 and slack >= 0")
    rng = np.random.default_rng(seed)
    span_days = (end - start).total_seconds() / 86400.0
    count = int(rng.poisson(per_day * span_days))
    offsets = np.sort(rng.uniform(0.0, span_days, size=count))
    sigma = 0.8
    hours = rng.lognormal(math.log(mean_hours) - sigma**2 / 2, sigma, size=count)
    halves = np.clip(np.rint(hours * 2), 1, 144)
    flags = rng.random(count) < interruptible_share
    jobs = []
    for index in range(count):
        arrival = start + timedelta(days=float(offsets[index]))
        arrival = arrival.replace(second=0, microsecond=0)
        duration = HALF_HOUR * int(halves[index])
        deadline = arrival + duration + duration * slack
        jobs.append(SimJob(f"job-{index:05d}", arrival, duration, deadline, interruptible=bool(flags[index])))
    return jobs


CSV_COLUMNS = "arrival,duration_hours,deadline[,interruptible,gpus,watts_per_gpu,name]"


def _parse_time(text: str, line: int, column: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise JobMixError(f"jobs CSV line {line}: {column} {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise JobMixError(f"jobs CSV line {line}: {column} {text!r} has no timezone (add Z for UTC)")
    return moment.astimezone(UTC)


def jobs_from_csv(text: str) -> list[SimJob]:
    """Jobs from CSV text with columns arrival,duration_hours,deadline[,interruptible,gpus,watts_per_gpu,name]."""
    reader = csv.DictReader(io.StringIO(text))
    needed = {"arrival", "duration_hours", "deadline"}
    if reader.fieldnames is None or not needed <= {f.strip() for f in reader.fieldnames}:
        raise JobMixError(f"jobs CSV needs the columns {CSV_COLUMNS}")
    jobs = []
    for line, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        arrival = _parse_time(row["arrival"], line, "arrival")
        deadline = _parse_time(row["deadline"], line, "deadline")
        try:
            hours = float(row["duration_hours"])
            gpus = int(row.get("gpus") or 1)
            watts = float(row.get("watts_per_gpu") or 700.0)
        except ValueError:
            raise JobMixError(f"jobs CSV line {line}: duration_hours, gpus and watts_per_gpu must be numbers") from None
        if not (hours > 0 and math.isfinite(hours)) or gpus < 1 or not watts > 0:
            raise JobMixError(f"jobs CSV line {line}: duration, gpus and watts must be positive")
        flag = (row.get("interruptible") or "true").lower()
        if flag not in {"true", "false", "1", "0", "yes", "no"}:
            raise JobMixError(f"jobs CSV line {line}: interruptible must be true or false, got {flag!r}")
        jobs.append(
            SimJob(
                name=row.get("name") or f"job-{line - 1:05d}",
                arrival=arrival,
                duration=timedelta(hours=hours),
                deadline=deadline,
                gpus=gpus,
                watts_per_gpu=watts,
                interruptible=flag in {"true", "1", "yes"},
            )
        )
    if not jobs:
        raise JobMixError("jobs CSV holds no jobs")
    return jobs
