"""Zones are ranked on one signal: grams of an average grid mix and of a marginal generator are different measures.

A provider answers each zone with the signal it has: WattTime's marginal MOER, Electricity Maps' or the GB API's
average mix, a fallback that answers in the other kind. Ranking a zone's marginal grams against another's average
grams would move a job on a difference of definitions, not of emissions. `one_signal` chooses the signal the zones
are compared on and names the zones left out, with the reason the plan reports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from carbonshift.domain.series import IntensitySeries, Signal


@dataclass(frozen=True, slots=True)
class SignalChoice:
    """The signal the zones are compared on, the zones left out (another signal), and why, for the plan's message."""

    signal: Signal | None
    excluded: frozenset[str]
    note: str | None


def one_signal(forecasts: Mapping[str, IntensitySeries | None], prefer: Iterable[str] = ()) -> SignalChoice:
    """Choose one signal for ranking the zones of `forecasts`.

    The signal is that of the first zone in `prefer` with a forecast (the zone the job already runs in, then its
    home cluster's), so a running job is never moved on a change of definition; else the signal most zones have,
    average on a tie (location-based, as the GHG Protocol's Scope 2 and SCI use). Zones without a forecast are
    neither chosen from nor left out: the planner handles them as it does today."""
    signals = {zone: series.signal for zone, series in forecasts.items() if series is not None}
    if len(set(signals.values())) <= 1:
        return SignalChoice(next(iter(signals.values()), None), frozenset(), None)
    preferred = next((signals[z] for z in prefer if z in signals), None)
    if preferred is None:
        counts = Counter(signals.values())
        preferred = max(counts, key=lambda s: (counts[s], s is Signal.AVERAGE))
    excluded = frozenset(z for z, s in signals.items() if s is not preferred)
    kept = sorted(z for z, s in signals.items() if s is preferred)
    note = (
        f"zones compared on {preferred} intensity ({', '.join(kept)}); left out, since their providers answer in "
        f"another signal: " + ", ".join(f"{z} ({signals[z]})" for z in sorted(excluded))
    )
    return SignalChoice(preferred, excluded, note)
