"""Parsing of carbon-intensity trace files (CSV text) into IntensitySeries.

This module owns the bundled-data CSV shape, `timestamp,gco2_per_kwh` (ISO 8601 UTC timestamps, the start
of each interval; one value per interval; missing intervals simply absent), and the recorded-forecast
shape `timestamp,forecast_gco2_per_kwh,actual_gco2_per_kwh[,...]`. It is pure: it takes text, never
opens files (carbonshift.data and the trace provider do that).

Every row goes through the quality guards (carbonshift.domain.quality); refused rows are returned with
their line number and reason, never used. The resolution is inferred from the most common step between
accepted timestamps, and the slot grid from the most common phase, so a trace at any resolution with gaps
works: missing slots become NaN. The value column's name says its unit (`gco2_per_kwh`,
`lbs_co2_per_mwh`, `kg_co2_per_kwh` ...); values are converted to gCO2e/kWh once, here.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from carbonshift.domain.quality import (
    GuardedPoints,
    QualityLimits,
    Reason,
    RejectedPoint,
    UnknownUnitError,
    guard_points,
    unit_factor_to_g_per_kwh,
)
from carbonshift.domain.series import IntensitySeries, Kind, Signal

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS = 1_000_000


class TraceError(ValueError):
    """A trace that cannot be used at all (no header, unknown unit, no usable rows)."""


@dataclass(frozen=True, slots=True)
class TraceParse:
    """A parsed trace: the series built from the accepted rows, and every refused row with its reason."""

    series: IntensitySeries
    rejected: list[RejectedPoint]


@dataclass(frozen=True, slots=True)
class ForecastVsActual:
    """A recorded forecast next to the actuals for the same slots (e.g. NESO's GB file).

    `forecast` has kind=forecast and no single issue time (each slot's forecast was issued at its own,
    unrecorded, moment); `actual` has kind=actual. `rejected` holds refused cells of both columns; its
    `detail` says which column.
    """

    forecast: IntensitySeries
    actual: IntensitySeries
    rejected: list[RejectedPoint]


@dataclass(frozen=True, slots=True)
class _Table:
    header: list[str]
    rows: list[tuple[int, list[str]]]
    malformed: list[RejectedPoint]


def _read_table(text: str, source: str) -> _Table:
    """Split CSV text into a lower-cased header and numbered rows (1-based file line numbers)."""
    lines = text.splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    if not numbered:
        raise TraceError(f"{source}: empty trace (expected a header line such as 'timestamp,gco2_per_kwh')")
    reader = csv.reader([line for _, line in numbered])
    parsed = list(reader)
    header = [cell.strip().lower() for cell in parsed[0]]
    if "timestamp" not in header:
        raise TraceError(
            f"{source}: line {numbered[0][0]} must be a header with a 'timestamp' column, got {numbered[0][1]!r}"
        )
    rows: list[tuple[int, list[str]]] = []
    malformed: list[RejectedPoint] = []
    for (line_no, line), cells in zip(numbered[1:], parsed[1:], strict=True):
        if len(cells) < len(header):
            detail = f"line {line_no}, {len(cells)} fields instead of {len(header)}: {line[:60]!r}"
            malformed.append(
                RejectedPoint(_parse_timestamp(cells[0]) if cells else None, Reason.MALFORMED_ROW, None, detail)
            )
            continue
        rows.append((line_no, cells))
    return _Table(header=header, rows=rows, malformed=malformed)


def _parse_timestamp(text: str) -> datetime | None:
    """ISO 8601 timestamp (a `Z` suffix is UTC); None when unparseable. A naive result is returned as is
    so that the guards can refuse it with the right reason."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


def _unit_of_column(column: str, prefix: str = "") -> str:
    name = column.removeprefix(prefix)
    try:
        unit_factor_to_g_per_kwh(name)
    except UnknownUnitError as exc:
        raise TraceError(f"column {column!r} does not name a known unit: {exc}") from None
    return name


def _find_value_column(header: Sequence[str], source: str) -> int:
    for i, name in enumerate(header):
        if name == "timestamp":
            continue
        try:
            unit_factor_to_g_per_kwh(name)
        except UnknownUnitError:
            continue
        return i
    raise TraceError(
        f"{source}: no value column with a known unit in header {','.join(header)!r} "
        "(expected e.g. 'gco2_per_kwh' or 'lbs_co2_per_mwh')"
    )


def _guard_column(
    table: _Table, column: int, unit: str, limits: QualityLimits | None, label: str = ""
) -> GuardedPoints:
    ts_index = table.header.index("timestamp")
    raw = [(_parse_timestamp(cells[ts_index]), cells[column]) for _, cells in table.rows]
    prefix = f"{label}, " if label else ""
    details = [f"{prefix}line {line_no}" for line_no, _ in table.rows]
    return guard_points(raw, unit=unit, limits=limits, details=details)


def infer_resolution(micros: np.ndarray) -> timedelta:
    """The most common positive step between consecutive (sorted) timestamps given in microseconds; ties
    go to the smaller step."""
    steps = np.diff(micros)
    steps = steps[steps > 0]
    if steps.size == 0:
        raise TraceError("cannot infer the resolution from fewer than two distinct timestamps")
    values, counts = np.unique(steps, return_counts=True)
    return timedelta(microseconds=int(values[int(np.argmax(counts))]))


def build_series(
    guarded: GuardedPoints,
    zone: str,
    *,
    resolution: timedelta | None = None,
    source: str = "trace",
    signal: Signal = Signal.AVERAGE,
    kind: Kind = Kind.ACTUAL,
    provider: str = "trace",
    issued_at: datetime | None = None,
    labels: dict[str, str] | None = None,
) -> tuple[IntensitySeries, list[RejectedPoint]]:
    """Place guarded points (UTC, sorted, unique, g/kWh) on a regular slot grid.

    The resolution is inferred when not given; the grid's phase is the most common one among the points,
    so a stray off-grid timestamp is refused (reason OFF_GRID) instead of shifting the whole grid. Slots
    without a point are NaN. Returns the series and the points refused for being off the grid.
    """
    if not guarded.points:
        reasons = sorted({r.reason.value for r in guarded.rejected})
        why = f"; refused rows were: {', '.join(reasons)}" if reasons else ""
        raise TraceError(f"{source}: no usable data points for zone {zone}{why}")
    micros = np.fromiter(
        ((moment - _EPOCH) // timedelta(microseconds=1) for moment, _ in guarded.points),
        dtype=np.int64,
        count=len(guarded.points),
    )
    values = np.fromiter((value for _, value in guarded.points), dtype=np.float64, count=len(guarded.points))
    if resolution is None:
        if len(micros) < 2:
            raise TraceError(f"{source}: a single data point does not say the resolution; give it explicitly")
        resolution = infer_resolution(micros)
    step = resolution // timedelta(microseconds=1)
    if step <= 0:
        raise TraceError(f"{source}: resolution must be positive, got {resolution}")
    phases = micros % step
    phase_values, phase_counts = np.unique(phases, return_counts=True)
    phase = phase_values[int(np.argmax(phase_counts))]
    on_grid = phases == phase
    rejected = [
        RejectedPoint(guarded.points[i][0], Reason.OFF_GRID, guarded.points[i][1], f"grid step {resolution}")
        for i in np.flatnonzero(~on_grid)
    ]
    micros, values = micros[on_grid], values[on_grid]
    first = int(micros[0])
    indices = (micros - first) // step
    grid = np.full(int(indices[-1]) + 1, np.nan)
    grid[indices] = values
    series = IntensitySeries(
        zone=zone,
        start=_EPOCH + timedelta(microseconds=first),
        resolution=resolution,
        values=grid,
        signal=signal,
        kind=kind,
        provider=provider,
        issued_at=issued_at,
        labels=dict(labels or {}),
    )
    return series, rejected


def parse_trace_csv(
    text: str,
    zone: str,
    *,
    source: str = "trace",
    provider: str = "trace",
    signal: Signal = Signal.AVERAGE,
    resolution: timedelta | None = None,
    limits: QualityLimits | None = None,
) -> TraceParse:
    """Parse `timestamp,<value column>` CSV text into an actual IntensitySeries for `zone`.

    The value column is the first whose name is a known unit (`gco2_per_kwh`, `lbs_co2_per_mwh`, ...).
    `source` names the text in messages (a file name). Raises TraceError when nothing usable remains.
    """
    table = _read_table(text, source)
    column = _find_value_column(table.header, source)
    unit = _unit_of_column(table.header[column])
    guarded = _guard_column(table, column, unit, limits)
    series, off_grid = build_series(
        guarded,
        zone,
        resolution=resolution,
        source=source,
        signal=signal,
        provider=provider,
        labels={"source": source},
    )
    return TraceParse(series=series, rejected=_by_line([*table.malformed, *guarded.rejected, *off_grid]))


def _by_line(rejected: list[RejectedPoint]) -> list[RejectedPoint]:
    """Rejections in time order (unknown times first), so reports read like the file."""

    def key(r: RejectedPoint) -> tuple[bool, datetime]:
        if r.start is None:
            return False, _EPOCH
        return True, r.start if r.start.tzinfo is not None else r.start.replace(tzinfo=UTC)

    return sorted(rejected, key=key)


def parse_forecast_vs_actual_csv(
    text: str,
    zone: str,
    *,
    source: str = "forecast_vs_actual",
    provider: str = "recorded",
    signal: Signal = Signal.AVERAGE,
    limits: QualityLimits | None = None,
) -> ForecastVsActual:
    """Parse `timestamp,forecast_<unit>,actual_<unit>[,...]` CSV text (e.g. GB_2023_forecast_vs_actual.csv).

    Both columns are guarded separately (an empty actual is a refused null in the actual column; the
    forecast for that slot is still used). Both series share one resolution, inferred from the timestamps.
    """
    table = _read_table(text, source)
    try:
        f_col = next(i for i, name in enumerate(table.header) if name.startswith("forecast_"))
        a_col = next(i for i, name in enumerate(table.header) if name.startswith("actual_"))
    except StopIteration:
        raise TraceError(
            f"{source}: header {','.join(table.header)!r} needs 'forecast_<unit>' and 'actual_<unit>' columns"
        ) from None
    forecast_guarded = _guard_column(
        table, f_col, _unit_of_column(table.header[f_col], "forecast_"), limits, "forecast"
    )
    actual_guarded = _guard_column(table, a_col, _unit_of_column(table.header[a_col], "actual_"), limits, "actual")
    ts_index = table.header.index("timestamp")
    stamps = sorted(
        {
            (moment.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
            for _, cells in table.rows
            if (moment := _parse_timestamp(cells[ts_index])) is not None and moment.tzinfo is not None
        }
    )
    if len(stamps) < 2:
        raise TraceError(f"{source}: fewer than two usable timestamps")
    resolution = infer_resolution(np.asarray(stamps, dtype=np.int64))
    labels = {"source": source}
    forecast, f_off = build_series(
        forecast_guarded,
        zone,
        resolution=resolution,
        source=source,
        signal=signal,
        kind=Kind.FORECAST,
        provider=provider,
        labels={**labels, "forecast_model": f"recorded:{source}"},
    )
    actual, a_off = build_series(
        actual_guarded,
        zone,
        resolution=resolution,
        source=source,
        signal=signal,
        provider=provider,
        labels=labels,
    )
    rejected = _by_line([*table.malformed, *forecast_guarded.rejected, *actual_guarded.rejected, *f_off, *a_off])
    return ForecastVsActual(forecast=forecast, actual=actual, rejected=rejected)
