"""Trace CSV parsing: resolution inference, gaps, refused rows, recorded forecasts and the bundled files."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from carbonshift.data import (
    UnknownTraceError,
    bundled_trace_text,
    bundled_zones,
    load_bundled_forecast_vs_actual,
    load_bundled_trace,
    parse_bundled_trace,
    resolve_trace_name,
)
from carbonshift.domain.quality import LBS_PER_MWH_TO_G_PER_KWH, Reason
from carbonshift.domain.series import Kind
from carbonshift.domain.traces import TraceError, parse_forecast_vs_actual_csv, parse_trace_csv


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_hourly_trace_with_a_gap_becomes_nan_slot() -> None:
    text = "\n".join(
        [
            "timestamp,gco2_per_kwh",
            "2022-01-01T00:00:00Z,100",
            "2022-01-01T01:00:00Z,110.5",
            "2022-01-01T03:00:00Z,130",
        ]
    )
    parsed = parse_trace_csv(text, "XX")
    series = parsed.series
    assert series.resolution == timedelta(hours=1)
    assert series.start == utc(2022, 1, 1)
    assert len(series) == 4
    assert series.values[:2].tolist() == [100.0, 110.5]
    assert math.isnan(series.values[2])
    assert series.values[3] == 130.0
    assert parsed.rejected == []
    assert series.kind == Kind.ACTUAL


def test_resolution_is_the_most_common_step_not_the_first() -> None:
    lines = ["timestamp,gco2_per_kwh", "2020-01-01T00:00:00Z,1"]
    # first step is 45 minutes (a gap), then many 15-minute steps
    moment = utc(2020, 1, 1, 0, 45)
    for i in range(10):
        lines.append(f"{(moment + timedelta(minutes=15 * i)).isoformat()},{i + 2}")
    series = parse_trace_csv("\n".join(lines), "DE").series
    assert series.resolution == timedelta(minutes=15)
    assert len(series) == 13
    assert np.isnan(series.values[1:3]).all()


def test_garbage_rows_are_refused_with_their_reason_and_line() -> None:
    text = "\n".join(
        [
            "timestamp,gco2_per_kwh",
            "2022-01-01T00:00:00Z,100",  # line 2 ok
            "2022-01-01T01:00:00Z,",  # 3 null
            "2022-01-01T02:00:00Z,-1",  # 4 sentinel
            "2022-01-01T03:00:00Z,0",  # 5 zero
            "2022-01-01T04:00:00Z,-20",  # 6 negative
            "2022-01-01T05:00:00Z,9999",  # 7 absurd
            "2022-01-01T06:00:00,150",  # 8 naive
            "not-a-date,150",  # 9 unparseable timestamp
            "2022-01-01T07:00:00Z,abc",  # 10 text
            "2022-01-01T08:00:00Z,nan",  # 11 NaN
            "2022-01-01T09:00:00Z",  # 12 too few fields
            "2022-01-01T10:00:00Z,200",  # 13 ok
            "2022-01-01T10:00:00Z,200",  # 14 exact duplicate
            "2022-01-01T09:00:00Z,180",  # 15 out of order: sorted into place, kept
            "2022-01-01T11:00:00Z,210",  # 16 ok
        ]
    )
    parsed = parse_trace_csv(text, "XX")
    by_line = {r.detail.split(",")[0]: r.reason for r in parsed.rejected}
    assert by_line == {
        "line 3": Reason.NULL_VALUE,
        "line 4": Reason.SENTINEL,
        "line 5": Reason.NON_POSITIVE,
        "line 6": Reason.NON_POSITIVE,
        "line 7": Reason.ABSURD,
        "line 8": Reason.NAIVE_TIMESTAMP,
        "line 9": Reason.MISSING_TIMESTAMP,
        "line 10": Reason.NOT_A_NUMBER,
        "line 11": Reason.NOT_A_NUMBER,
        "line 12": Reason.MALFORMED_ROW,
        "line 14": Reason.DUPLICATE,
    }
    series = parsed.series
    assert series.resolution == timedelta(hours=1)
    kept = {s: v for s, v in zip(series.starts(), series.values.tolist(), strict=True) if not math.isnan(v)}
    assert kept == {
        utc(2022, 1, 1, 0): 100.0,
        utc(2022, 1, 1, 9): 180.0,
        utc(2022, 1, 1, 10): 200.0,
        utc(2022, 1, 1, 11): 210.0,
    }


def test_conflicting_duplicates_are_both_refused() -> None:
    text = "timestamp,gco2_per_kwh\n2022-01-01T00:00:00Z,100\n2022-01-01T01:00:00Z,120\n"
    text += "2022-01-01T01:00:00Z,125\n2022-01-01T02:00:00Z,130\n2022-01-01T03:00:00Z,140\n"
    parsed = parse_trace_csv(text, "XX")
    assert [r.reason for r in parsed.rejected] == [Reason.CONFLICTING_DUPLICATE] * 2
    assert {r.value for r in parsed.rejected} == {120.0, 125.0}
    assert math.isnan(parsed.series.at(utc(2022, 1, 1, 1, 30)))
    assert parsed.series.at(utc(2022, 1, 1, 2)) == 130.0


def test_off_grid_point_is_refused_not_shifting_the_grid() -> None:
    text = "\n".join(
        [
            "timestamp,gco2_per_kwh",
            "2022-01-01T00:07:00Z,999",  # first row off the hourly grid
            "2022-01-01T01:00:00Z,100",
            "2022-01-01T02:00:00Z,110",
            "2022-01-01T03:00:00Z,120",
        ]
    )
    parsed = parse_trace_csv(text, "XX")
    assert parsed.series.start == utc(2022, 1, 1, 1)
    assert parsed.series.values.tolist() == [100.0, 110.0, 120.0]
    assert [r.reason for r in parsed.rejected] == [Reason.OFF_GRID]


def test_offset_timestamps_are_converted_to_utc() -> None:
    text = "timestamp,gco2_per_kwh\n2022-01-01T01:00:00+01:00,100\n2022-01-01T02:00:00+01:00,110\n"
    series = parse_trace_csv(text, "XX").series
    assert series.start == utc(2022, 1, 1, 0)


def test_lbs_per_mwh_column_is_converted_once() -> None:
    text = "timestamp,lbs_co2_per_mwh\n2022-01-01T00:00:00Z,1000\n2022-01-01T00:05:00Z,800\n"
    series = parse_trace_csv(text, "CAISO_NORTH").series
    assert series.resolution == timedelta(minutes=5)
    assert series.values.tolist() == pytest.approx([1000 * LBS_PER_MWH_TO_G_PER_KWH, 800 * LBS_PER_MWH_TO_G_PER_KWH])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty trace"),
        ("time,value\n2022-01-01T00:00:00Z,1\n", "'timestamp' column"),
        ("timestamp,furlongs\n2022-01-01T00:00:00Z,1\n", "no value column with a known unit"),
        ("timestamp,gco2_per_kwh\n2022-01-01T00:00:00Z,-1\n", "no usable data points"),
        ("timestamp,gco2_per_kwh\n2022-01-01T00:00:00Z,100\n", "single data point"),
    ],
)
def test_unusable_traces_raise_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        parse_trace_csv(text, "XX", source="bad.csv")


def test_forecast_vs_actual_gives_both_series_and_refuses_missing_actuals() -> None:
    text = "\n".join(
        [
            "timestamp,forecast_gco2_per_kwh,actual_gco2_per_kwh,index",
            "2023-01-01T00:00:00Z,73,72,low",
            "2023-01-01T00:30:00Z,63,,low",
            "2023-01-01T01:00:00Z,70,80,low",
        ]
    )
    parsed = parse_forecast_vs_actual_csv(text, "GB")
    assert parsed.forecast.kind == Kind.FORECAST
    assert parsed.actual.kind == Kind.ACTUAL
    assert parsed.forecast.values.tolist() == [73.0, 63.0, 70.0]
    assert parsed.actual.values[0] == 72.0
    assert math.isnan(parsed.actual.values[1])
    assert [(r.reason, r.detail) for r in parsed.rejected] == [(Reason.NULL_VALUE, "actual, line 3")]


def test_bundled_zone_names_resolve() -> None:
    zones = bundled_zones()
    assert "DE_2020" in zones
    assert not any(z.endswith("forecast_vs_actual") for z in zones)
    assert resolve_trace_name("DE") == "DE_2020"
    assert resolve_trace_name("de_2020.csv") == "DE_2020"
    assert resolve_trace_name("CISO") == "CISO_2022"
    assert resolve_trace_name("US-CAL-CISO") == "US-CAL-CISO_2022"
    with pytest.raises(UnknownTraceError, match="no bundled trace named 'Atlantis'"):
        resolve_trace_name("Atlantis")


@pytest.mark.parametrize("stem", bundled_zones())
def test_every_bundled_trace_parses_cleanly(stem: str) -> None:
    parsed = parse_bundled_trace(stem)
    series = parsed.series
    assert parsed.rejected == []
    assert series.zone == stem.rsplit("_", 1)[0]
    assert series.coverage() > 0.99
    # one value per data row of the file, each placed in its own slot
    data_rows = len(bundled_trace_text(stem).strip().splitlines()) - 1
    assert int(np.count_nonzero(~np.isnan(series.values))) == data_rows
    assert np.nanmin(series.values) > 0
    assert series.start.year == series.slot_start(len(series) - 1).year


def test_de_2020_matches_the_readme() -> None:
    series = load_bundled_trace("DE")
    assert series.resolution == timedelta(minutes=15)
    assert len(series) == 366 * 96
    assert [g[0] for g in series.gaps()] == [utc(2020, 12, 19, 23, 15), utc(2020, 12, 19, 23, 45)]
    assert series.mean() == pytest.approx(313.4, abs=0.05)
    with pytest.raises(ValueError, match="read-only"):
        series.values[0] = 1.0


def test_bundled_gb_forecast_file() -> None:
    parsed = load_bundled_forecast_vs_actual("GB")
    assert parsed.forecast.resolution == timedelta(minutes=30)
    actual = load_bundled_trace("GB_2023")
    # the actual column equals the plain GB trace, slot for slot
    np.testing.assert_array_equal(parsed.actual.values, actual.values)
    assert len(parsed.rejected) == 10
    error = parsed.forecast.values - parsed.actual.values
    assert float(np.nanmean(np.abs(error))) == pytest.approx(9.9, abs=0.05)


def test_bundled_files_are_byte_identical_to_the_corpus_checksums() -> None:
    import hashlib
    import re
    from importlib import resources

    folder = resources.files("carbonshift.data").joinpath("carbon-intensity")
    readme = folder.joinpath("README.md").read_text(encoding="utf-8")
    recorded = {name: digest for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+\.csv)$", readme, re.M)}
    bundled = [e.name for e in folder.iterdir() if e.name.endswith(".csv")]
    assert len(bundled) == 11
    for name in bundled:
        assert hashlib.sha256(folder.joinpath(name).read_bytes()).hexdigest() == recorded[name], name
    assert folder.joinpath("NOTICE.md").is_file()
