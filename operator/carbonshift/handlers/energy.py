"""Measured energy, emissions and the receipt of a CarbonAwareJob: the glue the CarbonAwareJob reconcile calls.

How to call it, once per tick, after the tick has acted on the Job (so `running` is what the Job now does):

    meter = build_meter("http://prometheus:9090")          # once per operator (or meter_from_env(os.environ))
    update = await update_energy(
        meter, body,                    # the CarbonAwareJob as read this tick (metadata, spec)
        status=tick.st,                 # its status this tick, typed (handlers/jobstatus.py; default: body's)
        running=running,                # True while the Job is resumed and not finished, after this tick's action
        now=tick.now,                   # planning time (state.clock.now())
        intensity=series,               # IntensitySeries of the job's zone covering [status.submittedAt, now], or None
        pue=cluster_pue,                # PUE of the cluster the Job runs in
        to_planning=state.clock.from_wall,  # wall datetime -> planning datetime (identity without a fast clock)
        pods=[PodRef("ml", "train-x2k4q", uid)],  # the workload's pods listed now (Job selector, owner chain)
    )
    tick.st.merge_wire(update.status)   # energyKWh, energySource, emissionsGrams, baselineEmissionsGrams,
                                        # avoidedEmissionsGrams and energy (the account with the watermarks)
    type_, true, reason, message = update.condition
    tick.condition(type_, true, reason, message, event="Warning")     # MetricsDegraded
    if finished and update.settled: tick.event("Normal", "Receipt", receipt_message(tick.namespace, tick.name,
                                                                                   tick.st.to_wire(), pue))

`update.settled` is True once a finished or suspended job's GPUs have all been seen unassigned, i.e. the energy
drawn until its pods went away has been read; call again on later ticks until then (one more scrape interval).
All jobs share `meter`: however many call in one tick, Prometheus gets one request (see adapters/prometheus.py).
When Prometheus cannot be read, the account is left as it was (the watermarks keep their place) and energyKWh
shows the account plus a provisional estimate (wattsPerGPU x GPUs x seconds since the last reading), flagged
energySource=estimate, which the measured counter replaces once Prometheus answers again.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from carbonshift import metrics
from carbonshift.adapters.carbon.trace import replay_note
from carbonshift.adapters.prometheus import EnergyMeter, MetricsUnavailableError, PrometheusEnergyReader
from carbonshift.api.carbonawarejob import DEFAULT_WATTS_PER_GPU, CarbonAwareJob, EnergySource
from carbonshift.api.conditions import ConditionType, Reason
from carbonshift.api.durations import parse_duration
from carbonshift.api.jobs import gpus_requested
from carbonshift.domain.accounting import (
    DEFAULT_UNPRICED_WAIT,
    PodRef,
    Pods,
    Pricing,
    Settings,
    Work,
    account_from_wire,
    advance,
    format_receipt,
    open_chunk,
    provisional_kwh,
    receipt_from_status,
    remember_pods,
    reprice,
    wall_to_utc,
    work_from_annotations,
)
from carbonshift.domain.series import IntensitySeries
from carbonshift.handlers.jobstatus import JobStatus
from carbonshift.handlers.state import ClusterEntry, OperatorState

log = logging.getLogger(__name__)
PROMETHEUS_URL_ENV = "CARBONSHIFT_PROMETHEUS_URL"
SCRAPE_INTERVAL_ENV = "CARBONSHIFT_DCGM_SCRAPE_INTERVAL"
DEFAULT_SCRAPE_SECONDS = 30.0  # the dcgm-exporter ServiceMonitor's default interval
MAX_REFRESH_SECONDS = 10.0
# Gaps between DCGM samples longer than this are estimated, or, where the GPU changed hands, not attributed.
# Default: four scrape intervals (120 s for dcgm-exporter's 30 s). The environment variable overrides it.
MAX_GAP_ENV = "CARBONSHIFT_DCGM_MAX_GAP_SECONDS"
SCRAPES_TO_SETTLE = 2  # a stopped job's receipt waits this many scrape intervals for its last samples
EVENT_MESSAGE_LIMIT = 1000  # Kubernetes Event messages are capped at 1 KiB


@dataclass(frozen=True, slots=True)
class EnergyUpdate:
    status: dict[str, Any]  # status fields to merge, in domain/accounting's wire form (JobStatus.merge_wire)
    condition: tuple[str, bool, str, str]  # (type, status, reason, message) for MetricsDegraded
    settled: bool  # no GPU of the job is still held as far as the metrics show
    degraded: bool
    awaiting_actuals: bool = False  # some energy is unpriced or forecast-priced, waiting for actual intensity


def build_meter(url: str, *, scrape_seconds: float = DEFAULT_SCRAPE_SECONDS, **reader_options: Any) -> EnergyMeter:
    """One meter per operator, reading at most every min(scrape interval, 10 s): a faster read finds nothing new,
    a slower one lets a short job (or an accelerated demo clock) run between reads. reader_options go to
    PrometheusEnergyReader (timeout_seconds, attempts, ...)."""
    if scrape_seconds <= 0:
        raise ValueError(f"the DCGM scrape interval must be positive, got {scrape_seconds:g} s")
    refresh = min(scrape_seconds, MAX_REFRESH_SECONDS)
    return EnergyMeter(
        PrometheusEnergyReader(url, **reader_options), refresh_seconds=refresh, scrape_seconds=scrape_seconds
    )


def max_gap_seconds(scrape_seconds: float, env: Mapping[str, str] = os.environ) -> float:
    given = env.get(MAX_GAP_ENV, "").strip()
    return float(given) if given else 4 * scrape_seconds


def meter_from_env(env: Mapping[str, str]) -> EnergyMeter | None:
    """The meter the chart's environment describes (CARBONSHIFT_PROMETHEUS_URL, CARBONSHIFT_DCGM_SCRAPE_INTERVAL)."""
    url = env.get(PROMETHEUS_URL_ENV, "").strip()
    given = env.get(SCRAPE_INTERVAL_ENV, "").strip()
    scrape = parse_duration(given).total_seconds() if given else DEFAULT_SCRAPE_SECONDS
    return build_meter(url, scrape_seconds=scrape) if url else None


