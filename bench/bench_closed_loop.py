"""The decision core measured in the closed loop, against the open loop and the perfect-information optimum.

For every bundled trace (operator/carbonshift/data/carbon-intensity, plus any other trace CSV in
../shared/data/carbon-intensity), scenario II of Let's Wait Awhile (next-workday deadlines; every N-th job, N =
--every, so that the bench runs in minutes), jobs of 700 W, minRunDuration 15 min, 10 min safety margin, 5 min
ticks, 30 s pod start delay, 2 min grace:

- closed loop (carbonshift.simulate.closed_loop: the operator's decision core at every tick, the forecast issued
  then) with the realistic forecast model when `parse_forecast_model` knows it, else gaussian:0.05 (said so),
  at 16 s and 60 s of checkpoint overhead: deadline misses, interruptible and non-interruptible savings as a
  fraction of the same-kind optimum (the plan made once on the actual future), the same run's open-loop
  fractions beside them, cycles against the optimum's;
- persistence forecasts in the closed loop (60 s overhead): savings for both kinds (must not be below 0);
- a 20 min overhead (minRunDuration 30 min): misses;
- the time of a whole year of scenario II (3,387 jobs) in the closed loop (interruptible policy, DE).

Targets (issue 13): 0 misses; interruptible >= 0.92 of optimum on average and >= 0.75 at worst; non-interruptible
>= 0.95 on average; persistence >= 0 on every trace; cycles <= 1.5 x the optimum's; a year under 60 s on 2 cores.
Misses count jobs that could be met at all: a job with less slack than the pod start delay (next-workday gives
zero slack to jobs finishing in working hours) misses by the delay whatever the operator does; those are counted
apart ("unmeetable").

Run: .venv/bin/python bench/bench_closed_loop.py [--every N] [--zones DE,GB] [--before]
(--before adds the loop of the operator's decisions before the core, on three zones, for comparison; slow).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

from carbonshift.data import bundled_zones, load_bundled_trace, zone_of
from carbonshift.domain.forecasting import ForecastModel, ForecastSpecError, parse_forecast_model
from carbonshift.domain.series import IntensitySeries
from carbonshift.domain.traces import parse_trace_csv
from carbonshift.simulate.engine import PolicyResult, Settings, simulate
from carbonshift.simulate.jobs import scenario_ii

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "carbon-intensity"
POLICIES = ["run-now", "optimal", "optimal-interruptible"]


def main_forecast() -> tuple[str, str]:
    """('realistic', note) when the realistic model exists, else gaussian:0.05 with a note saying so."""
    try:
        parse_forecast_model("realistic")
    except (ForecastSpecError, ValueError):
        return "gaussian:0.05", "realistic forecast model not available here: gaussian:0.05 (the paper's) instead"
    return "realistic", "realistic forecasts"


def traces() -> list[str]:
    names = list(bundled_zones())
    if SHARED.is_dir():
        for path in sorted(SHARED.glob("*.csv")):
            if path.stem not in names and "forecast" not in path.stem:
                names.append(str(path))
    return names


def load(name: str) -> IntensitySeries:
    if name.endswith(".csv"):
        path = Path(name)
        return parse_trace_csv(path.read_text(encoding="utf-8"), zone_of(path.stem), source=path.name).series
    return load_bundled_trace(name)


def model(spec: str) -> ForecastModel:
    from carbonshift.data import load_forecast_model

    return load_forecast_model(spec, seed=0)


def settings(overhead_s: float, loop: str, min_run_min: float = 15.0, legacy: bool = False) -> Settings:
    return Settings(
        overhead=timedelta(seconds=overhead_s),
        min_run=timedelta(minutes=min_run_min),
        margin=timedelta(minutes=10),
        loop=loop,
        legacy=legacy,
    )


@dataclass
class Row:
    trace: str
    overhead_s: float
    misses: int
    unmeetable: int
    int_closed: float
    int_open: float
    int_opt: float
    nonint_closed: float
    nonint_open: float
    nonint_opt: float
    cycles: int
    opt_cycles: int
    persistence_int: float = math.nan
    persistence_nonint: float = math.nan
    misses_20min: int = -1
    seconds: float = 0.0


def ratio(value: float, optimum: float) -> float:
    return value / optimum if optimum > 0 else math.nan


def by(results: list[PolicyResult], policy: str) -> PolicyResult:
    return next(r for r in results if r.policy == policy)


def measure(name: str, every: int, forecast: str) -> list[Row]:
    started = time.perf_counter()
    actual = load(name)
    jobs = scenario_ii(year=actual.start.year)[::every]
    label = Path(name).stem
    rows = []
    for overhead in (16.0, 60.0):
        closed = simulate(actual, jobs, POLICIES, [model(forecast)], settings=settings(overhead, "closed")).results
        opened = simulate(actual, jobs, POLICIES, [model(forecast)], settings=settings(overhead, "open")).results
        ci, cn = by(closed, "optimal-interruptible"), by(closed, "optimal")
        oi, on = by(opened, "optimal-interruptible"), by(opened, "optimal")
        rows.append(
            Row(
                trace=label,
                overhead_s=overhead,
                misses=ci.deadline_misses + cn.deadline_misses,
                unmeetable=ci.unmeetable_jobs,
                int_closed=ci.saved_pct_vs_run_now,
                int_open=oi.saved_pct_vs_run_now,
                int_opt=ci.optimum_saved_pct,
                nonint_closed=cn.saved_pct_vs_run_now,
                nonint_open=on.saved_pct_vs_run_now,
                nonint_opt=cn.optimum_saved_pct,
                cycles=ci.cycles,
                opt_cycles=ci.optimum_cycles,
            )
        )
    persistence = simulate(actual, jobs, POLICIES, [model("persistence")], settings=settings(60.0, "closed")).results
    rows[-1].persistence_int = by(persistence, "optimal-interruptible").saved_pct_vs_run_now
    rows[-1].persistence_nonint = by(persistence, "optimal").saved_pct_vs_run_now
    long = settings(20 * 60.0, "closed", min_run_min=30.0)
    heavy = simulate(actual, jobs, ["run-now", "optimal-interruptible"], [model(forecast)], settings=long).results
    rows[-1].misses_20min = by(heavy, "optimal-interruptible").deadline_misses
    rows[-1].seconds = time.perf_counter() - started
    return rows


def before_after(name: str, every: int, forecast: str) -> str:
    actual = load(name)
    jobs = scenario_ii(year=actual.start.year)[::every]
    out = []
    for legacy in (True, False):
        results = simulate(
            actual, jobs, POLICIES, [model(forecast)], settings=settings(60.0, "closed", legacy=legacy)
        ).results
        ci, cn = by(results, "optimal-interruptible"), by(results, "optimal")
        label = "before" if legacy else "after"
        out.append(
            f"{label:6s} int {ci.saved_pct_vs_run_now:6.2f} % (opt {ci.optimum_saved_pct:5.2f})"
            f" misses {ci.deadline_misses:3d} cycles {ci.cycles:5d} | non-int {cn.saved_pct_vs_run_now:6.2f} %"
            f" (opt {cn.optimum_saved_pct:5.2f}) misses {cn.deadline_misses:3d}"
        )
    return f"{Path(name).stem:18s} " + f"\n{'':18s} ".join(out)


def commit_sweep(every: int, forecast: str) -> None:
    """The commitment threshold's trade-off: savings (share of optimum) and cycles by commit_gain."""
    print(f"\ncommit_gain trade-off (60 s overhead, every {every}th job, interruptible): share of optimum / cycles")
    gains = (0.0, 0.01, 0.03, 0.1, 0.3)
    print(f"{'trace':10s} {'forecast':12s} " + " ".join(f"{g:>13g}" for g in gains))
    for name in ("DE_2020", "NO_2022", "PJM_2022"):
        actual = load(name)
        jobs = scenario_ii(year=actual.start.year)[::every]
        for spec in (forecast, "persistence"):
            cells = []
            for gain in gains:
                chosen = replace(settings(60.0, "closed"), commit_gain=gain)
                result = by(
                    simulate(
                        actual, jobs, ["run-now", "optimal-interruptible"], [model(spec)], settings=chosen
                    ).results,
                    "optimal-interruptible",
                )
                cells.append(
                    f"{fmt(ratio(result.saved_pct_vs_run_now, result.optimum_saved_pct)):>6s}/{result.cycles:<6d}"
                )
            print(f"{name:10s} {spec[:12]:12s} " + " ".join(cells))


