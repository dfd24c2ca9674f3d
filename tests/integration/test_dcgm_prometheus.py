"""The dcgm-exporter stand-in scraped by a real Prometheus, read by adapters/prometheus.py, folded by the accounting.

Ground truth is the stand-in's own record of the energy its GPUs drew while a pod held them; the reader sees only
what Prometheus scraped (every 0.5 s here). The replay runs at 5x through the measured H100 trace, aligned so that
the pod holds the GPU through the trace's own training, checkpoint-on-SIGTERM, suspension and resume phases.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from carbonshift.adapters.carbon.electricitymaps import ElectricityMapsProvider
from carbonshift.adapters.carbon.secrets import Secret
from carbonshift.adapters.prometheus import EnergyMeter, MetricsUnavailableError, PrometheusEnergyReader
from carbonshift.domain.accounting import format_receipt, receipt_from_status
from carbonshift.domain.series import IntensitySeries
from carbonshift.handlers.energy import update_energy
from carbonshift_dev.devcluster import PrometheusServer
from carbonshift_dev.devcluster.dcgm import DcgmStandIn, HostnameLabel, PodLabels
from tests.providers.scripted_server import Reply, ScriptedServer

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]
SCRAPE_SECONDS = 0.5
NS, JOB = "ml", "train"
POD_1, POD_2 = "train-ab1cd", "train-ef2gh"
SUBMITTED = datetime(2026, 1, 1, tzinfo=UTC)


def caj_body(status: dict[str, Any] | None = None, name: str = JOB, gpus: int = 1) -> dict[str, Any]:
    container = {"name": "train", "image": "x", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
    return {
        "metadata": {"namespace": NS, "name": name, "uid": "u-1"},
        "spec": {"template": {"spec": {"template": {"spec": {"containers": [container]}}}}, "power": {}},
        "status": {"submittedAt": "2026-01-01T00:00:00Z", **(status or {})},
    }


def flat_intensity(g_per_kwh: float = 300.0) -> IntensitySeries:
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    return IntensitySeries("DE", start, timedelta(hours=1), np.full(4, g_per_kwh))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "prometheus"


def start_prometheus(target: str, workdir: Path, target_labels: dict[str, str] | None = None) -> PrometheusServer:
    """A real Prometheus scraping `target` every 0.5 s (PrometheusServer writes whole seconds only, so the config
    is rewritten and reloaded), optionally with labels on the target."""
    prom = PrometheusServer.start([target], workdir=workdir)
    config_path = workdir / "prometheus.yml"
    config = yaml.safe_load(config_path.read_text())
    interval = f"{int(SCRAPE_SECONDS * 1000)}ms"
    config["global"].update(scrape_interval=interval, scrape_timeout=interval)
    if target_labels:
        config["scrape_configs"][0]["static_configs"][0]["labels"] = target_labels
    config_path.write_text(yaml.safe_dump(config))
    response = httpx.post(f"{prom.url}/-/reload", timeout=10)
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 30  # target discovery applies a reload within about 5 s
    while not any(t["scrapeInterval"] == interval and t["health"] == "up" for t in prom.target_health()):
        assert time.monotonic() < deadline, f"Prometheus did not pick up the new config: {prom.target_health()}"
        time.sleep(0.2)
    return prom


@pytest.fixture
def servers() -> Iterator[list[Any]]:
    running: list[Any] = []
    yield running
    for server in reversed(running):
        server.stop()


def sleep_until(wall: float) -> None:
    time.sleep(max(wall - time.time(), 0.0))


class Driver:
    """Ticks update_energy against a meter, as the CarbonAwareJob reconcile would, keeping the status."""

    def __init__(self, meter: EnergyMeter, name: str = JOB, gpus: int = 1) -> None:
        self.meter = meter
        self.name = name
        self.gpus = gpus
        self.status: dict[str, Any] = {}
        self.conditions: list[tuple[str, bool, str, str]] = []
        self.intensity: IntensitySeries | None = flat_intensity()
        self.submitted = "2026-01-01T00:00:00Z"

    async def tick(self, running: bool, pods: frozenset[str] | set[str] = frozenset()) -> Any:
        update = await update_energy(
            self.meter,
            caj_body({"submittedAt": self.submitted, **self.status}, self.name, self.gpus),
            running=running,
            now=datetime.now(UTC),
            intensity=self.intensity,
            pue=1.2,
            pods=pods,
        )
        self.status.update(update.status)
        self.conditions.append(update.condition)
        return update

    async def close(self) -> None:
        await self.meter.aclose()


def meter_for(url: str, **options: Any) -> EnergyMeter:
    reader = PrometheusEnergyReader(url, attempts=2, backoff_seconds=0.1, **options)
    return EnergyMeter(reader, refresh_seconds=0.0, scrape_seconds=SCRAPE_SECONDS)


async def settle(driver: Driver, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        update = await driver.tick(False)
        if update.settled:
            return
        assert time.monotonic() < deadline, f"energy never settled: {driver.status.get('energy')}"
        await asyncio.sleep(SCRAPE_SECONDS)


@pytest.mark.parametrize(
    ("hostname_label", "pod_labels"), [("Hostname", "plain"), ("hostname", "exported")], ids=["release", "main"]
)
async def test_energy_across_suspend_and_resume_matches_ground_truth(
    workdir: Path, servers: list[Any], hostname_label: HostnameLabel, pod_labels: PodLabels
) -> None:
    dcgm = DcgmStandIn({"gpu-node-a": 2}, speed=5.0, start_offset_seconds=-20.0, hostname_label=hostname_label,
                       pod_labels=pod_labels).start()  # fmt: skip
    servers.append(dcgm)
    prom = start_prometheus(dcgm.target, workdir)
    servers.append(prom)
    trace = dcgm.trace
    meter = meter_for(prom.url)
    driver = Driver(meter)

    sleep_until(dcgm.wall_time(trace.phase_start("train")))
    await driver.tick(True, {POD_1})
    dcgm.assign("gpu-node-a", 0, NS, POD_1)
    sleep_until(dcgm.wall_time(trace.phase_start("checkpoint_on_sigterm")))
    drawn_at_decision = dcgm.energy_mj(NS, POD_1)
    await driver.tick(False)  # the suspension decision: SIGTERM, the job checkpoints
    sleep_until(dcgm.wall_time(trace.phase_start("suspended")))
    dcgm.unassign("gpu-node-a", 0)  # the pod is gone
    tail_truth_j = (dcgm.energy_mj(NS, POD_1) - drawn_at_decision) / 1000
    sleep_until(dcgm.wall_time(trace.phase_start("resume")))
    await driver.tick(True, {POD_2})
    dcgm.assign("gpu-node-a", 0, NS, POD_2)
    for _ in range(3):  # ticks while it runs
        await asyncio.sleep(3)
        await driver.tick(True, {POD_2})
    sleep_until(dcgm.wall_time(trace.phase_start("checkpoint_on_sigterm_2")))
    await driver.tick(False)
    sleep_until(dcgm.wall_time(trace.phase_start("power_cap_sweep")))
    dcgm.unassign("gpu-node-a", 0)
    await settle(driver)
    await driver.close()

    truth_kwh = (dcgm.energy_mj(NS, POD_1) + dcgm.energy_mj(NS, POD_2)) / 3.6e9
    measured = driver.status["energyKWh"]
    assert driver.status["energySource"] == "dcgm"
    assert measured == pytest.approx(truth_kwh, rel=0.01)
    # Nothing of the other GPU (never assigned) was counted: the job's GPU draws ~683 W while training.
    assert measured < truth_kwh * 1.01
    account = driver.status["energy"]
    chunks = account["chunks"]
    assert len(chunks) == 2
    # The suspend tail: the energy from the suspension decision (SIGTERM, checkpoint) until the pod went away.
    # Each edge is known to one scrape interval: at the decision the power falls from ~683 W, after the pod is gone
    # the GPU draws ~70 W until the next scrape shows it unassigned.
    assert abs(chunks[0]["tailKWh"] * 3.6e6 - tail_truth_j) <= SCRAPE_SECONDS * (683 + 70)
    # The resumed run starts with a measured restart ramp (the trace: 12 s from process start to the first step).
    assert chunks[1]["rampKWh"] > 0
    assert 6.0 / 5.0 < chunks[1]["rampSeconds"] < 20.0 / 5.0
    assert chunks[0]["rampKWh"] == 0  # the first start is not an overhead: running at once has it too
    # Emissions: flat 300 g/kWh at PUE 1.2; the baseline leaves the overheads out.
    assert driver.status["emissionsGrams"] == pytest.approx(measured * 1.2 * 300, rel=1e-3, abs=1e-3)
    overhead = sum(c["rampKWh"] + c["tailKWh"] for c in chunks)
    assert driver.status["baselineEmissionsGrams"] == pytest.approx((measured - overhead) * 1.2 * 300, rel=1e-3)
    assert driver.status["avoidedEmissionsGrams"] < 0  # same intensity throughout: suspending only cost energy


async def test_each_workload_is_charged_its_own_pods_only_never_by_name_pattern(
    workdir: Path, servers: list[Any]
) -> None:
    """CarbonAwareJobs `train` (a 2-GPU pod on node a and a 1-GPU pod on node b) and `train-1` (one pod whose name
    starts with "train-") and a plain pod `train-debug` and a CronJob's pod `train-29123456-x9z8y` all train at
    once. Each receipt matches its own pods' counter energy within 1%; the plain pod and the CronJob pod are
    charged to nobody, and each GPU of the multi-GPU, multi-node workload is charged once."""
    dcgm = DcgmStandIn({"gpu-node-a": 4, "gpu-node-b": 4}, speed=5.0, start_offset_seconds=25.0).start()
    servers.append(dcgm)
    prom = start_prometheus(dcgm.target, workdir)
    servers.append(prom)
    meter = meter_for(prom.url)
    train, train_1 = Driver(meter, name="train", gpus=3), Driver(meter, name="train-1")
    own = {"train": {"train-ab1cd", "train-ef2gh"}, "train-1": {"train-1-x7k2p"}}
    strangers = ["train-debug", "train-29123456-x9z8y"]
    await train.tick(True, own["train"])
    await train_1.tick(True, own["train-1"])
    dcgm.assign("gpu-node-a", 0, NS, "train-ab1cd")  # one pod, two GPUs
    dcgm.assign("gpu-node-a", 1, NS, "train-ab1cd")
    dcgm.assign("gpu-node-b", 0, NS, "train-ef2gh")  # the same workload on a second node
    dcgm.assign("gpu-node-a", 2, NS, "train-1-x7k2p")
    dcgm.assign("gpu-node-b", 1, NS, "train-debug")
    dcgm.assign("gpu-node-b", 2, NS, "train-29123456-x9z8y")
    # ~25 s of training: each GPU's edges (idle power until the scrape that shows the change, at most ~70 W x
    # 0.5 s at either end) stay well under 1% of the ~17 kJ each GPU draws.
    for _ in range(10):
        await asyncio.sleep(2.5)
        await train.tick(True, own["train"])
        await train_1.tick(True, own["train-1"])
    await train.tick(False)
    await train_1.tick(False)
    for node, index in [("gpu-node-a", 0), ("gpu-node-a", 1), ("gpu-node-b", 0), ("gpu-node-a", 2)]:
        dcgm.unassign(node, index)
    await settle(train)
    await settle(train_1)
    await meter.aclose()
    for driver in (train, train_1):
        truth = sum(dcgm.energy_mj(NS, pod) for pod in own[driver.name]) / 3.6e9
        assert driver.status["energyKWh"] == pytest.approx(truth, rel=0.01), driver.name
        charged = {m.get("pod") for m in driver.status["energy"]["watermarks"]} - {None}
        assert charged <= {f"{NS}/{pod}" for pod in own[driver.name]}
        assert {p["name"] for p in driver.status["energy"]["pods"]} == own[driver.name]
    # Three GPUs at ~683 W for train: a GPU charged twice would put it near 4/3 of the truth, not within 1%.
    assert len({m["gpu"] for m in train.status["energy"]["watermarks"]}) == 3
    stranger_kwh = sum(dcgm.energy_mj(NS, pod) for pod in strangers) / 3.6e9
    assert stranger_kwh > 0.5 * train_1.status["energyKWh"]  # they did draw energy, just nobody's to pay


def em_history(hours: dict[datetime, float]) -> dict[str, Any]:
    """An Electricity Maps v3 /carbon-intensity/history answer with these hours and values."""
    items = [
        {
            "carbonIntensity": g_per_kwh,
            "datetime": hour.strftime("%Y-%m-%dT%H:00:00.000Z"),
            "updatedAt": hour.strftime("%Y-%m-%dT%H:05:00.000Z"),
            "createdAt": hour.strftime("%Y-%m-%dT%H:05:00.000Z"),
            "emissionFactorType": "lifecycle",
            "isEstimated": False,
            "estimationMethod": None,
        }
        for hour, g_per_kwh in hours.items()
    ]
    return {"zone": "DE", "history": items}


async def test_energy_with_no_intensity_yet_is_unpriced_then_repriced_when_the_provider_publishes(
    workdir: Path, servers: list[Any]
) -> None:
    """A real local HTTP server speaking Electricity Maps' history, which publishes the current hour late. The job's
    energy is shown unpriced (no emissions, nothing avoided, though its baseline hour is known), then priced once
    the hour appears in the history."""
    server = ScriptedServer()
    servers.append(_Closer(server.close))
    dcgm = DcgmStandIn({"gpu-node-a": 1}, speed=5.0, start_offset_seconds=25.0).start()
    servers.append(dcgm)
    prom = start_prometheus(dcgm.target, workdir)
    servers.append(prom)
    provider = ElectricityMapsProvider(
        Secret("t0ken-for-tests", "ELECTRICITYMAPS_API_TOKEN"), base_url=f"{server.url}/v3"
    )
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    published = {hour - timedelta(hours=h): 400.0 for h in (3, 2, 1)}
    server.on("/v3/carbon-intensity/history", Reply(em_history(published)))
    driver = Driver(meter_for(prom.url))
    driver.submitted = (hour - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")  # its baseline hour is known

    async def tick(running: bool) -> Any:
        now = datetime.now(UTC)
        driver.intensity = (
            await provider.history("DE", hour - timedelta(hours=3), now + timedelta(hours=1), now)
        ).series
        return await driver.tick(running, {POD_1})

    await tick(True)
    dcgm.assign("gpu-node-a", 0, NS, POD_1)
    for _ in range(4):
        await asyncio.sleep(1.0)
        await tick(True)
    await tick(False)
    dcgm.unassign("gpu-node-a", 0)
    deadline = time.monotonic() + 10
    while not (await tick(False)).settled:
        assert time.monotonic() < deadline
        await asyncio.sleep(SCRAPE_SECONDS)
    energy = driver.status["energy"]
    kwh = driver.status["energyKWh"]
    assert kwh > 0 and energy["unpricedKWh"] == pytest.approx(kwh, abs=1e-6)
    assert driver.status["emissionsGrams"] == 0 and driver.status["avoidedEmissionsGrams"] == 0
    assert energy["pending"] and all(p["quality"] == "missing" for p in energy["pending"])
    receipt = format_receipt(receipt_from_status(NS, JOB, driver.status))
    assert f"unpriced {kwh:.4f} kWh" in receipt and "awaiting actuals" in receipt

    server.on(
        "/v3/carbon-intensity/history", Reply(em_history({**published, hour: 120.0, hour + timedelta(hours=1): 120.0}))
    )
    update = await tick(False)
    await driver.close()
    await provider.aclose()
    energy = driver.status["energy"]
    assert not update.awaiting_actuals and energy["unpricedKWh"] == 0 and not energy["pending"]
    assert driver.status["emissionsGrams"] == pytest.approx(kwh * 1.2 * 120.0, rel=1e-3, abs=2e-3)
    assert energy["provider"] == "electricitymaps" and energy["signal"] == "average"
    assert energy["pricedBy"] == [
        {"provider": "electricitymaps", "quality": "actual", "kWh": pytest.approx(kwh, abs=1e-6)}
    ]
    # The baseline hour (400 g) was known all along (on the energy outside the suspension tail); only now that the
    # energy is priced does it count as avoided.
    expected = energy["baselineKWh"] * 1.2 * 400.0 - kwh * 1.2 * 120.0
    assert driver.status["avoidedEmissionsGrams"] == pytest.approx(expected, rel=1e-3, abs=2e-3)
    assert expected > 0.5 * kwh * 1.2 * 280


class _Closer:
    def __init__(self, stop: Any) -> None:
        self.stop = stop


async def test_prometheus_stopped_and_restarted_loses_and_double_counts_nothing(
    workdir: Path, servers: list[Any]
) -> None:
    dcgm = DcgmStandIn({"gpu-node-a": 1}, speed=5.0, start_offset_seconds=25.0).start()
    servers.append(dcgm)
    prom = start_prometheus(dcgm.target, workdir)
    driver = Driver(meter_for(prom.url))
    await driver.tick(True, {POD_1})
    dcgm.assign("gpu-node-a", 0, NS, POD_1)
    await asyncio.sleep(4)
    await driver.tick(True, {POD_1})
    assert driver.status["energySource"] == "dcgm"
    before = driver.status["energyKWh"]
    prom.stop()  # same data directory: the restarted Prometheus has the samples from before

    await asyncio.sleep(3)
    down = await driver.tick(True, {POD_1})
    assert down.degraded
    assert down.condition[:3] == ("MetricsDegraded", True, "PrometheusUnreachable")
    assert driver.status["energySource"] == "estimate"
    assert driver.status["energyKWh"] > before  # provisional, shown but not stored in the account
    assert driver.status["energy"]["measuredKWh"] == pytest.approx(before, abs=1e-6)
    # The provisional part is priced too (flat 300 g/kWh at PUE 1.2), so the receipt never shows energy for free.
    # Status keeps grams to 0.001 g and kWh to 1e-6: with under a gram, that rounding alone exceeds rel=1e-3.
    expected = driver.status["energyKWh"] * 1.2 * 300
    assert driver.status["emissionsGrams"] == pytest.approx(expected, rel=1e-3, abs=1e-3 + 1e-6 * 1.2 * 300)

    prom = start_prometheus(dcgm.target, workdir)  # a new port: the operator restarts too (status carries over)
    servers.append(prom)
    await driver.close()
    driver.meter = meter_for(prom.url)
    await asyncio.sleep(3)
    await driver.tick(True, {POD_1})
    await driver.tick(True, {POD_1})  # a second read of overlapping windows must add nothing twice
    await driver.tick(False)
    dcgm.unassign("gpu-node-a", 0)
    await settle(driver)
    await driver.close()
    assert driver.conditions[-1][:3] == ("MetricsDegraded", False, "MetricsHealthy")
    assert driver.status["energySource"] == "dcgm"  # the counter spans the outage exactly
    assert driver.status["energyKWh"] == pytest.approx(dcgm.energy_mj(NS, POD_1) / 3.6e9, rel=0.01)


async def test_a_suspended_job_is_not_charged_for_the_job_that_takes_its_gpu(workdir: Path, servers: list[Any]) -> None:
    """Job A runs on GPU 0 and is suspended; job B's pod gets GPU 0 and trains while A, held, keeps ticking. Each
    receipt must match what its own pods drew (the demo's budget-held job was once charged its successor's energy)."""
    dcgm = DcgmStandIn({"gpu-node-a": 1}, speed=5.0, start_offset_seconds=25.0).start()
    servers.append(dcgm)
    prom = start_prometheus(dcgm.target, workdir)
    servers.append(prom)
    meter = meter_for(prom.url)
    job_a, job_b = Driver(meter, name="sweep"), Driver(meter, name="finetune")
    pod_a, pod_b = "sweep-ab1cd", "finetune-ef2gh"
    await job_a.tick(True, {pod_a})
    dcgm.assign("gpu-node-a", 0, NS, pod_a)
    await asyncio.sleep(3)
    await job_a.tick(False)  # held: suspended
    dcgm.unassign("gpu-node-a", 0)
    await asyncio.sleep(1.5)
    await job_b.tick(True, {pod_b})
    dcgm.assign("gpu-node-a", 0, NS, pod_b)
    for _ in range(6):  # both keep ticking while B trains on A's old GPU
        await asyncio.sleep(1.0)
        await job_a.tick(False)
        await job_b.tick(True, {pod_b})
    await job_b.tick(False)
    dcgm.unassign("gpu-node-a", 0)
    await settle(job_a)
    await settle(job_b)
    await meter.aclose()
    truth_a, truth_b = (dcgm.energy_mj(NS, pod) / 3.6e9 for pod in (pod_a, pod_b))
    # A's share also holds the idle interval until the scrape that shows the GPU released (at most ~70 W x 0.5 s).
    assert job_a.status["energyKWh"] == pytest.approx(truth_a, rel=0.02)
    assert job_b.status["energyKWh"] == pytest.approx(truth_b, rel=0.02)
    assert all(m.get("pod") in (None, f"{NS}/{pod_a}") for m in job_a.status["energy"]["watermarks"])


async def test_a_job_that_runs_between_two_reads_is_measured_before_it_settles(
    workdir: Path, servers: list[Any]
) -> None:
    """A shared read every 3 s, a job that starts and stops within 2 s of wall time (an hour of an accelerated demo
    clock): it must not be declared settled, with nothing measured, on the stale snapshot taken before it ran."""
    dcgm = DcgmStandIn({"gpu-node-a": 1}, speed=5.0, start_offset_seconds=25.0).start()
    servers.append(dcgm)
    prom = start_prometheus(dcgm.target, workdir)
    servers.append(prom)
    reader = PrometheusEnergyReader(prom.url, attempts=2, backoff_seconds=0.1)
    driver = Driver(EnergyMeter(reader, refresh_seconds=3.0, scrape_seconds=SCRAPE_SECONDS))
    await driver.tick(True, {POD_1})  # this read sees nothing of the job yet
    dcgm.assign("gpu-node-a", 0, NS, POD_1)
    await asyncio.sleep(2.0)
    dcgm.unassign("gpu-node-a", 0)
    first = await driver.tick(False)  # still the snapshot from before the job ran
    assert not first.settled
    await settle(driver)
    await driver.close()
    assert driver.status["energySource"] == "dcgm"
    # Each edge is known to one scrape interval of idle power (~70 W): a 2 s job cannot be held to 1%.
    edges_kwh = 2 * SCRAPE_SECONDS * 70 / 3.6e6
    assert driver.status["energyKWh"] == pytest.approx(dcgm.energy_mj(NS, POD_1) / 3.6e9, abs=edges_kwh)
    assert driver.status["energyKWh"] > 0.9 * dcgm.energy_mj(NS, POD_1) / 3.6e9


async def test_counter_reset_is_neither_lost_nor_negative(workdir: Path, servers: list[Any]) -> None:
    dcgm = DcgmStandIn({"gpu-node-a": 1}, speed=5.0, start_offset_seconds=25.0).start()
    servers.append(dcgm)
    prom = start_prometheus(dcgm.target, workdir)
    servers.append(prom)
    driver = Driver(meter_for(prom.url))
    await driver.tick(True, {POD_1})
    dcgm.assign("gpu-node-a", 0, NS, POD_1)
    await asyncio.sleep(4)
    await driver.tick(True, {POD_1})
    dcgm.reset_counter("gpu-node-a", 0)
    await asyncio.sleep(8)
    await driver.tick(False)
    dcgm.unassign("gpu-node-a", 0)
    await settle(driver)
    await driver.close()
    assert driver.status["energy"]["counterResets"] == 1
    assert driver.status["energyKWh"] == pytest.approx(dcgm.energy_mj(NS, POD_1) / 3.6e9, rel=0.01)


async def test_power_is_integrated_when_the_counter_is_absent(workdir: Path, servers: list[Any]) -> None:
    dcgm = DcgmStandIn({"gpu-node-a": 1}, speed=5.0, start_offset_seconds=25.0, counter=False).start()
    servers.append(dcgm)
    prom = start_prometheus(dcgm.target, workdir)
    servers.append(prom)
    driver = Driver(meter_for(prom.url))
    await driver.tick(True, {POD_1})
    dcgm.assign("gpu-node-a", 0, NS, POD_1)
    await asyncio.sleep(12)
    await driver.tick(False)
    dcgm.unassign("gpu-node-a", 0)
    await settle(driver)
    await driver.close()
    assert "power samples" in driver.conditions[-1][3]
    assert driver.status["energySource"] == "dcgm"
    # Trapezoids over 0.5 s scrapes of a 10 Hz power trace: within 2% of the counter-based truth (the trace's own
    # power integral and counter differ by up to 0.8% over training phases, see its README).
    assert driver.status["energyKWh"] == pytest.approx(dcgm.energy_mj(NS, POD_1) / 3.6e9, rel=0.02)


async def test_prometheus_renaming_clashing_labels_to_exported_is_understood(workdir: Path, servers: list[Any]) -> None:
    """honor_labels false and a target that carries namespace/pod labels: Prometheus itself writes exported_*."""
    dcgm = DcgmStandIn({"gpu-node-a": 1}, speed=5.0, start_offset_seconds=25.0).start()
    servers.append(dcgm)
    target_labels = {"namespace": "gpu-operator", "pod": "nvidia-dcgm-exporter-x7k2p", "container": "exporter"}
    prom = start_prometheus(dcgm.target, workdir, target_labels)
    servers.append(prom)
    driver = Driver(meter_for(prom.url))
    await driver.tick(True, {POD_1})
    dcgm.assign("gpu-node-a", 0, NS, POD_1)
    prom.wait_for_sample(f'DCGM_FI_DEV_POWER_USAGE{{exported_pod="{POD_1}", pod="nvidia-dcgm-exporter-x7k2p"}}')
    await asyncio.sleep(12)
    await driver.tick(False)
    dcgm.unassign("gpu-node-a", 0)
    await settle(driver)
    await driver.close()
    assert driver.status["energyKWh"] == pytest.approx(dcgm.energy_mj(NS, POD_1) / 3.6e9, rel=0.01)


async def test_one_query_per_tick_for_many_jobs(workdir: Path, servers: list[Any]) -> None:
    jobs = 40
    dcgm = DcgmStandIn({"gpu-node-a": 8, "gpu-node-b": 8, "gpu-node-c": 8, "gpu-node-d": 8, "gpu-node-e": 8},
                       speed=5.0, start_offset_seconds=25.0).start()  # fmt: skip
    servers.append(dcgm)
    prom = start_prometheus(dcgm.target, workdir)
    servers.append(prom)
    requests: list[httpx.Request] = []

    async def count(request: httpx.Request) -> None:
        requests.append(request)

    reader = PrometheusEnergyReader(prom.url, event_hooks={"request": [count]})
    meter = EnergyMeter(reader, refresh_seconds=2.0)
    drivers = [Driver(meter, name=f"job{i}") for i in range(jobs)]
    gpus = sorted(dcgm.gpus)
    for i, (node, index) in enumerate(gpus[:jobs]):
        dcgm.assign(node, index, NS, f"job{i}-aaaa{i % 10}")
    await asyncio.sleep(3)
    await asyncio.gather(*(d.tick(True, {f"job{i}-aaaa{i % 10}"}) for i, d in enumerate(drivers)))
    assert len(requests) == 1
    await asyncio.sleep(2.5)
    await asyncio.gather(*(d.tick(True, {f"job{i}-aaaa{i % 10}"}) for i, d in enumerate(drivers)))
    assert len(requests) == 2
    for i, d in enumerate(drivers):
        assert d.status["energySource"] == "dcgm"
        truth = dcgm.energy_mj(NS, f"job{i}-aaaa{i % 10}") / 3.6e9
        assert 0 < d.status["energyKWh"] <= truth * 1.001  # read up to the last scrape, never more
    await meter.aclose()


async def test_slow_prometheus_is_a_clear_error_after_bounded_retries() -> None:
    """A real local server that answers too late: two tries, then MetricsUnavailableError naming the cause."""
    hits = 0
    handlers: list[tuple[asyncio.Task[Any], asyncio.StreamWriter]] = []

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal hits
        hits += 1
        task = asyncio.current_task()
        assert task is not None
        handlers.append((task, writer))
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(2)
        writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader = PrometheusEnergyReader(f"http://127.0.0.1:{port}", timeout_seconds=0.3, attempts=2, backoff_seconds=0.05)
    try:
        with pytest.raises(MetricsUnavailableError, match=r"after 2 tries: no answer within 0.3 s"):
            await reader.read(time.time() - 60, time.time())
    finally:
        await reader.aclose()
        for task, writer in handlers:  # still sleeping: end them so no transport outlives the event loop
            task.cancel()
            writer.close()
        await asyncio.gather(*(task for task, _ in handlers), return_exceptions=True)
        server.close()
        await server.wait_closed()
    assert hits == 2
