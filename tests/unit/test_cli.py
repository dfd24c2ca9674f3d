"""The command line lists its commands, and a command not built yet says so and exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from carbonshift import cli


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "carbonshift.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("run", "simulate", "forecast", "crds", "receipt"):
        assert name in out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_missing_command_module_says_not_built(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(cli.COMMANDS, "teleport", "not a real command")
    assert cli.main(["teleport"]) == 2
    assert capsys.readouterr().err.strip() == "carbonshift teleport: not built yet in this release"


def test_run_refuses_a_reconcile_bound_below_one(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = cli.main(["run", "--kubeconfig", str(tmp_path / "none"), "--max-concurrent-reconciles", "0"])
    assert code == 2
    assert "--max-concurrent-reconciles must be at least 1, not 0" in capsys.readouterr().err


def test_tables_printed_off_a_terminal_are_not_cut_to_80_columns() -> None:
    """Printed into a CI log or a file, rich would cut every table to 80 columns (the demo's receipts read
    'eval…', 'Succee…'); the commands' console is wide enough off a terminal."""
    from rich.table import Table

    from carbonshift.commands.console import OFF_TERMINAL_WIDTH, report_console

    console = report_console()  # pytest captures stdout: not a terminal
    assert not console.is_terminal and console.width == OFF_TERMINAL_WIDTH
    table = Table(*(f"column {i}" for i in range(8)))
    table.add_row(*(f"eval-tokens-{i}" for i in range(8)))
    with console.capture() as captured:
        console.print(table)
    assert "eval-tokens-7" in captured.get() and "…" not in captured.get()


def test_run_keeps_recorded_forecasts_in_its_namespace_unless_told_not_to(tmp_path: Path) -> None:
    import argparse

    import yaml

    from carbonshift.commands import run

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))  # fmt: skip

    def state(*flags: str) -> run.OperatorState:
        parser = argparse.ArgumentParser()
        run.add_arguments(parser)
        return run.build_state(parser.parse_args(["--kubeconfig", str(kubeconfig), "--demo-traces", *flags]))

    kept = state("--operator-namespace", "platform-carbon").forecast_store
    assert kept is not None and kept.namespace == "platform-carbon"
    assert state("--no-keep-forecasts").forecast_store is None
