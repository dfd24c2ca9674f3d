"""Zones are ranked on one signal (issue: a receipt never mixes signals, and neither does the cluster choice)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from carbonshift.domain.planning.signals import one_signal
from carbonshift.domain.series import IntensitySeries, Signal

START = datetime(2026, 1, 5, tzinfo=UTC)


def series(zone: str, signal: Signal, value: float) -> IntensitySeries:
    return IntensitySeries(zone, START, timedelta(hours=1), np.full(24, value), signal=signal)


def test_zones_of_one_signal_are_all_compared() -> None:
    choice = one_signal({"DE": series("DE", Signal.AVERAGE, 400), "GB": series("GB", Signal.AVERAGE, 50)})
    assert choice.signal is Signal.AVERAGE and not choice.excluded and choice.note is None


def test_a_zone_in_another_signal_is_left_out_and_the_plan_says_why() -> None:
    forecasts = {
        "DE": series("DE", Signal.AVERAGE, 400),
        "GB": series("GB", Signal.AVERAGE, 200),
        "CAISO": series("CAISO", Signal.MARGINAL, 10),  # cheap in marginal grams: not comparable
    }
    choice = one_signal(forecasts)
    assert choice.signal is Signal.AVERAGE
    assert choice.excluded == {"CAISO"}
    assert choice.note is not None and "CAISO (marginal)" in choice.note and "average" in choice.note


def test_the_zone_a_job_runs_in_sets_the_signal() -> None:
    forecasts = {
        "DE": series("DE", Signal.AVERAGE, 400),
        "GB": series("GB", Signal.AVERAGE, 200),
        "CAISO": series("CAISO", Signal.MARGINAL, 10),
    }
    choice = one_signal(forecasts, prefer=["CAISO"])
    assert choice.signal is Signal.MARGINAL and choice.excluded == {"DE", "GB"}


def test_a_tie_is_compared_on_the_average_mix_and_zones_without_forecast_are_not_left_out() -> None:
    forecasts = {"A": series("A", Signal.MARGINAL, 10), "B": series("B", Signal.AVERAGE, 300), "C": None}
    choice = one_signal(forecasts)
    assert choice.signal is Signal.AVERAGE and choice.excluded == {"A"}
