"""A real Prometheus scrapes an endpoint the test serves, and PromQL returns the scraped value."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from carbonshift_dev.devcluster import PrometheusServer

pytestmark = pytest.mark.prometheus


@pytest.fixture
def metrics_endpoint() -> Iterator[tuple[str, Gauge]]:
    """A tiny /metrics endpoint on a free loopback port, serving one gauge with a zone label."""
    registry = CollectorRegistry()
    gauge = Gauge("carbonshift_test_grid_intensity_g_per_kwh", "test gauge", ["zone"], registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{server.server_port}", gauge
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_promql_returns_the_sample_scraped_from_the_test_endpoint(
    metrics_endpoint: tuple[str, Gauge], start_prometheus: Callable[[Sequence[str]], PrometheusServer]
) -> None:
    target, gauge = metrics_endpoint
    gauge.labels(zone="DE").set(388.5)
    gauge.labels(zone="FR").set(41.25)
    prometheus = start_prometheus([target])

    result = prometheus.wait_for_sample('carbonshift_test_grid_intensity_g_per_kwh{zone="DE"}')

    assert len(result) == 1
    assert result[0]["metric"]["instance"] == target
    assert result[0]["metric"]["job"] == "carbonshift"
    assert float(result[0]["value"][1]) == 388.5
    by_zone = prometheus.query("sum by (zone) (carbonshift_test_grid_intensity_g_per_kwh)")
    assert {r["metric"]["zone"]: float(r["value"][1]) for r in by_zone} == {"DE": 388.5, "FR": 41.25}
    assert [t["health"] for t in prometheus.target_health()] == ["up"]


def test_unreachable_target_is_reported_down(start_prometheus: Callable[[Sequence[str]], PrometheusServer]) -> None:
    from carbonshift_dev.devcluster.processes import free_loopback_port

    prometheus = start_prometheus([f"127.0.0.1:{free_loopback_port()}"])
    result = prometheus.wait_for_sample("up == 0")
    assert float(result[0]["value"][1]) == 0.0
