"""The chart's alert rules and dashboard queries, run by a real Prometheus against the operator's real metrics.

`promtool check rules` parses the PrometheusRule the chart renders. Then the metrics of carbonshift.metrics are
served over HTTP with known values (one budget exhausted, one nearly used, a zone without data, a zone on its
fallback, a job at risk...), a real Prometheus scrapes them and evaluates the rules, and every alert must fire for
exactly the series it is about; with no operator to scrape, OperatorDown fires. Every dashboard query (panels,
annotations, variables) must be accepted by Prometheus and return data.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import prometheus_client
import pytest
import yaml

from carbonshift import metrics
from carbonshift_dev.devcluster import PrometheusServer
from carbonshift_dev.devcluster.processes import free_loopback_port
from tests.chart.helm import metrics_service, one, render

pytestmark = pytest.mark.prometheus

NS = "alerts-test"
ALERT_KEYS = ("budgetExceeded", "budgetNearlyUsed", "providerDown", "providerDegraded", "deadlineAtRisk")
ALERT_KEYS += ("operatorDown", "reconcileErrors")
FAST = {
    "prometheusRule": {
        "enabled": True,
        "rateWindow": "30s",
        "for": dict.fromkeys(ALERT_KEYS, "0s"),
    }
}


def rule_file(values: dict[str, Any], directory: Path) -> tuple[Path, str]:
    """The rendered PrometheusRule's groups as a plain Prometheus rule file, and the OperatorDown job label."""
    docs = render(values)
    path = directory / "carbonshift-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": one(docs, "PrometheusRule")["spec"]["groups"]}))
    return path, metrics_service(docs)["metadata"]["name"]


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found on PATH: it ships with the Debian `prometheus` package (hack/install-tools.sh)"
    return found


@pytest.mark.parametrize("values", [{"prometheusRule": {"enabled": True}}, FAST], ids=["defaults", "fast"])
def test_promtool_accepts_the_rendered_rules(values: dict[str, Any], tmp_path: Path) -> None:
    path, _ = rule_file(values, tmp_path)
    done = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"SUCCESS: 8 rules found", done.stdout), done.stdout


# -- a live endpoint with the operator's metrics --------------------------------------------------------------------
@pytest.fixture(scope="module")
def metrics_endpoint() -> Iterator[str]:
    """carbonshift.metrics.REGISTRY over HTTP, holding one example of every metric (labels unique to this test)."""
    m = metrics
    m.BUDGET_EXCEEDED.labels(NS, "spent").set(1)
    m.BUDGET_USED_RATIO.labels(NS, "spent").set(1.2)
    m.BUDGET_EXCEEDED.labels(NS, "nearly").set(0)
    m.BUDGET_USED_RATIO.labels(NS, "nearly").set(0.95)
    m.BUDGET_EXCEEDED.labels(NS, "fine").set(0)
    m.BUDGET_USED_RATIO.labels(NS, "fine").set(0.2)
    m.DEADLINE_AT_RISK.labels(NS, "late").set(1)
    m.DEADLINE_AT_RISK.labels(NS, "on-time").set(0)
    m.GRID_INTENSITY.labels("ZONE-DARK", "none", "average")  # no value yet: stays out of the intensity panel
    m.GRID_INTENSITY.remove("ZONE-DARK", "none", "average")
    m.GRID_INTENSITY.labels("ZONE-OK", "electricitymaps", "average").set(312.5)
    m.GRID_INTENSITY.labels("ZONE-FALLBACK", "trace:DE_2020", "average").set(401.0)
    m.JOBS.labels(NS, "Running").set(2)
    m.JOBS.labels(NS, "Waiting").set(3)
    m.JOB_ENERGY.labels(NS, "late", "estimate").set(12.5)
    m.JOB_EMISSIONS.labels(NS, "late").set(4100.0)
    m.JOB_AVOIDED.labels(NS, "late").set(900.0)
    m.JOB_AVOIDED_PART.labels(NS, "late", "temporal").set(300.0)
    m.JOB_AVOIDED_PART.labels(NS, "late", "spatial").set(600.0)
    m.JOB_UNPRICED.labels(NS, "late").set(0.5)
    m.JOB_EMBODIED.labels(NS, "late").set(40.0)
    m.JOB_SCI.labels(NS, "late", "tokens").set(12.0)
    m.JOB_PLANNED_START.labels(NS, "late").set(time.time() + 3600)
    # Counters start at zero; the test increments them once Prometheus has seen them, so increase() sees a rise.
    m.PROVIDER_ERRORS.labels("electricitymaps", "ZONE-FALLBACK").inc(0)
    m.PROVIDER_FALLBACKS.labels("ZONE-DARK", "none").inc(0)
    m.PROVIDER_FALLBACKS.labels("ZONE-FALLBACK", "trace:DE_2020").inc(0)
    m.PLANNER_SECONDS.observe(0.003)
    m.RECONCILE_SECONDS.labels("ok").observe(0.02)
    m.RECONCILE_SECONDS.labels("error").observe(0)
    m.TRANSITIONS.labels("resume").inc(0)
    m.TRANSITIONS.labels("suspend").inc(0)
    m.PROMETHEUS_ERRORS.inc(0)
    port = free_loopback_port()
    server, thread = prometheus_client.start_http_server(port, addr="127.0.0.1", registry=metrics.REGISTRY)
    yield f"127.0.0.1:{port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    budgets = ("spent", "nearly", "fine")
    for gauge, labels in (
        (m.BUDGET_EXCEEDED, budgets),
        (m.BUDGET_USED_RATIO, budgets),
        (m.DEADLINE_AT_RISK, ("late", "on-time")),
    ):
        for name in labels:
            gauge.remove(NS, name)


