"""WattTime v3 against a local server: login and token refresh, units from meta, marginal signal."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta

import pytest
from scripted_server import FAST_POLICY, Reply, ScriptedServer, SleepRecorder

from carbonshift.adapters.carbon import ProviderAuthError, ProviderDataError
from carbonshift.adapters.carbon.secrets import Secret
from carbonshift.adapters.carbon.watttime import WattTimeProvider
from carbonshift.domain.quality import LBS_PER_MWH_TO_G_PER_KWH
from carbonshift.domain.series import Kind, Signal

USER, PASSWORD, JWT = "grid-user", "pw-8c1e-secret", "eyJhbGciOiJIUzI1NiJ9.token-one.sig"
NOW = datetime(2025, 3, 4, 14, 2, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds


def wt(server: ScriptedServer, sleeps: SleepRecorder, clock: FakeClock | None = None) -> WattTimeProvider:
    return WattTimeProvider(
        Secret(USER, "WATTTIME_USERNAME"),
        Secret(PASSWORD, "WATTTIME_PASSWORD"),
        base_url=server.url,
        policy=FAST_POLICY,
        sleep=sleeps,
        clock=clock or FakeClock(),
    )


def forecast_payload(
    units: str | None = "lbs_co2_per_mwh", generated_at: str = "2025-03-04T13:55:00+00:00"
) -> dict[str, object]:
    meta: dict[str, object] = {
        "data_point_period_seconds": 300,
        "region": "CAISO_NORTH",
        "signal_type": "co2_moer",
        "model": {"date": "2024-10-01"},
        "generated_at_period_seconds": 300,
        "generated_at": generated_at,
    }
    if units is not None:
        meta["units"] = units
    data = [
        {
            "point_time": (datetime(2025, 3, 4, 14, tzinfo=UTC) + timedelta(minutes=5 * i)).isoformat(),
            "value": 860.0 - i,
        }
        for i in range(24)
    ]
    return {"data": data, "meta": meta}


async def test_forecast_logs_in_converts_lbs_and_is_marginal(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/login", Reply({"token": JWT}))
    server.on("/v3/forecast", Reply(forecast_payload()))
    result = await wt(server, sleeps).forecast("CAISO_NORTH", NOW, timedelta(minutes=30))
    series = result.series
    assert series.signal == Signal.MARGINAL
    assert series.kind == Kind.FORECAST
    assert series.resolution == timedelta(minutes=5)
    assert series.issued_at == datetime(2025, 3, 4, 13, 55, tzinfo=UTC)
    assert series.start == datetime(2025, 3, 4, 14, tzinfo=UTC)
    assert series.values.tolist() == pytest.approx([(860.0 - i) * LBS_PER_MWH_TO_G_PER_KWH for i in range(7)])
    login, call = server.requests
    assert login.headers["authorization"] == "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert call.headers["authorization"] == f"Bearer {JWT}"
    assert call.query["signal_type"] == ["co2_moer"]
    assert call.query["horizon_hours"] == ["1"]


async def test_token_is_reused_then_renewed_before_30_minutes(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/login", Reply({"token": JWT}), Reply({"token": "second.jwt.sig"}))
    server.on("/v3/forecast", Reply(forecast_payload()))
    clock = FakeClock()
    provider = wt(server, sleeps, clock)
    await provider.forecast("CAISO_NORTH", NOW, timedelta(minutes=30))
    clock.seconds += 10 * 60
    await provider.forecast("CAISO_NORTH", NOW, timedelta(minutes=30))
    assert provider.logins == 1
    clock.seconds += 20 * 60
    await provider.forecast("CAISO_NORTH", NOW, timedelta(minutes=30))
    assert provider.logins == 2
    assert server.requests[-1].headers["authorization"] == "Bearer second.jwt.sig"


async def test_a_401_triggers_one_fresh_login(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/login", Reply({"token": JWT}), Reply({"token": "second.jwt.sig"}))
    server.on("/v3/forecast", Reply({"error": "expired"}, status=401), Reply(forecast_payload()))
    provider = wt(server, sleeps)
    result = await provider.forecast("CAISO_NORTH", NOW, timedelta(minutes=30))
    assert len(result.series) == 7
    assert server.paths() == ["/login", "/v3/forecast", "/login", "/v3/forecast"]


async def test_bad_credentials_fail_without_showing_them(
    server: ScriptedServer, sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.on("/login", Reply(f"invalid user {USER} password {PASSWORD}", status=401))
    provider = wt(server, sleeps)
    with pytest.raises(ProviderAuthError) as caught:
        await provider.forecast("CAISO_NORTH", NOW, timedelta(hours=1))
    for text in (str(caught.value), repr(caught.value), repr(provider), caplog.text):
        assert PASSWORD not in text
        assert JWT not in text


async def test_server_error_snippets_redact_the_session_token(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/login", Reply({"token": JWT}))
    server.on("/v3/forecast", Reply(f"internal error for token {JWT}", status=500))
    with pytest.raises(Exception, match="HTTP 500") as caught:
        await wt(server, sleeps).forecast("CAISO_NORTH", NOW, timedelta(hours=1))
    assert JWT not in str(caught.value)


@pytest.mark.parametrize("units", [None, "percentile", "lbs_co2_per_kwh"])
async def test_missing_or_unknown_units_refuse_the_whole_answer(
    server: ScriptedServer, sleeps: SleepRecorder, units: str | None
) -> None:
    server.on("/login", Reply({"token": JWT}))
    server.on("/v3/forecast", Reply(forecast_payload(units=units)))
    with pytest.raises(ProviderDataError, match="unknown carbon-intensity unit"):
        await wt(server, sleeps).forecast("CAISO_NORTH", NOW, timedelta(hours=1))


async def test_forecast_generated_in_the_future_is_refused(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/login", Reply({"token": JWT}))
    server.on("/v3/forecast", Reply(forecast_payload(generated_at="2025-03-05T13:55:00+00:00")))
    with pytest.raises(ProviderDataError, match="forecast issued in the future"):
        await wt(server, sleeps).forecast("CAISO_NORTH", NOW, timedelta(hours=1))


async def test_naive_point_times_are_refused(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    payload = forecast_payload()
    payload["data"][3]["point_time"] = "2025-03-04T14:15:00"  # type: ignore[index]
    server.on("/login", Reply({"token": JWT}))
    server.on("/v3/forecast", Reply(payload))
    result = await wt(server, sleeps).forecast("CAISO_NORTH", NOW, timedelta(minutes=30))
    assert [r.reason.value for r in result.rejected] == ["timestamp has no timezone"]


async def test_historical_current_and_the_aoer_signal(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    points = [{"point_time": f"2025-03-04T13:{m:02d}:00+00:00", "value": 700 + m} for m in range(0, 60, 5)]
    meta = {
        "region": "CAISO_NORTH",
        "signal_type": "co2_aoer",
        "units": "lbs_co2_per_mwh",
        "data_point_period_seconds": 300,
    }
    server.on("/login", Reply({"token": JWT}))
    server.on("/v3/historical", Reply({"data": points, "meta": meta}))
    provider = WattTimeProvider(
        Secret(USER), Secret(PASSWORD), base_url=server.url, signal_type="co2_aoer", policy=FAST_POLICY, sleep=sleeps
    )
    result = await provider.current("CAISO_NORTH", NOW)
    assert result.series.signal == Signal.AVERAGE
    assert result.series.start == datetime(2025, 3, 4, 13, 55, tzinfo=UTC)
    assert result.series.values.tolist() == pytest.approx([755 * LBS_PER_MWH_TO_G_PER_KWH])
    assert server.requests[-1].query["start"] == ["2025-03-04T13:02:00Z"]
