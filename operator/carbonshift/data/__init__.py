"""Bundled grid carbon-intensity traces, read from the installed package.

This package owns the real, measured traces shipped with carbonshift (carbon-intensity/*.csv; provenance,
licences and attribution in carbon-intensity/README.md, summarised under "Attribution" in
docs/carbon-data.md) and the small loader that reads them with importlib.resources. Parsing lives in
carbonshift.domain.traces; this module only finds and reads the package files.

Names: a trace is named by its file stem (`DE_2020`, `US-CAL-CISO_2022`) or by its zone alone (`DE`) when
exactly one year of that zone is bundled. The recorded-forecast file (`GB_2023_forecast_vs_actual`) is
not a plain trace; load it with `load_bundled_forecast_vs_actual`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from carbonshift.domain.forecasting import ForecastModel, parse_forecast_model
from carbonshift.domain.series import IntensitySeries
from carbonshift.domain.traces import (
    ForecastVsActual,
    TraceParse,
    parse_forecast_vs_actual_csv,
    parse_trace_csv,
)

TRACE_DIR = "carbon-intensity"
_FORECAST_SUFFIX = "_forecast_vs_actual"
_STEM = re.compile(r"^(?P<zone>.+)_(?P<year>\d{4})$")


class UnknownTraceError(LookupError):
    """No bundled trace matches the name (or several do and the name is ambiguous)."""


def _folder() -> Traversable:
    return resources.files(__name__).joinpath(TRACE_DIR)


def _stems() -> list[str]:
    return sorted(entry.name.removesuffix(".csv") for entry in _folder().iterdir() if entry.name.endswith(".csv"))


def bundled_zones() -> list[str]:
    """File stems of the bundled plain traces, e.g. ['BPAT_2022', 'DE_2020', ...] (forecast file excluded)."""
    return [stem for stem in _stems() if not stem.endswith(_FORECAST_SUFFIX)]


def zone_of(stem: str) -> str:
    """The zone code of a trace stem: 'US-CAL-CISO_2022' -> 'US-CAL-CISO'."""
    match = _STEM.match(stem)
    return match.group("zone") if match else stem


def resolve_trace_name(name: str) -> str:
    """Map a zone ('DE') or a stem ('DE_2020', 'DE_2020.csv', case-insensitive) to a bundled stem."""
    wanted = name.strip().removesuffix(".csv").upper()
    stems = bundled_zones()
    exact = [stem for stem in stems if stem.upper() == wanted]
    if exact:
        return exact[0]
    by_zone = [stem for stem in stems if zone_of(stem).upper() == wanted]
    if len(by_zone) == 1:
        return by_zone[0]
    if len(by_zone) > 1:
        raise UnknownTraceError(f"zone {name!r} has several bundled years: {', '.join(by_zone)}; name one")
    raise UnknownTraceError(f"no bundled trace named {name!r}; bundled: {', '.join(stems)}")


def bundled_trace_text(name: str) -> str:
    """The CSV text of a bundled trace (zone or stem, see resolve_trace_name)."""
    stem = resolve_trace_name(name)
    return _folder().joinpath(f"{stem}.csv").read_text(encoding="utf-8")


@lru_cache(maxsize=32)
def parse_bundled_trace(name: str) -> TraceParse:
    """Parse a bundled trace once (cached; the series' arrays must be treated as read-only)."""
    stem = resolve_trace_name(name)
    text = _folder().joinpath(f"{stem}.csv").read_text(encoding="utf-8")
    parsed = parse_trace_csv(text, zone_of(stem), source=f"{stem}.csv", provider=f"trace:{stem}")
    parsed.series.values.flags.writeable = False  # shared by every caller through the cache
    return parsed


def load_bundled_trace(name: str) -> IntensitySeries:
    """The bundled trace for a zone ('DE') or stem ('DE_2020') as an actual IntensitySeries."""
    return parse_bundled_trace(name).series


def bundled_forecast_files() -> list[str]:
    """Stems of the bundled recorded-forecast files, e.g. ['GB_2023_forecast_vs_actual']."""
    return [stem for stem in _stems() if stem.endswith(_FORECAST_SUFFIX)]


@lru_cache(maxsize=4)
def load_bundled_forecast_vs_actual(name: str = "GB_2023") -> ForecastVsActual:
    """The recorded forecast and the actuals of a bundled forecast file ('GB', 'GB_2023' or the full stem)."""
    wanted = name.strip().removesuffix(".csv").upper()
    for stem in bundled_forecast_files():
        base = stem.removesuffix(_FORECAST_SUFFIX)
        if wanted in {stem.upper(), base.upper(), zone_of(base).upper()}:
            text = _folder().joinpath(f"{stem}.csv").read_text(encoding="utf-8")
            parsed = parse_forecast_vs_actual_csv(text, zone_of(base), source=f"{stem}.csv", provider="NESO")
            parsed.forecast.values.flags.writeable = False  # shared by every caller through the cache
            parsed.actual.values.flags.writeable = False
            return parsed
    raise UnknownTraceError(f"no bundled forecast file named {name!r}; bundled: {', '.join(bundled_forecast_files())}")


def read_recorded_forecast(location: str) -> IntensitySeries:
    """The recorded forecast series behind a `file:` forecast model: a bundled forecast file's name
    ('GB_2023_forecast_vs_actual', 'GB_2023', 'GB') or a path to a CSV with forecast_<unit> and
    actual_<unit> columns."""
    path = Path(location).expanduser()
    if path.suffix == ".csv" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"recorded forecast file {location} does not exist")
        zone = zone_of(path.stem.removesuffix(_FORECAST_SUFFIX))
        text = path.read_text(encoding="utf-8")
        return parse_forecast_vs_actual_csv(text, zone, source=path.name).forecast
    return load_bundled_forecast_vs_actual(location).forecast


def load_forecast_model(spec: str, seed: int = 0) -> ForecastModel:
    """parse_forecast_model with `file:` specs resolved against bundled files and the filesystem."""
    return parse_forecast_model(spec, seed=seed, read_recorded=read_recorded_forecast)
