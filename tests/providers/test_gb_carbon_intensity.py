"""NESO GB Carbon Intensity API against a local server: national and both regional shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from scripted_server import FAST_POLICY, Reply, ScriptedServer, SleepRecorder

from carbonshift.adapters.carbon import ProviderConfigError, ProviderDataError
from carbonshift.adapters.carbon.gb_carbon_intensity import GbCarbonIntensityProvider
from carbonshift.domain.quality import Reason
from carbonshift.domain.series import Kind

NOW = datetime(2025, 3, 4, 13, 40, tzinfo=UTC)


def gb(server: ScriptedServer, sleeps: SleepRecorder) -> GbCarbonIntensityProvider:
    return GbCarbonIntensityProvider(base_url=server.url, policy=FAST_POLICY, sleep=sleeps)


def slot(
    i: int, forecast: int | None, actual: int | None = None, first: datetime = datetime(2025, 3, 4, 13, 30, tzinfo=UTC)
) -> dict[str, object]:
    start = first + timedelta(minutes=30 * i)
    end = start + timedelta(minutes=30)
    return {
        "from": start.strftime("%Y-%m-%dT%H:%MZ"),
        "to": end.strftime("%Y-%m-%dT%H:%MZ"),
        "intensity": {"forecast": forecast, "actual": actual, "index": "moderate"},
    }


async def test_national_forecast_uses_the_fw48h_path(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/intensity/2025-03-04T13:40Z/fw48h", Reply({"data": [slot(i, 140 + i) for i in range(96)]}))
    result = await gb(server, sleeps).forecast("GB", NOW, timedelta(hours=30))
    series = result.series
    assert series.kind == Kind.FORECAST
    assert series.resolution == timedelta(minutes=30)
    assert series.start == datetime(2025, 3, 4, 13, 30, tzinfo=UTC)
    assert len(series) == 61
    assert series.values[0] == 140.0
    assert series.issued_at == NOW
    assert server.requests[0].headers["accept"] == "application/json"


async def test_national_current_prefers_the_actual(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/intensity", Reply({"data": [slot(0, 142, 151)]}))
    result = await gb(server, sleeps).current("GB", NOW)
    assert result.series.values.tolist() == [151.0]
    assert result.series.kind == Kind.ACTUAL


async def test_national_current_without_actual_says_it_used_the_forecast(
    server: ScriptedServer, sleeps: SleepRecorder
) -> None:
    server.on("/intensity", Reply({"data": [slot(0, 142, None)]}))
    result = await gb(server, sleeps).current("GB", NOW)
    assert result.series.values.tolist() == [142.0]
    assert result.series.kind == Kind.FORECAST
    assert "forecast" in result.notes[0]


async def test_regional_all_regions_per_slot_shape(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    def entry(i: int) -> dict[str, object]:
        base = slot(i, None)
        regions = [
            {
                "regionid": 13,
                "shortname": "London",
                "intensity": {"forecast": 171 + i, "index": "moderate"},
                "generationmix": [{"fuel": "gas", "perc": 38.2}],
            },
            {"regionid": 1, "shortname": "North Scotland", "intensity": {"forecast": 12, "index": "very low"}},
        ]
        return {"from": base["from"], "to": base["to"], "regions": regions}

    server.on("/regional/intensity/2025-03-04T13:40Z/fw24h/regionid/13", Reply({"data": [entry(i) for i in range(4)]}))
    result = await gb(server, sleeps).forecast("GB-13", NOW, timedelta(hours=2))
    assert result.series.values.tolist() == [171.0, 172.0, 173.0, 174.0]


async def test_regional_one_region_nested_slots_shape(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    nested = [
        {
            "from": s["from"],
            "to": s["to"],
            "intensity": {"forecast": 12 + i, "index": "very low"},
            "generationmix": [{"fuel": "wind", "perc": 81.4}],
        }
        for i, s in enumerate(slot(j, 0) for j in range(3))
    ]
    body = {
        "data": [
            {
                "regionid": 1,
                "dnoregion": "Scottish Hydro Electric Power Distribution",
                "shortname": "North Scotland",
                "data": nested,
            }
        ]
    }
    server.on("/regional/regionid/1", Reply(body))
    result = await gb(server, sleeps).current("GB-1", datetime(2025, 3, 4, 14, 40, tzinfo=UTC))
    assert result.series.values.tolist() == [14.0]  # the slot containing 14:40, not every slot answered
    assert not result.stale
    assert result.series.kind == Kind.FORECAST
    assert "forecasts only" in result.notes[0]


async def test_history_nulls_and_zero_glitches_are_refused(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    begin = datetime(2025, 3, 4, 9, 30, tzinfo=UTC)
    past = [slot(i, 150, a, first=begin) for i, a in enumerate([151, None, 0, 149])]
    server.on("/intensity/2025-03-04T09:30Z/2025-03-04T11:30Z", Reply({"data": past}))
    result = await gb(server, sleeps).history("GB", begin, begin + timedelta(hours=2), NOW)
    assert sorted(r.reason for r in result.rejected) == sorted([Reason.NULL_VALUE, Reason.NON_POSITIVE])


async def test_error_body_and_bad_zone(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/intensity", Reply({"error": {"code": "500 Internal Server Error", "message": "down"}}, status=500))
    with pytest.raises(Exception, match="HTTP 500"):
        await gb(server, sleeps).current("GB", NOW)
    with pytest.raises(ProviderConfigError, match="GB-<regionid"):
        await gb(server, sleeps).current("GB-99", NOW)
    server.on("/regional/regionid/2", Reply({"nothing": []}))
    with pytest.raises(ProviderDataError, match="lacks a 'data' array"):
        await gb(server, sleeps).current("GB-2", NOW)