def _identity(moment: datetime) -> datetime:
    return moment


async def update_energy(
    meter: EnergyMeter,
    body: Mapping[str, Any],
    *,
    running: bool,
    now: datetime,
    intensity: IntensitySeries | None,
    pue: float,
    to_planning: Callable[[datetime], datetime] = _identity,
    pods: Iterable[PodRef | str] = (),
    home: IntensitySeries | None = None,
    home_pue: float | None = None,
    home_cluster: str | None = None,
    traces_allowed: bool = True,
    unpriced_wait: timedelta = DEFAULT_UNPRICED_WAIT,
    embodied_grams_per_gpu_second: float = 0.0,
    gpus: int | None = None,
    status: JobStatus | None = None,
) -> EnergyUpdate:
    """Read this tick's DCGM samples (shared read), fold the job's share into its account, price it, and re-price
    what earlier ticks could not (the provider had not published the actuals yet).

    `home*`: the job's home cluster, for the spatial counterfactual (None: it runs at home). `traces_allowed`:
    whether a recorded trace may price the receipt (the operator was started with traces explicitly). `gpus`: what the
    workload holds at once. `status`: the job's status as this tick has it (default: the body's, parsed)."""
    meta = body["metadata"]
    namespace, name = str(meta["namespace"]), str(meta["name"])
    spec = body.get("spec") or {}
    if status is None:
        status = JobStatus.from_wire(body.get("status"))
    watts = float((spec.get("power") or {}).get("wattsPerGPU") or DEFAULT_WATTS_PER_GPU)
    if gpus is None:  # the workload's demand, whatever its kind (the handler passes it); else the Job template's
        gpus = gpus_requested(spec.get("template") or {})
    settings = Settings(watts_per_gpu=watts, max_gap_seconds=max_gap_seconds(meter.scrape_seconds))
    account = account_from_wire(status.energy)
    wall_now = time.time()
    if running:
        account = replace(account, settle_after=None)
    elif account.running or account.settle_after is None:  # just stopped (or never seen running): wait for scrapes
        account = replace(account, settle_after=wall_now + SCRAPES_TO_SETTLE * meter.scrape_seconds)
    started = status.running_since if running and not account.running else None
    account = open_chunk(account, running, started or now)
    submitted = status.submitted_at or now
    pricing = Pricing(
        pue, intensity, submitted, lambda t: to_planning(wall_to_utc(t)),
        home=home, home_pue=home_pue, home_cluster=home_cluster, traces_allowed=traces_allowed,
        unpriced_wait=unpriced_wait, embodied_grams_per_gpu_second=embodied_grams_per_gpu_second,
    )  # fmt: skip
    account = reprice(account, pricing, now)
    listed = [p if isinstance(p, PodRef) else PodRef(namespace, p) for p in pods]
    account = remember_pods(account, [p for p in listed if p.namespace == namespace])
    owns = Pods(account.pods)
    job = (namespace, name)
    try:
        snapshot = await meter.snapshot()
    except MetricsUnavailableError as exc:
        extra = provisional_kwh(account, wall_now, gpus, watts)
        held = [m.t for m in account.watermarks if m.owner is not None and owns(m.owner)]
        meter.need(job, min(held) if held else None)
        message = f"{exc}; energy since the last reading estimated at {watts:g} W per GPU until it answers"
        g_now = intensity.at(now) if intensity is not None else math.nan
        extra_grams = extra * pue * g_now if math.isfinite(g_now) else 0.0
        return EnergyUpdate(
            account.status_fields(extra, extra_grams),
            (ConditionType.METRICS_DEGRADED, True, Reason.PROMETHEUS_UNREACHABLE, message),
            settled=False,
            degraded=True,
            awaiting_actuals=bool(account.pending),
        )
    before = account.estimated_kwh
    wanted = snapshot.gpus_for(p.key for p in account.pods) | {m.gpu for m in account.watermarks}
    series = [snapshot.series[g] for g in sorted(wanted) if g in snapshot.series]
    account = advance(account, series, owns, snapshot.start, pricing, settings, forget_before=snapshot.start)
    held = [m.t for m in account.watermarks if m.owner is not None and owns(m.owner)]
    meter.need(job, min(held) if held else None)
    counter = any(s.gpu in snapshot.counter_gpus for s in series)
    if account.estimated_kwh > before:
        added = (account.estimated_kwh - before) * 1000
        condition = (
            ConditionType.METRICS_DEGRADED, True, Reason.ESTIMATED_ENERGY,
            f"{added:.2f} Wh estimated at {watts:g} W per GPU for gaps in the DCGM samples",
        )  # fmt: skip
    else:
        how = "energy counter" if counter or not series else "power samples (no energy counter exported)"
        condition = (
            ConditionType.METRICS_DEGRADED, False, Reason.METRICS_HEALTHY,
            f"{account.measured_kwh:.6f} kWh measured by DCGM ({how})",
        )  # fmt: skip
    fields = account.status_fields() if (account.kwh > 0 or account.watermarks) else {"energy": account.to_wire()}
    # Settled: stopped, no GPU still held, and read at least a couple of scrapes after it stopped (a short job can
    # start and finish between two reads; its samples reach Prometheus a scrape later).
    caught_up = account.settle_after is not None and snapshot.end >= account.settle_after
    settled = not running and not held and caught_up
    return EnergyUpdate(fields, condition, settled, degraded=False, awaiting_actuals=bool(account.pending))


