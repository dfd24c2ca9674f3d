"""The carbon data guards, for every API provider, against real local HTTP servers speaking each one's payloads.

Each trap of issue 15 has a test here: unsorted and duplicated points keep every slot (history and forecasts), a
forecast older than three of its slots is refused, values 2.2x the zone's recent ones (lbs/MWh served as g/kWh) are
refused, a hanging provider gives up within the call budget and is not asked again during the negative cache, 8
concurrent calls send one request, a 401 names the variable or Secret key to check, and `current()` flags a slot
that does not contain `now`. Requests are counted at the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from scripted_server import Reply, ScriptedServer

from carbonshift.adapters.carbon import (
    CachedProvider,
    FallbackChain,
    ProviderAuthError,
    ProviderDataError,
    ProviderUnavailableError,
)
from carbonshift.adapters.carbon.base import CarbonProvider
from carbonshift.adapters.carbon.carbon_aware_sdk import CarbonAwareSdkProvider
from carbonshift.adapters.carbon.config import api_provider_from_env
from carbonshift.adapters.carbon.electricitymaps import ElectricityMapsProvider
from carbonshift.adapters.carbon.gb_carbon_intensity import GbCarbonIntensityProvider
from carbonshift.adapters.carbon.http import HttpPolicy
from carbonshift.adapters.carbon.secrets import Secret
from carbonshift.adapters.carbon.watttime import WattTimeProvider
from carbonshift.cli import main
from carbonshift.domain.quality import LBS_PER_MWH_TO_G_PER_KWH, Reason

NOW = datetime(2025, 3, 4, 13, 20, tzinfo=UTC)
POLICY = HttpPolicy(timeout_seconds=5.0, max_attempts=3, backoff_initial_seconds=0.01, backoff_max_seconds=0.02)
"""Quick retries, and time enough for an answer on a busy machine."""
HOUR = timedelta(hours=1)
LB_PER_G = 1 / LBS_PER_MWH_TO_G_PER_KWH  # 2.2046: a lbs/MWh number is 2.2x the g/kWh one
TOKEN = "em-token-guards-4e1f"
JWT = "eyJhbGciOiJIUzI1NiJ9.guards.sig"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def minute_iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%MZ")


Points = list[tuple[datetime, float]]


@dataclass(frozen=True)
class Api:
    """How one provider is built and what its server answers, for the tests below."""

    name: str
    zone: str
    resolution: timedelta
    factor: float  # wire value x factor = g/kWh
    build: Callable[[str, HttpPolicy], CarbonProvider]
    forecast_path: Callable[[timedelta], str]
    forecast_body: Callable[[Points, datetime], Any]
    history_path: Callable[[datetime, datetime], str]
    history_body: Callable[[Points], Any]
    current_path: str
    current_body: Callable[[Points], Any]
    data_paths: tuple[str, ...] = ()  # paths that carry data (not a login)

    def __str__(self) -> str:
        return self.name


def _em_items(points: Points) -> list[dict[str, Any]]:
    return [{"carbonIntensity": v, "datetime": iso(t), "isEstimated": False} for t, v in points]


def _wt_body(points: Points, generated: datetime | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "region": "CAISO_NORTH",
        "signal_type": "co2_moer",
        "units": "lbs_co2_per_mwh",
        "data_point_period_seconds": 300,
    }
    if generated is not None:
        meta["generated_at"] = generated.isoformat()
    return {"meta": meta, "data": [{"point_time": t.isoformat(), "value": v} for t, v in points]}


def _gb_slots(points: Points, field: str) -> dict[str, Any]:
    half = timedelta(minutes=30)
    return {
        "data": [
            {"from": minute_iso(t), "to": minute_iso(t + half), "intensity": {field: v, "index": "moderate"}}
            for t, v in points
        ]
    }


EM = Api(
    name="electricitymaps",
    zone="DE",
    resolution=HOUR,
    factor=1.0,
    build=lambda url, policy: ElectricityMapsProvider(
        Secret(TOKEN, "ELECTRICITYMAPS_API_TOKEN"), base_url=f"{url}/v3", policy=policy
    ),
    forecast_path=lambda horizon: "/v3/carbon-intensity/forecast",
    forecast_body=lambda points, issued: {"zone": "DE", "forecast": _em_items(points), "updatedAt": iso(issued)},
    history_path=lambda begin, end: "/v3/carbon-intensity/history",
    history_body=lambda points: {"zone": "DE", "history": _em_items(points)},
    current_path="/v3/carbon-intensity/latest",
    current_body=lambda points: {"zone": "DE", **_em_items(points)[-1]},
)
WT = Api(
    name="watttime",
    zone="CAISO_NORTH",
    resolution=timedelta(minutes=5),
    factor=LBS_PER_MWH_TO_G_PER_KWH,
    build=lambda url, policy: WattTimeProvider(
        Secret("grid-user", "WATTTIME_USERNAME"), Secret("pw-guards", "WATTTIME_PASSWORD"), base_url=url, policy=policy
    ),
    forecast_path=lambda horizon: "/v3/forecast",
    forecast_body=_wt_body,
    history_path=lambda begin, end: "/v3/historical",
    history_body=_wt_body,
    current_path="/v3/historical",
    current_body=_wt_body,
)
SDK = Api(
    name="carbon-aware-sdk",
    zone="eastus",
    resolution=HOUR,
    factor=1.0,
    build=lambda url, policy: CarbonAwareSdkProvider(base_url=url, policy=policy),
    forecast_path=lambda horizon: "/emissions/forecasts/current",
    forecast_body=lambda points, issued: [
        {
            "location": "eastus",
            "generatedAt": issued.isoformat(),
            "windowSize": 60,
            "forecastData": [{"timestamp": t.isoformat(), "value": v, "duration": 60} for t, v in points],
        }
    ],
    history_path=lambda begin, end: "/emissions/bylocations",
    history_body=lambda points: [
        {"location": "eastus", "time": t.isoformat(), "rating": v, "duration": "01:00:00"} for t, v in points
    ],
    current_path="/emissions/bylocations",
    current_body=lambda points: [
        {"location": "eastus", "time": t.isoformat(), "rating": v, "duration": "01:00:00"} for t, v in points
    ],
)
GB = Api(
    name="gb-carbon-intensity",
    zone="GB",
    resolution=timedelta(minutes=30),
    factor=1.0,
    build=lambda url, policy: GbCarbonIntensityProvider(base_url=url, policy=policy),
    forecast_path=lambda horizon: f"/intensity/{minute_iso(NOW)}/{'fw24h' if horizon <= 24 * HOUR else 'fw48h'}",
    forecast_body=lambda points, issued: _gb_slots(points, "forecast"),
    history_path=lambda begin, end: f"/intensity/{minute_iso(begin)}/{minute_iso(end)}",
    history_body=lambda points: _gb_slots(points, "actual"),
    current_path="/intensity",
    current_body=lambda points: _gb_slots(points, "actual"),
)
APIS = [EM, WT, SDK, GB]
ISSUE_TIMED = [EM, WT, SDK]  # NESO stamps no issue time


def slot_of(moment: datetime, resolution: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((moment - epoch) // resolution) * resolution


def daily_shape(api: Api, starts: list[datetime]) -> Points:
    """Plausible wire values with a daily cycle: 200..300 g/kWh, in the provider's unit."""
    return [(t, round((250 + 50 * math.sin(t.timestamp() / 86400 * 2 * math.pi)) / api.factor, 3)) for t in starts]


