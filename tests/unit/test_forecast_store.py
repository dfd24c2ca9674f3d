"""Each zone's recorded forecasts kept across restarts (handlers/forecast_store.py, ForecastRecord.to_wire).

The wire form round-trips what do no harm reads from a record (the shown skill, the measured error); the store
reads a record back once per zone after a start, writes it only when it recorded a forecast, and never lets a
damaged ConfigMap or a failed write stop a reconcile. The same store against the real API server, under the
operator's own RBAC: tests/integration/test_forecast_store.py.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from kubernetes.client.exceptions import ApiException

from carbonshift.data import load_bundled_trace
from carbonshift.domain.forecast_trust import ForecastRecord
from carbonshift.domain.forecasting import PersistenceForecast
from carbonshift.domain.series import IntensitySeries
from carbonshift.handlers.forecast_store import KEY, ForecastStore, config_map_name
from tests.unit.test_forecast_skill import fed

HOUR = timedelta(hours=1)
DNS_1123 = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


@pytest.fixture(scope="module")
def gb() -> IntensitySeries:
    return load_bundled_trace("GB_2023")


def persistence_record(actual: IntensitySeries, days: int = 10) -> tuple[ForecastRecord, datetime]:
    model = PersistenceForecast()
    begin = actual.start + timedelta(days=40)
    end = begin + timedelta(days=days, hours=5, minutes=10)
    return fed(actual, begin, end, lambda now: model.forecast(actual, now, 72 * HOUR)), end


SHAPES = [
    (3 * HOUR, 12 * HOUR, True),
    (3 * HOUR, 12 * HOUR, False),
    (8 * HOUR, 30 * HOUR, True),
    (HOUR, 48 * HOUR, False),
]


def test_a_record_read_back_from_its_wire_form_shows_the_same_skill_and_error(gb: IntensitySeries) -> None:
    record, now = persistence_record(gb)
    text = json.dumps(record.to_wire(), separators=(",", ":"), allow_nan=False)
    assert len(text) < 200_000  # a ConfigMap holds 1 MiB; 41 issues of 72 h on half-hours and ~11 days of values
    back = ForecastRecord.from_wire(json.loads(text), now)
    skills = [(record.skill(now, *shape), back.skill(now, *shape)) for shape in SHAPES]
    assert all(a is not None for a, _ in skills), skills  # (ten days recorded: every shape is scored)
    for a, b in skills:
        assert b == pytest.approx(a, abs=1e-4)  # (intensities kept to 0.001 g/kWh)
    grid = PersistenceForecast().forecast(gb, now, 24 * HOUR)
    before, after = record.errors(now, grid), back.errors(now, grid)
    assert before is not None and after is not None
    np.testing.assert_allclose(after, before, atol=2e-3, equal_nan=True)
    # Recording goes on from where it stopped: the next issue is taken, not one already recorded.
    later = now + timedelta(hours=6)
    back.add_forecast(PersistenceForecast().forecast(gb, later, 72 * HOUR), later)
    assert back.revision == 1
    soon = later + timedelta(minutes=30)
    back.add_forecast(PersistenceForecast().forecast(gb, soon, 72 * HOUR), soon)
    assert back.revision == 1  # (the same 6-hour issue and UTC day: nothing new)


def test_a_record_read_back_much_later_keeps_only_what_is_still_in_its_week(gb: IntensitySeries) -> None:
    record, now = persistence_record(gb)
    stale = ForecastRecord.from_wire(record.to_wire(), now + timedelta(days=30))
    assert stale.to_wire()["issued"] == [] and stale.to_wire()["dayAhead"] == {"t": [], "v": []}
    assert stale.skill(now + timedelta(days=30), *SHAPES[0]) is None


@pytest.mark.parametrize(
    "damage",
    [
        {"version": 2},
        {"version": 1, "days": []},
        {"version": 1, "days": [], "dayAhead": {"t": [1], "v": []}, "actuals": {"t": [], "v": []}, "issued": []},
        {"version": 1, "days": ["yesterday"], "dayAhead": {"t": [], "v": []}, "actuals": {"t": [], "v": []},
         "issued": []},
        {"version": 1, "days": [], "dayAhead": {"t": [], "v": []}, "actuals": {"t": [], "v": []},
         "issued": [{"at": 0, "start": 0, "step": 0, "values": []}]},
        [],
    ],
)  # fmt: skip
def test_wire_data_that_cannot_be_read_is_refused_not_half_trusted(damage: Any) -> None:
    with pytest.raises(ValueError, match="forecast record"):
        ForecastRecord.from_wire(damage, datetime.fromtimestamp(0).astimezone())


def test_config_map_names_are_valid_and_distinct_per_zone() -> None:
    names = [config_map_name(z) for z in ("DE", "US-CAL-CISO", "CAISO_NORTH", "caiso-north", "GB" * 60, "ÖÄ")]
    assert len(set(names)) == len(names)
    for name in names:
        assert len(name) <= 63 and name.startswith("carbonshift-forecasts-")
        assert __import__("re").match(DNS_1123, name), name


class FakeKube:
    """A ConfigMap store in memory, with the Kube adapter's two calls."""

    def __init__(self) -> None:
        self.maps: dict[tuple[str, str], dict[str, str]] = {}
        self.writes = 0
        self.fail_writes: ApiException | None = None

    async def read_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.maps.get((namespace, name))

    async def write_config_map(self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str]) -> None:
        if self.fail_writes is not None:
            raise self.fail_writes
        assert labels["carbonshift.io/forecast-record"] == "true"
        self.writes += 1
        self.maps[(namespace, name)] = dict(data)


