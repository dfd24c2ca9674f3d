"""Small builders for planner tests: `job().hours(4).deadline_in(12).build()`, forecasts from values."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np

from carbonshift.domain.planning import Cluster, Job, Policy
from carbonshift.domain.series import IntensitySeries, Kind

NOW = datetime(2024, 3, 4, 0, 0, tzinfo=UTC)
SLOT = timedelta(minutes=15)
ZONE = "DE"


class JobBuilder:
    """Fluent builder over Job; every method returns a new builder."""

    def __init__(self, job: Job) -> None:
        self._job = job

    def hours(self, value: float) -> JobBuilder:
        return JobBuilder(replace(self._job, remaining=timedelta(hours=value)))

    def slots(self, count: float) -> JobBuilder:
        return JobBuilder(replace(self._job, remaining=SLOT * count))

    def deadline(self, moment: datetime) -> JobBuilder:
        return JobBuilder(replace(self._job, deadline=moment))

    def deadline_in(self, hours: float, now: datetime = NOW) -> JobBuilder:
        return self.deadline(now + timedelta(hours=hours))

    def interruptible(
        self, overhead: timedelta = timedelta(0), min_run: timedelta = timedelta(0), overhead_kwh: float = 0.0
    ) -> JobBuilder:
        return JobBuilder(
            replace(self._job, interruptible=True, overhead=overhead, min_run=min_run, overhead_kwh=overhead_kwh)
        )

    def threshold(self, g_per_kwh: float) -> JobBuilder:
        return JobBuilder(replace(self._job, policy=Policy.THRESHOLD, max_intensity_g_per_kwh=g_per_kwh))

    def immediate(self) -> JobBuilder:
        return JobBuilder(replace(self._job, policy=Policy.IMMEDIATE))

    def running(self) -> JobBuilder:
        return JobBuilder(replace(self._job, running=True, started=True))

    def suspended(self) -> JobBuilder:
        return JobBuilder(replace(self._job, running=False, started=True))

    def gpus(self, count: int) -> JobBuilder:
        return JobBuilder(replace(self._job, gpus=count))

    def named(self, name: str) -> JobBuilder:
        return JobBuilder(replace(self._job, name=name))

    def build(self) -> Job:
        return self._job


def job() -> JobBuilder:
    """A 1-hour, 1-GPU, 1 kW job due in 24 hours, Optimal, not interruptible."""
    return JobBuilder(
        Job(name="train", remaining=timedelta(hours=1), deadline=NOW + timedelta(hours=24), watts_per_gpu=1000.0)
    )


def forecast(values: list[float] | np.ndarray, start: datetime = NOW, step: timedelta = SLOT) -> IntensitySeries:
    return IntensitySeries(
        zone=ZONE, start=start, resolution=step, values=np.asarray(values, dtype=np.float64), kind=Kind.FORECAST
    )


def cluster(name: str = "local", zone: str = ZONE, pue: float = 1.0, free_gpus: int | None = None) -> Cluster:
    return Cluster(name=name, zone=zone, pue=pue, free_gpus=free_gpus)
