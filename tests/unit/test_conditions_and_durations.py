"""Conditions move lastTransitionTime only on a status flip; durations parse as the API server reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from carbonshift.api.conditions import get_condition, is_true, set_condition
from carbonshift.api.durations import format_duration, parse_duration

T0 = datetime(2030, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_new_condition_is_added_and_reported_as_change() -> None:
    conds, changed = set_condition([], "Planned", True, "PlanComputed", "run at 03:00Z", T0, 1)
    assert changed
    assert is_true(conds, "Planned")
    assert conds[0].last_transition_time == T0 and conds[0].observed_generation == 1


def test_same_condition_again_is_no_change() -> None:
    conds, _ = set_condition([], "Planned", True, "PlanComputed", "m", T0, 1)
    again, changed = set_condition(conds, "Planned", True, "PlanComputed", "m", T1, 1)
    assert not changed
    assert again == conds


def test_new_message_keeps_transition_time_but_is_a_change() -> None:
    conds, _ = set_condition([], "Planned", True, "PlanComputed", "old", T0, 1)
    updated, changed = set_condition(conds, "Planned", True, "PlanComputed", "new", T1, 2)
    assert changed
    cond = get_condition(updated, "Planned")
    assert cond is not None and cond.message == "new" and cond.last_transition_time == T0
    assert cond.observed_generation == 2


def test_status_flip_moves_transition_time_and_keeps_other_conditions() -> None:
    conds, _ = set_condition([], "Running", False, "DeferredToLowCarbonWindow", "", T0, 1)
    conds, _ = set_condition(conds, "Planned", True, "PlanComputed", "", T0, 1)
    flipped, changed = set_condition(conds, "Running", True, "RunningInPlannedWindow", "", T1, 1)
    assert changed
    running = get_condition(flipped, "Running")
    assert running is not None and running.last_transition_time == T1
    assert [c.type for c in flipped] == ["Running", "Planned"]
    assert not is_true(flipped, "Missing")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("4h", 14400), ("1h30m", 5400), ("2.5h", 9000), ("250ms", 0.25), ("0s", 0)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["4 hours", "2d", "-1h", "", "h", "1.h"])
def test_bad_durations_are_refused_with_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_round_trips() -> None:
    for text in ["1h30m", "45s", "2h", "1h0m5s"]:
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
    assert format_duration(timedelta(0)) == "0s"
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"
