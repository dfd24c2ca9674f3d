"""A forecast's shown skill: how much of what it promised came true lately, for a decision of a given shape.

Do no harm's second gate (carbonshift.domain.core, `Snapshot.forecast_skill`): a forecast whose error is not
declared (persistence, a provider's forecast, a recorded file) defers a job only if it has shown skill. The skill
is a backtest of the forecasts that were actually issued: for each past issue, the decision the planner would
have made on it for the job's shape (non-interruptible: the cheapest start of one block of `length` slots in the
`window`; interruptible: the cheapest `length` slots), the gain g it promised over running at once (g/kWh) and the
gain r the actuals then gave. The skill is the slope of realized on promised gain (sum r g / sum g^2) less `z`
standard errors (the expected share of a promised gain that comes true, counted low), from at least `MIN_SAMPLES`
issues; the spread is the standard deviation of r around skill x g.

One computation for both users: the closed-loop simulator's `SkillEstimate` (carbonshift.simulate.closed_loop,
which issues the model's forecasts every 6 h over the three weeks before a job arrives) and the operator's
`ForecastRecord.skill` (carbonshift.domain.forecast_trust, on the forecasts it was served at each 6-hour issue
boundary). Shapes are rounded to whole hours so that nearby jobs share one estimate.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import timedelta

import numpy as np
from numpy.typing import ArrayLike

MIN_SAMPLES = 4  # issues needed before a slope is trusted
# The backtest's span and how low its slope is counted (session 14, docs/simulator.md): three weeks of issues
# (84) rather than one (28) measure a good forecast's skill precisely enough that it is not taken for none (the
# realistic forecast gated as a provider's kept 0.773 of the non-interruptible optimum on a week, 0.835 on three),
# and 1.25 standard errors rather than 1 keep persistence's worst cell on four samples of the ten traces where it
# was (-0.012 %; three weeks at 1.0: -0.032 %).
Z = 1.25  # standard errors the skill is counted low by (the simulator's `Settings.skill_z` default)
STRIDE = timedelta(hours=6)  # one backtest issue every 6 h
HISTORY = timedelta(days=21)  # the issues of the three weeks before (`HISTORY / STRIDE` of them)

Sample = tuple[float, float]  # (promised gain g, realized gain r), g/kWh


def shape_slots(length: timedelta, window: timedelta, step: timedelta) -> tuple[int, int]:
    """(length, window) in slots of `step`, each rounded to whole hours (at least one)."""
    hour = max(int(timedelta(hours=1) / step), 1)
    n_len = max(round(max(int(length / step), 0) / hour), 1) * hour
    n_win = max(round(max(int(window / step), 0) / hour), 1) * hour
    return n_len, n_win


def sample(forecast: ArrayLike, actual: ArrayLike, length: int, interruptible: bool) -> Sample | None:
    """One issue's (promised, realized) gain for a job of `length` slots in a window of `window` slots, given the
    forecast issued for that window and the actuals over it (each exactly `window` values, the first at the issue
    time's slot). None when it cannot be scored: a value missing (NaN), or nothing to choose."""
    f = np.asarray(forecast, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    window = a.shape[0]
    if not 0 < length < window or f.shape[0] != window or np.isnan(f).any() or np.isnan(a).any():
        return None
    if interruptible:
        chosen = np.argsort(f, kind="stable")[:length]
        g = float(f[:length].sum() - f[chosen].sum()) / length
        r = float(a[:length].sum() - a[chosen].sum()) / length
    else:
        fc = np.concatenate(([0.0], np.cumsum(f)))
        ac = np.concatenate(([0.0], np.cumsum(a)))
        sums = fc[length:] - fc[:-length]
        best = int(np.argmin(sums))
        g = float(sums[0] - sums[best]) / length
        r = float((ac[length] - ac[0]) - (ac[best + length] - ac[best])) / length
    return g, r


def skill_of(samples: Iterable[Sample | None], z: float = Z) -> tuple[float, float]:
    """(skill, spread) of the scored samples (None ones are left out): (0.0, inf) with fewer than `MIN_SAMPLES`
    or no promised gain at all."""
    found = np.array([p for p in samples if p is not None], dtype=np.float64).reshape(-1, 2)
    result = (0.0, math.inf)
    if found.shape[0] >= MIN_SAMPLES:
        g, r = found[:, 0], found[:, 1]
        energy = float(np.sum(g * g))
        if energy > 0:
            slope = float(np.sum(r * g)) / energy
            spread = float(np.sum((r - slope * g) ** 2)) / max(found.shape[0] - 1, 1)
            result = (slope - z * math.sqrt(spread / energy), math.sqrt(spread))
    return result


def scored(
    issues: Iterable[tuple[ArrayLike, ArrayLike]], length: int, window: int, interruptible: bool
) -> list[Sample]:
    """The samples of `issues` that can be scored, in order: pairs of (the forecast issued, the actuals that
    followed), each on the forecast's slots from the issue time's slot and at least `window` long (longer ones are
    cut to it; shorter ones are left out)."""
    out = []
    for forecast, actual in issues:
        f = np.asarray(forecast, dtype=np.float64)[:window]
        a = np.asarray(actual, dtype=np.float64)[:window]
        if f.shape[0] == window and a.shape[0] == window:
            one = sample(f, a, length, interruptible)
            if one is not None:
                out.append(one)
    return out


def backtest(
    issues: Iterable[tuple[ArrayLike, ArrayLike]],
    length: timedelta,
    window: timedelta,
    step: timedelta,
    interruptible: bool,
    z: float = Z,
) -> tuple[float, float]:
    """(skill, spread) for a job of `length` due `window` after each issue, from `issues` on slots of `step` (see
    `scored`): the simulator's `SkillEstimate.at` for issues it made itself. (1.0, 0.0) when the rounded length
    fills the window: there is nothing to choose, no forecast is acted on."""
    n_len, n_win = shape_slots(length, window, step)
    if n_len >= n_win:
        return 1.0, 0.0
    return skill_of(scored(issues, n_len, n_win, interruptible), z)
