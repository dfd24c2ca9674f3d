"""Do no harm in the operator's reconcile pass (handlers/carbonawarejob.py, the fast in-memory tier): the handler
gives the core the forecast's expected error (domain/forecast_trust.py), so a forecast gain within that error no
longer buys a deferral, a large one still does, and the oracle's forecast is trusted as before."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from typing import Any, cast

import kopf
import numpy as np
import pytest

from carbonshift.adapters.carbon.trace import TraceProvider
from carbonshift.adapters.intensity import ZoneForecast, ZoneForecasts
from carbonshift.adapters.kube import Kube
from carbonshift.adapters.workloads.client import WorkloadClient
from carbonshift.domain import forecast_trust
from carbonshift.domain.forecast_error import GB_2023
from carbonshift.domain.forecast_trust import ForecastRecord, TrustSource
from carbonshift.domain.forecasting import parse_forecast_model
from carbonshift.domain.series import IntensitySeries
from carbonshift.handlers import carbonawarejob as handler
from carbonshift.handlers.state import LOCAL, OperatorState, Settings
from tests.unit.test_reconcile_fake import T0, ZONE, FakeKube, FakeWorkloads, StepClock, caj_body

HOUR = timedelta(hours=1)


class Source:
    """A provider's forecast (or, with `oracle`, a trace replayed with the oracle model) and the zone's history:
    300 g/kWh, with a dip to `dip` from 04:00 to 07:00; counts the history reads."""

    def __init__(self, dip: float, oracle: bool = False) -> None:
        values = [300.0] * 4 + [dip] * 3 + [300.0] * 41
        labels = {"forecast_model": "oracle (perfect information)", "oracle": "true"} if oracle else {}
        self.series = IntensitySeries(ZONE, T0, HOUR, np.array(values), labels=labels)
        self.histories = 0

    async def forecast(self, zone: str, now: datetime, horizon: Any) -> ZoneForecast:
        return ZoneForecast(zone, self.series, "provider:test", False, "")

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> IntensitySeries:
        self.histories += 1
        return self.series.window(begin, now + HOUR)

    async def latest(self, zone: str, now: datetime, provider: str) -> tuple[datetime, float] | None:
        i = self.series.index_of(now)
        return (self.series.slot_start(i), float(self.series.values[i])) if 0 <= i < len(self.series) else None


def operator(monkeypatch: pytest.MonkeyPatch, source: Source, interruptible: bool) -> tuple[OperatorState, FakeKube]:
    monkeypatch.setattr(kopf, "event", lambda *_, **__: None)
    clock = StepClock()
    body = caj_body()
    body["spec"]["interruptible"] = interruptible
    if not interruptible:
        del body["spec"]["checkpoint"]
    kube = FakeKube(clock, body)
    settings = Settings(zone=ZONE, pue=1.0, tick=timedelta(minutes=5), margin=timedelta(minutes=10))
    state = OperatorState(settings, clock, cast(Kube, kube), cast(Any, source))
    state._workloads[LOCAL] = cast(WorkloadClient, FakeWorkloads(kube))
    return state, kube


async def first_pass(state: OperatorState, kube: FakeKube) -> list[str]:
    """The writes of the job's first pass (at T0 + 7 s): create (suspended), then resume if it runs now."""
    state.clock.at[0] = T0 + timedelta(seconds=7)  # type: ignore[attr-defined]
    await handler.reconcile(state, copy.deepcopy(kube.caj))
    return [kind for _, kind, _ in kube.writes if kind in ("create", "resume", "suspend")]


@pytest.mark.parametrize("interruptible", [True, False])
async def test_a_forecast_gain_within_the_priors_error_runs_the_job_at_once(
    monkeypatch: pytest.MonkeyPatch, interruptible: bool
) -> None:
    # A 3 h job and a dip of 15 g/kWh (5 % of 300) over exactly 3 h: a gain of 15 g/kWh, below 1.5 x the NESO
    # fit's error for a 3 h run at 300 g/kWh (about 27 g/kWh). With no error (before) the core deferred to 04:00.
    source = Source(dip=285.0)
    state, kube = operator(monkeypatch, source, interruptible)
    assert await first_pass(state, kube) == ["create", "resume"], kube.writes
    # The user reads why an Optimal job runs now: not "RunningImmediatePolicy" (it asked for Optimal).
    conditions = {c["type"]: c for c in kube.caj["status"]["conditions"]}
    assert conditions["Running"]["status"] == "True"
    assert conditions["Running"]["reason"] == "RunningForecastWithinError", conditions["Running"]
    assert "within the forecast's expected error" in conditions["Planned"]["message"], conditions["Planned"]
    trust = state.trust[ZONE][1]
    assert trust.source is TrustSource.PRIOR and trust.mean_g_per_kwh == pytest.approx(300.0)
    assert 1.5 * trust.run_error(3 * HOUR) > 15.0