def history_starts(api: Api, slots: int) -> list[datetime]:
    last = slot_of(NOW, api.resolution)
    return [last - i * api.resolution for i in reversed(range(slots))]


def forecast_starts(api: Api, slots: int) -> list[datetime]:
    first = slot_of(NOW, api.resolution)
    return [first + i * api.resolution for i in range(slots)]


def shuffled_with_copies(points: Points, copies: int, seed: int = 15) -> Points:
    rng = random.Random(seed)
    messy = points + rng.sample(points, copies)
    rng.shuffle(messy)
    return messy


SLOTS = {"electricitymaps": 24, "watttime": 576, "carbon-aware-sdk": 24, "gb-carbon-intensity": 46}
"""Per provider: a day of hourly points, two days of 5-minute points, a day of half hours (GB's history: 23 h)."""


@pytest.fixture(autouse=True)
def watttime_login(server: ScriptedServer) -> None:
    """WattTime logs in first (GET /login); the other providers never ask for it."""
    server.on("/login", Reply({"token": JWT}))


def data_requests(server: ScriptedServer) -> int:
    return server.count() - server.count("/login")


# -- sort and de-duplicate before judging -----------------------------------------------------------------------------
@pytest.mark.parametrize("api", APIS, ids=str)
async def test_unsorted_duplicated_history_keeps_every_point(api: Api, server: ScriptedServer) -> None:
    points = daily_shape(api, history_starts(api, SLOTS[api.name]))
    begin, end = points[0][0], points[-1][0] + api.resolution
    server.on(api.history_path(begin, end), Reply(api.history_body(shuffled_with_copies(points, 3))))
    provider = api.build(server.url, POLICY)
    result = await provider.history(api.zone, begin, end, NOW)
    await provider.aclose()
    assert len(result.series) == len(points)
    assert result.series.coverage() == 1.0
    assert result.series.values.tolist() == pytest.approx([v * api.factor for _, v in points])
    assert [r.reason for r in result.rejected] == [Reason.DUPLICATE] * 3


