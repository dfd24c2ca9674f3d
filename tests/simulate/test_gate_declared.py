"""`Settings.gate_declared`: the closed loop gates a model that declares its error (realistic) as the operator gates
a provider's forecast, on its measured skill (the bench's "closed gated" row)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import carbonshift.simulate.closed_loop as closed_loop
from carbonshift.data import load_bundled_trace, load_forecast_model
from carbonshift.simulate.engine import Settings, simulate
from carbonshift.simulate.jobs import scenario_ii


@pytest.mark.parametrize("gate_declared", [False, True])
def test_a_declared_model_is_skill_gated_only_when_asked(gate_declared: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    skills: list[float | None] = []
    original = closed_loop.reconcile

    def recording(snapshot: Any, settings: Any) -> Any:
        skills.append(snapshot.forecast_skill)
        return original(snapshot, settings)

    monkeypatch.setattr(closed_loop, "reconcile", recording)
    actual = load_bundled_trace("GB_2023")
    jobs = scenario_ii(year=actual.start.year)[200:260:20]
    settings = Settings(
        overhead=timedelta(seconds=60), margin=timedelta(minutes=10), loop="closed", gate_declared=gate_declared
    )
    simulate(actual, jobs, ["run-now", "optimal"], [load_forecast_model("realistic", seed=0)], settings=settings)
    assert skills
    measured = [s for s in skills if s is not None]
    if gate_declared:
        # Every pass carries the backtest of the model's own forecasts over the week before: a week of issues
        # exists for these jobs (late January), so each one has a skill.
        assert len(measured) == len(skills)
        assert all(-5.0 < s < 5.0 for s in measured)
    else:
        assert measured == []  # trusted on its declared error alone
