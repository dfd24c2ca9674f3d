"""DCGM energy from the Prometheus HTTP API: one query per tick for every GPU, whatever the number of jobs.

`PrometheusEnergyReader.read(start, end)` sends ONE instant query with a range selector,
`{__name__=~"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION|DCGM_FI_DEV_POWER_USAGE"}[<end-start>ms]` at `time=end`, and
gets back every raw sample of both metrics in (start, end], for every GPU. It merges the two metrics per GPU and
timestamp into `carbonshift.domain.accounting.Sample`s and indexes the GPUs by the exact pods that held them
(namespace/pod, with `pod_uid` kept where exported; which pods are a workload's is the handler's to say, from
the Job's selector and owner chain, never a guess from pod names). Raw
samples rather than `increase()`: the accounting needs each GPU's samples around a change of holder, exact
counter values for its watermarks, and no extrapolation.

Labels accepted: `namespace`/`pod`/`container` and their `exported_` forms (Prometheus renames scraped labels
that clash with target labels when honor_labels is false; the exported form wins when both are present; and as
an empty scraped label does not clash, an unassigned GPU of such a target shows the target's own `pod`, so on a
target where any series has `exported_pod` only that label names the holder),
`Hostname` (dcgm-exporter <= 4.5.x) or `hostname` (main after PR #655), `UUID` (else host/gpu index), MIG
`GPU_I_ID`, `pod_uid` (dcgm-exporter --kubernetes-enable-pod-uid).

Failures: connection errors, timeouts, HTTP 5xx/429 and Prometheus `status: error` are retried `attempts`
times with backoff, then raised as `MetricsUnavailableError` (one line, with the URL but never credentials);
the handler reports it as condition MetricsDegraded and keeps its watermarks, so nothing is lost.

`EnergyMeter` is the operator-wide reader the handlers share: the first job to ask in a tick triggers the read,
every other job in the same `refresh_seconds` gets the same snapshot (and the same error, without retrying
again), and the window reaches back to the oldest watermark any job still needs (bounded by
`max_lookback_seconds`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from carbonshift import metrics
from carbonshift.domain.accounting import GpuSeries, Sample

log = logging.getLogger(__name__)
ENERGY_METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
POWER_METRIC = "DCGM_FI_DEV_POWER_USAGE"
QUERY_TEMPLATE = '{{__name__=~"' + ENERGY_METRIC + "|" + POWER_METRIC + '"}}[{ms}ms]'
RETRY_STATUS = {429, 500, 502, 503, 504}


class MetricsUnavailableError(RuntimeError):
    """Prometheus could not be read (down, slow or answering errors) after the allowed retries."""


def _label(metric: Mapping[str, str], name: str) -> str:
    """The exported_ form wins: when it is present, the plain one is the scrape target's own label."""
    return metric.get(f"exported_{name}") or metric.get(name) or ""


def gpu_identity(metric: Mapping[str, str]) -> tuple[str, str]:
    """(gpu key, node) of a DCGM series."""
    node = metric.get("Hostname") or metric.get("hostname") or metric.get("instance") or ""
    uuid = metric.get("UUID") or f"{node}/{metric.get('gpu', '?')}"
    mig = metric.get("GPU_I_ID")
    return (f"{uuid}/mig{mig}" if mig else uuid), node


def owner_of(metric: Mapping[str, str], exported_only: bool = False) -> str | None:
    """namespace/pod holding the GPU. `exported_only`: the scrape target carries its own pod label (Prometheus
    renamed the exporter's to exported_pod), so a plain `pod` is the exporter's pod and means unassigned."""
    if exported_only:
        pod = metric.get("exported_pod", "")
        return f"{metric.get('exported_namespace', '')}/{pod}" if pod else None
    pod = _label(metric, "pod") or metric.get("pod_name", "")
    if not pod:
        return None
    namespace = _label(metric, "namespace") or metric.get("pod_namespace", "")
    return f"{namespace}/{pod}"


def owner_uid_of(metric: Mapping[str, str], exported_only: bool = False) -> str | None:
    """The holder's pod UID (`pod_uid`, with dcgm-exporter's --kubernetes-enable-pod-uid), or None."""
    uid = metric.get("exported_pod_uid", "") if exported_only else _label(metric, "pod_uid")
    return uid or None


@dataclass
class EnergySnapshot:
    """Every DCGM GPU series in the window (start, end], wall Unix seconds."""

    start: float
    end: float
    series: dict[str, GpuSeries]
    by_owner: dict[str, set[str]] = field(default_factory=dict)  # "namespace/pod" -> GPUs it held in the window
    counter_gpus: set[str] = field(default_factory=set)  # GPUs exporting the energy counter

    def gpus_for(self, owners: Iterable[str]) -> set[str]:
        """The GPUs held in the window by these exact pods ("namespace/pod"); no name patterns."""
        gpus: set[str] = set()
        for owner in owners:
            gpus |= self.by_owner.get(owner, set())
        return gpus

    @property
    def samples(self) -> int:
        return sum(len(s.samples) for s in self.series.values())


