"""Carbon Aware SDK WebAPI against a local server: repeated location, TimeSpan durations, 204."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from scripted_server import FAST_POLICY, Reply, ScriptedServer, SleepRecorder

from carbonshift.adapters.carbon import ProviderConfigError, ProviderDataError
from carbonshift.adapters.carbon.carbon_aware_sdk import CarbonAwareSdkProvider, parse_timespan

NOW = datetime(2025, 3, 4, 10, 12, tzinfo=UTC)


def sdk(server: ScriptedServer, sleeps: SleepRecorder) -> CarbonAwareSdkProvider:
    return CarbonAwareSdkProvider(base_url=server.url, policy=FAST_POLICY, sleep=sleeps)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("00:05:00", timedelta(minutes=5)),
        ("01:00:00", timedelta(hours=1)),
        ("1.00:00:00", timedelta(days=1)),
        (30, timedelta(minutes=30)),
        ("soon", None),
        ("00:00:00", None),
        (True, None),
    ],
)
def test_timespans(value: object, expected: timedelta | None) -> None:
    assert parse_timespan(value) == expected


async def test_current_reads_bylocations_with_a_repeated_location(
    server: ScriptedServer, sleeps: SleepRecorder
) -> None:
    body = [
        {"location": "eastus", "time": "2025-03-04T09:50:00+00:00", "rating": 415.0, "duration": "00:05:00"},
        {"location": "eastus", "time": "2025-03-04T09:55:00+00:00", "rating": 412.7, "duration": "00:05:00"},
        {"location": "eastus", "time": "2025-03-04T10:05:00+00:00", "rating": 409.3, "duration": "00:05:00"},
        {"location": "northeurope", "time": "2025-03-04T10:00:00+00:00", "rating": 298.0, "duration": "01:00:00"},
    ]
    server.on("/emissions/bylocations", Reply(body))
    result = await sdk(server, sleeps).current("eastus", NOW)
    assert result.series.start == datetime(2025, 3, 4, 10, 5, tzinfo=UTC)
    assert result.series.values.tolist() == [409.3]
    assert server.requests[0].query["location"] == ["eastus"]
    assert server.requests[0].query["toTime"] == ["2025-03-04T10:12:00Z"]


async def test_no_content_is_no_data(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/emissions/bylocations", Reply(None, status=204))
    with pytest.raises(ProviderDataError, match="204 No Content"):
        await sdk(server, sleeps).current("eastus", NOW)


async def test_forecast_reads_forecast_data_and_generated_at(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    points = [
        {
            "location": "westus",
            "timestamp": f"2025-03-04T{10 + i // 2:02d}:{30 * (i % 2):02d}:00+00:00",
            "duration": 30,
            "value": 344.1 - i,
        }
        for i in range(8)
    ]
    body = [
        {
            "generatedAt": "2025-03-04T09:55:00+00:00",
            "requestedAt": "2025-03-04T10:12:00+00:00",
            "location": "westus",
            "dataStartAt": "2025-03-04T10:00:00+00:00",
            "dataEndAt": "2025-03-04T14:00:00+00:00",
            "windowSize": 30,
            "optimalDataPoints": [],
            "forecastData": points,
        }
    ]
    server.on("/emissions/forecasts/current", Reply(body))
    result = await sdk(server, sleeps).forecast("westus", NOW, timedelta(hours=1))
    series = result.series
    assert series.resolution == timedelta(minutes=30)
    assert series.issued_at == datetime(2025, 3, 4, 9, 55, tzinfo=UTC)
    assert series.values.tolist() == [344.1, 343.1, 342.1]  # 10:00, 10:30, 11:00 overlap [10:12, 11:12)
    assert series.labels["window_size_minutes"] == "30"
    assert server.requests[0].query["dataEndAt"] == ["2025-03-04T11:12:00Z"]


async def test_validation_problem_is_a_config_error(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    problem = {
        "title": "One or more validation errors occurred.",
        "status": 400,
        "errors": {"location": ["The location field is required."]},
    }
    server.on("/emissions/forecasts/current", Reply(problem, status=400))
    with pytest.raises(ProviderConfigError, match="HTTP 400"):
        await sdk(server, sleeps).forecast("nowhere", NOW, timedelta(hours=1))


async def test_sentinels_and_zeros_in_ratings_are_refused(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    body = [
        {"location": "eastus", "time": f"2025-03-04T0{h}:00:00+00:00", "rating": r, "duration": "01:00:00"}
        for h, r in [(6, 400.0), (7, -1), (8, 0), (9, 410.0)]
    ]
    server.on("/emissions/bylocations", Reply(body))
    result = await sdk(server, sleeps).history("eastus", NOW - timedelta(hours=5), NOW, NOW)
    assert sorted(r.reason.name for r in result.rejected) == ["NON_POSITIVE", "SENTINEL"]
    assert result.series.coverage() == 0.5
