"""Reproduction of Let's Wait Awhile (Wiesner et al., Middleware '21) on the bundled DE 2020 trace.

Two checks, with stated tolerances (docs/reproduction.md has the table side by side):

1. Method: the simulator (which plans every job through the real planner) equals a direct, independent
   numpy implementation of the paper's method on the same data within 0.005 percentage points.
2. Figures: our results are within 0.05 points of the published ones where the bundled trace covers
   every job (scenario I; scenario II next-workday), and within 0.15 points for semi-weekly. The paper
   loaded data to 2021-01-09 so that late-December jobs could finish; the bundled trace stops at
   2020-12-31, so the 20 (next-workday) or 24 (semi-weekly) jobs whose window reaches 2021 are dropped,
   which is the whole difference (check 1 shows the method itself matches).
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from carbonshift.data import load_bundled_trace
from carbonshift.simulate.jobs import scenario_ii
from carbonshift.simulate.paper import (
    PUBLISHED,
    paper_trace,
    scenario_i_savings,
    scenario_ii_savings,
    with_real_overheads,
)

TIGHT = 0.05
YEAR_END = 0.15


@pytest.fixture(scope="module")
def half() -> object:
    return paper_trace(load_bundled_trace("DE_2020"))


def direct_paper_method(trace, rule: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The paper's strategies written out directly on the 30-minute array (no planner involved)."""
    ci = trace.values
    base = rigid = split = 0.0
    for job in scenario_ii(deadline_rule=rule):
        a = (job.arrival - trace.start) // timedelta(minutes=30)
        d = job.duration // timedelta(minutes=30)
        w = (job.deadline - job.arrival) // timedelta(minutes=30) + 1  # one extra slot (quirk)
        if a + w > len(ci):
            continue  # needs data past the end of the trace
        sums = np.convolve(ci[a : a + d + 1], np.ones(d), "valid")  # run-now baseline: start now or 1 later
        s = int(np.argmin(sums))
        base += ci[a + s : a + s + d].sum()
        window = ci[a : a + w]
        s = int(np.argmin(np.convolve(window, np.ones(d), "valid")))
        rigid += ci[a + s : a + s + d].sum()
        split += np.sort(window)[:d].sum()
    return (1 - rigid / base) * 100, (1 - split / base) * 100


@pytest.mark.parametrize("rule", ["next-workday", "semi-weekly"])
def test_simulator_equals_a_direct_implementation_of_the_papers_method(half, rule: str) -> None:  # type: ignore[no-untyped-def]
    ours, _ = scenario_ii_savings(half, rule)
    direct = direct_paper_method(half, rule)
    assert ours == pytest.approx(direct, abs=0.005)


@pytest.mark.parametrize(
    ("name", "rule", "tolerance", "dropped"),
    [
        ("II next-workday, perfect", "next-workday", TIGHT, 20),
        ("II semi-weekly, perfect", "semi-weekly", YEAR_END, 24),
    ],
)
def test_scenario_ii_perfect_information_matches_the_paper(half, name, rule, tolerance, dropped) -> None:  # type: ignore[no-untyped-def]
    ours, n_dropped = scenario_ii_savings(half, rule)
    assert n_dropped == dropped
    assert ours == pytest.approx(PUBLISHED[name], abs=tolerance)


def test_scenario_ii_with_5_percent_error_mean_of_10_seeds_matches_the_paper(half) -> None:  # type: ignore[no-untyped-def]
    ours, _ = scenario_ii_savings(half, "next-workday", error=0.05, seeds=10)
    published = PUBLISHED["II next-workday, 5% error"]
    # +0.05 from the year-end jobs (as with perfect information) on top of seed noise.
    assert ours == pytest.approx(published, abs=0.06)
    perfect, _ = scenario_ii_savings(half, "next-workday")
    assert ours[0] <= perfect[0] and ours[1] <= perfect[1]  # errors cost savings


@pytest.mark.parametrize("hours", [2, 4, 8])
def test_scenario_i_matches_the_paper(half, hours: int) -> None:  # type: ignore[no-untyped-def]
    assert scenario_i_savings(half, hours) == pytest.approx(PUBLISHED[f"I +-{hours} h, perfect"][0], abs=TIGHT)


def test_real_overheads_cost_a_little_and_miss_no_deadline() -> None:
    trace = load_bundled_trace("DE_2020")
    real = with_real_overheads(trace)
    (free_rigid, free_split), _ = scenario_ii_savings(paper_trace(trace), "next-workday")
    rigid, split = real.savings
    assert real.deadline_misses == 0
    assert real.cycles > 0
    # Strict baseline (+0.1) and a 30-minute margin (-) move the non-interruptible figure a little;
    # overheads and 1-hour minimum chunks cost the interruptible one some of its advantage, not all.
    assert abs(rigid - free_rigid) < 0.3
    assert rigid < split < free_split


@pytest.mark.parametrize("hours", [2, 4, 8])
def test_scenario_i_through_the_cli_with_paper_equals_reproduce(half, capsys, hours: int) -> None:  # type: ignore[no-untyped-def]
    """`carbonshift simulate --scenario I --paper` gives the figures of paper.reproduce() (and the paper's):
    no extra slot and a strict 01:00 baseline for jobs announced ahead, and the 1 January job, dropped from
    the shifted run, kept in the run-now baseline (the paper's divisor of 365)."""
    import json

    from carbonshift.cli import main

    args = ["simulate", "--zone", "DE_2020", "--scenario", "I", "--paper", "--window-hours", str(hours)]
    code = main([*args, "--forecast", "oracle", "--policies", "run-now,optimal", "--output", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    optimal = next(r for r in report["results"] if r["policy"] == "optimal")
    run_now = next(r for r in report["results"] if r["policy"] == "run-now")
    assert run_now["jobs"] == 365 and optimal["jobs"] == 364
    expected = scenario_i_savings(half, hours)
    assert optimal["saved_pct_vs_run_now"] == pytest.approx(expected, abs=0.001)
    assert optimal["saved_pct_vs_run_now"] == pytest.approx(PUBLISHED[f"I +-{hours} h, perfect"][0], abs=TIGHT)
