"""`carbonshift forecast`: show grid carbon intensity (current slot and forecast) for a zone.

This module owns the command line of the carbon-data layer. With `--provider trace` (the default) it reads a
bundled trace by zone (`--zone DE`) or a CSV file (`--trace FILE`); the first point is the measured slot
containing `--at`, every later point comes from the declared forecast model (`--forecast`, default
persistence), never from the actuals unless the model is `oracle`, which is then flagged in the output.
When `--at` is not given and the current time lies outside the trace, `--at` is the trace's start plus 7
days (so persistence has history to read and the output is reproducible).

With an API provider (`electricitymaps`, `watttime`, `carbon-aware-sdk`, `gb-carbon-intensity`) the points
are that provider's forecast from `--at` (default: now), through the same guards the operator uses (a 15 s
budget for the call, a forecast older than three of its slots refused). Credentials come from environment
variables (see docs/carbon-data.md); `--base-url` overrides the provider's URL.

`issued_at` is when the forecast was made as the provider states it (`at` is the moment asked about): an old
forecast is never shown as issued now. Retry warnings go to stderr, each line prefixed
`carbonshift forecast: warning: carbon provider <name>:`.

Any failure (missing file, unknown zone, malformed trace, provider error) prints one line on stderr and
exits with status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import logging
import math
import os
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from carbonshift.adapters.carbon.cache import CachedProvider
from carbonshift.adapters.carbon.config import PROVIDERS, api_provider_from_env
from carbonshift.adapters.carbon.errors import ProviderError
from carbonshift.adapters.carbon.trace import TraceProvider
from carbonshift.data import UnknownTraceError, load_forecast_model
from carbonshift.domain.forecasting import ForecastError, ForecastSpecError
from carbonshift.domain.quality import RejectedPoint
from carbonshift.domain.series import IntensitySeries, SeriesError, require_utc
from carbonshift.domain.traces import TraceError

EXIT_ERROR = 2
DEFAULT_TRACE_OFFSET = timedelta(days=7)
_DURATION = re.compile(r"^(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?(?:(?P<m>\d+)m)?$")


class CommandError(Exception):
    """A user-facing failure of the command: printed as one line, exit status 2."""


def parse_duration(text: str) -> timedelta:
    """'48h', '90m', '2d', '1d12h' -> timedelta (positive)."""
    match = _DURATION.match(text.strip().lower())
    if not match or not any(match.groupdict().values()):
        raise CommandError(f"invalid duration {text!r}; use e.g. 48h, 90m, 2d or 1d12h")
    duration = timedelta(
        days=int(match.group("d") or 0), hours=int(match.group("h") or 0), minutes=int(match.group("m") or 0)
    )
    if duration <= timedelta(0):
        raise CommandError(f"duration {text!r} must be positive")
    return duration


def parse_moment(text: str) -> datetime:
    """An RFC 3339 timestamp with a timezone (Z or an offset)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(f"invalid --at {text!r}; use RFC 3339, e.g. 2020-06-01T12:00:00Z") from None
    if moment.tzinfo is None:
        raise CommandError(f"--at {text!r} has no timezone; add Z or an offset such as +00:00")
    return moment.astimezone(UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--provider", choices=PROVIDERS, default="trace", help="data source (default: trace)")
    parser.add_argument("--zone", help="zone: bundled trace zone (DE, GB_2023), API zone key or region")
    parser.add_argument("--trace", metavar="FILE", help="CSV trace file (timestamp,gco2_per_kwh) for --provider trace")
    parser.add_argument("--at", metavar="RFC3339", help="moment to forecast from (default: now, or trace start + 7d)")
    parser.add_argument("--horizon", default="48h", help="how far ahead (default 48h; e.g. 90m, 2d)")
    parser.add_argument(
        "--forecast",
        default="persistence",
        metavar="MODEL",
        help="trace forecast model: persistence (default), realistic[:K], oracle, gaussian:E, file:PATH",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of a random forecast model (default 0)")
    parser.add_argument("--base-url", help="override the API provider's base URL")
    parser.add_argument("--output", choices=("table", "json", "csv"), default="table")


def run(args: argparse.Namespace) -> int:
    carbon_log = logging.getLogger("carbonshift.carbon")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("carbonshift forecast: %(levelname)s: %(message)s"))
    carbon_log.addHandler(handler)
    propagate, carbon_log.propagate = carbon_log.propagate, False
    try:
        report = asyncio.run(_collect(args, datetime.now(UTC)))
    except (CommandError, ProviderError, TraceError, UnknownTraceError, ForecastSpecError, ForecastError) as exc:
        print(f"carbonshift forecast: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except (SeriesError, FileNotFoundError) as exc:
        print(f"carbonshift forecast: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        carbon_log.removeHandler(handler)
        carbon_log.propagate = propagate
    _emit(report, args.output)
    return 0


async def _collect(args: argparse.Namespace, wall_now: datetime) -> dict[str, Any]:
    horizon = parse_duration(args.horizon)
    if args.provider == "trace":
        return await _from_trace(args, wall_now, horizon)
    if not args.zone:
        raise CommandError(f"--zone is required with --provider {args.provider}")
    at = parse_moment(args.at) if args.at else wall_now
    provider = CachedProvider(api_provider_from_env(args.provider, os.environ, base_url=args.base_url))
    try:
        result = await provider.forecast(args.zone, at, horizon)
    finally:
        await provider.aclose()
    points = _points(result.series, result.series.kind.value)
    return _report(result.series, provider.name, at, points, result.rejected, notes=result.notes)


async def _from_trace(args: argparse.Namespace, wall_now: datetime, horizon: timedelta) -> dict[str, Any]:
    model = load_forecast_model(args.forecast, seed=args.seed)
    if args.trace:
        if not os.path.isfile(args.trace):  # noqa: PTH113  (the message names the path as given)
            raise CommandError(f"trace file {args.trace} does not exist")
        provider = TraceProvider.from_csv(args.trace, zone=args.zone, forecast_model=model)
    else:
        if not args.zone:
            raise CommandError("give --zone (a bundled trace such as DE or GB_2023) or --trace FILE")
        provider = TraceProvider.bundled(args.zone, forecast_model=model)
    series = provider.series
    if args.at:
        at = parse_moment(args.at)
    elif series.start <= wall_now < series.end:
        at = wall_now
    else:
        at = series.start + DEFAULT_TRACE_OFFSET
    zone = series.zone
    current = await provider.current(zone, at)
    forecast = await provider.forecast(zone, at, horizon)
    later = forecast.series.window(current.series.end, forecast.series.end)
    kind = "oracle" if model.is_oracle else "forecast"
    points = _points(current.series, "actual") + _points(later, kind)
    notes = forecast.notes
    return _report(
        forecast.series, provider.name, at, points, provider.load_rejected, model.name, model.is_oracle, notes
    )


def _points(series: IntensitySeries, kind: str) -> list[dict[str, Any]]:
    points = []
    for i, value in enumerate(series.values.tolist()):
        start = series.slot_start(i)
        points.append(
            {
                "start": _iso(start),
                "end": _iso(start + series.resolution),
                "g_per_kwh": None if math.isnan(value) else round(value, 3),
                "kind": kind,
            }
        )
    return points


def _report(
    series: IntensitySeries,
    provider: str,
    at: datetime,
    points: list[dict[str, Any]],
    rejected: list[RejectedPoint],
    model: str | None = None,
    is_oracle: bool = False,
    notes: tuple[str, ...] = (),
) -> dict[str, Any]:
    issued = series.issued_at
    report: dict[str, Any] = {
        "zone": series.zone,
        "provider": provider,
        "signal": series.signal.value,
        "unit": "gCO2e/kWh",
        "at": _iso(require_utc(at)),
        "issued_at": _iso(issued) if issued is not None else None,
        "points": points,
        "rejected": [
            {"start": _iso(r.start) if r.start is not None and r.start.tzinfo else None, "reason": r.describe()}
            for r in rejected
        ],
    }
    if issued is not None and "issued_at_source" in series.labels:
        report["issued_at_source"] = series.labels["issued_at_source"]
    if "replayed_from" in series.labels:
        report["replayed_from"] = series.labels["replayed_from"]
    if model is not None:
        report["forecast_model"] = model
        report["oracle"] = is_oracle
    if notes:
        report["notes"] = list(notes)
    return report


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _emit(report: dict[str, Any], output: str) -> None:
    if output == "json":
        print(json.dumps(report, indent=2))
    elif output == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["start", "end", "g_per_kwh", "kind"])
        for p in report["points"]:
            writer.writerow([p["start"], p["end"], "" if p["g_per_kwh"] is None else p["g_per_kwh"], p["kind"]])
        sys.stdout.write(buffer.getvalue())
    else:
        _table(report)


def _table(report: dict[str, Any]) -> None:
    from rich.table import Table

    from carbonshift.commands.console import report_console

    console = report_console()
    model = f", model {report['forecast_model']}" if "forecast_model" in report else ""
    issued = report["issued_at"] or "unknown"
    if report.get("issued_at_source"):
        issued += f" ({report['issued_at_source']})"
    title = (
        f"{report['zone']} via {report['provider']} ({report['signal']} signal{model}), from {report['at']}, "
        f"forecast issued {issued}"
    )
    table = Table(title=title)
    for column in ("start", "end", "gCO2e/kWh", "kind"):
        table.add_column(column, justify="right" if column == "gCO2e/kWh" else "left")
    for p in report["points"]:
        value = "gap" if p["g_per_kwh"] is None else f"{p['g_per_kwh']:.1f}"
        table.add_row(p["start"], p["end"], value, p["kind"])
    console.print(table)
    if report.get("oracle"):
        console.print("[bold]oracle: the forecast points are the actuals (perfect information)[/bold]")
    for note in report.get("notes", []):
        console.print(f"note: {note}")
    if report["rejected"]:
        console.print(f"{len(report['rejected'])} points refused by the quality guards:")
        for r in report["rejected"][:20]:
            console.print(f"  {r['start'] or '-'}  {r['reason']}")