def awaiting(status: JobStatus) -> bool:
    """Whether the receipt's energy still waits for actual intensity (measured account, or the estimate standing
    as the receipt). The accounts are in domain/accounting's wire form: their `pending` list is all it reads."""
    if (status.energy or {}).get("pending"):
        return True
    return status.energy_source is not EnergySource.DCGM and bool((status.estimate or {}).get("pending"))


def home_entry(state: OperatorState, caj: CarbonAwareJob) -> ClusterEntry | None:
    """The job's home cluster, the spatial counterfactual: its first allowed cluster (spec.placement.clusters),
    else the first ComputeCluster (by name) in the operator's own cluster, where the job was submitted, else the
    local cluster as `carbonshift run --zone/--pue` describe it."""
    entries = {e.name: e for e in state.entries()}
    for name in caj.spec.placement.clusters if caj.spec.placement else []:
        if name in entries:
            return entries[name]
    local = sorted((e for e in entries.values() if e.kube is state.local), key=lambda e: e.name)
    return local[0] if local else None


async def pricing_options(
    state: OperatorState,
    caj: CarbonAwareJob,
    cluster_name: str,
    history: Callable[[str], Awaitable[IntensitySeries | None]],
) -> dict[str, Any]:
    """The keyword arguments of update_energy/Pricing beyond the cluster's own intensity: the home cluster's history
    (`history(zone)`), whether traces may price, the cluster's embodied emissions per GPU-second."""
    entry = next((e for e in state.entries() if e.name == cluster_name), None)
    options: dict[str, Any] = {
        "traces_allowed": state.settings.receipts_on_traces,
        "embodied_grams_per_gpu_second": entry.embodied_grams_per_gpu_second if entry else 0.0,
    }
    home = home_entry(state, caj)
    if home is not None and home.name != cluster_name:
        options.update(home=await history(home.zone), home_pue=home.pue, home_cluster=home.name)
    return options


def export_receipt_metrics(namespace: str, name: str, status: JobStatus, annotations: Mapping[str, str] | None) -> None:
    """The receipt's counterfactual parts, unpriced energy, embodied share and SCI as gauges."""
    if status.energy_kwh is None:
        return
    receipt = receipt_from_status(namespace, name, status.to_wire(), work=work_from_annotations(annotations))
    metrics.JOB_AVOIDED_PART.labels(namespace, name, "temporal").set(receipt.temporal_avoided_grams)
    metrics.JOB_AVOIDED_PART.labels(namespace, name, "spatial").set(receipt.spatial_avoided_grams)
    metrics.JOB_UNPRICED.labels(namespace, name).set(receipt.unpriced_kwh)
    metrics.JOB_EMBODIED.labels(namespace, name).set(receipt.embodied_grams)
    if receipt.work is not None and receipt.sci_per_million is not None:
        metrics.JOB_SCI.labels(namespace, name, receipt.work.unit).set(receipt.sci_per_million)


def receipt_message(
    namespace: str, name: str, status: Mapping[str, Any], pue: float | None = None, work: Work | None = None
) -> str:
    """The receipt text for the completion Event (capped at the Event message limit). `status`: in its wire form,
    which the receipt reads (domain/accounting `receipt_from_status`, as `carbonshift receipt` and Kueue's
    accounting do)."""
    text = format_receipt(receipt_from_status(namespace, name, status, pue, work))
    if replayed := replay_note((status.get("plan") or {}).get("provider")):
        text = f"[planned on a {replayed}, not today's grid] {text}"
    return text if len(text) <= EVENT_MESSAGE_LIMIT else text[: EVENT_MESSAGE_LIMIT - 3] + "..."
