"""`carbonshift forecast`: output shapes, garbage rows reported, forecasts never the actuals, clear errors."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from carbonshift.cli import main
from carbonshift.data import bundled_trace_text, bundled_zones, load_bundled_trace

GARBAGE = ["not-a-time,100", "{t1},-1", "{t2},", "{t3},99999", "{t4},0", "{t5}"]


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    code = main(["forecast", *argv, "--output", "json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report: dict[str, Any] = json.loads(out.out)
    return report


def with_garbage(stem: str, tmp_path: Path) -> tuple[Path, list[str]]:
    """The bundled trace with garbage rows that overwrite a few real slots in its first week."""
    lines = bundled_trace_text(stem).strip().splitlines()
    series = load_bundled_trace(stem)
    stamps = [
        (series.start + timedelta(days=8) + k * series.resolution).strftime("%Y-%m-%dT%H:%M:%SZ") for k in range(1, 7)
    ]
    garbage = [g.format(t1=stamps[0], t2=stamps[1], t3=stamps[2], t4=stamps[3], t5=stamps[4]) for g in GARBAGE]
    # drop the real rows for those slots so the garbage is the only data for them
    kept = [line for line in lines if line.split(",")[0] not in stamps[:5]]
    path = tmp_path / f"{stem}.csv"
    path.write_text("\n".join([kept[0], *garbage, *kept[1:]]) + "\n")
    return path, stamps[:5]


@pytest.mark.parametrize("stem", bundled_zones())
def test_garbage_rows_in_every_bundled_trace_are_reported_and_never_used(
    stem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, stamps = with_garbage(stem, tmp_path)
    series = load_bundled_trace(stem)
    at = (series.start + timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = run_json(capsys, "--trace", str(path), "--at", at, "--horizon", "12h", "--forecast", "oracle")
    reasons = sorted(r["reason"].split(" (")[0] for r in report["rejected"])
    assert reasons == sorted(
        [
            "missing or unparseable timestamp",
            "value is the -1 no-data sentinel",
            "value is null",
            "value is implausibly high",
            "value is zero or negative",
            "malformed row",
        ]
    )
    by_start = {p["start"]: p for p in report["points"]}
    for stamp in stamps:
        if stamp in by_start:  # the slot exists in the window: it must be a gap, not the garbage
            assert by_start[stamp]["g_per_kwh"] is None
    values = [p["g_per_kwh"] for p in report["points"] if p["g_per_kwh"] is not None]
    assert all(0 < v <= 2000 for v in values)
    assert report["oracle"] is True
    assert report["unit"] == "gCO2e/kWh"


def test_points_after_at_are_the_model_forecast_not_the_actuals(capsys: pytest.CaptureFixture[str]) -> None:
    at = datetime(2020, 6, 1, 12, tzinfo=UTC)
    actual = load_bundled_trace("DE")
    for model in ("persistence", "gaussian:0.05"):
        report = run_json(
            capsys, "--zone", "DE", "--at", "2020-06-01T12:00:00Z", "--horizon", "6h", "--forecast", model
        )
        points = report["points"]
        assert points[0]["kind"] == "actual"
        assert points[0]["g_per_kwh"] == pytest.approx(actual.at(at), abs=1e-3)
        later = points[1:]
        assert len(later) == 23
        assert {p["kind"] for p in later} == {"forecast"}
        forecast = np.array([p["g_per_kwh"] for p in later])
        truth = actual.window(at + timedelta(minutes=15), at + timedelta(hours=6)).values
        assert not np.allclose(forecast, truth)
        assert report["oracle"] is False
    persistence = run_json(capsys, "--zone", "DE", "--at", "2020-06-01T12:00:00Z", "--horizon", "1h")
    yesterday = actual.window(at - timedelta(days=1), at - timedelta(days=1) + timedelta(hours=1)).values
    assert [p["g_per_kwh"] for p in persistence["points"][1:]] == pytest.approx(yesterday[1:].tolist(), abs=1e-3)


def test_default_at_is_trace_start_plus_seven_days(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "--zone", "GB_2023", "--horizon", "1h")
    assert report["issued_at"] == "2023-01-08T00:00:00Z"
    assert report["zone"] == "GB"
    assert report["provider"] == "trace:GB_2023"
    assert [p["start"] for p in report["points"]] == ["2023-01-08T00:00:00Z", "2023-01-08T00:30:00Z"]


def test_csv_and_table_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["forecast", "--zone", "NO", "--horizon", "2h", "--output", "csv"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "start,end,g_per_kwh,kind"
    assert len(lines) == 3
    assert lines[1].endswith(",actual")
    assert main(["forecast", "--zone", "DE", "--horizon", "1h", "--forecast", "oracle"]) == 0
    out = capsys.readouterr().out
    assert "oracle" in out
    assert "gCO2e/kWh" in out


def test_recorded_gb_forecast_file_model(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(
        capsys, "--zone", "GB", "--at", "2023-03-01T12:00:00Z", "--horizon", "1h", "--forecast", "file:GB_2023"
    )
    assert report["forecast_model"] == "recorded:GB_2023"
    assert [p["kind"] for p in report["points"]] == ["actual", "forecast"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--zone", "Atlantis"], "no bundled trace named 'Atlantis'"),
        (["--trace", "/nonexistent/x.csv"], "does not exist"),
        (["--zone", "DE", "--horizon", "soon"], "invalid duration"),
        (["--zone", "DE", "--at", "2020-06-01T12:00:00"], "has no timezone"),
        (["--zone", "DE", "--forecast", "crystal-ball"], "unknown forecast model"),
        (["--zone", "DE", "--at", "2031-01-01T00:00:00Z"], "the trace covers"),
        (["--provider", "electricitymaps", "--zone", "DE"], "ELECTRICITYMAPS_API_TOKEN"),
        (["--provider", "gb-carbon-intensity"], "--zone is required"),
        ([], "give --zone"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ELECTRICITYMAPS_API_TOKEN", raising=False)
    monkeypatch.delenv("ELECTRICITYMAPS_API_TOKEN_FILE", raising=False)
    assert main(["forecast", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


def test_malformed_trace_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("when,how_much\nyesterday,lots\n")
    assert main(["forecast", "--trace", str(path)]) == 2
    assert "'timestamp' column" in capsys.readouterr().err


def test_api_provider_against_a_local_server(capsys: pytest.CaptureFixture[str]) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    slots = [
        {
            "from": f"2025-03-04T{13 + i // 2:02d}:{30 * (i % 2):02d}Z",
            "to": "-",
            "intensity": {"forecast": 100 + i if i != 2 else None, "actual": None, "index": "low"},
        }
        for i in range(6)
    ]
    body = json.dumps({"data": slots}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/intensity/2025-03-04T13:00Z/fw24h" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        report = run_json(
            capsys,
            "--provider",
            "gb-carbon-intensity",
            "--zone",
            "GB",
            "--at",
            "2025-03-04T13:00:00Z",
            "--horizon",
            "2h",
            "--base-url",
            f"http://127.0.0.1:{httpd.server_address[1]}",
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert report["provider"] == "gb-carbon-intensity"
    assert [p["g_per_kwh"] for p in report["points"]] == [100.0, 101.0, None, 103.0]
    assert [r["reason"] for r in report["rejected"]] == ["value is null"]
    assert not any(math.isnan(v) for v in [p["g_per_kwh"] or 0.0 for p in report["points"]])
