"""The commitment of a planned start against do no harm at later passes (carbonshift.domain.core).

Do no harm decides whether to leave running now for a deferral. Once a deferral is committed, a later pass whose
fresh forecast shows its best deferral gaining less than the forecast's error must not abandon the commitment for
running at that later moment unless running then beats the committed start by the threshold: before the fix it
did (the declined plan replaced the commitment unconditionally), and non-interruptible jobs started at a moment
nobody had chosen, neither at arrival nor at the planned start (docs/design/operator.md, "Do no harm").
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np

from carbonshift.domain.core import CoreStatus, JobNeeds, Outcome, Snapshot, reconcile
from carbonshift.domain.forecasting import OracleForecast
from carbonshift.domain.lifecycle import Observed
from carbonshift.domain.planning import Cluster
from carbonshift.domain.series import IntensitySeries

START = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
CLUSTER = Cluster("local", "Z")
ERROR = 10.0  # the forecast's expected error, g/kWh (do no harm defers for a gain above 1.5x this)
DIP = slice(6, 12)  # the hours where the forecast issued at arrival shows a clean window


def forecast_with_dip(dip: float, issued_at: datetime, level: float = 100.0) -> IntensitySeries:
    """The forecast issued at `issued_at`: `level` everywhere, `dip` during hours 6-12."""
    values = np.full(48, level)
    values[DIP] = dip
    actual = IntensitySeries(zone="Z", start=START, resolution=HOUR, values=values)
    return OracleForecast().forecast(actual, issued_at, 21 * HOUR)


def needs() -> JobNeeds:
    return JobNeeds("n", 4 * HOUR, START + 20 * HOUR, interruptible=False)


def drive(dips: list[tuple[datetime, float]]) -> list[tuple[datetime, Outcome]]:
    """One pass per (issue time, depth of the dip in the forecast issued then), the Job suspended until resumed;
    stops at the first pass that resumes it."""
    status = CoreStatus()
    passes = []
    for now, dip in dips:
        snapshot = Snapshot(
            needs(), status, Observed(exists=True, suspended=True), now, (CLUSTER,),
            {"Z": forecast_with_dip(dip, now)}, ERROR,
        )  # fmt: skip
        out = reconcile(snapshot)
        passes.append((now, out))
        status = out.status
        if out.resume:
            break
    return passes


def test_a_committed_start_is_kept_when_a_fresher_forecast_shows_a_gain_within_its_error() -> None:
    # At arrival the dip is deep (a gain of 50 g/kWh, far above 1.5 x 10): the start is committed at 06:00.
    # Each later issue shows it shallower, down to 88 against 100 (a gain of 12, within 1.5 x 10): do no harm would
    # not defer for that, but running now is no better than the committed start by the same measure, so the
    # commitment stands and the job starts at 06:00, where both the first plan and the latest forecast put it.
    issues = [(START, 50.0), (START + HOUR, 70.0), (START + 2 * HOUR, 80.0), (START + 3 * HOUR, 88.0)]
    issues += [(START + k * HOUR, 88.0) for k in (4, 5, 6)]
    passes = drive(issues)
    first = passes[0][1]
    assert first.plan is not None and first.plan.windows[0].start == START + 6 * HOUR and not first.resume
    resumed = [now for now, out in passes if out.resume]
    assert resumed == [START + 6 * HOUR]  # not at 01:00-03:00, when the fresher forecasts were issued
    for now, out in passes[1:-1]:
        assert out.plan is not None and out.plan.windows[0].start == START + 6 * HOUR, now


def test_a_committed_start_is_given_up_for_running_now_when_that_beats_it_by_the_error() -> None:
    # The dip is gone and the committed hours are now forecast dearer than running at once by 30 g/kWh (above
    # 1.5 x 10): running now replaces the commitment.
    passes = drive([(START, 50.0), (START + 2 * HOUR, 130.0)])
    assert [now for now, out in passes if out.resume] == [START + 2 * HOUR]


def test_do_no_harm_weighs_a_block_s_later_start_by_the_hours_it_moves() -> None:
    # A 20 h job that cannot be interrupted; the first 2 h are dirty (160 against 100), the hours after 22:00
    # dearer (120): the best plan starts at 02:00. Over the whole run that gains 6 g/kWh, within 1.5x the
    # forecast's error for a 20 h run (10): the gate used to run it at once. But the start moves only 2 h of
    # the run, and those gain 60 g/kWh, beyond 1.5x the error for 2 h runs (30): it waits.
    values = np.full(48, 100.0)
    values[:2] = 160.0
    values[22:] = 120.0
    actual = IntensitySeries(zone="Z", start=START, resolution=HOUR, values=values)
    forecast = OracleForecast().forecast(actual, START, 31 * HOUR)
    job = JobNeeds("m", 20 * HOUR, START + 30 * HOUR, interruptible=False)
    asked: list[timedelta] = []

    def error_for(length: timedelta) -> float:
        asked.append(length)
        return 30.0 if length <= 3 * HOUR else 10.0

    def first_start(error_by_length: bool, interruptible: bool = False, skill: float | None = None) -> datetime:
        snapshot = Snapshot(
            replace(job, interruptible=interruptible), CoreStatus(), Observed(exists=True), START, (CLUSTER,),
            {"Z": forecast}, forecast_error_g_per_kwh=10.0,
            forecast_error_for=error_for if error_by_length else None, forecast_skill=skill,
        )  # fmt: skip
        out = reconcile(snapshot)
        assert out.plan is not None
        return out.plan.windows[0].start

    assert first_start(error_by_length=True) == START + 2 * HOUR
    assert asked == [2 * HOUR]  # the error for runs as long as the moved hours
    assert first_start(error_by_length=False) == START  # the whole run's error alone: within it, run now
    # A forecast whose skill is measured (a provider's, persistence): the moved hours are weighed only once it has
    # shown more than `CoreSettings.trusted_skill` (0.5) of its promised gains come true; below, the whole run's.
    assert first_start(error_by_length=True, skill=0.8) == START + 2 * HOUR
    assert first_start(error_by_length=True, skill=0.4) == START
    # An interruptible job's plan is weighed the same way (session 14; the whole run's rule before): it waits too.
    assert first_start(error_by_length=True, interruptible=True) == START + 2 * HOUR
    assert first_start(error_by_length=False, interruptible=True) == START
    # With a moved gain within the moved hours' error, it runs now: the rule still gates.
    values_flat = values.copy()
    values_flat[:2] = 115.0  # moving 2 h gains 15 g/kWh moved: within 1.5 x 30
    flat = OracleForecast().forecast(
        IntensitySeries(zone="Z", start=START, resolution=HOUR, values=values_flat), START, 31 * HOUR
    )
    out = reconcile(
        Snapshot(job, CoreStatus(), Observed(exists=True), START, (CLUSTER,), {"Z": flat},
                 forecast_error_g_per_kwh=10.0, forecast_error_for=error_for)
    )  # fmt: skip
    assert out.plan is not None and out.plan.windows[0].start == START


def test_a_deferral_by_more_than_the_run_is_gated_on_the_whole_run_s_error() -> None:
    # A 2 h job whose clean window is 6 h away moves all of its run: the rule is the whole run's, unchanged.
    values = np.full(48, 100.0)
    values[6:8] = 88.0  # gains 12 g/kWh: within 1.5 x 10
    actual = IntensitySeries(zone="Z", start=START, resolution=HOUR, values=values)
    forecast = OracleForecast().forecast(actual, START, 21 * HOUR)
    job = JobNeeds("w", 2 * HOUR, START + 20 * HOUR, interruptible=False)
    out = reconcile(
        Snapshot(job, CoreStatus(), Observed(exists=True), START, (CLUSTER,), {"Z": forecast},
                 forecast_error_g_per_kwh=10.0, forecast_error_for=lambda length: 1.0)
    )  # fmt: skip
    assert out.plan is not None and out.plan.windows[0].start == START
