"""Fallback chain end to end over real local servers, the resolution cache, the trace provider, secrets."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scripted_server import FAST_POLICY, Reply, ScriptedServer, SleepRecorder

from carbonshift.adapters.carbon import (
    CachedProvider,
    ChainLink,
    FallbackChain,
    ProviderConfigError,
    ProviderDataError,
    ProviderUnavailableError,
    TraceProvider,
)
from carbonshift.adapters.carbon.config import api_provider_from_env
from carbonshift.adapters.carbon.electricitymaps import ElectricityMapsProvider
from carbonshift.adapters.carbon.gb_carbon_intensity import GbCarbonIntensityProvider
from carbonshift.adapters.carbon.secrets import Secret, SecretError, read_secret
from carbonshift.data import load_bundled_trace
from carbonshift.domain.forecasting import parse_forecast_model
from carbonshift.domain.quality import Reason
from carbonshift.domain.series import Kind

NOW = datetime(2025, 3, 4, 13, 20, tzinfo=UTC)
TOKEN = "chain-token-77aa"


def em(url: str, sleeps: SleepRecorder) -> ElectricityMapsProvider:
    return ElectricityMapsProvider(Secret(TOKEN), base_url=f"{url}/v3", policy=FAST_POLICY, sleep=sleeps)


def gb(url: str, sleeps: SleepRecorder) -> GbCarbonIntensityProvider:
    return GbCarbonIntensityProvider(base_url=url, policy=FAST_POLICY, sleep=sleeps)


def em_forecast(first_hour: int = 13, hours: int = 24) -> dict[str, object]:
    items = [
        {"carbonIntensity": 200 + h, "datetime": f"2025-03-04T{h:02d}:00:00.000Z"}
        for h in range(first_hour, min(first_hour + hours, 24))
    ]
    return {"zone": "GB", "forecast": items, "updatedAt": "2025-03-04T12:50:00.000Z"}


async def test_primary_down_secondary_answers(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/v3/carbon-intensity/forecast", Reply("maintenance", status=503))
    slots = [
        {
            "from": f"2025-03-04T{13 + i // 2:02d}:{30 * (i % 2):02d}Z",
            "to": "x",
            "intensity": {"forecast": 100 + i, "actual": None, "index": "low"},
        }
        for i in range(20)
    ]
    server.on("/intensity/2025-03-04T13:20Z/fw24h", Reply({"data": slots}))
    chain = FallbackChain([em(server.url, sleeps), gb(server.url, sleeps)])
    result = await chain.forecast("GB", NOW, timedelta(hours=2))
    assert result.answered_by == "gb-carbon-intensity"
    assert not result.no_data
    assert result.series is not None and result.series.values.tolist() == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert [(f.provider, f.error) for f in result.failures] == [("electricitymaps", "ProviderUnavailableError")]
    assert "HTTP 503" in result.failures[0].message
    assert "answered by gb-carbon-intensity; electricitymaps failed" in result.explain()


async def test_primary_secondary_and_trace_fail_then_no_data(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/v3/carbon-intensity/forecast", Reply("maintenance", status=500))
    server.on("/intensity/2025-03-04T13:20Z/fw24h", Reply("{broken"))
    trace = TraceProvider.bundled("GB_2023")  # a 2023 trace cannot answer for 2025 without replay
    chain = FallbackChain([em(server.url, sleeps), gb(server.url, sleeps), ChainLink(trace, zone="GB")])
    result = await chain.forecast("GB", NOW, timedelta(hours=4))
    assert result.no_data
    assert result.series is None
    assert result.advice is not None and "latest safe start" in result.advice
    assert [f.provider for f in result.failures] == ["electricitymaps", "gb-carbon-intensity", "trace:GB_2023"]
    assert [f.error for f in result.failures] == ["ProviderUnavailableError", "ProviderDataError", "ProviderDataError"]
    assert "malformed JSON" in result.failures[1].message
    assert "the trace covers 2023-01-01" in result.failures[2].message


async def test_trace_replay_answers_last_with_persistence(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    server.on("/v3/carbon-intensity/forecast", Reply("down", status=502))
    trace = TraceProvider.bundled("GB", replay=True)
    chain = FallbackChain([em("http://127.0.0.1:9", sleeps), em(server.url, sleeps), ChainLink(trace, zone="GB")])
    result = await chain.forecast("GB", NOW, timedelta(hours=24))
    assert result.answered_by == "trace:GB_2023 (replayed trace of 2023)"
    assert [f.error for f in result.failures] == ["ProviderUnavailableError", "ProviderUnavailableError"]
    series = result.series
    assert series is not None
    assert series.kind == Kind.FORECAST
    assert series.start == datetime(2025, 3, 4, 13, tzinfo=UTC)
    assert len(series) == 49
    assert "replayed_from" in series.labels
    # persistence: each value is the replayed trace one day earlier
    original = load_bundled_trace("GB")
    shift = series.labels["replayed_from"]
    assert shift.startswith("2023-01-01")
    moment = series.start - timedelta(days=1)
    periods = (NOW - original.start) // timedelta(days=364)
    assert series.values[0] == original.at(moment - periods * timedelta(days=364))


async def test_trace_provider_never_forecasts_with_actuals_unless_oracle() -> None:
    at = datetime(2020, 6, 1, 12, tzinfo=UTC)
    actual = load_bundled_trace("DE")
    noisy = await TraceProvider.bundled("DE", forecast_model=parse_forecast_model("gaussian:0.1")).forecast(
        "DE", at, timedelta(hours=6)
    )
    truth = actual.window(at, at + timedelta(hours=6)).values
    assert not np.array_equal(noisy.series.values, truth)
    oracle = await TraceProvider.bundled("DE", forecast_model=parse_forecast_model("oracle")).forecast(
        "DE", at, timedelta(hours=6)
    )
    np.testing.assert_array_equal(oracle.series.values, truth)
    assert oracle.series.labels["oracle"] == "true"
    assert "oracle" in oracle.notes[0]
    history = await TraceProvider.bundled("DE").history("DE", at - timedelta(hours=2), at + timedelta(hours=5), at)
    assert history.series.end == at + timedelta(minutes=15)  # stops at the slot containing now
    with pytest.raises(ProviderConfigError, match="zone DE, not FR"):
        await TraceProvider.bundled("DE").current("FR", at)


async def test_trace_provider_from_a_csv_reports_garbage_rows(tmp_path: Path) -> None:
    path = tmp_path / "XX_2024.csv"
    path.write_text(
        "timestamp,gco2_per_kwh\n2024-01-01T00:00:00Z,100\n2024-01-01T01:00:00Z,-1\n"
        "2024-01-01T02:00:00Z,120\n2024-01-01T03:00:00Z,130\n"
    )
    provider = TraceProvider.from_csv(path)
    result = await provider.current("XX_2024", datetime(2024, 1, 1, 2, 30, tzinfo=UTC))
    assert result.series.values.tolist() == [120.0]
    assert [r.reason for r in result.rejected] == [Reason.SENTINEL]
    with pytest.raises(ProviderConfigError, match="cannot read trace"):
        TraceProvider.from_csv(tmp_path / "missing.csv")


async def test_cache_reuses_answers_within_the_slot_and_serves_stale_on_failure(
    server: ScriptedServer, sleeps: SleepRecorder
) -> None:
    server.on("/v3/carbon-intensity/forecast", Reply(em_forecast()), Reply(em_forecast(14)), Reply("down", status=503))
    cached = CachedProvider(em(server.url, sleeps), max_stale=timedelta(hours=2))
    first = await cached.forecast("GB", NOW, timedelta(hours=3))
    again = await cached.forecast("GB", NOW + timedelta(minutes=30), timedelta(hours=3))
    assert again is first
    assert len(server.requests) == 1
    later = await cached.forecast("GB", NOW + timedelta(hours=1), timedelta(hours=3))  # next hourly slot
    assert later.series.start == datetime(2025, 3, 4, 14, tzinfo=UTC)
    assert len(server.requests) == 2
    stale = await cached.forecast("GB", NOW + timedelta(hours=2), timedelta(hours=3))
    assert stale.stale
    assert stale.series is later.series
    assert "served from cache fetched 1:00:00 ago" in stale.notes[-1]
    with pytest.raises(ProviderUnavailableError):
        await cached.forecast("GB", NOW + timedelta(hours=4), timedelta(hours=3))
    assert (cached.hits, cached.stale_served) == (1, 1)


async def test_stale_cache_is_used_by_the_chain_before_the_next_provider(
    server: ScriptedServer, sleeps: SleepRecorder
) -> None:
    server.on("/v3/carbon-intensity/forecast", Reply(em_forecast()), Reply("down", status=503))
    chain = FallbackChain([CachedProvider(em(server.url, sleeps)), TraceProvider.bundled("GB", replay=True)])
    await chain.forecast("GB", NOW, timedelta(hours=3))
    result = await chain.forecast("GB", NOW + timedelta(hours=1), timedelta(hours=3))
    assert result.answered_by == "electricitymaps"
    assert result.stale


def test_secrets_from_env_and_mounted_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("from-file-123\n")
    assert read_secret("ELECTRICITYMAPS_API_TOKEN", {"ELECTRICITYMAPS_API_TOKEN": "env-1"}).reveal() == "env-1"  # type: ignore[union-attr]
    env = {"ELECTRICITYMAPS_API_TOKEN_FILE": str(secret_file), "ELECTRICITYMAPS_API_TOKEN": "env-1"}
    token = read_secret("ELECTRICITYMAPS_API_TOKEN", env)
    assert token is not None and token.reveal() == "from-file-123"
    assert "from-file-123" not in f"{token} {token!r} {token:>20}"
    assert read_secret("ELECTRICITYMAPS_API_TOKEN", {}) is None
    with pytest.raises(SecretError, match="cannot read") as caught:
        read_secret("X", {"X_FILE": str(tmp_path / "absent")})
    assert "absent" in str(caught.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError, match="is empty"):
        read_secret("X", {}, path=tmp_path / "empty")
    with pytest.raises(TypeError, match="not picklable"):
        pickle.dumps(token)


def test_providers_from_env_need_their_credentials() -> None:
    with pytest.raises(ProviderConfigError, match="ELECTRICITYMAPS_API_TOKEN"):
        api_provider_from_env("electricitymaps", {})
    with pytest.raises(ProviderConfigError, match="WATTTIME_USERNAME"):
        api_provider_from_env("watttime", {"WATTTIME_USERNAME": "u"})
    with pytest.raises(ProviderConfigError, match="unknown provider"):
        api_provider_from_env("weather", {})
    provider = api_provider_from_env(
        "electricitymaps", {"ELECTRICITYMAPS_API_TOKEN": TOKEN, "ELECTRICITYMAPS_BASE_URL": "http://127.0.0.1:1/v3"}
    )
    assert TOKEN not in repr(provider)
    assert "127.0.0.1:1" in repr(provider)


async def test_data_error_keeps_the_refused_points_for_the_chain(server: ScriptedServer, sleeps: SleepRecorder) -> None:
    items = [{"carbonIntensity": -1, "datetime": f"2025-03-04T{h:02d}:00:00.000Z"} for h in range(13, 16)]
    server.on("/v3/carbon-intensity/forecast", Reply({"zone": "GB", "forecast": items, "updatedAt": None}))
    result = await FallbackChain([em(server.url, sleeps)]).forecast("GB", NOW, timedelta(hours=3))
    assert result.no_data
    assert [r.reason for r in result.rejected] == [Reason.SENTINEL] * 3
    with pytest.raises(ProviderDataError):
        await em(server.url, sleeps).forecast("GB", NOW, timedelta(hours=3))