def parse_matrix(result: list[dict[str, Any]], start: float, end: float) -> EnergySnapshot:
    """The `data.result` of the range-selector query, merged per GPU and timestamp."""
    merged: dict[str, dict[float, list[Any]]] = {}
    nodes: dict[str, str] = {}
    counter_gpus: set[str] = set()
    # Targets whose GPUs show up with exported_pod: there an unassigned GPU carries the target's own pod label.
    renamed = {(i.get("metric") or {}).get("instance") for i in result if "exported_pod" in (i.get("metric") or {})}
    for item in result:
        metric = item.get("metric") or {}
        name = metric.get("__name__")
        gpu, node = gpu_identity(metric)
        nodes[gpu] = node
        exported_only = metric.get("instance") in renamed
        owner = owner_of(metric, exported_only=exported_only)
        uid = owner_uid_of(metric, exported_only=exported_only) if owner is not None else None
        slot = 2 if name == ENERGY_METRIC else 3
        if slot == 2:
            counter_gpus.add(gpu)
        per_t = merged.setdefault(gpu, {})
        for t_text, value in item.get("values") or []:
            t = float(t_text)
            row = per_t.setdefault(t, [t, None, None, None, None])
            row[slot] = float(value)
            if owner is not None or row[1] is None:
                row[1], row[4] = owner, uid
    series: dict[str, GpuSeries] = {}
    by_owner: dict[str, set[str]] = {}
    for gpu, per_t in merged.items():
        samples = tuple(Sample(r[0], r[1], r[2], r[3], r[4]) for _, r in sorted(per_t.items()))
        series[gpu] = GpuSeries(gpu, nodes[gpu], samples)
        for owner in {s.owner for s in samples if s.owner is not None}:
            by_owner.setdefault(owner, set()).add(gpu)
    return EnergySnapshot(start, end, series, by_owner, counter_gpus)


class PrometheusEnergyReader:
    """The HTTP client. `event_hooks` and `transport` are passed to httpx (tests count requests with them)."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_seconds: float = 10.0,
        attempts: int = 3,
        backoff_seconds: float = 0.5,
        headers: Mapping[str, str] | None = None,
        event_hooks: Mapping[str, list[Callable[..., Any]]] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout_seconds,
            headers=dict(headers or {}),
            event_hooks={k: list(v) for k, v in (event_hooks or {}).items()},
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"PrometheusEnergyReader({self.base_url!r})"

    async def read(self, start: float, end: float) -> EnergySnapshot:
        """Every DCGM power/energy sample in (start, end] (wall Unix seconds), in one request."""
        span_ms = max(int((end - start) * 1000), 1)
        params = {"query": QUERY_TEMPLATE.format(ms=span_ms), "time": f"{end:.3f}"}
        delay = self.backoff_seconds
        problem = "no attempt made"
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self._client.get("/api/v1/query", params=params)
            except httpx.TimeoutException:
                problem = f"no answer within {self.timeout_seconds:g} s"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                problem = self._problem(response)
                if not problem:
                    body = response.json()
                    return parse_matrix(list(body["data"]["result"]), end - span_ms / 1000, end)
                if response.status_code not in RETRY_STATUS and response.status_code != 200:
                    break  # 400 (bad query) or 401/403: retrying will not help
            metrics.PROMETHEUS_ERRORS.inc()
            if attempt < self.attempts:
                log.info("Prometheus %s: %s; retry %d in %.1fs", self.base_url, problem, attempt, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        raise MetricsUnavailableError(
            f"Prometheus at {self.base_url} unavailable after {self.attempts} tries: {problem}"
        )

    @staticmethod
    def _problem(response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and body.get("status") == "success":
            data = body.get("data") or {}
            if data.get("resultType") != "matrix":
                return f"unexpected result type {data.get('resultType')!r}"
            return ""
        detail = body.get("error", "") if isinstance(body, dict) else response.text[:200]
        return f"HTTP {response.status_code} {detail}".strip()

    async def aclose(self) -> None:
        await self._client.aclose()


class EnergyMeter:
    """The operator-wide, per-tick reader. One Prometheus request per `refresh_seconds`, shared by all jobs."""

    def __init__(
        self,
        reader: PrometheusEnergyReader,
        *,
        refresh_seconds: float = 10.0,
        scrape_seconds: float = 30.0,
        min_lookback_seconds: float = 300.0,
        max_lookback_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.refresh_seconds = refresh_seconds
        self.scrape_seconds = scrape_seconds  # how often Prometheus scrapes dcgm-exporter (for the handler's timing)
        self.min_lookback_seconds = min_lookback_seconds
        self.max_lookback_seconds = max_lookback_seconds
        self.clock = clock
        self.reads = 0
        self._lock = asyncio.Lock()
        self._snapshot: EnergySnapshot | None = None
        self._error: MetricsUnavailableError | None = None
        self._fetched_at = -float("inf")
        self._needed: dict[tuple[str, str], float] = {}  # job -> oldest watermark it still continues from

    def need(self, job: tuple[str, str], since: float | None) -> None:
        """Record how far back a job's next read must reach (its oldest held watermark); None: no constraint."""
        if since is None:
            self._needed.pop(job, None)
        else:
            self._needed[job] = since

    def window_start(self, now: float) -> float:
        oldest = min(self._needed.values(), default=now)
        if self._snapshot is None:
            oldest = now - self.max_lookback_seconds  # a fresh operator: reach back as far as allowed
        lookback = min(max(now - oldest, self.min_lookback_seconds), self.max_lookback_seconds)
        return now - lookback

    async def snapshot(self) -> EnergySnapshot:
        """The current tick's snapshot; raises MetricsUnavailableError while Prometheus cannot be read."""
        async with self._lock:
            now = self.clock()
            if now - self._fetched_at >= self.refresh_seconds:
                start = self.window_start(now)
                self.reads += 1
                try:
                    self._snapshot, self._error = await self.reader.read(start, now), None
                except MetricsUnavailableError as exc:
                    self._error = exc
                self._fetched_at = self.clock()
            if self._error is not None:
                raise self._error
            assert self._snapshot is not None
            return self._snapshot

    async def aclose(self) -> None:
        await self.reader.aclose()