@pytest.mark.parametrize("api", APIS, ids=str)
async def test_unsorted_duplicated_forecast_keeps_every_point(api: Api, server: ScriptedServer) -> None:
    slots = min(SLOTS[api.name], 288)
    points = daily_shape(api, forecast_starts(api, slots))
    horizon = points[-1][0] + api.resolution - NOW
    issued = NOW - timedelta(minutes=10)
    server.on(api.forecast_path(horizon), Reply(api.forecast_body(shuffled_with_copies(points, 5), issued)))
    provider = api.build(server.url, POLICY)
    result = await provider.forecast(api.zone, NOW, horizon)
    await provider.aclose()
    assert result.series.start == points[0][0]
    assert len(result.series) == slots
    assert result.series.values.tolist() == pytest.approx([v * api.factor for _, v in points])
    assert [r.reason for r in result.rejected] == [Reason.DUPLICATE] * 5


# -- old forecasts ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("api", ISSUE_TIMED, ids=str)
async def test_a_six_hour_old_forecast_is_refused_and_a_fresh_one_keeps_its_issue_time(
    api: Api, server: ScriptedServer
) -> None:
    points = daily_shape(api, forecast_starts(api, 24))
    horizon = points[-1][0] + api.resolution - NOW
    path = api.forecast_path(horizon)
    server.on(path, Reply(api.forecast_body(points, NOW - 6 * HOUR)))
    provider = api.build(server.url, POLICY)
    with pytest.raises(ProviderDataError, match=r"issued at 2025-03-04T07:20:00\+00:00 is 6:00:00 old") as refused:
        await provider.forecast(api.zone, NOW, horizon)
    assert all(r.reason == Reason.STALE for r in refused.value.rejected)
    fresh = NOW - timedelta(minutes=40)
    server.on(path, Reply(api.forecast_body(points, fresh)))
    result = await provider.forecast(api.zone, NOW, horizon)
    await provider.aclose()
    assert result.series.issued_at == fresh


