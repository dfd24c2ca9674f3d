"""No pretend data: with no provider `carbonshift run` refuses to start unless traces are asked for explicitly, and
a replayed trace names itself ("replayed trace of YEAR") wherever a plan, Event or receipt shows its numbers."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kubernetes import config as kube_config

from carbonshift.adapters.carbon.trace import TraceProvider, replay_note
from carbonshift.cli import main
from carbonshift.commands import run as run_command
from carbonshift.handlers.energy import receipt_message


def run_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    run_command.add_arguments(parser)
    return parser.parse_args(["--kubeconfig", "", *argv])


@pytest.fixture(autouse=True)
def no_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CARBONSHIFT_PROVIDERS", "CARBONSHIFT_DEMO_TRACES", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)


def test_run_with_no_provider_and_no_trace_refuses_to_start_and_says_what_to_set(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["run", "--kubeconfig", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("carbonshift run: no carbon-intensity provider configured")
    for hint in ("--providers", "gb-carbon-intensity, which needs no key", "--trace ZONE=PATH", "--demo-traces"):
        assert hint in err


@pytest.mark.parametrize(
    "argv",
    [["--demo-traces"], ["--trace", "DE=/data/de.csv"], ["--providers", "gb-carbon-intensity"]],
    ids=["demo-traces", "trace", "keyless-provider"],
)
def test_explicit_traces_or_a_provider_pass_the_check(argv: list[str]) -> None:
    """Past the carbon-data check, build_state reaches the in-cluster config, which this test does not have."""
    with pytest.raises(kube_config.ConfigException):
        run_command.build_state(run_args(*argv))


def test_demo_traces_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARBONSHIFT_DEMO_TRACES", "true")
    assert run_args().demo_traces is True
    monkeypatch.setenv("CARBONSHIFT_DEMO_TRACES", "false")
    assert run_args().demo_traces is False


async def test_a_replayed_trace_names_itself_and_its_year() -> None:
    trace = TraceProvider.bundled("GB", replay=True)
    assert trace.name == "trace:GB_2023 (replayed trace of 2023)"
    assert replay_note(trace.name) == "replayed trace of 2023"
    assert TraceProvider.bundled("GB").name == "trace:GB_2023"
    assert replay_note("trace:GB_2023") is None
    assert replay_note("electricitymaps") is None
    now = datetime(2026, 12, 4, 22, tzinfo=UTC)
    forecast = await trace.forecast("GB", now, timedelta(hours=6))
    assert forecast.series.labels["replayed_from"].startswith("2023-01-01")


def test_the_receipt_of_a_job_planned_on_a_replayed_trace_says_so() -> None:
    status = {
        "phase": "Succeeded",
        "energyKWh": 1.5,
        "emissionsGrams": 300.0,
        "baselineEmissionsGrams": 500.0,
        "avoidedEmissionsGrams": 200.0,
        "plan": {"zone": "DE", "provider": "trace:DE_2023 (replayed trace of 2023)"},
    }
    text = receipt_message("ml", "train", status, 1.2)
    assert text.startswith("[planned on a replayed trace of 2023, not today's grid] 1.5000 kWh")
    live = receipt_message("ml", "train", {**status, "plan": {"zone": "DE", "provider": "electricitymaps"}}, 1.2)
    assert live.startswith("1.5000 kWh") and "replayed" not in live
