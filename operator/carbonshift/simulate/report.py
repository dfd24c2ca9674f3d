"""Reports of a simulation: a rich table, JSON, CSV and PNG plots (matplotlib, Agg backend).

Every output says which forecast the numbers were planned on; a result planned on the actual future is
marked "oracle (perfect information)" in the table, the JSON (`"oracle": true`) and the plots.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from carbonshift.simulate.engine import ORACLE_LABEL, Report


def _round(value: float, digits: int) -> float | None:
    return None if math.isnan(value) else round(value, digits)


def to_json(report: Report) -> dict[str, Any]:
    """The report as plain JSON-able data."""
    s = report.settings
    return {
        "trace": report.trace,
        "zone": report.zone,
        "scenario": report.scenario,
        "loop": report.loop,
        "forecast": report.forecast,
        "forecast_is_oracle": report.forecast_is_oracle,
        "seeds": report.seeds,
        "jobs": report.jobs,
        "dropped_jobs": report.dropped,
        "interpolated_slots": report.interpolated_slots,
        "settings": {
            "overhead_seconds": s.overhead.total_seconds(),
            "overhead_kwh": s.overhead_kwh,
            "min_run_seconds": s.min_run.total_seconds(),
            "margin_seconds": s.margin.total_seconds(),
            "threshold_g_per_kwh": s.threshold_g_per_kwh,
            "pue": s.pue,
            "paper_quirks": s.paper_quirks,
            "tick_seconds": s.tick.total_seconds(),
            "start_delay_seconds": s.start_delay.total_seconds(),
            "grace_seconds": s.grace.total_seconds(),
            "commit_gain": s.commit_gain,
            "do_no_harm": s.do_no_harm,
            "gate_as_provider": s.gate_declared,
        },
        "results": [
            {
                "policy": r.policy,
                "forecast": r.forecast,
                "oracle": r.oracle,
                "emissions_kg": _round(r.emissions_kg, 3),
                "energy_kwh": _round(r.energy_kwh, 3),
                "loop": r.loop,
                "saved_pct_vs_run_now": _round(r.saved_pct_vs_run_now, 3),
                "optimum_saved_pct": _round(r.optimum_saved_pct, 3),
                "optimum_suspend_resume_cycles": r.optimum_cycles,
                "deadline_misses": r.deadline_misses,
                "unmeetable_jobs": r.unmeetable_jobs,
                "claimed_avoided_kg": _round(r.claimed_avoided_kg, 3),
                "true_avoided_kg": _round(r.true_avoided_kg, 3),
                "mean_delay_h": _round(r.mean_delay_h, 3),
                "suspend_resume_cycles": r.cycles,
                "jobs": r.jobs,
            }
            for r in report.results
        ],
    }


def to_csv(report: Report) -> str:
    """One row per policy."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = ["trace", "zone", "scenario", "policy", "forecast", "oracle", "emissions_kg", "energy_kwh"]
    header += ["saved_pct_vs_run_now", "deadline_misses", "mean_delay_h", "suspend_resume_cycles", "jobs"]
    writer.writerow(header)
    for r in report.results:
        writer.writerow(
            [
                report.trace,
                report.zone,
                report.scenario,
                r.policy,
                r.forecast,
                str(r.oracle).lower(),
                f"{r.emissions_kg:.3f}",
                f"{r.energy_kwh:.3f}",
                f"{r.saved_pct_vs_run_now:.3f}",
                r.deadline_misses,
                f"{r.mean_delay_h:.3f}",
                r.cycles,
                r.jobs,
            ]
        )
    return out.getvalue()


def render_table(report: Report, console: Console, plots: list[Path] | None = None) -> None:
    """Print the savings table (and where the plots are)."""
    title = (
        f"{report.trace} ({report.zone}) - scenario {report.scenario} - {report.loop} loop - {report.jobs} jobs - "
        f"forecast: {report.forecast}" + (f", mean of {report.seeds} seeds" if report.seeds > 1 else "")
    )
    table = Table(title=title, title_justify="left")
    table.add_column("policy", no_wrap=True)
    table.add_column("planned on", no_wrap=True)
    table.add_column("CO2e kg", justify="right")
    table.add_column("loop", no_wrap=True)
    table.add_column("saved vs run-now", justify="right", no_wrap=True)
    table.add_column("optimum", justify="right")
    table.add_column("misses", justify="right")
    table.add_column("mean delay h", justify="right")
    table.add_column("cycles", justify="right")
    for r in report.results:
        style = "italic dim" if r.oracle else None
        table.add_row(
            r.policy + (" *" if r.oracle else ""),
            r.forecast,
            f"{r.emissions_kg:,.1f}",
            r.loop,
            f"{r.saved_pct_vs_run_now:.2f} %",
            "-" if math.isnan(r.optimum_saved_pct) else f"{r.optimum_saved_pct:.2f} %",
            str(r.deadline_misses),
            f"{r.mean_delay_h:.1f}",
            str(r.cycles),
            style=style,
        )
    console.print(table)
    notes = []
    if any(r.oracle for r in report.results):
        notes.append(f"* planned on the actual future: {ORACLE_LABEL}, an upper bound, not achievable")
    if report.dropped:
        notes.append(f"{report.dropped} jobs dropped: their window lies partly outside the trace")
    if report.interpolated_slots:
        notes.append(f"{report.interpolated_slots} missing trace slots interpolated for accounting")
    if report.loop == "closed":
        notes.append(
            "closed loop: the operator's policies decided by the decision core at every tick with the forecast issued "
            "then; optimum = the same kind of plan (interruptible or not) made once on the actual future"
        )
        unmeetable = max((r.unmeetable_jobs for r in report.results), default=0)
        if unmeetable:
            notes.append(f"{unmeetable} jobs had less slack than the pod start delay: not counted as misses")
        for r in report.results:
            if r.loop == "closed" and not math.isnan(r.claimed_avoided_kg):
                notes.append(
                    f"{r.policy}: receipts would claim {r.claimed_avoided_kg:,.1f} kg avoided; "
                    f"true {r.true_avoided_kg:,.1f} kg"
                )
    if report.settings.paper_quirks:
        notes.append("Let's Wait Awhile quirks on: windows hold one extra slot past the deadline")
    for note in notes:
        console.print(note, soft_wrap=True)
    for path in plots or []:
        console.print(f"plot: {path}", soft_wrap=True, highlight=False)


