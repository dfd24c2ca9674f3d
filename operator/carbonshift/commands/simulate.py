"""`carbonshift simulate`: replay a grid trace and a job mix through the planner, with no cluster.

Examples:
  carbonshift simulate --zone DE --scenario II --out-dir out/
  carbonshift simulate --zone DE --scenario II --paper --forecast gaussian:0.05 --seeds 10
  carbonshift simulate --trace my_trace.csv --jobs-csv jobs.csv --forecast persistence --output json

Bad input gives one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from carbonshift.domain.series import IntensitySeries

if TYPE_CHECKING:
    from carbonshift.domain.forecasting import ForecastModel
    from carbonshift.simulate.engine import Report, Settings
    from carbonshift.simulate.jobs import SimJob

EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--zone", help="bundled trace by zone or name (DE, DE_2020, GB_2023...); default DE")
    source.add_argument("--trace", type=Path, help="a trace CSV (timestamp,gco2_per_kwh)")
    parser.add_argument("--scenario", default="II", help="I, II (Let's Wait Awhile) or poisson (default II)")
    parser.add_argument("--jobs-csv", type=Path, help="jobs from a CSV: arrival,duration_hours,deadline[,...]")
    parser.add_argument("--deadline", default="next-workday", help="scenario II rule: next-workday | semi-weekly")
    parser.add_argument("--window-hours", type=float, default=4.0, help="scenario I: +- hours (default 4)")
    parser.add_argument("--per-day", type=float, default=10.0, help="poisson: mean arrivals per day")
    parser.add_argument("--mean-hours", type=float, default=8.0, help="poisson: mean job duration (hours)")
    parser.add_argument("--slack", type=float, default=1.0, help="poisson: deadline slack as a multiple of duration")
    parser.add_argument("--limit", type=int, help="use only the first N jobs of the mix")
    parser.add_argument(
        "--forecast",
        default="realistic",
        help="realistic (default: error growing with lead time, fitted on NESO GB 2023) | realistic:K (K x that"
        " error) | persistence | file:PATH | oracle | gaussian:E (the paper's model: fixed noise, sigma = E x mean)",
    )
    parser.add_argument("--seeds", type=int, default=1, help="forecast seeds to average (random models)")
    parser.add_argument("--seed", type=int, default=0, help="first forecast seed / poisson job seed")
    parser.add_argument("--policies", help="comma-separated subset (default: all)")
    parser.add_argument("--overhead-seconds", type=float, default=0.0, help="time lost per suspend/resume cycle")
    parser.add_argument("--overhead-kwh", type=float, default=0.0, help="extra energy per suspend/resume cycle")
    parser.add_argument("--min-run-minutes", type=float, default=0.0, help="shortest run chunk")
    parser.add_argument(
        "--margin-minutes",
        type=float,
        help="safety margin before deadlines (default: 10, the operator's, in the closed loop; 0 in the open loop)",
    )
    parser.add_argument("--threshold", type=float, help="threshold policy: max gCO2e/kWh (default: trace median)")
    parser.add_argument("--pue", type=float, default=1.0, help="data-centre PUE (default 1.0)")
    parser.add_argument(
        "--paper",
        action="store_true",
        help="Let's Wait Awhile set-up: 30-minute :00/:30 samples and one extra slot past each deadline",
    )
    parser.add_argument(
        "--loop",
        choices=["closed", "open"],
        help="closed (default): the operator's decision core at every tick; open: each job planned once at "
        "arrival (Let's Wait Awhile; the default with --paper)",
    )
    parser.add_argument("--tick-minutes", type=float, default=5.0, help="closed loop: operator tick (default 5)")
    parser.add_argument(
        "--start-delay-seconds", type=float, default=30.0, help="closed loop: pod start delay after a resume"
    )
    parser.add_argument(
        "--grace-seconds", type=float, default=120.0, help="closed loop: suspension notice (gracePeriod)"
    )
    parser.add_argument(
        "--commit-gain", type=float, default=0.01, help="closed loop: relative gain needed to move a committed plan"
    )
    parser.add_argument(
        "--recheck-minutes",
        type=float,
        default=60.0,
        help="closed loop: weigh a committed plan against newer forecasts at most this often (default 60, the "
        "operator's --recheck-every; 0: at every pass)",
    )
    parser.add_argument(
        "--gate-as-provider",
        action="store_true",
        help="closed loop: gate a forecast that declares its error (realistic) on its measured skill too, as the "
        "operator gates every provider's forecast (what a user whose provider is that good gets)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="closed loop: processes to split the jobs across (same results)"
    )
    parser.add_argument("--output", choices=["table", "json", "csv"], default="table")
    parser.add_argument("--out-dir", type=Path, help="write PNG plots, results.json and results.csv here")


def _fail(message: str) -> int:
    print(f"carbonshift simulate: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except (ValueError, LookupError, OSError) as exc:  # SimulationError, JobMixError... are ValueErrors
        return _fail(str(exc) or type(exc).__name__)
    except KeyboardInterrupt:
        return 130


def _trace(args: argparse.Namespace) -> tuple[IntensitySeries, str]:
    from carbonshift.data import load_bundled_trace, resolve_trace_name, zone_of
    from carbonshift.domain.traces import parse_trace_csv

    if args.trace is not None:
        path: Path = args.trace
        if not path.is_file():
            raise OSError(f"trace file {path} does not exist")
        parsed = parse_trace_csv(path.read_text(encoding="utf-8"), zone_of(path.stem), source=path.name)
        return parsed.series, path.stem
    name = resolve_trace_name(args.zone or "DE")
    return load_bundled_trace(name), name


def _jobs(args: argparse.Namespace, actual: IntensitySeries) -> tuple[list[SimJob], str]:
    from carbonshift.simulate.jobs import jobs_from_csv, poisson_jobs, scenario_i, scenario_ii

    year = actual.start.year
    if args.jobs_csv is not None:
        path: Path = args.jobs_csv
        if not path.is_file():
            raise OSError(f"jobs file {path} does not exist")
        return list(jobs_from_csv(path.read_text(encoding="utf-8"))), f"csv:{path.name}"
    scenario = str(args.scenario).strip()
    if scenario.upper() == "II":
        return list(scenario_ii(year=year, deadline_rule=args.deadline)), f"II ({args.deadline})"
    if scenario.upper() == "I":
        window = timedelta(hours=args.window_hours)
        return list(scenario_i(year=year, window=window)), f"I (+-{args.window_hours:g} h)"
    if scenario.lower() == "poisson":
        jobs = poisson_jobs(
            actual.start,
            actual.end - timedelta(days=7),
            per_day=args.per_day,
            mean_hours=args.mean_hours,
            slack=args.slack,
            seed=args.seed,
        )
        return list(jobs), f"poisson ({args.per_day:g}/day, slack x{args.slack:g})"
    raise ValueError(f"unknown scenario {scenario!r}; expected I, II or poisson (or --jobs-csv)")


def _run(args: argparse.Namespace) -> int:
    from carbonshift.commands.console import report_console
    from carbonshift.data import load_forecast_model
    from carbonshift.simulate.engine import POLICIES, Settings
    from carbonshift.simulate.paper import paper_trace
    from carbonshift.simulate.report import render_table, to_csv, to_json, write_plots

    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    actual, name = _trace(args)
    if args.paper:
        actual = paper_trace(actual)
    jobs, scenario = _jobs(args, actual)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError("--limit must be at least 1")
        jobs = jobs[: args.limit]
    policies = list(POLICIES) if not args.policies else [p.strip() for p in args.policies.split(",") if p.strip()]
    models = [load_forecast_model(args.forecast, seed=args.seed + k) for k in range(args.seeds)]
    if all(m.is_oracle for m in models) or args.forecast.startswith(("persistence", "file:")):
        models = models[:1]
    loop = args.loop or ("open" if args.paper else "closed")
    margin_minutes = args.margin_minutes if args.margin_minutes is not None else (10.0 if loop == "closed" else 0.0)
    settings = Settings(
        overhead=timedelta(seconds=args.overhead_seconds),
        overhead_kwh=args.overhead_kwh,
        min_run=timedelta(minutes=args.min_run_minutes),
        margin=timedelta(minutes=margin_minutes),
        threshold_g_per_kwh=args.threshold,
        pue=args.pue,
        paper_quirks=args.paper,
        loop=loop,
        tick=timedelta(minutes=args.tick_minutes),
        start_delay=timedelta(seconds=args.start_delay_seconds),
        grace=timedelta(seconds=args.grace_seconds),
        commit_gain=args.commit_gain,
        recheck_every=timedelta(minutes=args.recheck_minutes),
        workers=args.workers,
        gate_declared=args.gate_as_provider,
    )
    if args.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {args.workers}")
    if args.tick_minutes <= 0 or args.start_delay_seconds < 0 or args.grace_seconds < 0 or args.commit_gain < 0:
        raise ValueError("--tick-minutes must be positive; start delay, grace and commit gain must not be negative")
    if args.recheck_minutes < 0:
        raise ValueError(f"--recheck-minutes must not be negative, got {args.recheck_minutes:g}")
    if args.paper and args.loop == "closed":
        raise ValueError("--paper reproduces the paper's open loop; drop --loop closed")
    if args.overhead_seconds < 0 or args.overhead_kwh < 0 or args.min_run_minutes < 0 or margin_minutes < 0:
        raise ValueError("overheads, minimum run and margin must not be negative")
    total = len(jobs) * (len([p for p in policies if p not in ("run-now", "oracle")]) * len(models) + 2)
    report = _simulate_with_progress(actual, jobs, policies, models, settings, name, scenario, total)
    plots: list[Path] = []
    if args.out_dir is not None:
        out_dir: Path = args.out_dir
        stem = f"{name}-{scenario.split()[0]}"
        plots = write_plots(report, out_dir, stem)
        (out_dir / f"{stem}-results.json").write_text(json.dumps(to_json(report), indent=2) + "\n", encoding="utf-8")
        (out_dir / f"{stem}-results.csv").write_text(to_csv(report), encoding="utf-8")
    if args.output == "json":
        print(json.dumps(to_json(report), indent=2))
    elif args.output == "csv":
        sys.stdout.write(to_csv(report))
    else:
        render_table(report, report_console(), plots)
    return 0


def _simulate_with_progress(
    actual: IntensitySeries,
    jobs: list[SimJob],
    policies: list[str],
    models: list[ForecastModel],
    settings: Settings,
    name: str,
    scenario: str,
    total: int,
) -> Report:
    """Run the simulation, with a progress bar on stderr when it is a terminal."""
    from carbonshift.simulate.engine import simulate

    if not sys.stderr.isatty():
        return simulate(actual, jobs, policies, models, settings=settings, trace_name=name, scenario=scenario)
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(f"simulating {len(jobs)} jobs", total=total)
        return simulate(
            actual,
            jobs,
            policies,
            models,
            settings=settings,
            trace_name=name,
            scenario=scenario,
            progress=lambda done: progress.advance(task, done),
        )
