"""The closed loop's speed-ups change no decision: the same jobs, forecasts and core give the same run windows,
emissions and cycles with the planner's fast paths as with its plain search (planning.search.FAST), and with the jobs
split across two processes as in one."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

import carbonshift.domain.planning.search as search_module
from carbonshift.data import load_bundled_trace, load_forecast_model
from carbonshift.simulate.engine import Settings, simulate
from carbonshift.simulate.jobs import scenario_ii


@pytest.mark.parametrize(("zone", "overhead_s", "min_run_min"), [("DE", 60, 15), ("NO_2022", 1200, 30)])
def test_fast_paths_give_the_same_transitions(zone: str, overhead_s: int, min_run_min: int) -> None:
    actual = load_bundled_trace(zone)
    jobs = scenario_ii(year=actual.start.year)[7::400]
    settings = Settings(
        overhead=timedelta(seconds=overhead_s),
        min_run=timedelta(minutes=min_run_min),
        margin=timedelta(minutes=10),
        loop="closed",
    )

    def run(fast: bool) -> list[tuple[object, ...]]:
        search_module.FAST = fast
        try:
            report = simulate(
                actual,
                jobs,
                ["run-now", "optimal-interruptible"],
                [load_forecast_model("realistic")],
                settings=settings,
            )
        finally:
            search_module.FAST = True
        outcomes = report.result("optimal-interruptible").outcomes
        return [(o.job, o.windows, round(o.grams, 6), o.cycles) for o in outcomes]

    fast, plain = run(True), run(False)
    assert len(fast) >= 8
    assert sum(len(o[1]) for o in fast) > len(fast)  # some jobs were suspended and resumed: the search mattered
    assert fast == plain


def test_two_workers_give_the_outcomes_of_one() -> None:
    actual = load_bundled_trace("GB_2023")
    jobs = scenario_ii(year=actual.start.year)[3::300]
    settings = Settings(overhead=timedelta(seconds=16), min_run=timedelta(minutes=15), loop="closed")
    policies = ["run-now", "optimal", "optimal-interruptible"]
    one = simulate(actual, jobs, policies, [load_forecast_model("realistic")], settings=settings)
    two = simulate(actual, jobs, policies, [load_forecast_model("realistic")], settings=replace(settings, workers=2))
    for policy in policies[1:]:
        a, b = one.result(policy), two.result(policy)
        assert [(o.job, o.windows, o.grams) for o in a.outcomes] == [(o.job, o.windows, o.grams) for o in b.outcomes]
        assert a.saved_pct_vs_run_now == b.saved_pct_vs_run_now