def bump_counters() -> None:
    metrics.PROVIDER_ERRORS.labels("electricitymaps", "ZONE-FALLBACK").inc()
    metrics.PROVIDER_FALLBACKS.labels("ZONE-DARK", "none").inc()
    metrics.PROVIDER_FALLBACKS.labels("ZONE-FALLBACK", "trace:DE_2020").inc()
    metrics.RECONCILE_SECONDS.labels("error").observe(0)
    metrics.RECONCILE_SECONDS.labels("ok").observe(0.04)
    metrics.PLANNER_SECONDS.observe(0.002)
    metrics.TRANSITIONS.labels("resume").inc()
    metrics.TRANSITIONS.labels("suspend").inc()
    metrics.PROMETHEUS_ERRORS.inc()


@pytest.fixture(scope="module")
def prometheus(metrics_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A real Prometheus scraping the endpoint every second, under the job name the alert rules expect."""
    path, job = rule_file(FAST, tmp_path_factory.mktemp("rules"))
    with PrometheusServer.start([metrics_endpoint], job_name=job, rule_files=[path]) as server:
        server.wait_for_sample('carbonshift_budget_exceeded{budget="spent"}')
        # Keep the counters rising while the tests run, so rates over the 30 s window stay above zero.
        stop = threading.Event()

        def bump_every_second() -> None:
            while not stop.wait(1.0):
                bump_counters()

        bumper = threading.Thread(target=bump_every_second)
        bumper.start()
        try:
            server.wait_for_sample('increase(carbonshift_transitions_total{action="resume"}[2m]) > 0')
            yield server
        finally:
            stop.set()
            bumper.join(timeout=5)


def firing(server: PrometheusServer) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    alerts = httpx.get(f"{server.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    keep = ("namespace", "budget", "name", "zone", "provider")
    return {
        (a["labels"]["alertname"], tuple((k, a["labels"][k]) for k in keep if k in a["labels"]))
        for a in alerts
        if a["state"] == "firing"
    }


def wait_firing(server: PrometheusServer, expected: set[Any], timeout: float = 30.0) -> set[Any]:
    deadline = time.monotonic() + timeout
    while True:
        now = firing(server)
        if expected <= now or time.monotonic() > deadline:
            return now
        time.sleep(0.5)


def test_every_alert_fires_for_exactly_the_series_it_is_about(prometheus: PrometheusServer) -> None:
    expected = {
        ("CarbonshiftBudgetExceeded", (("namespace", NS), ("budget", "spent"))),
        ("CarbonshiftBudgetNearlyUsed", (("namespace", NS), ("budget", "nearly"))),
        ("CarbonshiftDeadlineAtRisk", (("namespace", NS), ("name", "late"))),
        ("CarbonshiftProviderDown", (("zone", "ZONE-DARK"),)),
        ("CarbonshiftProviderDegraded", (("zone", "ZONE-FALLBACK"), ("provider", "trace:DE_2020"))),
        ("CarbonshiftProviderErrors", (("zone", "ZONE-FALLBACK"), ("provider", "electricitymaps"))),
        ("CarbonshiftReconcileErrors", ()),
    }
    now = wait_firing(prometheus, expected)
    ours = {a for a in now if dict(a[1]).get("namespace", NS) == NS}
    assert ours == expected, f"missing {expected - ours}, unexpected {ours - expected}"
    rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"][0]["rules"]
    assert {r["name"]: r["health"] for r in rules} == {r["name"]: "ok" for r in rules}


def test_operator_down_fires_when_no_replica_can_be_scraped(tmp_path: Path) -> None:
    path, job = rule_file(FAST, tmp_path)
    dead = f"127.0.0.1:{free_loopback_port()}"  # nothing listens here
    with PrometheusServer.start([dead], job_name=job, rule_files=[path]) as server:
        now = wait_firing(server, {("CarbonshiftOperatorDown", ())})
    assert ("CarbonshiftOperatorDown", ()) in now


# -- the dashboard ---------------------------------------------------------------------------------------------------
def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads(one(render(), "ConfigMap")["data"]["carbonshift.json"])
    return board


def as_promql(expr: str) -> str:
    """A Grafana query as Prometheus gets it, with every template variable set to 'All'."""
    expr = expr.replace("$__rate_interval", "30s")
    return re.sub(r"\$(zone|namespace)\b", ".*", expr)


def dashboard_queries() -> list[tuple[str, str]]:
    board = dashboard()
    found = [(p["title"], t["expr"]) for p in board["panels"] for t in p["targets"]]
    found += [(f"annotation {a['name']}", a["expr"]) for a in board["annotations"]["list"]]
    return found


@pytest.mark.parametrize(("title", "expr"), dashboard_queries(), ids=[t for t, _ in dashboard_queries()])
def test_dashboard_query_runs_and_returns_data(prometheus: PrometheusServer, title: str, expr: str) -> None:
    leftover = re.findall(r"\$\w+", as_promql(expr))
    assert not leftover, f"{title}: unknown Grafana variables {leftover}"
    body = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": as_promql(expr)}, timeout=10).json()
    assert body["status"] == "success", f"{title}: {body.get('error')}"
    assert body["data"]["result"], f"{title}: {expr} returned nothing"


def test_dashboard_variables_list_the_zones_and_namespaces_seen(prometheus: PrometheusServer) -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    for name, expected in (("zone", "ZONE-OK"), ("namespace", NS)):
        match = re.fullmatch(r"label_values\((\w+), (\w+)\)", variables[name]["query"]["query"])
        assert match, variables[name]
        response = httpx.get(
            f"{prometheus.url}/api/v1/label/{match[2]}/values", params={"match[]": match[1]}, timeout=10
        ).json()
        assert response["status"] == "success"
        assert expected in response["data"]