async def test_the_store_writes_on_a_recorded_forecast_and_a_new_process_reads_it_back(gb: IntensitySeries) -> None:
    kube = FakeKube()
    store = ForecastStore(kube, "carbonshift-system")  # type: ignore[arg-type]
    records: dict[str, ForecastRecord] = {}
    record, now = persistence_record(gb)
    records["GB"] = record
    await store.save("GB", record)
    assert kube.writes == 1
    await store.save("GB", record)  # nothing recorded since: no write
    assert kube.writes == 1
    # A restart: a new process, an empty memory, the same ConfigMap.
    fresh = ForecastStore(kube, "carbonshift-system")  # type: ignore[arg-type]
    memory: dict[str, ForecastRecord] = {}
    back = await fresh.record(memory, "GB", now)
    assert memory["GB"] is back
    assert back.skill(now, *SHAPES[2]) == pytest.approx(record.skill(now, *SHAPES[2]), abs=1e-4)
    assert await fresh.record(memory, "GB", now) is back  # (read once; then the one in memory)
    await fresh.save("GB", back)  # as read: nothing to write
    assert kube.writes == 1
    later = now + timedelta(hours=6)
    back.add_forecast(PersistenceForecast().forecast(gb, later, 72 * HOUR), later)
    await fresh.save("GB", back)
    assert kube.writes == 2
    # Another zone has no ConfigMap yet: a new record.
    assert (await fresh.record(memory, "DE", now)).skill(now, *SHAPES[0]) is None


async def test_a_damaged_config_map_or_a_refused_write_never_stops_a_reconcile(
    gb: IntensitySeries, caplog: pytest.LogCaptureFixture
) -> None:
    kube = FakeKube()
    kube.maps[("ns", config_map_name("GB"))] = {KEY: "{not json"}
    store = ForecastStore(kube, "ns")  # type: ignore[arg-type]
    memory: dict[str, ForecastRecord] = {}
    with caplog.at_level(logging.WARNING):
        record = await store.record(memory, "GB", gb.start)
    assert record.revision == 0 and record.to_wire()["issued"] == []
    assert "cannot be read" in caplog.text
    caplog.clear()
    kube.fail_writes = ApiException(status=403, reason="Forbidden")
    filled, _ = persistence_record(gb, days=2)
    with caplog.at_level(logging.DEBUG):
        await store.save("GB", filled)
        filled.revision += 1  # (as a newly recorded forecast would)
        await store.save("GB", filled)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 403" in warnings[0].getMessage()  # once, then at debug level
    assert any(r.levelno == logging.DEBUG and "HTTP 403" in r.getMessage() for r in caplog.records)


async def test_a_record_too_large_for_a_config_map_is_kept_with_its_newest_issues(
    gb: IntensitySeries, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A ConfigMap holds 1 MiB; three weeks of 5-minute forecasts come near it. Beyond `MAX_BYTES` the store writes
    the newest issued forecasts that fit (said once in the log), and a restart reads them back and backtests on
    them. Here the limit is lowered so that a 10-day record of 30-minute forecasts exceeds it."""
    import carbonshift.handlers.forecast_store as forecast_store

    record, now = persistence_record(gb)
    whole = json.dumps(record.to_wire(), separators=(",", ":"))
    monkeypatch.setattr(forecast_store, "MAX_BYTES", len(whole) // 2)
    kube = FakeKube()
    store = ForecastStore(kube, "ns")  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO):
        await store.save("GB", record)
        record.revision += 1
        await store.save("GB", record)
    written = kube.maps[("ns", config_map_name("GB"))][KEY]
    assert len(written.encode()) <= len(whole) // 2
    issued = [item["at"] for item in json.loads(written)["issued"]]
    every = [item["at"] for item in record.to_wire()["issued"]]
    assert 0 < len(issued) < len(every) and issued == every[-len(issued) :]  # the newest ones, in order
    assert sum("keeping the newest" in r.getMessage() for r in caplog.records) == 1  # said once
    back = await ForecastStore(kube, "ns").record({}, "GB", now)  # type: ignore[arg-type]
    assert back.skill(now, *SHAPES[0]) is not None
