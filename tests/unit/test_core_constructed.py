"""The decision core builds a few dataclasses field by field instead of with dataclasses.replace (they run on every
pass; replace was 3 % of the closed loop). A field added to CoreStatus or Plan later must not be dropped by them:
each is checked here against dataclasses.replace with every field set to a value other than its default."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from carbonshift.domain.core import Commitment, CoreStatus, Progress, _committed_plan, _with_progress
from carbonshift.domain.lifecycle import Phase
from carbonshift.domain.planning import Plan, Reason, RunWindow
from carbonshift.domain.planning.model import Flag

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


def _status() -> CoreStatus:
    return CoreStatus(
        progress=Progress(work_seconds=5.0),
        commitment=None,
        suspend_at=NOW + timedelta(hours=1),
        announced_at=NOW,
        phase=Phase.RUNNING,
        first_baseline_grams=12.0,
        first_planned_grams=7.0,
    )


def test_with_progress_keeps_every_other_field_of_the_status() -> None:
    status = _status()
    assert {f.name for f in dataclasses.fields(CoreStatus)} == {
        "progress", "commitment", "suspend_at", "announced_at", "phase", "first_baseline_grams", "first_planned_grams"
    }, "a new CoreStatus field: set it in _status() above and in core._with_progress and _act's settled()"  # fmt: skip
    progress = Progress(work_seconds=99.0)
    commitment = Commitment((RunWindow(NOW, NOW + timedelta(hours=1), 100.0),), "c", "Z", NOW, (), 60.0, {})
    built = _with_progress(status, progress, commitment)
    assert built == dataclasses.replace(status, progress=progress, commitment=commitment)


def test_committed_plan_keeps_every_field_of_the_template() -> None:
    template = Plan(
        job="j", cluster="a", zone="Y", windows=(), planned_grams=1.0, baseline_grams=2.0,
        latest_safe_start=NOW + timedelta(hours=3), reason=Reason.THRESHOLD, feasible=False,
        flags=frozenset(Flag), energy_kwh=3.0, cycles=4,
    )  # fmt: skip
    assert {f.name for f in dataclasses.fields(Plan)} == {
        "job", "cluster", "zone", "windows", "planned_grams", "baseline_grams", "latest_safe_start", "reason",
        "feasible", "flags", "energy_kwh", "cycles",
    }, "a new Plan field: set it in the template above and in core._committed_plan"  # fmt: skip
    window = RunWindow(NOW - timedelta(minutes=5), NOW + timedelta(hours=1), 100.0)
    commitment = Commitment((window,), "c", "Z", NOW, (), 60.0, {})
    built = _committed_plan(commitment, template, NOW)
    expected = dataclasses.replace(template, windows=(RunWindow(NOW, window.end, 100.0),), cluster="c", zone="Z")
    assert built == expected