@pytest.mark.parametrize("interruptible", [True, False])
async def test_a_forecast_gain_well_beyond_the_error_still_defers(
    monkeypatch: pytest.MonkeyPatch, interruptible: bool
) -> None:
    state, kube = operator(monkeypatch, Source(dip=150.0), interruptible)
    assert await first_pass(state, kube) == ["create"], kube.writes
    plan = kube.caj["status"]["plan"]
    assert plan["windows"][0]["start"].startswith((T0 + 4 * HOUR).strftime("%Y-%m-%dT%H:%M")), plan


async def test_the_oracle_is_trusted_the_same_small_gain_defers(monkeypatch: pytest.MonkeyPatch) -> None:
    source = Source(dip=285.0, oracle=True)
    state, kube = operator(monkeypatch, source, interruptible=True)
    assert await first_pass(state, kube) == ["create"], kube.writes
    assert state.trust[ZONE][1].source is TrustSource.ORACLE


async def test_the_trust_is_computed_once_per_zone_and_forecast_slot_not_per_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = Source(dip=285.0)
    state, kube = operator(monkeypatch, source, interruptible=True)
    made: list[TrustSource] = []
    real = forecast_trust.trust_for

    def counted(*args: Any, **kwargs: Any) -> Any:
        trust = real(*args, **kwargs)
        made.append(trust.source)
        return trust

    monkeypatch.setattr(handler, "trust_for", counted)
    await first_pass(state, kube)
    for name in ("second", "third"):  # other jobs in the same forecast slot reuse it
        body = caj_body()
        body["metadata"]["name"] = body["metadata"]["uid"] = name
        await handler.reconcile(state, body)
    assert made == [TrustSource.PRIOR]
    # The next forecast slot (an hour later: the provider's forecast starts there) makes a new one.
    source.series = source.series.window(T0 + HOUR, T0 + 48 * HOUR)
    state.clock.at[0] = T0 + HOUR + timedelta(seconds=7)  # type: ignore[attr-defined]
    await handler.reconcile(state, copy.deepcopy(kube.caj))
    assert made == [TrustSource.PRIOR, TrustSource.PRIOR]


def recorded_week(error: float) -> ForecastRecord:
    """A week (and a day) of day-ahead forecasts of a zone around 300 g/kWh with a daily shape (so that choosing by
    them pays off: they show skill), off by +-`error` hour by hour."""
    record = ForecastRecord()
    begin = T0 - timedelta(days=8)
    hours = 8 * 24
    actual = IntensitySeries(ZONE, begin, HOUR, 300.0 + 100.0 * np.sin(np.arange(hours) * 2 * np.pi / 24))
    off = error * np.where(np.arange(hours) % 2 == 0, 1.0, -1.0)
    said = IntensitySeries(ZONE, begin, HOUR, actual.values + off)
    for day in range(8):
        record.add_forecast(said, begin + timedelta(days=day, minutes=5))
    record.add_actuals(actual, T0)
    return record


@pytest.mark.parametrize(("error", "runs_now"), [(0.0, False), (60.0, True)])
async def test_a_week_of_recorded_forecasts_sets_the_gate_by_their_measured_error(
    monkeypatch: pytest.MonkeyPatch, error: float, runs_now: bool
) -> None:
    # The same 15 g/kWh gain the prior declines: a zone whose forecasts were right all week defers for it; one whose
    # forecasts were 60 g/kWh off hour by hour (20 g/kWh over 3 h runs, 30 with the factor 1.5) runs at once.
    state, kube = operator(monkeypatch, Source(dip=285.0), interruptible=True)
    state.forecast_records[ZONE] = recorded_week(error)
    writes = await first_pass(state, kube)
    assert writes == (["create", "resume"] if runs_now else ["create"]), kube.writes
    trust = state.trust[ZONE][1]
    assert trust.source is TrustSource.MEASURED
    assert trust.run_error(3 * HOUR) == pytest.approx(error / 3)


@pytest.mark.parametrize("spec", ["realistic:2", "oracle", "persistence"])
async def test_a_replayed_trace_is_trusted_as_its_forecast_model_declares(
    monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    """Through the real provider chain (ZoneForecasts over a TraceProvider): a realistic replay gets its model's
    declared error (relative to the trace's mean), the oracle none, persistence the prior."""
    model = parse_forecast_model(spec)
    values = 300.0 + 100.0 * np.sin(np.arange(24 * 10) * 2 * np.pi / 24)
    trace = TraceProvider(IntensitySeries(ZONE, T0 - timedelta(days=5), HOUR, values), forecast_model=model)
    state, kube = operator(monkeypatch, Source(dip=285.0), interruptible=True)
    state.forecasts = ZoneForecasts([], lambda zone: trace)
    await first_pass(state, kube)
    trust = state.trust[ZONE][1]
    expected = {"realistic:2": TrustSource.DECLARED, "oracle": TrustSource.ORACLE}.get(spec, TrustSource.PRIOR)
    assert trust.source is expected
    if expected is TrustSource.DECLARED:
        assert trust.params == GB_2023.scaled(2.0) and trust.mean_g_per_kwh == pytest.approx(float(values.mean()))
    if expected is TrustSource.PRIOR:  # the measured mean of the history read (whole days of the sine: 300)
        assert trust.mean_g_per_kwh == pytest.approx(300.0, rel=0.01)