def test_forecast_command_prints_the_true_issue_time_and_refuses_a_six_hour_old_one(
    server: ScriptedServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ELECTRICITYMAPS_API_TOKEN", TOKEN)
    monkeypatch.delenv("ELECTRICITYMAPS_API_TOKEN_FILE", raising=False)
    points = daily_shape(EM, forecast_starts(EM, 24))
    argv = ["forecast", "--provider", "electricitymaps", "--zone", "DE", "--at", iso(NOW), "--horizon", "6h"]
    argv += ["--base-url", f"{server.url}/v3", "--output", "json"]
    issued = NOW - 2 * HOUR
    server.on("/v3/carbon-intensity/forecast", Reply(EM.forecast_body(points, issued)))
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["issued_at"] == "2025-03-04T11:20:00Z"  # what the provider says, not --at
    assert report["at"] == "2025-03-04T13:20:00Z"
    server.on("/v3/carbon-intensity/forecast", Reply(EM.forecast_body(points, NOW - 6 * HOUR)))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "issued at 2025-03-04T07:20:00+00:00 is 6:00:00 old, more than the 3:00:00 allowed" in err


def test_forecast_command_prefixes_provider_warnings(
    server: ScriptedServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ELECTRICITYMAPS_API_TOKEN", TOKEN)
    points = daily_shape(EM, forecast_starts(EM, 24))
    server.on(
        "/v3/carbon-intensity/forecast",
        Reply({"message": "busy"}, status=503, headers={"Retry-After": "0"}),
        Reply(EM.forecast_body(points, NOW - timedelta(minutes=5))),
    )
    argv = ["forecast", "--provider", "electricitymaps", "--zone", "DE", "--at", iso(NOW), "--horizon", "3h"]
    assert main([*argv, "--base-url", f"{server.url}/v3", "--output", "csv"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("carbonshift forecast: WARNING: carbon provider electricitymaps: GET ")
    assert "HTTP 503" in err[0]


# -- unit slips -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("api", APIS, ids=str)
async def test_values_in_lbs_per_mwh_served_as_the_usual_unit_are_refused(api: Api, server: ScriptedServer) -> None:
    history = daily_shape(api, history_starts(api, 24))
    begin, end = history[0][0], history[-1][0] + api.resolution
    server.on(api.history_path(begin, end), Reply(api.history_body(history)))
    forecast = daily_shape(api, forecast_starts(api, 24))
    horizon = forecast[-1][0] + api.resolution - NOW
    slipped = [(t, round(v * LB_PER_G, 3)) for t, v in forecast]
    issued = NOW - timedelta(minutes=5)
    server.on(api.forecast_path(horizon), Reply(api.forecast_body(slipped, issued)))
    provider = api.build(server.url, POLICY)
    await provider.history(api.zone, begin, end, NOW)
    assert max(v * api.factor for _, v in slipped) < 2000  # the global ceiling lets every value through
    with pytest.raises(ProviderDataError, match=r"implausible values for zone .*unit slip") as refused:
        await provider.forecast(api.zone, NOW, horizon)
    assert "lbs/MWh read as g/kWh is 2.20x" in str(refused.value)
    # The same forecast in the right unit is used.
    server.on(api.forecast_path(horizon), Reply(api.forecast_body(forecast, issued)))
    assert len((await provider.forecast(api.zone, NOW, horizon)).series) == len(forecast)
    await provider.aclose()
    # So is a much cleaner day after the same history (0.45x: a windy one): only a jump above the zone's range is
    # taken for a slip when no slot is shared.
    provider = api.build(server.url, POLICY)
    await provider.history(api.zone, begin, end, NOW)
    windy = [(t, round(v * 0.45, 3)) for t, v in forecast]
    server.on(api.forecast_path(horizon), Reply(api.forecast_body(windy, issued)))
    assert len((await provider.forecast(api.zone, NOW, horizon)).series) == len(forecast)
    await provider.aclose()


async def test_a_revised_forecast_that_jumps_by_the_unit_factor_on_shared_slots_is_refused(
    server: ScriptedServer,
) -> None:
    forecast = daily_shape(EM, forecast_starts(EM, 24))
    server.on(
        "/v3/carbon-intensity/forecast",
        Reply(EM.forecast_body(forecast, NOW - timedelta(minutes=5))),
        Reply(EM.forecast_body([(t, round(v / LB_PER_G, 3)) for t, v in forecast], NOW)),
    )
    provider = EM.build(server.url, POLICY)
    await provider.forecast("DE", NOW, 12 * HOUR)
    with pytest.raises(ProviderDataError, match=r"0\.45x what the same source gave for the same 24 slots"):
        await provider.forecast("DE", NOW, 12 * HOUR)  # a slip downward: caught on the slots both answers share
    await provider.aclose()


# -- time budget and negative cache -----------------------------------------------------------------------------------
@pytest.mark.parametrize("api", APIS, ids=str)
async def test_a_hanging_provider_gives_up_within_the_budget_and_is_not_asked_again(
    api: Api, server: ScriptedServer
) -> None:
    server.on_any(Reply({"late": True}, delay_seconds=4.0))
    policy = HttpPolicy(timeout_seconds=10.0, max_attempts=4, backoff_initial_seconds=0.05, budget_seconds=1.0)
    cached = CachedProvider(api.build(server.url, policy), negative_ttl_seconds=30.0)
    began = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match=r"1s budget"):
        await cached.forecast(api.zone, NOW, 6 * HOUR)
    took = time.monotonic() - began
    assert took < 2.0, f"gave up after {took:.2f}s, the budget is 1s"
    asked = data_requests(server)
    assert asked == 1  # one attempt used the whole budget; no retry was started without time left for it
    began = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match="remembered; not asking again for"):
        await cached.forecast(api.zone, NOW, 6 * HOUR)
    with pytest.raises(ProviderUnavailableError, match="remembered"):  # another window: the provider is down
        await cached.history(api.zone, NOW - 6 * HOUR, NOW, NOW)
    assert time.monotonic() - began < 0.5
    assert data_requests(server) == asked
    await cached.aclose()


async def test_the_call_budget_bounds_several_requests_and_the_negative_cache_expires(server: ScriptedServer) -> None:
    """A 10-day history is fetched in chunks; the CachedProvider's budget bounds them all together."""
    server.on("/v3/carbon-intensity/past-range", Reply({"zone": "DE", "data": []}, delay_seconds=0.4))
    clock = [100.0]
    policy = HttpPolicy(timeout_seconds=10.0, max_attempts=1, budget_seconds=30.0)
    cached = CachedProvider(EM.build(server.url, policy), budget_seconds=1.0, monotonic=lambda: clock[0])
    began = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match=r"no answer within the 1s budget of one call"):
        await cached.history("DE", NOW - timedelta(days=25), NOW - timedelta(days=2), NOW)
    assert time.monotonic() - began < 1.8
    asked = server.count()
    with pytest.raises(ProviderUnavailableError, match="remembered"):
        await cached.history("DE", NOW - timedelta(days=25), NOW - timedelta(days=2), NOW)
    assert server.count() == asked
    clock[0] += 31.0  # past the negative cache: asked again
    with pytest.raises(ProviderUnavailableError, match="budget"):
        await cached.history("DE", NOW - timedelta(days=25), NOW - timedelta(days=2), NOW)
    assert server.count() > asked
    asked = server.count()
    clock[0] += 31.0  # a second failure in a row is remembered twice as long (60 s)
    with pytest.raises(ProviderUnavailableError, match="remembered; not asking again for 29s"):
        await cached.history("DE", NOW - timedelta(days=25), NOW - timedelta(days=2), NOW)
    assert server.count() == asked
    await cached.aclose()


def test_defaults_are_a_15_second_budget_and_a_30_second_negative_cache() -> None:
    assert HttpPolicy().budget_seconds == 15.0
    cached = CachedProvider(GbCarbonIntensityProvider())
    assert (cached.budget_seconds, cached.negative_ttl_seconds, cached.negative_ttl_max_seconds) == (15.0, 30.0, 300.0)


# -- one request in flight --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("api", APIS, ids=str)
async def test_eight_concurrent_calls_send_one_request(api: Api, server: ScriptedServer) -> None:
    points = daily_shape(api, forecast_starts(api, 24))
    horizon = points[-1][0] + api.resolution - NOW
    path = api.forecast_path(horizon)
    server.on(path, Reply(api.forecast_body(points, NOW - timedelta(minutes=5)), delay_seconds=0.3))
    cached = CachedProvider(api.build(server.url, POLICY))
    results = await asyncio.gather(*(cached.forecast(api.zone, NOW, horizon) for _ in range(8)))
    assert server.count(path) == 1
    assert server.count() <= 2  # and WattTime's one login
    assert all(r.series.values.tolist() == results[0].series.values.tolist() for r in results)
    assert cached.misses == 1 and cached.shared == 7
    await cached.aclose()


@pytest.mark.parametrize("api", APIS, ids=str)
async def test_eight_concurrent_calls_to_a_failing_provider_send_one_request_and_its_retries(
    api: Api, server: ScriptedServer
) -> None:
    server.on_any(Reply({"error": "down"}, status=503, delay_seconds=0.1))
    cached = CachedProvider(api.build(server.url, POLICY))
    outcomes = await asyncio.gather(
        *(cached.forecast(api.zone, NOW, 6 * HOUR) for _ in range(8)), return_exceptions=True
    )
    assert all(isinstance(o, ProviderUnavailableError) for o in outcomes)
    assert data_requests(server) == POLICY.max_attempts  # not 8 x 3
    await cached.aclose()


# -- credentials ------------------------------------------------------------------------------------------------------
async def test_a_401_names_the_variable_or_the_secret_key_of_the_token(server: ScriptedServer, tmp_path: Path) -> None:
    server.on_any(Reply({"message": "unauthorized"}, status=401))
    provider = api_provider_from_env(
        "electricitymaps", {"ELECTRICITYMAPS_API_TOKEN": TOKEN}, base_url=server.url, policy=POLICY
    )
    with pytest.raises(ProviderAuthError, match="check the environment variable ELECTRICITYMAPS_API_TOKEN") as e:
        await provider.forecast("DE", NOW, HOUR)
    assert TOKEN not in str(e.value)
    await provider.aclose()
    key = tmp_path / "em-token"
    key.write_text(TOKEN + "\n")
    provider = api_provider_from_env(
        "electricitymaps", {"ELECTRICITYMAPS_API_TOKEN_FILE": str(key)}, base_url=server.url, policy=POLICY
    )
    with pytest.raises(ProviderAuthError) as e:
        await provider.current("DE", NOW)
    assert f"check ELECTRICITYMAPS_API_TOKEN, read from {key} (key em-token of the mounted provider Secret)" in str(
        e.value
    )
    assert TOKEN not in str(e.value)
    await provider.aclose()


async def test_a_refused_watttime_login_names_both_credentials(server: ScriptedServer) -> None:
    server.on("/login", Reply({"error": "bad"}, status=401))
    env = {"WATTTIME_USERNAME": "grid-user", "WATTTIME_PASSWORD": "pw-guards"}
    provider = api_provider_from_env("watttime", env, base_url=server.url, policy=POLICY)
    with pytest.raises(ProviderAuthError) as e:
        await provider.forecast("CAISO_NORTH", NOW, HOUR)
    message = str(e.value)
    assert "the environment variable WATTTIME_USERNAME and the environment variable WATTTIME_PASSWORD" in message
    assert "pw-guards" not in message
    await provider.aclose()


@pytest.mark.parametrize(("api", "hint"), [(SDK, "CARBON_AWARE_SDK_BASE_URL"), (GB, "GB_CARBON_INTENSITY_BASE_URL")])
async def test_a_401_from_a_keyless_provider_says_it_sends_no_key_and_names_the_url_variable(
    api: Api, hint: str, server: ScriptedServer
) -> None:
    server.on_any(Reply({"message": "unauthorized"}, status=401))
    provider = api.build(server.url, POLICY)
    with pytest.raises(ProviderAuthError, match=f"sends no credentials to {api.name}.*{hint}"):
        await provider.forecast(api.zone, NOW, HOUR)
    await provider.aclose()


# -- current() --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("api", APIS, ids=str)
async def test_current_flags_an_hour_old_slot_and_not_the_current_one(api: Api, server: ScriptedServer) -> None:
    old = daily_shape(api, [slot_of(NOW - HOUR, api.resolution) - api.resolution * i for i in (2, 1, 0)])
    old.sort()
    server.on(api.current_path, Reply(api.current_body(old)))
    provider = api.build(server.url, POLICY)
    result = await provider.current(api.zone, NOW)
    assert result.stale
    assert result.series.start == old[-1][0]
    assert "no value for the current slot" in result.notes[-1]
    assert "before now" in result.notes[-1]
    chain = await FallbackChain([provider]).current(api.zone, NOW)
    assert chain.stale and chain.answered_by == api.name
    fresh = daily_shape(api, [slot_of(NOW, api.resolution) - api.resolution * i for i in (2, 1, 0)])
    fresh.sort()
    server.on(api.current_path, Reply(api.current_body(fresh)))
    result = await provider.current(api.zone, NOW)
    await provider.aclose()
    assert not result.stale
    assert result.series.start == slot_of(NOW, api.resolution)


async def test_retry_warnings_go_through_logging_prefixed_with_the_provider(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    points = daily_shape(GB, forecast_starts(GB, 12))
    server.on(GB.forecast_path(HOUR), Reply({"error": "busy"}, status=502), Reply(GB.forecast_body(points, NOW)))
    provider = GB.build(server.url, POLICY)
    with caplog.at_level(logging.WARNING, logger="carbonshift.carbon"):
        await provider.forecast("GB", NOW, HOUR)
    await provider.aclose()
    (record,) = [r for r in caplog.records if r.name == "carbonshift.carbon"]
    assert record.getMessage().startswith("carbon provider gb-carbon-intensity: GET ")


async def test_a_remembered_failure_is_not_logged_again_on_every_call(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.on_any(Reply({"error": "down"}, status=503))
    chain = FallbackChain([CachedProvider(GB.build(server.url, POLICY))])
    with caplog.at_level(logging.DEBUG, logger="carbonshift.carbon"):
        for _ in range(5):
            assert (await chain.forecast("GB", NOW, 6 * HOUR)).no_data
    await chain.aclose()
    failed = [r for r in caplog.records if "failed for GB" in r.getMessage()]
    assert [r.levelno for r in failed] == [logging.WARNING] + [logging.DEBUG] * 4
    assert server.count() == POLICY.max_attempts
