"""The zones' recorded forecasts kept across restarts, against the real API server, as the operator's ServiceAccount
bound to exactly `carbonshift.api.rbac`'s rules (handlers/forecast_store.py).

A store writes a zone's record into a ConfigMap of the operator's namespace (created, then replaced), a new store (a
restarted operator) reads the same skill back, and outside its namespace the operator may not write at all, which
the store logs and survives.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from carbonshift.adapters.kube import Kube
from carbonshift.data import load_bundled_trace
from carbonshift.domain.forecast_trust import ForecastRecord
from carbonshift.domain.forecasting import PersistenceForecast
from carbonshift.handlers.forecast_store import KEY, ForecastStore, config_map_name
from carbonshift_dev.devcluster.operator_process import OPERATOR_NAMESPACE, operator_kubeconfig
from carbonshift_dev.devcluster.testing import api_client_from_kubeconfig
from tests.unit.test_forecast_skill import fed

HOUR = timedelta(hours=1)
ZONE = "GB-integration"


@pytest.fixture
def operator_api(api_client: client.ApiClient, kubeconfig: Path, tmp_path: Path) -> Iterator[client.ApiClient]:
    api = api_client_from_kubeconfig(operator_kubeconfig(api_client, kubeconfig, tmp_path / "operator.kubeconfig"))
    yield api
    api.close()  # type: ignore[no-untyped-call]
    try:
        client.CoreV1Api(api_client).delete_namespaced_config_map(config_map_name(ZONE), OPERATOR_NAMESPACE)
    except ApiException as exc:
        if exc.status != 404:
            raise


async def test_a_restarted_operator_reads_back_what_it_recorded(
    operator_api: client.ApiClient, api_client: client.ApiClient
) -> None:
    actual = load_bundled_trace("GB_2023")
    model = PersistenceForecast()
    begin = actual.start + timedelta(days=40)
    now = begin + timedelta(days=9, hours=5)
    record = fed(actual, begin, now, lambda at: model.forecast(actual, at, 72 * HOUR))
    shape = (3 * HOUR, 12 * HOUR, True)
    assert record.skill(now, *shape) is not None

    store = ForecastStore(Kube("local", operator_api), OPERATOR_NAMESPACE)
    memory = {ZONE: record}
    await store.save(ZONE, record)  # created
    later = now + timedelta(hours=6)
    record.add_forecast(model.forecast(actual, later, 72 * HOUR), later)
    await store.save(ZONE, record)  # replaced
    found = client.CoreV1Api(api_client).read_namespaced_config_map(config_map_name(ZONE), OPERATOR_NAMESPACE)
    assert found.metadata.labels["carbonshift.io/forecast-record"] == "true"
    assert json.loads(found.data[KEY]) == json.loads(json.dumps(record.to_wire()))  # (the later issue is in it)
    assert memory[ZONE] is record

    restarted = ForecastStore(Kube("local", operator_api), OPERATOR_NAMESPACE)
    back = await restarted.record({}, ZONE, later)
    assert back.skill(later, *shape) == pytest.approx(record.skill(later, *shape), abs=1e-4)
    assert len(back.to_wire()["issued"]) == len(record.to_wire()["issued"])


async def test_outside_its_namespace_the_operator_may_not_write_and_the_store_survives_it(
    operator_api: client.ApiClient, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = ForecastStore(Kube("local", operator_api, attempts=1), namespace)
    record = ForecastRecord()
    record.revision = 1
    with caplog.at_level(logging.WARNING):
        await store.save(ZONE, record)
        back = await store.record({}, ZONE, load_bundled_trace("GB_2023").start)
    assert "HTTP 403" in caplog.text  # refused by RBAC (the Role is in the operator's namespace only)
    assert back.revision == 0  # and a fresh record to go on with
