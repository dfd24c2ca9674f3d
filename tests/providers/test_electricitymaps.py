"""Electricity Maps v3 against a local server: payload shapes, nulls, auth, retries, timeouts, secrecy."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

import pytest
from scripted_server import FAST_POLICY, Reply, ScriptedServer, SleepRecorder

from carbonshift.adapters.carbon import (
    ProviderAuthError,
    ProviderDataError,
    ProviderRateLimitedError,
    ProviderUnavailableError,
)
from carbonshift.adapters.carbon.electricitymaps import ElectricityMapsProvider
from carbonshift.adapters.carbon.http import HttpPolicy
from carbonshift.adapters.carbon.secrets import Secret
from carbonshift.domain.quality import Reason
from carbonshift.domain.series import Kind, Signal

TOKEN = "em-token-5f1d9c0e7a"
NOW = datetime(2025, 3, 4, 13, 20, tzinfo=UTC)


def em(server: ScriptedServer, sleeps: SleepRecorder, policy: HttpPolicy = FAST_POLICY) -> ElectricityMapsProvider:
    return ElectricityMapsProvider(
        Secret(TOKEN, "ELECTRICITYMAPS_API_TOKEN"), base_url=f"{server.url}/v3", policy=policy, sleep=sleeps
    )


def item(hour: int, value: float | None, day: int = 4) -> dict[str, object]:
    return {
        "carbonIntensity": value,
        "datetime": f"2025-03-{day:02d}T{hour:02d}:00:00.000Z",
        "updatedAt": "2025-03-04T13:41:07.512Z",
        "createdAt": "2025-03-01T13:45:02.118Z",
        "emissionFactorType": "lifecycle",
        "isEstimated": False,
        "estimationMethod": None,
    }


async def test_latest_uses_datetime_and_sends_the_auth_header(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/v3/carbon-intensity/latest", Reply({"zone": "DE", **item(13, 287)}))
    provider = em(server, sleeps)
    result = await provider.current("DE", NOW)
    await provider.aclose()
    assert result.series.start == datetime(2025, 3, 4, 13, tzinfo=UTC)  # datetime, not updatedAt (13:41)
    assert result.series.values.tolist() == [287.0]
    assert result.series.signal == Signal.AVERAGE
    request = server.requests[0]
    assert request.headers["auth-token"] == TOKEN
    assert request.query["zone"] == ["DE"]
    assert request.query["emissionFactorType"] == ["lifecycle"]


async def test_forecast_is_cut_to_the_horizon_and_carries_its_issue_time(
    server: ScriptedServer, sleeps: SleepRecorder
) -> None:
    forecast = [{"carbonIntensity": 300 - h, "datetime": f"2025-03-04T{h:02d}:00:00.000Z"} for h in range(12, 24)]
    server.on(
        "/v3/carbon-intensity/forecast",
        Reply({"zone": "DE", "forecast": forecast, "updatedAt": "2025-03-04T12:52:12.000Z"}),
    )
    provider = em(server, sleeps)
    result = await provider.forecast("DE", NOW, timedelta(hours=3))
    series = result.series
    assert series.kind == Kind.FORECAST
    assert series.issued_at == datetime(2025, 3, 4, 12, 52, 12, tzinfo=UTC)
    # slots overlapping [13:20, 16:20): 13, 14, 15, 16
    assert series.start == datetime(2025, 3, 4, 13, tzinfo=UTC)
    assert series.values.tolist() == [287.0, 286.0, 285.0, 284.0]


async def test_history_nulls_are_refused_not_zero(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    history = [item(h, None if h == 10 else 40 + h) for h in range(8, 13)]
    server.on("/v3/carbon-intensity/history", Reply({"zone": "FR", "history": history}))
    result = await em(server, sleeps).history("FR", NOW - timedelta(hours=6), NOW, NOW)
    assert [r.reason for r in result.rejected] == [Reason.NULL_VALUE]
    assert math.isnan(result.series.at(datetime(2025, 3, 4, 10, tzinfo=UTC)))
    assert result.series.at(datetime(2025, 3, 4, 11, tzinfo=UTC)) == 51.0


async def test_long_history_uses_past_range_in_chunks(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/v3/carbon-intensity/past-range", Reply({"zone": "DE", "data": [item(0, 100, day=1)]}))
    begin = datetime(2025, 1, 1, tzinfo=UTC)
    with pytest.raises(ProviderDataError):  # one point per chunk is not a usable hourly series
        await em(server, sleeps).history("DE", begin, begin + timedelta(days=25), NOW)
    starts = [r.query["start"][0] for r in server.requests]
    assert starts == ["2025-01-01T00:00:00Z", "2025-01-11T00:00:00Z", "2025-01-21T00:00:00Z"]
    assert server.requests[-1].query["end"] == ["2025-01-26T00:00:00Z"]


async def test_stale_latest_is_refused(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/v3/carbon-intensity/latest", Reply({"zone": "DE", **item(2, 287)}))
    with pytest.raises(ProviderDataError, match="stale") as caught:
        await em(server, sleeps).current("DE", NOW)
    assert [r.reason for r in caught.value.rejected] == [Reason.STALE]


async def test_answer_for_another_zone_is_refused(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/v3/carbon-intensity/latest", Reply({"zone": "FR", **item(13, 50)}))
    with pytest.raises(ProviderDataError, match="asked for zone DE, answered for FR"):
        await em(server, sleeps).current("DE", NOW)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply("{not json"), "malformed JSON"),
        (Reply({"zone": "DE", "forecast": []}), "no data points"),
        (Reply({"zone": "DE"}), "no 'forecast' array"),
        (Reply([1, 2]), "expected a JSON object"),
        (Reply(None, status=200), "no content"),
    ],
)
async def test_unusable_answers(server: ScriptedServer, sleeps: SleepRecorder, reply: Reply, message: str) -> None:
    server.on("/v3/carbon-intensity/forecast", reply)
    with pytest.raises(ProviderDataError, match=message):
        await em(server, sleeps).forecast("DE", NOW, timedelta(hours=24))


async def test_rate_limit_honours_retry_after(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on(
        "/v3/carbon-intensity/latest",
        Reply({"error": "slow down"}, status=429, headers={"Retry-After": "3"}),
        Reply({"zone": "DE", **item(13, 287)}),
    )
    result = await em(server, sleeps).current("DE", NOW)
    assert result.series.values.tolist() == [287.0]
    assert sleeps.waits == [3.0]


async def test_retry_after_as_http_date_is_measured_against_the_server_date(
    server: ScriptedServer, sleeps: SleepRecorder
) -> None:
    headers = {"Retry-After": "Tue, 04 Mar 2025 13:20:04 GMT", "Date": "Tue, 04 Mar 2025 13:20:00 GMT"}
    server.on(
        "/v3/carbon-intensity/latest", Reply({}, status=503, headers=headers), Reply({"zone": "DE", **item(13, 1)})
    )
    await em(server, sleeps).current("DE", NOW)
    assert sleeps.waits == [4.0]


async def test_persistent_429_gives_up_after_the_retry_budget(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/v3/carbon-intensity/latest", Reply({}, status=429, headers={"Retry-After": "1"}))
    with pytest.raises(ProviderRateLimitedError, match="gave up after 3 attempts") as caught:
        await em(server, sleeps).current("DE", NOW)
    assert caught.value.retry_after_seconds == 1.0
    assert len(server.requests) == 3
    assert sleeps.waits == [1.0, 1.0]


async def test_retry_after_beyond_the_limit_fails_at_once(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/v3/carbon-intensity/latest", Reply({}, status=429, headers={"Retry-After": "3600"}))
    with pytest.raises(ProviderRateLimitedError, match="exceeds"):
        await em(server, sleeps).current("DE", NOW)
    assert len(server.requests) == 1
    assert sleeps.waits == []


async def test_server_errors_back_off_exponentially_then_succeed(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    policy = HttpPolicy(timeout_seconds=1, max_attempts=4, backoff_initial_seconds=0.5, backoff_max_seconds=1.5)
    server.on(
        "/v3/carbon-intensity/latest",
        Reply("oops", status=500),
        Reply("oops", status=502),
        Reply("oops", status=503),
        Reply({"zone": "DE", **item(13, 287)}),
    )
    result = await em(server, sleeps, policy).current("DE", NOW)
    assert result.series.values.tolist() == [287.0]
    assert sleeps.waits == [0.5, 1.0, 1.5]


async def test_slow_server_times_out(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    policy = HttpPolicy(timeout_seconds=0.2, max_attempts=2, backoff_initial_seconds=0.01)
    server.on("/v3/carbon-intensity/latest", Reply({"zone": "DE", **item(13, 1)}, delay_seconds=1.0))
    with pytest.raises(ProviderUnavailableError, match=r"timed out after 0\.2s"):
        await em(server, sleeps, policy).current("DE", NOW)
    assert len(server.requests) == 2


async def test_connection_refused_is_unavailable(sleeps: SleepRecorder) -> None:
    provider = ElectricityMapsProvider(
        Secret(TOKEN), base_url="http://127.0.0.1:9/v3", policy=FAST_POLICY, sleep=sleeps
    )
    with pytest.raises(ProviderUnavailableError, match="ConnectError"):
        await provider.current("DE", NOW)


@pytest.mark.parametrize("status", [401, 500])
async def test_the_token_never_appears_in_logs_errors_or_reprs(
    server: ScriptedServer, sleeps: SleepRecorder, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    # a hostile server echoes the token back in its error body
    server.on("/v3/carbon-intensity/latest", Reply(f"bad token {TOKEN}", status=status))
    provider = em(server, sleeps)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderAuthError if status == 401 else ProviderUnavailableError) as caught:
        await provider.current("DE", NOW)
    texts = [str(caught.value), repr(caught.value), repr(provider), caplog.text, str(caught.value.__cause__)]
    texts += [str(caught.value.__context__)]
    assert server.requests[0].headers["auth-token"] == TOKEN  # it was sent...
    for text in texts:
        assert TOKEN not in text  # ...and never shown
    if status == 500:
        assert "***" in str(caught.value)
