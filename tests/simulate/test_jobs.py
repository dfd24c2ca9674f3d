"""Job mixes: the Let's Wait Awhile scenarios (checks from the paper's set-up), deadline rules, CSV."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from carbonshift.simulate.jobs import (
    JobMixError,
    jobs_from_csv,
    next_workday_deadline,
    poisson_jobs,
    scenario_i,
    scenario_ii,
    semi_weekly_deadline,
)

START = datetime(2020, 1, 1, tzinfo=UTC)


def test_scenario_ii_draws_the_papers_3387_jobs() -> None:
    jobs = scenario_ii()
    assert len(jobs) == 3387
    first = jobs[0]
    assert first.arrival == datetime(2020, 1, 1, 9, 30, tzinfo=UTC)
    assert first.duration == timedelta(hours=53)
    hours = np.array([j.duration.total_seconds() / 3600 for j in jobs])
    assert round(float(hours.mean()), 2) == 45.95
    assert sum((j.arrival - START) // timedelta(minutes=30) for j in jobs) == 29_303_365
    assert sum(j.duration // timedelta(minutes=30) for j in jobs) == 311_252
    assert all(j.arrival.weekday() <= 4 and 9 <= j.arrival.hour <= 16 for j in jobs)
    no_slack = np.mean([j.deadline == j.arrival + j.duration for j in jobs])
    assert 0.19 < no_slack < 0.22  # "about 20% of jobs"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("finish", "deadline"),
    [
        ("2020-01-06T12:00", "2020-01-06T12:00"),  # Monday in office hours: no slack
        ("2020-01-06T17:00", "2020-01-06T17:00"),  # 17:00 exactly: no slack
        ("2020-01-06T17:30", "2020-01-07T09:00"),  # after 17:00: next day 09:00
        ("2020-01-07T08:30", "2020-01-07T09:00"),  # before 09:00: 09:00 that day
        ("2020-01-10T18:00", "2020-01-11T09:00"),  # Friday evening: Saturday 09:00 (paper's rule)
        ("2020-01-11T10:00", "2020-01-13T09:00"),  # Saturday: Monday 09:00
        ("2020-01-12T10:00", "2020-01-13T09:00"),  # Sunday: next day 09:00
    ],
)
def test_next_workday_rule(finish: str, deadline: str) -> None:
    assert next_workday_deadline(at(finish)) == at(deadline)


@pytest.mark.parametrize(
    ("finish", "deadline"),
    [
        ("2020-01-06T09:30", "2020-01-09T09:00"),  # Monday after 09:00: Thursday
        ("2020-01-06T09:00", "2020-01-06T09:00"),  # Monday 09:00: that Monday
        ("2020-01-08T20:00", "2020-01-09T09:00"),  # Wednesday: Thursday
        ("2020-01-09T09:00", "2020-01-09T09:00"),  # Thursday 09:00: Thursday
        ("2020-01-09T09:30", "2020-01-13T09:00"),  # Thursday after 09:00: Monday
        ("2020-01-11T12:00", "2020-01-13T09:00"),  # Saturday: Monday
    ],
)
def test_semi_weekly_rule(finish: str, deadline: str) -> None:
    assert semi_weekly_deadline(at(finish)) == at(deadline)


def test_scenario_i_jobs_move_within_the_window() -> None:
    jobs = scenario_i(window=timedelta(hours=2))
    assert len(jobs) == 365
    assert jobs[0].nominal_start == datetime(2020, 1, 1, 1, tzinfo=UTC)
    assert jobs[0].arrival == datetime(2019, 12, 31, 23, tzinfo=UTC)
    assert jobs[0].deadline == datetime(2020, 1, 1, 3, 30, tzinfo=UTC)


def test_poisson_jobs_are_seeded_and_meet_their_own_constraints() -> None:
    end = START + timedelta(days=30)
    a = poisson_jobs(START, end, per_day=5, seed=3)
    assert a == poisson_jobs(START, end, per_day=5, seed=3)
    assert 100 < len(a) < 200
    assert all(j.deadline >= j.arrival + j.duration and START <= j.arrival < end for j in a)


def test_jobs_csv_reads_rows_and_names_the_bad_line() -> None:
    text = "arrival,duration_hours,deadline,interruptible\n2020-01-01T10:00Z,2,2020-01-02T10:00Z,false\n"
    (only,) = jobs_from_csv(text)
    assert only.duration == timedelta(hours=2) and not only.interruptible
    with pytest.raises(JobMixError, match="line 3: arrival"):
        jobs_from_csv(text + "yesterday,2,2020-01-02T10:00Z,true\n")
    with pytest.raises(JobMixError, match="no timezone"):
        jobs_from_csv("arrival,duration_hours,deadline\n2020-01-01T10:00,2,2020-01-02T10:00Z\n")
    with pytest.raises(JobMixError, match="needs the columns"):
        jobs_from_csv("start,end\n1,2\n")
