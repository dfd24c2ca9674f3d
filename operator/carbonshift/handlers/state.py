"""The operator's wiring: configuration, the clock, the clusters it can place Jobs in, and the forecast source.

Built once by `carbonshift run` (or a test) and installed with `install()`; handlers read it with `current()`.
Nothing here is state that must survive a restart: that lives in the custom resources' status.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import kopf
import yaml
from kubernetes import client, config

from carbonshift import metrics
from carbonshift.adapters.clock import Clock
from carbonshift.adapters.intensity import ZoneForecast
from carbonshift.adapters.kube import Kube, json_loads
from carbonshift.adapters.prometheus import EnergyMeter
from carbonshift.adapters.workloads.client import WorkloadClient
from carbonshift.domain.forecast_trust import ForecastRecord, ForecastTrust
from carbonshift.domain.planning.reservations import Reservations
from carbonshift.domain.series import IntensitySeries
from carbonshift.handlers.forecast_store import ForecastStore

LOCAL = "local"


class ForecastSource(Protocol):
    async def forecast(self, zone: str, now: datetime, horizon: timedelta) -> ZoneForecast: ...

    async def history(self, zone: str, begin: datetime, end: datetime, now: datetime) -> IntensitySeries | None: ...

    async def latest(self, zone: str, now: datetime, provider: str) -> tuple[datetime, float] | None: ...


@dataclass
class Settings:
    """What `carbonshift run` is told (flags, environment, config file)."""

    zone: str = "DE"  # grid zone of the local cluster when no ComputeCluster exists
    pue: float = 1.2
    tick: timedelta = timedelta(minutes=5)  # re-plan at least this often (planning time)
    margin: timedelta = timedelta(minutes=10)  # spare time kept before every deadline
    recheck_every: timedelta = timedelta(hours=1)  # a committed plan meets newer forecasts at most this often
    capacity_ttl_seconds: float = 10.0  # how long a cluster's free-GPU count is reused (wall seconds)
    max_concurrent_reconciles: int = 32  # reconciles in flight at once; the others wait their turn
    # Whether a recorded trace may price receipts: only when the operator was started with traces explicitly.
    receipts_on_traces: bool = False


@dataclass
class ClusterEntry:
    name: str
    zone: str
    pue: float
    kube: Kube
    gpu_capacity: int | None = None
    embodied_grams_per_gpu_second: float = 0.0  # ComputeCluster spec.embodied, for SCI receipts
    free_gpus: int | None = None
    largest_node_gpus: int | None = None
    held_by_job: dict[tuple[str, str], int] = field(default_factory=dict)  # GPUs of each job's pods, in the count
    carbonshift_gpus: int = 0  # the sum of those: with free_gpus, what carbonshift's jobs can use between them
    checked_at: float = 0.0
    error: str | None = None
    refreshing: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)
    # Tenancy: whether a namespace with these labels may place work here (ComputeCluster.spec.namespaceSelector).
    admits: Callable[[dict[str, str]], bool] = field(default=lambda _labels: True, repr=False, compare=False)


@dataclass
class PhaseCounts:
    """CarbonAwareJobs by namespace and phase, for the carbonshift_jobs gauge: each change costs O(1). (Recounting
    every job on every reconcile made a pass over 10,000 jobs quadratic.)"""

    by_job: dict[tuple[str, str], str] = field(default_factory=dict)
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)

    def set(self, namespace: str, name: str, phase: str) -> None:
        old = self.by_job.get((namespace, name))
        if old == phase:
            return
        if old is not None:
            self._add(namespace, old, -1)
        self.by_job[(namespace, name)] = phase
        self._add(namespace, phase, 1)

    def drop(self, namespace: str, name: str) -> None:
        old = self.by_job.pop((namespace, name), None)
        if old is not None:
            self._add(namespace, old, -1)

    def _add(self, namespace: str, phase: str, delta: int) -> None:
        key = (namespace, phase)
        self.counts[key] += delta
        if self.counts[key] > 0:
            metrics.JOBS.labels(*key).set(self.counts[key])
            return
        del self.counts[key]  # no such jobs left: the series goes, as it would after a restart
        with contextlib.suppress(KeyError):
            metrics.JOBS.remove(*key)


@dataclass
class OperatorState:
    settings: Settings
    clock: Clock
    local: Kube
    forecasts: ForecastSource
    meter: EnergyMeter | None = None  # DCGM energy through Prometheus; None: estimates only
    clusters: dict[str, ClusterEntry] = field(default_factory=dict)
    wake: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    phases: PhaseCounts = field(default_factory=PhaseCounts)  # for the jobs-by-phase gauge
    reservations: Reservations = field(default_factory=Reservations)  # every job's planned GPU use
    written: dict[tuple[str, str], str] = field(default_factory=dict)  # resourceVersion of our last status patch
    # The resourceVersions of the workload as this operator's last pass for a CarbonAwareJob wrote it (create,
    # resume, suspend, announce), and those of the workload events that woke its daemon since that pass began: an
    # event of our own write tells the daemon nothing it does not know (see `own_event` and `only_own_pokes`).
    own_workload_writes: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    pokes: dict[tuple[str, str], list[str | None]] = field(default_factory=dict)
    # Since when this process has watched each job without a break (the decision core credits run time across a
    # long gap between two passes only when the same process watched throughout).
    watching: dict[tuple[str, str], datetime] = field(default_factory=dict)
    _reconciling: asyncio.Semaphore | None = field(default=None, repr=False)
    _local_entry: ClusterEntry | None = field(default=None, repr=False)
    _workloads: dict[str, WorkloadClient] = field(default_factory=dict, repr=False)
    # Which CarbonAwareJob drives a referenced workload: (namespace, kind, name) -> its name (for the workload watch).
    referenced: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # Each zone's forecast trust (do no harm's error), with the (provider, forecast start, oracle) it was made for.
    trust: dict[str, tuple[tuple[object, ...], ForecastTrust]] = field(default_factory=dict)
    forecast_records: dict[str, ForecastRecord] = field(default_factory=dict)  # each zone's forecasts, to score
    # Where the records are kept across restarts (handlers/forecast_store.py); None: in memory only.
    forecast_store: ForecastStore | None = None

    @property
    def reconciling(self) -> asyncio.Semaphore:
        """Bounds the reconciles in flight. Each holds its object's parsed spec, forecasts and plan while it waits
        for the API server; unbounded, ten thousand daemons waking together held gigabytes between them."""
        if self._reconciling is None:
            self._reconciling = asyncio.Semaphore(self.settings.max_concurrent_reconciles)
        return self._reconciling

    def wake_event(self, namespace: str, name: str) -> asyncio.Event:
        return self.wake.setdefault((namespace, name), asyncio.Event())

    def poke(self, namespace: str, name: str, version: str | None = None) -> None:
        """Wake the CarbonAwareJob's daemon; `version`: the resourceVersion of the workload event that wakes it
        (None: anything else, e.g. its spec changed)."""
        event = self.wake.get((namespace, name))
        if event is not None:
            self.pokes.setdefault((namespace, name), []).append(version)
            event.set()

    def own_event(self, namespace: str, name: str, version: str | None) -> bool:
        """Whether a workload event is our own last write to it (its resourceVersion is one we wrote)."""
        return version is not None and version in self.own_workload_writes.get((namespace, name), ())

    def wrote_workload(self, namespace: str, name: str, versions: list[str]) -> None:
        """The resourceVersions this pass wrote the CarbonAwareJob's workload at (replacing the last pass's)."""
        if versions:
            self.own_workload_writes[(namespace, name)] = set(versions)

    def forget_own_writes(self, namespace: str, name: str) -> None:
        """Drop what `wrote_workload` and `poke` kept for the job (its daemon ended, or the job was deleted)."""
        self.own_workload_writes.pop((namespace, name), None)
        self.pokes.pop((namespace, name), None)

    def only_own_pokes(self, namespace: str, name: str) -> bool:
        """Whether everything that woke the daemon since its pass began was an event of its own writes (taken: the
        next pass starts a new list)."""
        pokes = self.pokes.pop((namespace, name), [])
        return bool(pokes) and all(self.own_event(namespace, name, v) for v in pokes)

    def entries(self) -> list[ClusterEntry]:
        """The clusters jobs may use: the ComputeClusters, or the local cluster when none is defined."""
        if self.clusters:
            return list(self.clusters.values())
        if self._local_entry is None:  # kept, so its free-GPU count is cached like a ComputeCluster's
            self._local_entry = ClusterEntry(LOCAL, self.settings.zone, self.settings.pue, self.local)
        return [self._local_entry]

    def workloads_for(self, name: str | None) -> WorkloadClient:
        """Workloads of any supported kind in that cluster (one client per cluster: it remembers the kinds served)."""
        kube = self.kube_for(name)
        client = self._workloads.get(kube.name)
        if client is None or client.kube is not kube:
            client = self._workloads[kube.name] = WorkloadClient(kube)
        return client

    def kube_for(self, name: str | None) -> Kube:
        if name is None or name == LOCAL:
            return self.local
        entry = self.clusters.get(name)
        if entry is None:
            raise LookupError(f"ComputeCluster {name!r} is not known (deleted?)")
        return entry.kube

    async def candidate_entries(self, allowed: list[str]) -> list[ClusterEntry]:
        """The allowed clusters, with free GPUs refreshed at most every capacity_ttl_seconds."""
        result = []
        for entry in self.entries():
            if allowed and entry.name not in allowed:
                continue
            expired = time.monotonic() - entry.checked_at > self.settings.capacity_ttl_seconds
            if expired and not (entry.refreshing.locked() and entry.free_gpus is not None):
                # One refresh at a time per cluster: when many daemons wake together (a window opening for a
                # thousand jobs) they do not each list every pod of the cluster. While it runs, the others use
                # the last count rather than wait (on a busy API server a paged refresh takes seconds).
                async with entry.refreshing:
                    if time.monotonic() - entry.checked_at > self.settings.capacity_ttl_seconds:
                        await self._refresh_capacity(entry)
            result.append(entry)
        return result

    @staticmethod
    async def _refresh_capacity(entry: ClusterEntry) -> None:
        try:
            capacity = await entry.kube.gpu_capacity()
            cap = capacity.total if entry.gpu_capacity is None else min(capacity.total, entry.gpu_capacity)
            entry.free_gpus, entry.largest_node_gpus = max(cap - capacity.used, 0), capacity.largest_node
            entry.held_by_job, entry.error = capacity.by_job, None
            entry.carbonshift_gpus = sum(capacity.by_job.values())
        except Exception as exc:  # an unreachable cluster is not a candidate this tick
            entry.free_gpus, entry.error = 0, str(exc)
        entry.checked_at = time.monotonic()


def kube_from_kubeconfig_text(name: str, text: str) -> Kube:
    api = config.new_client_from_config_dict(yaml.safe_load(text))  # type: ignore[no-untyped-call]
    return Kube(name, api)


def kubeconfig_from_secret(local: Kube, namespace: str, secret: str, key: str) -> str:
    obj = client.CoreV1Api(local.api).read_namespaced_secret(secret, namespace)
    data = (obj.data or {}).get(key)
    if data is None:
        raise LookupError(f"Secret {namespace}/{secret} has no key {key!r}")
    return base64.b64decode(data).decode()


class LeanDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff-base in annotations, built without deep-copying what it throws away.

    kopf builds an object's "essence" (spec, labels, annotations) on every watch event of every object it watches, to
    see whether the spec changed: its own `build` deep-copies the whole body first, status and managedFields
    included, then deletes all but the essence. py-spy on the 1,000-job benchmark: 11% of the operator's CPU in that
    deep copy, growing with the status (the decision core's progress and commitment). This builds the same essence
    from a body without the status and with only the metadata the essence reads (labels, annotations, and the owner
    references kopf's key convention looks at). Fields asked for explicitly from the status or the metadata
    (`extra_fields` of a handler's `field=`) take kopf's own path."""

    KEPT_METADATA = ("labels", "annotations", "ownerReferences")

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        fields = list(extra_fields or ())
        heads = {(f.split(".", 1)[0] if isinstance(f, str) else (f[0] if f else "")) for f in fields}
        if heads & {"status", "metadata"}:
            return super().build(body=body, extra_fields=fields)
        meta = body.get("metadata") or {}
        lean: dict[str, Any] = {k: v for k, v in body.items() if k not in ("status", "metadata")}
        lean["metadata"] = {k: meta[k] for k in self.KEPT_METADATA if k in meta}
        return super().build(body=kopf.Body(cast(kopf.RawBody, lean)), extra_fields=fields)


