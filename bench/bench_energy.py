"""Reading DCGM energy for 10,000 pods: one range query per tick (what the operator does) vs one query per pod.

A real Prometheus scrapes the dcgm-exporter stand-in (10,000 GPUs on 1,250 nodes, each held by one job's pod) every
second. After `--warmup` seconds, both ways read the same window:
- shared: `EnergyMeter.snapshot()` (one HTTP request) then `update_energy` for every job (parsing + accounting);
- per pod: one request per pod (`{pod="..."}[window]`, 32 in flight), the naive baseline, timed over `--sample`
  pods and also extrapolated to all of them when `--sample` is smaller.
Prints wall times, requests, bytes and samples. Run: `.venv/bin/python bench/bench_energy.py [--pods 10000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime

import httpx

from carbonshift.adapters.prometheus import EnergyMeter, PrometheusEnergyReader
from carbonshift.handlers.energy import update_energy
from carbonshift_dev.devcluster import PrometheusServer
from carbonshift_dev.devcluster.dcgm import DcgmStandIn

NS = "bench"


def body(name: str) -> dict[str, object]:
    container = {"name": "t", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    return {
        "metadata": {"namespace": NS, "name": name},
        "spec": {"template": {"spec": {"template": {"spec": {"containers": [container]}}}}},
        "status": {"submittedAt": "2026-01-01T00:00:00Z"},
    }


async def shared(url: str, pods: int) -> tuple[float, int, int, int]:
    sizes: list[int] = []

    async def size(response: httpx.Response) -> None:
        await response.aread()
        sizes.append(len(response.content))

    meter = EnergyMeter(PrometheusEnergyReader(url, timeout_seconds=120, event_hooks={"response": [size]}))
    meter.min_lookback_seconds = meter.max_lookback_seconds = 60.0
    started = time.perf_counter()
    now = datetime.now(UTC)
    for i in range(pods):
        await update_energy(
            meter, body(f"job{i}"), running=True, now=now, intensity=None, pue=1.2, pods=[f"job{i}-abcde"]
        )
    elapsed = time.perf_counter() - started
    snapshot = await meter.snapshot()
    await meter.aclose()
    return elapsed, meter.reads, sum(sizes), snapshot.samples


async def per_pod(url: str, names: list[str]) -> tuple[float, int, int]:
    limit = asyncio.Semaphore(32)
    total_bytes = samples = 0
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def one(pod: str) -> None:
            nonlocal total_bytes, samples
            query = f'{{__name__=~"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION|DCGM_FI_DEV_POWER_USAGE",pod="{pod}"}}[60s]'
            async with limit:
                response = await http.get("/api/v1/query", params={"query": query})
            total_bytes += len(response.content)
            samples += sum(len(r["values"]) for r in response.json()["data"]["result"])

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in names))
        return time.perf_counter() - started, total_bytes, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--sample", type=int, default=10_000, help="pods read one by one (the baseline)")
    parser.add_argument("--warmup", type=float, default=12.0, help="seconds of scrapes before reading")
    args = parser.parse_args()
    nodes = {f"node-{i:04d}": 8 for i in range((args.pods + 7) // 8)}
    with DcgmStandIn(nodes, speed=1.0, start_offset_seconds=30.0) as dcgm:
        gpus = sorted(dcgm.gpus)[: args.pods]
        for i, (node, index) in enumerate(gpus):
            dcgm.assign(node, index, NS, f"job{i}-abcde")
        render = time.perf_counter()
        dcgm.render()
        render = time.perf_counter() - render
        with PrometheusServer.start([dcgm.target], scrape_interval_seconds=1.0) as prom:
            time.sleep(args.warmup)
            one_s, reads, one_bytes, one_samples = asyncio.run(shared(prom.url, args.pods))
            names = [f"job{i}-abcde" for i in range(min(args.sample, args.pods))]
            many_s, many_bytes, many_samples = asyncio.run(per_pod(prom.url, names))
    scale = args.pods / len(names)
    print(f"dcgm stand-in: {len(gpus)} GPUs held by {args.pods} pods; one /metrics render {render * 1000:.0f} ms")
    print(f"{'method':<34}{'requests':>10}{'wall s':>10}{'MB':>8}{'samples':>10}")
    print(f"{'shared: 1 query + accounting':<34}{reads:>10}{one_s:>10.2f}{one_bytes / 1e6:>8.1f}{one_samples:>10}")
    print(f"{'per pod (measured)':<34}{len(names):>10}{many_s:>10.2f}{many_bytes / 1e6:>8.1f}{many_samples:>10}")
    if scale != 1:
        print(f"{'per pod (extrapolated to all)':<34}{args.pods:>10}{many_s * scale:>10.2f}")
    print(f"speed-up of the shared read: {many_s * scale / one_s:.1f}x ({args.pods} pods)")


if __name__ == "__main__":
    main()