def fmt(x: float, digits: int = 2) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=32, help="use every N-th job of scenario II (default 32)")
    parser.add_argument("--zones", help="comma-separated subset of the traces")
    parser.add_argument("--year-zone", default="DE", help="trace for the one-year timing (default DE; '' skips)")
    parser.add_argument("--before", action="store_true", help="also the decisions before the core (slow)")
    parser.add_argument("--commit-sweep", action="store_true", help="also measure the commitment threshold")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    forecast, note = main_forecast()
    names = traces()
    if args.zones:
        wanted = {z.strip().upper() for z in args.zones.split(",")}
        names = [n for n in names if Path(n).stem.upper() in wanted or zone_of(Path(n).stem).upper() in wanted]
    print(f"closed loop vs open loop vs optimum - scenario II next-workday, every {args.every}th job - {note}")
    with ProcessPoolExecutor(max_workers=max(args.workers, 1)) as pool:
        futures = [pool.submit(measure, n, args.every, forecast) for n in names]
        rows = [row for f in futures for row in f.result()]
    head = (
        f"{'trace':18s} {'oh s':>4s} {'miss':>4s} {'int closed/opt':>14s} {'open/opt':>8s} {'opt %':>6s}"
        f" {'non-int closed/opt':>18s} {'open/opt':>8s} {'opt %':>6s} {'cycles/opt':>10s}"
        f" {'persist int %':>13s} {'non-int %':>9s} {'20min miss':>10s}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        cycles = f"{r.cycles}/{r.opt_cycles}"
        print(
            f"{r.trace:18s} {r.overhead_s:4.0f} {r.misses:4d} {fmt(ratio(r.int_closed, r.int_opt)):>14s}"
            f" {fmt(ratio(r.int_open, r.int_opt)):>8s} {fmt(r.int_opt):>6s}"
            f" {fmt(ratio(r.nonint_closed, r.nonint_opt)):>18s} {fmt(ratio(r.nonint_open, r.nonint_opt)):>8s}"
            f" {fmt(r.nonint_opt):>6s} {cycles:>10s} {fmt(r.persistence_int):>13s} {fmt(r.persistence_nonint):>9s}"
            f" {'' if r.misses_20min < 0 else r.misses_20min:>10}"
        )
    ints = [ratio(r.int_closed, r.int_opt) for r in rows if r.int_opt > 0]
    nonints = [ratio(r.nonint_closed, r.nonint_opt) for r in rows if r.nonint_opt > 0]
    persist = [x for r in rows for x in (r.persistence_int, r.persistence_nonint) if not math.isnan(x)]
    cycle_ratio = [r.cycles / r.opt_cycles for r in rows if r.opt_cycles > 0]
    print("-" * len(head))
    print(f"deadline misses (16 s and 60 s): {sum(r.misses for r in rows)}  (target 0; unmeetable jobs apart: "
          f"{max((r.unmeetable for r in rows), default=0)} a trace)")  # fmt: skip
    open_int = statistics.mean(ratio(r.int_open, r.int_opt) for r in rows)
    open_nonint = statistics.mean(ratio(r.nonint_open, r.nonint_opt) for r in rows)
    print(f"interruptible / optimum: mean {statistics.mean(ints):.3f} (target >= 0.92), worst {min(ints):.3f} "
          f"(target >= 0.75); open loop mean {open_int:.3f}")  # fmt: skip
    print(f"non-interruptible / optimum: mean {statistics.mean(nonints):.3f} (target >= 0.95), worst "
          f"{min(nonints):.3f}; open loop mean {open_nonint:.3f}")  # fmt: skip
    print(f"persistence savings: worst {min(persist):.3f} % (target >= 0 on every trace, both kinds)")
    print(f"cycles / optimum's: mean {statistics.mean(cycle_ratio):.2f}, worst {max(cycle_ratio):.2f} (target <= 1.5)")
    print(f"20 min overhead (minRunDuration 30 min) misses: {sum(max(r.misses_20min, 0) for r in rows)} (target 0)")
    print(
        f"seconds per trace (both overheads, persistence, 20 min): {statistics.mean(r.seconds for r in rows[1::2]):.1f}"
    )
    if args.before:
        print("\nbefore / after the decision core (closed loop, 60 s overhead):")
        for name in [n for n in names if Path(n).stem.split("_")[0] in ("DE", "GB", "NO")][:3]:
            print(before_after(name, max(args.every, 32), forecast))
    if args.commit_sweep:
        commit_sweep(max(args.every, 48), forecast)
    if args.year_zone:
        actual = load_bundled_trace(args.year_zone)
        jobs = scenario_ii(year=actual.start.year)
        started, cpu = time.perf_counter(), time.process_time()
        report = simulate(actual, jobs, ["run-now", "optimal-interruptible"], [model(forecast)],
                          settings=settings(60.0, "closed"))  # fmt: skip
        took, cpu_took = time.perf_counter() - started, time.process_time() - cpu
        year = by(report.results, "optimal-interruptible")
        print(
            f"\none year of scenario II in the closed loop ({args.year_zone}, {len(jobs)} jobs, interruptible, with"
            f" its open-loop optimum): {took:.1f} s wall, {cpu_took:.1f} s CPU (target < 60 s on 2 cores);"
            f" saved {year.saved_pct_vs_run_now:.2f} % of optimum {year.optimum_saved_pct:.2f} %,"
            f" misses {year.deadline_misses}"
        )


if __name__ == "__main__":
    main()
