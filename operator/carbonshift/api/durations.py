"""Kubernetes-style duration strings ("90s", "15m", "1h30m", "2.5h"), as `kubectl` and CEL's `duration()` read them.

One parser serves the models, the planner's callers and the CLI, so a value the API server accepts is read the same
way everywhere.
"""

from __future__ import annotations

import re
from datetime import timedelta

# CEL's duration() accepts Go durations; we accept the units that make sense for scheduling.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_WHOLE = re.compile(DURATION_PATTERN)


def parse_duration(text: str) -> timedelta:
    """Parse "1h30m" into a timedelta; raise ValueError with the offending text otherwise."""
    if not _WHOLE.match(text):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit (ms, s, m, h), e.g. 90m or 1h30m")
    seconds = sum(float(number) * _SECONDS[unit] for number, unit in _PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Format a timedelta as the shortest h/m/s string ("1h30m", "45s", "0s")."""
    total = round(delta.total_seconds())
    if total == 0:
        return "0s"
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{seconds}s" if seconds else ""]
    return sign + "".join(parts)
