"""`carbonshift simulate` plans on realistic forecasts unless told otherwise, and says so."""

from __future__ import annotations

import json

import pytest

from carbonshift.cli import main


def test_default_forecast_is_realistic_and_labelled(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "--zone", "GB", "--limit", "20", "--policies", "run-now,optimal", "--output", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    label = "realistic (NESO GB 2023 fit, scaled to the zone's climatology)"
    assert report["forecast"] == label and report["forecast_is_oracle"] is False
    optimal = next(r for r in report["results"] if r["policy"] == "optimal")
    assert optimal["forecast"] == label and optimal["deadline_misses"] == 0


def test_help_names_the_default_and_the_papers_model(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "realistic (default" in text and "gaussian:E (the paper's model" in text


def test_bad_realistic_spec_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--zone", "GB", "--forecast", "realistic:much"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a scale factor" in err
