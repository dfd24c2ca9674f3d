"""The closed loop against the open loop, job by job, on one trace (not run by `make bench`: a diagnosis tool).

For each job of the bench's sample (scenario II next-workday, 1 job in N, realistic forecasts, 60 s overhead), the
grams each loop saved against running it at once, and where the two differ: the jobs the open loop beats, split by
whether their starts lie within an hour of each other (where a block starts, not when) or further apart (a
different decision), and the jobs the closed loop beats. `--no-gates` turns off do no harm and the anchored veto in
the closed loop, to separate what the gates cost from what re-planning costs.

Run: .venv/bin/python bench/compare_loops.py PJM_2022 [--kind optimal|optimal-interruptible] [--every 32]
[--no-gates] [--show 12]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import carbonshift.domain.core as core
from bench_closed_loop import by, load, model, settings
from carbonshift.simulate.engine import JobOutcome, simulate
from carbonshift.simulate.jobs import scenario_ii


@dataclass(frozen=True)
class Difference:
    job: str
    open_minus_closed_saved: float  # g: > 0 where the open loop saved more
    closed_start: datetime | None
    open_start: datetime | None

    @property
    def near(self) -> bool:
        if self.closed_start is None or self.open_start is None:
            return False
        return abs((self.closed_start - self.open_start).total_seconds()) <= 3600


def _start(outcome: JobOutcome) -> datetime | None:
    return outcome.windows[0][0] if outcome.windows else None


def compare(name: str, kind: str, every: int, gates: bool) -> tuple[float, float, list[Difference]]:
    actual = load(name)
    jobs = scenario_ii(year=actual.start.year)[::every]
    saved: dict[str, dict[str, float]] = {}
    starts: dict[str, dict[str, datetime | None]] = {}
    original = core.CoreSettings
    if not gates:  # the engine builds its CoreSettings from carbonshift.domain.core at call time

        def ungated(**kw: object) -> core.CoreSettings:
            return replace(original(**kw), do_no_harm=False, anchor_per_hour=0.0)  # type: ignore[arg-type]

        core.CoreSettings = ungated  # type: ignore[misc,assignment]
    try:
        for loop in ("closed", "open"):
            results = simulate(actual, jobs, ["run-now", kind], [model("realistic")], settings=settings(60.0, loop))
            now = {o.job: o for o in by(results.results, "run-now").outcomes}
            saved[loop] = {o.job: now[o.job].grams - o.grams for o in by(results.results, kind).outcomes}
            starts[loop] = {o.job: _start(o) for o in by(results.results, kind).outcomes}
    finally:
        core.CoreSettings = original  # type: ignore[misc]
    diffs = [
        Difference(job, saved["open"][job] - saved["closed"][job], starts["closed"][job], starts["open"][job])
        for job in saved["closed"]
    ]
    return sum(saved["closed"].values()), sum(saved["open"].values()), diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", help="a bundled zone trace such as PJM_2022, or a CSV path")
    parser.add_argument("--kind", default="optimal", choices=["optimal", "optimal-interruptible"])
    parser.add_argument("--every", type=int, default=32, help="1 job in N of scenario II (the bench's 32)")
    parser.add_argument("--no-gates", action="store_true", help="closed loop without do no harm and the veto")
    parser.add_argument("--show", type=int, default=12, help="how many of the largest differences to list")
    args = parser.parse_args()
    closed, opened, diffs = compare(args.trace, args.kind, args.every, not args.no_gates)
    print(f"{Path(args.trace).stem}, {args.kind}, 1 job in {args.every}, 60 s, realistic forecasts")
    print(f"saved against running at once: closed loop {closed:,.0f} g, open loop {opened:,.0f} g")
    for d in sorted(diffs, key=lambda d: -d.open_minus_closed_saved)[: args.show]:
        gap = d.open_minus_closed_saved
        print(f"  {d.job:>10}  open - closed {gap:8.1f} g  starts {d.closed_start} / {d.open_start}")
    behind = [d for d in diffs if d.open_minus_closed_saved > 0]
    near = [d for d in behind if d.near]
    far = [d for d in behind if not d.near]
    ahead = [d for d in diffs if d.open_minus_closed_saved < 0]
    for label, group, sign in (
        ("open loop ahead, starts within 1 h", near, 1.0),
        ("open loop ahead, starts further apart", far, 1.0),
        ("closed loop ahead", ahead, -1.0),
    ):
        print(f"{label}: {len(group)} jobs, {sign * sum(d.open_minus_closed_saved for d in group):,.1f} g")


if __name__ == "__main__":
    main()
