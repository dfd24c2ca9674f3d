"""Benchmark: issuing a year of 5-minute forecasts (48 h ahead) with the realistic error model.

The closed-loop simulator asks for a fresh forecast at every tick; this times a year of them on GB_2023
(30-minute trace: six ticks per issue slot) for `realistic` against `persistence` (the cheapest honest
model, a slice of a shifted array) in the same run, and the realistic model's one-off draw per trace.
Run: .venv/bin/python bench/bench_forecast.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from datetime import timedelta

import numpy as np

from carbonshift.data import load_bundled_trace
from carbonshift.domain.forecasting import ForecastModel, parse_forecast_model
from carbonshift.domain.series import IntensitySeries

TICK = timedelta(minutes=5)
HORIZON = timedelta(hours=48)


def year_of_ticks(model: ForecastModel, actual: IntensitySeries) -> float:
    """Seconds to issue one forecast per 5-minute tick over the whole trace."""
    ticks = int((actual.end - actual.start - HORIZON) / TICK)
    began = time.perf_counter()
    for k in range(ticks):
        model.forecast(actual, actual.start + k * TICK, HORIZON)
    return time.perf_counter() - began


def median(fn: Callable[[], float], repeat: int) -> float:
    return statistics.median(fn() for _ in range(repeat))


def main() -> None:
    actual = load_bundled_trace("GB_2023")
    ticks = int((actual.end - actual.start - HORIZON) / TICK)

    def realistic_fresh() -> float:  # a new model each run: includes the per-trace draw
        return year_of_ticks(parse_forecast_model("realistic", seed=0), actual)

    def persistence_fresh() -> float:
        return year_of_ticks(parse_forecast_model("persistence"), actual)

    def draw_only() -> float:
        model = parse_forecast_model("realistic", seed=0)
        began = time.perf_counter()
        model.forecast(actual, actual.start, HORIZON)
        return time.perf_counter() - began

    def realistic_new_slots() -> float:  # one call per issue slot: every call computes (no cache hit)
        model = parse_forecast_model("realistic", seed=0)
        model.forecast(actual, actual.start, HORIZON)
        slots = len(actual) - 96
        began = time.perf_counter()
        for k in range(1, slots):
            model.forecast(actual, actual.slot_start(k), HORIZON)
        return (time.perf_counter() - began) / (slots - 1)

    realistic = median(realistic_fresh, 3)
    uncached = median(realistic_new_slots, 3)
    persistence = median(persistence_fresh, 3)
    draw = median(draw_only, 3)
    sample = parse_forecast_model("realistic", seed=0).forecast(actual, actual.start + 1000 * TICK, HORIZON)
    assert len(sample) == 97 and np.isfinite(sample.values).sum() > 90

    print(f"GB_2023: {len(actual)} slots of {actual.resolution}; {ticks} forecasts, one per 5-minute tick, 48 h ahead")
    print(f"{'model':<40}{'year of ticks':>16}{'per forecast':>16}{'vs persistence':>16}")
    for name, seconds in [("realistic (NESO GB 2023 fit)", realistic), ("persistence (baseline)", persistence)]:
        print(f"{name:<40}{seconds:>14.2f} s{seconds / ticks * 1e6:>13.1f} us{seconds / persistence:>15.2f}x")
    print(f"{'realistic: one-off draw per trace+seed':<40}{draw * 1e3:>13.1f} ms")
    print(f"{'realistic: a new issue slot (no cache)':<40}{'':>16}{uncached * 1e6:>13.1f} us")
    print("baseline: persistence in the same run (a slice of the actuals shifted by whole days)")


if __name__ == "__main__":
    main()
