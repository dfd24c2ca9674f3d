"""A forecast's shown skill, one computation for the simulator and the operator (domain/forecast_skill.py): the
simulator's `SkillEstimate` backtests the model's own forecasts; the operator's `ForecastRecord.skill` backtests the
forecasts it was served at each 6-hour issue boundary; the handler gives the core that skill for a forecast that
declares no error (prior or measured trust), so a forecast that has shown no skill no longer buys a deferral."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
import pytest

from carbonshift.data import load_bundled_trace, load_forecast_model
from carbonshift.domain import forecast_skill
from carbonshift.domain.forecast_trust import PRIOR, ForecastRecord, ForecastTrust, TrustSource, shown_skill
from carbonshift.domain.forecasting import ForecastModel, PersistenceForecast
from carbonshift.domain.series import IntensitySeries
from carbonshift.handlers import carbonawarejob as handler
from carbonshift.simulate.closed_loop import SkillEstimate
from tests.unit.test_reconcile_fake import T0, ZONE
from tests.unit.test_reconcile_harm import Source, first_pass, operator

HOUR = timedelta(hours=1)
STRIDE = timedelta(hours=6)

# (length, window, interruptible) of decisions, and their slots on an hourly and a 15-minute trace (whole hours).
SHAPES = [
    (3 * HOUR, 12 * HOUR, False),
    (3 * HOUR, 12 * HOUR, True),
    (HOUR, 8 * HOUR, False),
    (6 * HOUR, 30 * HOUR, True),
    (timedelta(minutes=100), timedelta(hours=12, minutes=20), False),  # rounded: 2 h in 12 h (1 h 40 -> 2 h)
]


@pytest.fixture(scope="module")
def no() -> IntensitySeries:
    return load_bundled_trace("NO_2022")  # hourly


@pytest.fixture(scope="module")
def de() -> IntensitySeries:
    return load_bundled_trace("DE_2020")  # 15 minutes


def slots(span: timedelta, step: timedelta) -> int:
    """The documented rounding, written out: whole hours, at least one."""
    per_hour = max(int(HOUR / step), 1)
    return max(round(int(span / step) / per_hour), 1) * per_hour


def by_hand(
    model: ForecastModel, actual: IntensitySeries, moment: datetime, length: timedelta, window: timedelta, cut: bool
) -> tuple[float, float, int]:
    """(skill, spread, samples) from the documented formula in plain Python: the 84 issues (three weeks) every 6 h
    from the trace's start whose rounded window ended by `moment`; for each, the planner's choice on the forecast
    (cut: the cheapest slots, stable on ties; else the cheapest start of one block) and its gains on forecast and
    actuals; the slope counted 1.25 standard errors low."""
    step = actual.resolution
    n_len, n_win = slots(length, step), slots(window, step)
    if n_len >= n_win:
        return 1.0, 0.0, 0
    last = math.floor((moment - step * n_win - actual.start) / STRIDE)
    pairs: list[tuple[float, float]] = []
    for k in range(max(last - 83, 0), last + 1):
        at = actual.start + STRIDE * k
        first = actual.index_of(at)
        f = [float(x) for x in model.forecast(actual, at, step * n_win).values[:n_win]]
        a = [float(x) for x in actual.values[first : first + n_win]]
        if len(f) < n_win or len(a) < n_win or any(math.isnan(x) for x in f + a):
            continue
        if cut:
            chosen = sorted(range(n_win), key=lambda i: f[i])[:n_len]
            g = (sum(f[:n_len]) - sum(f[i] for i in chosen)) / n_len
            r = (sum(a[:n_len]) - sum(a[i] for i in chosen)) / n_len
        else:  # block sums as differences of running totals (on a tie, as near-equal float sums fall, the first)
            fc, ac = [0.0], [0.0]
            for x, y in zip(f, a, strict=True):
                fc.append(fc[-1] + x)
                ac.append(ac[-1] + y)
            sums = [fc[s + n_len] - fc[s] for s in range(n_win - n_len + 1)]
            best = sums.index(min(sums))
            g = (sums[0] - sums[best]) / n_len
            r = ((ac[n_len] - ac[0]) - (ac[best + n_len] - ac[best])) / n_len
        pairs.append((g, r))
    if len(pairs) < 4:
        return 0.0, math.inf, len(pairs)
    energy = sum(g * g for g, _ in pairs)
    slope = sum(r * g for g, r in pairs) / energy
    var = sum((r - slope * g) ** 2 for g, r in pairs) / (len(pairs) - 1)
    return slope - 1.25 * math.sqrt(var / energy), math.sqrt(var), len(pairs)


@pytest.mark.parametrize("spec", ["persistence", "realistic"])
@pytest.mark.parametrize("trace", ["no", "de"])
def test_the_shared_backtest_is_the_documented_formula_and_what_the_simulator_uses(
    request: pytest.FixtureRequest, spec: str, trace: str
) -> None:
    actual: IntensitySeries = request.getfixturevalue(trace)
    model = load_forecast_model(spec)
    estimate = SkillEstimate(model, actual)
    step = actual.resolution
    skills = []
    for days in (20, 95, 201):
        moment = actual.start + timedelta(days=days, hours=13, minutes=20)
        for length, window, cut in SHAPES:
            skill, spread, count = by_hand(model, actual, moment, length, window, cut)
            assert count >= 20  # three weeks' issues (fewer near the trace's start), scored
            assert estimate.at(moment, length, window, cut) == pytest.approx((skill, spread), rel=1e-9, abs=1e-9)
            # The pure function on the same issues (as the operator would pass its records), on whole forecasts.
            n_win = slots(window, step)
            last = math.floor((moment - step * n_win - actual.start) / STRIDE)
            issues = []
            for k in range(max(last - 83, 0), last + 1):
                at = actual.start + STRIDE * k
                first = actual.index_of(at)
                issues.append((model.forecast(actual, at, 3 * step * n_win).values, actual.values[first:]))
            got = forecast_skill.backtest(issues, length, window, step, cut)
            assert got == pytest.approx((skill, spread), rel=1e-9, abs=1e-9)
            skills.append(skill)
    assert len(set(skills)) == len(skills)  # (every case differs: none is a default)
    assert forecast_skill.backtest([], 5 * HOUR, 5 * HOUR, step, False) == (1.0, 0.0)  # nothing to choose
    assert estimate.at(actual.start + timedelta(days=40), 5 * HOUR, 5 * HOUR, False) == (1.0, 0.0)
    assert forecast_skill.backtest([], 3 * HOUR, 12 * HOUR, step, False) == (0.0, math.inf)  # no issues yet


def fed(
    actual: IntensitySeries,
    begin: datetime,
    end: datetime,
    issue: Callable[[datetime], IntensitySeries],
    *,
    later: bool = True,
) -> ForecastRecord:
    """A record fed as the handler feeds it, from `begin` to `end`: a pass 7 s after each 6-hour boundary (the
    first forecast it sees then, `issue(at)`) and, with `later`, another pass 3 h on (a newer forecast, not
    recorded as that issue), each with the history the handler reads (two days back)."""
    record = ForecastRecord()
    moment = begin
    while moment < end:
        for now in (moment + timedelta(seconds=7), moment + 3 * HOUR) if later else (moment + timedelta(seconds=7),):
            record.add_forecast(issue(now), now)
            record.add_actuals(actual.window(now - timedelta(days=2), now + HOUR), now)
        moment += STRIDE
    record.add_actuals(actual.window(end - timedelta(days=2), end + HOUR), end)
    return record


@pytest.mark.parametrize("trace", ["no", "de"])
def test_a_record_of_persistence_forecasts_shows_the_skill_the_simulator_measures(
    request: pytest.FixtureRequest, trace: str
) -> None:
    actual: IntensitySeries = request.getfixturevalue(trace)
    model = PersistenceForecast()
    moment = actual.start + timedelta(days=60, hours=13, minutes=20)
    begin = actual.start + timedelta(days=35)  # (a boundary: passes 7 s after each; three weeks and more before)
    record = fed(actual, begin, moment, lambda now: model.forecast(actual, now, 72 * HOUR))
    estimate = SkillEstimate(model, actual)
    for length, window, cut in SHAPES:
        expected, _ = estimate.at(moment, length, window, cut)
        assert math.isfinite(expected) and expected != 1.0
        assert record.skill(moment, length, window, cut) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # Bounded: at most 97 issues (three weeks, the 72 h horizon and a stride), of 72 h each.
    assert len(record._issued) <= 97
    assert all(v.shape[0] <= int(72 * HOUR / actual.resolution) for _, _, v in record._issued.values())


def test_under_four_scored_issues_there_is_no_skill_and_only_ended_windows_count(no: IntensitySeries) -> None:
    model = PersistenceForecast()
    begin = no.start + timedelta(days=30)  # 00:00 UTC
    # Four issues (00, 06, 12, 18 h); a 12 h window of the last ends at 06:00 the next day.
    record = fed(no, begin, begin + 4 * STRIDE, lambda now: model.forecast(no, now, 72 * HOUR), later=False)
    record.add_actuals(no.window(begin, begin + timedelta(days=2)), begin + timedelta(days=1, hours=12))
    ended = begin + timedelta(days=1, hours=6)
    assert record.skill(ended - timedelta(minutes=1), 3 * HOUR, 12 * HOUR, False) is None  # three ended
    four = record.skill(ended, 3 * HOUR, 12 * HOUR, False)
    issues = [
        (model.forecast(no, at, 12 * HOUR).values, no.values[no.index_of(at) :])
        for at in (begin + STRIDE * k for k in range(4))
    ]
    assert four == pytest.approx(forecast_skill.backtest(issues, 3 * HOUR, 12 * HOUR, HOUR, False)[0])
    assert four != SkillEstimate(model, no).at(ended, 3 * HOUR, 12 * HOUR, False)[0]  # (that one saw 84 issues)
    assert ForecastRecord().skill(ended, 3 * HOUR, 12 * HOUR, False) is None  # nothing recorded


@pytest.mark.parametrize("cut", [False, True])
def test_perfect_forecasts_show_full_skill_and_contrary_ones_none(no: IntensitySeries, cut: bool) -> None:
    moment = no.start + timedelta(days=100, hours=2)
    mean = float(np.nanmean(no.values))

    def perfect(now: datetime) -> IntensitySeries:
        return no.window(now, now + 72 * HOUR)

    def contrary(now: datetime) -> IntensitySeries:  # high where the actuals are low
        said = no.window(now, now + 72 * HOUR)
        return IntensitySeries(ZONE, said.start, said.resolution, 2 * mean - said.values)

    good = fed(no, moment - timedelta(days=9), moment, perfect).skill(moment, 3 * HOUR, 12 * HOUR, cut)
    bad = fed(no, moment - timedelta(days=9), moment, contrary).skill(moment, 3 * HOUR, 12 * HOUR, cut)
    assert good == pytest.approx(1.0)
    assert bad is not None and bad <= 0.0


def test_only_a_forecast_that_declares_no_error_is_skill_gated_least_zone_wins() -> None:
    now = T0
    worthless, perfect = no_skill_record(), ForecastRecord()
    trust = {src: ForecastTrust(src, PRIOR, 300.0) for src in TrustSource}
    shape = (now, 3 * HOUR, 12 * HOUR, True)
    skill = worthless.skill(*shape)
    assert skill is not None and skill <= 0.0
    for source in (TrustSource.PRIOR, TrustSource.MEASURED):
        assert shown_skill({ZONE: trust[source]}, {ZONE: worthless}, *shape) == skill
    for source in (TrustSource.ORACLE, TrustSource.DECLARED):  # as the simulator: no skill for these
        assert shown_skill({ZONE: trust[source]}, {ZONE: worthless}, *shape) is None
    assert shown_skill({ZONE: trust[TrustSource.PRIOR]}, {}, *shape) is None
    both = {ZONE: trust[TrustSource.PRIOR], "OTHER": trust[TrustSource.PRIOR]}
    assert shown_skill(both, {ZONE: worthless, "OTHER": perfect}, *shape) == skill  # (OTHER: none measured)


def no_skill_record() -> ForecastRecord:
    """Three days before T0 of hourly forecasts (issued every 6 h) that are high where the actuals, a daily sine
    around 300 g/kWh, are low: following them never paid. (Three days: too few for a measured error.)"""
    begin = T0 - timedelta(days=3)
    hours = 4 * 24
    actual = IntensitySeries(ZONE, begin, HOUR, 300.0 + 100.0 * np.sin(np.arange(hours) * 2 * np.pi / 24))
    said = IntensitySeries(ZONE, begin, HOUR, 600.0 - actual.values)
    return fed(actual, begin, T0, lambda now: said.window(now, now + 48 * HOUR), later=False)


@pytest.mark.parametrize("interruptible", [True, False])
async def test_a_zone_whose_forecasts_showed_no_skill_runs_an_optimal_job_at_once(
    monkeypatch: pytest.MonkeyPatch, interruptible: bool
) -> None:
    # The same large gain (a dip to 150 g/kWh from 300) that defers the job under the prior alone
    # (test_reconcile_harm.test_a_forecast_gain_well_beyond_the_error_still_defers): with a record whose forecasts
    # showed no skill for this shape, the core runs it at once and says why.
    state, kube = operator(monkeypatch, Source(dip=150.0), interruptible)
    state.forecast_records[ZONE] = no_skill_record()
    assert await first_pass(state, kube) == ["create", "resume"], kube.writes
    assert state.trust[ZONE][1].source is TrustSource.PRIOR  # (not the measured error: the skill did it)
    conditions = {c["type"]: c for c in kube.caj["status"]["conditions"]}
    # Its own reason, not the error gate's: the gain was well beyond the error, the forecast had no shown skill.
    assert conditions["Running"]["reason"] == "RunningForecastWithoutSkill", conditions["Running"]
    assert "did not deliver the gains they promised" in conditions["Planned"]["message"], conditions["Planned"]
    assert kube.caj["status"]["plan"]["windows"][0]["start"].startswith(T0.strftime("%Y-%m-%dT%H:%M"))


@pytest.mark.parametrize("oracle", [False, True])
async def test_shown_skill_lets_the_job_defer_and_the_oracle_is_never_skill_gated(
    monkeypatch: pytest.MonkeyPatch, oracle: bool
) -> None:
    state, kube = operator(monkeypatch, Source(dip=150.0, oracle=oracle), interruptible=True)
    begin = T0 - timedelta(days=3)
    hours = 4 * 24
    actual = IntensitySeries(ZONE, begin, HOUR, 300.0 + 100.0 * np.sin(np.arange(hours) * 2 * np.pi / 24))
    # Skilful forecasts (the actuals) keep the deferral; for the oracle even a record of no skill is not read.
    record = no_skill_record() if oracle else fed(actual, begin, T0, lambda now: actual.window(now, now + 48 * HOUR))
    state.forecast_records[ZONE] = record
    assert await first_pass(state, kube) == ["create"], kube.writes
    plan = kube.caj["status"]["plan"]
    assert plan["windows"][0]["start"].startswith((T0 + 4 * HOUR).strftime("%Y-%m-%dT%H:%M")), plan


async def test_the_handler_records_the_first_forecast_of_each_six_hours_on_every_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The provider's forecast keeps its start (one forecast slot, its trust cached): the record still takes the
    # forecast first seen after each boundary, from the slot it was seen in; later passes in those 6 h add none.
    source = Source(dip=150.0)
    state, kube = operator(monkeypatch, source, interruptible=True)
    await first_pass(state, kube)
    for seen in (HOUR, 6 * HOUR + timedelta(minutes=2), 7 * HOUR, 12 * HOUR + timedelta(seconds=30)):
        state.clock.at[0] = T0 + seen  # type: ignore[attr-defined]
        await handler.reconcile(state, copy.deepcopy(kube.caj))
    issued = state.forecast_records[ZONE]._issued
    assert sorted(issued) == [T0, T0 + STRIDE, T0 + 2 * STRIDE]
    assert [issued[b][0] for b in sorted(issued)] == [T0, T0 + STRIDE, T0 + 2 * STRIDE]
    assert issued[T0 + STRIDE][2][0] == source.series.at(T0 + STRIDE)