def write_plots(report: Report, out_dir: Path, stem: str) -> list[Path]:
    """intensity with run windows, savings by policy, savings by slack: PNG files under `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        _plot_windows(plt, report, out_dir / f"{stem}-windows.png"),
        _plot_savings(plt, report, out_dir / f"{stem}-savings.png"),
        _plot_slack(plt, report, out_dir / f"{stem}-slack.png"),
    ]
    return paths


def _label(report: Report, policy: str) -> str:
    result = report.result(policy)
    return f"{policy} (oracle)" if result.oracle else policy


def _running(outcomes: list[Any], begin: Any, step: timedelta, count: int) -> np.ndarray:
    """Jobs running in each slot of [begin, begin + count*step), by overlap fraction."""
    load = np.zeros(count)
    for outcome in outcomes:
        for start, end in outcome.windows:
            lo = (start - begin) / step
            hi = (end - begin) / step
            if hi <= 0 or lo >= count:
                continue
            for i in range(max(int(np.floor(lo)), 0), min(int(np.ceil(hi)), count)):
                load[i] += min(hi, i + 1) - max(lo, i)
    return load


def _plot_windows(plt: Any, report: Report, path: Path) -> Path:
    actual = report.actual
    preferred = ("optimal-interruptible", "optimal", "lowest-window", "threshold", "oracle")
    by_name = {r.policy: r for r in report.results}
    chosen = next((by_name[p] for p in preferred if p in by_name), report.results[-1])
    first = min((o.windows[0][0] for o in chosen.outcomes if o.windows), default=actual.start)
    begin = actual.slot_start(max(actual.index_of(first), 0))
    span = min(actual.end, begin + timedelta(days=7))
    window = actual.window(begin, span)
    times = window.starts()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6), sharex=True, height_ratios=[3, 2])
    top.step(times, window.values, where="post", color="black", linewidth=1)
    top.set_ylabel("actual gCO2e/kWh")
    top.set_title(f"{report.trace}: one week of intensity and the jobs running")
    for result, colour in ((by_name.get("run-now"), "#999999"), (chosen, "#2a7f62")):
        if result is None:
            continue
        load = _running(result.outcomes, begin, actual.resolution, len(window))
        label = _label(report, result.policy)
        if result.policy != "run-now":
            label += f" (planned on {result.forecast})"
        bottom.step(times, load, where="post", color=colour, label=label)
    bottom.set_ylabel("jobs running")
    bottom.legend(loc="upper right", fontsize="small")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_savings(plt: Any, report: Report, path: Path) -> Path:
    results = [r for r in report.results if r.policy != "run-now"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = [_label(report, r.policy) for r in results]
    values = [r.saved_pct_vs_run_now for r in results]
    bars = ax.bar(names, values, color=["#999999" if r.oracle else "#2a7f62" for r in results])
    for bar, value in zip(bars, values, strict=True):
        ax.annotate(f"{value:.2f}%", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
    ax.set_ylabel("CO2e saved vs run-now (%)")
    ax.set_title(f"{report.trace}, scenario {report.scenario}, forecast {report.forecast} (grey = oracle)")
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_slack(plt: Any, report: Report, path: Path) -> Path:
    baseline = report.results[0] if report.results[0].policy == "run-now" else None
    results = [r for r in report.results if r.policy != "run-now"]
    slack = np.array([o.slack_hours for o in results[0].outcomes]) if results else np.array([])
    edges = np.array([0, 1e-9, 6, 24, 72, np.inf])
    names = ["none", "<6 h", "6-24 h", "1-3 d", ">3 d"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(results), 1)
    for k, r in enumerate(results):
        saved = []
        for lo, hi in itertools.pairwise(edges):
            members = [i for i, s in enumerate(slack) if lo <= s < hi]
            base = sum(r.outcomes[i].baseline_grams for i in members)
            if baseline is not None:
                base = sum(baseline.outcomes[i].grams for i in members)
            got = sum(r.outcomes[i].grams for i in members)
            saved.append((1 - got / base) * 100 if base > 0 else 0.0)
        ax.bar(np.arange(len(names)) + k * width, saved, width, label=_label(report, r.policy))
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_xlabel("slack (deadline - arrival - duration)")
    ax.set_ylabel("CO2e saved vs run-now (%)")
    ax.set_title(f"{report.trace}: savings by slack (first seed)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