class LeanProgressStorage(kopf.AnnotationsProgressStorage):
    """kopf's progress storage in annotations, cleared from an essence without deep-copying it.

    On every watch event kopf clears its own progress annotations from the old and the new essence before
    diffing them; its `clear` deep-copies each essence first (the spec with its whole workload template, and the
    diff-base annotation that holds the spec again as JSON). py-spy on the 1,000-job benchmark: 2.6% of the
    operator's CPU. The essences it clears were built for this one event and are dropped after it, so copying the
    two dicts `clear` changes (the essence and its metadata; the annotations are replaced, not edited) gives the
    same result and leaves the input as it was."""

    def clear(self, *, essence: kopf.BodyEssence) -> kopf.BodyEssence:
        lean = cast(dict[str, Any], dict(essence))
        if isinstance(lean.get("metadata"), dict):
            lean["metadata"] = dict(lean["metadata"])
        annotations = lean.get("metadata", {}).get("annotations", {})
        keys = {key for key in annotations if self.prefix and key.startswith(f"{self.prefix}/")}
        self.remove_annotations(cast(kopf.BodyEssence, lean), keys)
        self.remove_empty_stanzas(cast(kopf.BodyEssence, lean))
        return cast(kopf.BodyEssence, lean)


class _WatchJson:
    """What kopf's watch stream calls `json.loads` on: each line of the API server's watch, one event with the
    whole object. py-spy on the 1,000-job benchmark while windows open: 7% of the operator's CPU in the standard
    library's decoder there; `adapters.kube.json_loads` (orjson, the standard library as its fallback) instead."""

    loads = staticmethod(json_loads)


def fast_watch_json() -> bool:
    """Have kopf's watch stream (kopf._cogs.clients.api.stream, its only use of the `json` module) decode with
    `_WatchJson`; False, changing nothing, when the kopf installed does not have that module as expected."""
    module = getattr(getattr(getattr(kopf, "_cogs", None), "clients", None), "api", None)
    if module is None or getattr(module, "json", None) not in (json, _WatchJson):
        return False
    module.json = _WatchJson
    return True


_state: OperatorState | None = None


def install(state: OperatorState) -> None:
    global _state
    _state = state


def current() -> OperatorState:
    if _state is None:
        raise RuntimeError("the operator state is not installed; start the operator with `carbonshift run`")
    return _state
