"""`carbonshift simulate` end to end: every bundled trace, every forecast model, outputs and errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from carbonshift.cli import main
from carbonshift.data import bundled_zones
from carbonshift.simulate.engine import POLICIES


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    code = main(["simulate", *args, "--output", "json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("trace", bundled_zones())
def test_every_policy_meets_every_deadline_on_every_bundled_trace(
    capsys: pytest.CaptureFixture[str], trace: str
) -> None:
    models = ["oracle", "gaussian:0.1", "persistence"] + (["file:GB_2023"] if trace.startswith("GB") else [])
    for model in models:
        extra = ["--overhead-seconds", "16", "--min-run-minutes", "60", "--margin-minutes", "15"]
        report = run_json(capsys, "--zone", trace, "--scenario", "II", "--limit", "30", "--forecast", model, *extra)
        assert report["jobs"] == 30
        results = report["results"]
        assert isinstance(results, list)
        assert [r["policy"] for r in results] == list(POLICIES)
        for result in results:
            assert result["deadline_misses"] == 0, (trace, model, result)
            assert result["emissions_kg"] > 0


def test_json_labels_the_oracle_everywhere_it_is_used(capsys: pytest.CaptureFixture[str]) -> None:
    noisy = run_json(capsys, "--zone", "DE", "--limit", "40", "--forecast", "gaussian:0.05")
    assert {"trace", "zone", "scenario", "forecast", "jobs", "results"} <= set(noisy)
    assert noisy["forecast"] == "gaussian:0.05 (paper's model)" and noisy["forecast_is_oracle"] is False
    by_policy = {r["policy"]: r for r in noisy["results"]}  # type: ignore[attr-defined]
    assert [p for p, r in by_policy.items() if r["oracle"]] == ["oracle"]
    assert by_policy["oracle"]["forecast"] == "oracle (perfect information)"
    assert by_policy["optimal"]["forecast"] == "gaussian:0.05 (paper's model)"
    for r in by_policy.values():
        assert {"policy", "emissions_kg", "saved_pct_vs_run_now", "deadline_misses", "mean_delay_h"} <= set(r)
    assert by_policy["run-now"]["saved_pct_vs_run_now"] == 0.0
    perfect = run_json(capsys, "--zone", "DE", "--limit", "40", "--forecast", "oracle")
    assert perfect["forecast"] == "oracle (perfect information)" and perfect["forecast_is_oracle"] is True
    assert all(r["oracle"] for r in perfect["results"] if r["policy"] != "run-now")  # type: ignore[attr-defined]


def test_forecast_error_does_not_help(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--zone", "DE", "--limit", "200", "--policies", "run-now,optimal"]
    perfect = run_json(capsys, *args, "--forecast", "oracle")["results"]
    noisy = run_json(capsys, *args, "--forecast", "gaussian:0.2", "--seeds", "3")["results"]
    assert noisy[1]["emissions_kg"] > perfect[1]["emissions_kg"]  # type: ignore[index]
    assert noisy[0]["emissions_kg"] == perfect[0]["emissions_kg"]  # type: ignore[index]


def test_table_csv_and_plots(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["simulate", "--zone", "GB", "--limit", "30", "--out-dir", str(tmp_path)])
    out, _ = capsys.readouterr()
    assert code == 0
    assert "saved vs run-now" in out and "GB_2023" in out
    pngs = sorted(tmp_path.glob("*.png"))
    assert len(pngs) == 3
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(png) in out.replace("\n", "")
    assert json.loads((tmp_path / "GB_2023-II-results.json").read_text())["zone"] == "GB"
    assert main(["simulate", "--zone", "GB", "--limit", "30", "--output", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["policy"] for r in rows] == list(POLICIES)


def test_trace_and_jobs_from_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    trace = tmp_path / "XX_2024.csv"
    lines = ["timestamp,gco2_per_kwh"] + [
        f"2024-01-{1 + h // 24:02d}T{h % 24:02d}:00:00Z,{300 + (150 if 8 <= h % 24 < 20 else -150)}"
        for h in range(24 * 6)
    ]
    trace.write_text("\n".join(lines) + "\n")
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(
        "arrival,duration_hours,deadline,interruptible\n"
        "2024-01-01T09:00Z,3,2024-01-02T09:00Z,false\n"
        "2024-01-02T09:00Z,4,2024-01-03T12:00Z,true\n"
    )
    report = run_json(capsys, "--trace", str(trace), "--jobs-csv", str(jobs), "--forecast", "oracle")
    assert report["zone"] == "XX" and report["jobs"] == 2
    by_policy = {r["policy"]: r for r in report["results"]}  # type: ignore[attr-defined]
    # Nights are 150 g/kWh, days 450: a job that can wait for the night saves two thirds.
    assert by_policy["optimal"]["saved_pct_vs_run_now"] == pytest.approx(100 * 2 / 3, abs=0.01)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--zone", "Atlantis"], "no bundled trace named 'Atlantis'"),
        (["--forecast", "crystal-ball"], "unknown forecast model"),
        (["--scenario", "III"], "unknown scenario"),
        (["--trace", "/nonexistent/trace.csv"], "does not exist"),
        (["--policies", "run-now,yolo"], "unknown policy yolo"),
        (["--overhead-seconds", "-3"], "must not be negative"),
        (["--deadline", "someday"], "unknown deadline rule"),
        (["--forecast", "file:GB_2023"], "not DE"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--recheck-minutes", "-5"], "--recheck-minutes must not be negative"),
    ],
)
def test_bad_input_gives_one_clear_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["simulate", "--limit", "5", *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("carbonshift simulate: ")
    assert message in err


def test_closed_loop_is_the_default_and_says_so_with_its_optimum_and_receipts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--zone", "DE", "--limit", "40", "--forecast", "gaussian:0.05", "--overhead-seconds", "60"]
    closed = run_json(capsys, *args, "--policies", "run-now,optimal,optimal-interruptible,lowest-window")
    assert closed["loop"] == "closed"
    by_policy = {r["policy"]: r for r in closed["results"]}  # type: ignore[attr-defined]
    assert by_policy["optimal"]["loop"] == "closed" and by_policy["optimal-interruptible"]["loop"] == "closed"
    assert by_policy["lowest-window"]["loop"] == "open"  # a naive rule, planned once in both modes
    for policy in ("optimal", "optimal-interruptible"):
        r = by_policy[policy]
        assert r["deadline_misses"] == 0
        # Forecast errors: never above the perfect-information optimum of the same kind.
        assert r["saved_pct_vs_run_now"] <= r["optimum_saved_pct"] + 1e-9
        assert r["claimed_avoided_kg"] is not None and r["true_avoided_kg"] is not None
    interruptible = by_policy["optimal-interruptible"]
    assert interruptible["optimum_saved_pct"] >= by_policy["optimal"]["optimum_saved_pct"]
    assert by_policy["lowest-window"]["claimed_avoided_kg"] is None
    opened = run_json(capsys, *args, "--policies", "run-now,optimal", "--loop", "open")
    assert opened["loop"] == "open" and opened["results"][1]["loop"] == "open"  # type: ignore[index]
    paper = run_json(capsys, "--zone", "DE", "--limit", "20", "--paper", "--policies", "run-now,optimal")
    assert paper["loop"] == "open"
    assert main(["simulate", "--zone", "DE", "--paper", "--loop", "closed"]) == 2
    assert "--paper" in capsys.readouterr().err
    split = run_json(
        capsys, *args, "--policies", "run-now,optimal,optimal-interruptible,lowest-window", "--workers", "2"
    )
    assert split["results"] == closed["results"]  # the same figures from two processes
    # Weighing the commitment against every newer forecast (--recheck-minutes 0, the cadence before 1 h) still works.
    eager = run_json(capsys, *args, "--policies", "run-now,optimal-interruptible", "--recheck-minutes", "0")
    assert eager["results"][1]["deadline_misses"] == 0  # type: ignore[index]
    assert closed["settings"]["gate_as_provider"] is False  # type: ignore[index]


def test_gate_as_provider_gates_a_declared_forecast_on_its_skill(capsys: pytest.CaptureFixture[str]) -> None:
    """--gate-as-provider: the realistic forecast gated on its measured skill, as the operator gates a provider's
    forecast; said in the output, and it decides differently (here it runs more jobs at once: less saved)."""
    args = ["--zone", "BPAT_2022", "--limit", "160", "--overhead-seconds", "60", "--policies", "run-now,optimal"]
    trusted = run_json(capsys, *args)
    gated = run_json(capsys, *args, "--gate-as-provider")
    assert gated["settings"]["gate_as_provider"] is True  # type: ignore[index]
    saved = [r["results"][1]["saved_pct_vs_run_now"] for r in (trusted, gated)]  # type: ignore[index]
    assert saved[1] < saved[0]


def test_closed_loop_with_perfect_forecasts_gets_the_optimum(capsys: pytest.CaptureFixture[str]) -> None:
    """With the oracle, every re-plan agrees with the first: the closed loop must reach (nearly) the same-kind
    optimum, whatever the pod start delay and grace period cost it."""
    args = ["--zone", "GB", "--limit", "40", "--forecast", "oracle", "--overhead-seconds", "60"]
    report = run_json(capsys, *args, "--policies", "run-now,optimal,optimal-interruptible")
    for r in report["results"][1:]:  # type: ignore[index]
        assert r["deadline_misses"] == 0
        assert r["saved_pct_vs_run_now"] >= 0.97 * r["optimum_saved_pct"], r
        assert r["suspend_resume_cycles"] <= 1.2 * r["optimum_suspend_resume_cycles"] + 2, r
