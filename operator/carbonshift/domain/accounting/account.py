"""The energy account of a workload: measured intervals folded into totals, chunks, provenance and counterfactuals.

Pure: no I/O, no clock; times come in. `advance()` folds one read's samples (see attribution.py) into the
`Account` that lives in the CarbonAwareJob's status.energy, pricing each interval (see pricing.py):

- Watermarks: per GPU the last sample consumed (time, counter, power, holder). A sample at or before its GPU's
  watermark is never counted again, and a later tick (or a restarted operator reading the watermark back from
  status) continues exactly where the last one stopped: nothing lost, nothing counted twice.
- Chunks: a run between a resume and a suspension. Energy drawn after the suspension decision (checkpoint, pod
  shutdown) is the chunk's tail; the energy of a resumed chunk until each GPU first reaches `ramp_fraction` of the
  steady power of the earlier chunks is its restart ramp. Both are measured, not assumed, and reported.
- Pending: energy priced on a forecast or not priced at all, kept per 5-minute bucket (of its time and of its
  counterfactual time) until `reprice()` finds actuals for it, or until `unpriced_wait` has passed: then it is
  declared to have stayed unpriced (or forecast-priced), and says so.
- Embodied: GPU-seconds held x the cluster's embodied emissions per GPU-second (SCI's M).

The wire form is declared on the fields (wire.py): `Account.to_wire()` / `Account.from_wire()`, and
`status_fields()` gives the CarbonAwareJob's summary fields from the same model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from carbonshift.domain.accounting.attribution import (
    J_PER_KWH,
    GpuSeries,
    Interval,
    Owns,
    PodRef,
    Settings,
    Watermark,
    attribute,
)
from carbonshift.domain.accounting.pricing import Counterfactuals, Priced, Pricing, Quality
from carbonshift.domain.accounting.wire import from_wire, to_wire, wire

MAX_CHUNKS = 64
MAX_PODS = 256
MAX_PENDING = 288  # 24 h of 5-minute buckets: the wait declares older ones anyway
MAX_SHARES = 16
BUCKET = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Chunk:
    """One run of the job between a resume and the suspension (or completion), in planning time."""

    start: datetime = field(metadata=wire("start"))
    stopped_at: datetime | None = field(default=None, metadata=wire("stoppedAt"))  # when the operator stopped it
    end: datetime | None = field(default=None, metadata=wire("end"))  # end of the last energy interval seen
    kwh: float = field(default=0.0, metadata=wire("kWh", 9))  # GPU energy (no PUE)
    estimated_kwh: float = field(default=0.0, metadata=wire("estimatedKWh", 9))
    emissions_grams: float = field(default=0.0, metadata=wire("emissionsGrams", 6))
    ramp_kwh: float = field(default=0.0, metadata=wire("rampKWh", 9))
    ramp_seconds: float = field(default=0.0, metadata=wire("rampSeconds", 3))  # wall GPU-seconds over GPUs
    tail_kwh: float = field(default=0.0, metadata=wire("tailKWh", 9))
    tail_seconds: float = field(default=0.0, metadata=wire("tailSeconds", 3))
    steady_joules: float = field(default=0.0, metadata=wire("steadyJoules", 3))  # outside ramp and tail
    steady_gpu_seconds: float = field(default=0.0, metadata=wire("steadyGPUSeconds", 3))
    gpus: int = field(default=0, metadata=wire("gpus"))


@dataclass(frozen=True, slots=True)
class Pending:
    """Energy awaiting actual intensity: unpriced (`missing`) or priced on a forecast, in one 5-minute bucket."""

    at: datetime = field(metadata=wire("at"))  # bucket start (planning) of the intervals' midpoints
    base_at: datetime = field(metadata=wire("baselineAt"))  # bucket start on the counterfactual timeline
    since: datetime = field(metadata=wire("since"))  # planning time first recorded
    quality: str = field(default=Quality.MISSING.value, metadata=wire("quality"))
    chunk: int = field(default=0, metadata=wire("chunk"))
    kwh: float = field(default=0.0, metadata=wire("kWh", 9))
    steady_kwh: float = field(default=0.0, metadata=wire("steadyKWh", 9))
    grams: float = field(default=0.0, metadata=wire("emissionsGrams", 6))  # what it counts now
    baseline_grams: float = field(default=0.0, metadata=wire("baselineGrams", 6))
    home_grams: float = field(default=0.0, metadata=wire("homeBaselineGrams", 6))
    provider: str | None = field(default=None, metadata=wire("provider"))
    why: str | None = field(default=None, metadata=wire("why"))

    def key(self) -> tuple[int, datetime, datetime, str]:
        return (self.chunk, self.at, self.base_at, self.quality)


@dataclass(frozen=True, slots=True)
class Share:
    """Energy priced by one provider at one quality (the receipt's provenance)."""

    provider: str = field(metadata=wire("provider"))
    quality: str = field(metadata=wire("quality"))
    kwh: float = field(default=0.0, metadata=wire("kWh", 9))


@dataclass(frozen=True, slots=True)
class Account(Counterfactuals):
    """What the status keeps: watermarks, totals, chunks, provenance. Everything a restarted operator needs."""

    watermarks: tuple[Watermark, ...] = field(default=(), metadata=wire("watermarks"))
    measured_kwh: float = field(default=0.0, metadata=wire("measuredKWh", 9))
    estimated_kwh: float = field(default=0.0, metadata=wire("estimatedKWh", 9))
    # Energy with no usable intensity for its time: not in the emissions, nor in any baseline.
    unpriced_kwh: float = field(default=0.0, metadata=wire("unpricedKWh", 9))
    stayed_unpriced_kwh: float = field(default=0.0, metadata=wire("stayedUnpricedKWh", 9))  # after the wait
    forecast_kwh: float = field(default=0.0, metadata=wire("forecastKWh", 9))  # priced on a forecast
    emissions_grams: float = field(default=0.0, metadata=wire("emissionsGrams", 6))
    baseline_grams: float = field(default=0.0, metadata=wire("baselineGrams", 6))  # temporal counterfactual
    home_baseline_grams: float = field(default=0.0, metadata=wire("homeBaselineGrams", 6))  # spatial one
    home_cluster: str | None = field(default=None, metadata=wire("homeCluster"))
    baseline_kwh: float = field(default=0.0, metadata=wire("baselineKWh", 9))  # energy on the baseline timeline
    provider: str | None = field(default=None, metadata=wire("provider"))  # the first provider that priced
    signal: str | None = field(default=None, metadata=wire("signal"))  # the one signal of the receipt
    replayed: bool = field(default=False, metadata=wire("replayedTrace"))  # priced on a recorded trace
    shares: tuple[Share, ...] = field(default=(), metadata=wire("pricedBy"))
    pending: tuple[Pending, ...] = field(default=(), metadata=wire("pending"))
    gpu_seconds: float = field(default=0.0, metadata=wire("gpuSeconds", 3))  # GPU time held (wall)
    embodied_grams: float = field(default=0.0, metadata=wire("embodiedGrams", 6))  # SCI's M
    resets: int = field(default=0, metadata=wire("counterResets"))
    running: bool = field(default=False, metadata=wire("running"))
    chunks: tuple[Chunk, ...] = field(default=(), metadata=wire("chunks"))
    # Wall time after which a stopped job's energy is complete: its last samples need a scrape or two to reach
    # Prometheus, so a read taken before this may still miss some (None while running).
    settle_after: float | None = field(default=None, metadata=wire("settleAfter", 3))
    pods: tuple[PodRef, ...] = field(default=(), metadata=wire("pods"))  # the workload's pods seen so far

    @property
    def kwh(self) -> float:
        return self.measured_kwh + self.estimated_kwh

    @property
    def overhead_kwh(self) -> float:
        return sum(c.ramp_kwh + c.tail_kwh for c in self.chunks)

    @property
    def settled_pricing(self) -> bool:
        """No energy is still waiting for actual intensity."""
        return not self.pending

    def to_wire(self) -> dict[str, Any]:
        return to_wire(self)

    @classmethod
    def from_wire(cls, data: Mapping[str, Any] | None) -> Account:
        account = from_wire(cls, data)
        if data and "homeBaselineGrams" not in data:  # written before the spatial counterfactual existed
            account = replace(account, home_baseline_grams=account.baseline_grams)
        if data and "stayedUnpricedKWh" not in data:  # written before re-pricing: its unpriced energy stays so
            account = replace(account, stayed_unpriced_kwh=account.unpriced_kwh)
        return account

    def status_fields(self, extra_estimate_kwh: float = 0.0, extra_grams: float = 0.0) -> dict[str, Any]:
        """The CarbonAwareJob's summary fields and status.energy. The provisional estimate (Prometheus down) is
        shown priced at the current intensity, on the baselines too (its avoided share is unknown until measured)."""
        estimated = self.estimated_kwh > 0 or extra_estimate_kwh > 0
        return {
            "energyKWh": round(self.kwh + extra_estimate_kwh, 6),
            "energySource": "estimate" if estimated else "dcgm",
            "emissionsGrams": round(self.emissions_grams + extra_grams, 3),
            "baselineEmissionsGrams": round(self.home_baseline_grams + extra_grams, 3),
            "avoidedEmissionsGrams": round(self.avoided_grams, 3),
            "energy": self.to_wire(),
        }


def account_to_wire(account: Account) -> dict[str, Any]:
    return account.to_wire()


def account_from_wire(data: Mapping[str, Any] | None) -> Account:
    return Account.from_wire(data)


# -- folding into the account -------------------------------------------------------------------------------------
def _chunk_for(chunks: list[Chunk], moment: datetime) -> int:
    """Index of the latest chunk started at or before `moment` (the first chunk for earlier moments)."""
    index = 0
    for i, chunk in enumerate(chunks):
        if chunk.start <= moment:
            index = i
    return index


def _reference_watts(chunks: Sequence[Chunk], before: int) -> float | None:
    joules = sum(c.steady_joules for c in chunks[:before])
    seconds = sum(c.steady_gpu_seconds for c in chunks[:before])
    return joules / seconds if seconds > 0 else None


def _run_offset(chunks: Sequence[Chunk], index: int, moment: datetime) -> timedelta:
    """Run time (planning) before `moment`: earlier chunks' run spans plus the time into this one."""
    done = timedelta(0)
    for chunk in chunks[:index]:
        stop = chunk.stopped_at or chunk.end or chunk.start
        done += max(stop - chunk.start, timedelta(0))
    return done + max(moment - chunks[index].start, timedelta(0))


def open_chunk(account: Account, running: bool, now: datetime) -> Account:
    """Track resumes and suspension decisions: a chunk starts when the job starts running and is marked
    stopped when the operator stops it (energy after that is the chunk's tail)."""
    chunks = list(account.chunks)
    if running and not account.running:
        chunks.append(Chunk(start=now))
        if len(chunks) > MAX_CHUNKS:  # keep the status bounded: fold the two oldest chunks together
            chunks[0:2] = [_merge(chunks[0], chunks[1])]
    elif not running and account.running and chunks and chunks[-1].stopped_at is None:
        chunks[-1] = replace(chunks[-1], stopped_at=now)
    return replace(account, running=running, chunks=tuple(chunks))


def _merge(a: Chunk, b: Chunk) -> Chunk:
    return Chunk(
        start=a.start,
        stopped_at=b.stopped_at,
        end=b.end,
        kwh=a.kwh + b.kwh,
        estimated_kwh=a.estimated_kwh + b.estimated_kwh,
        emissions_grams=a.emissions_grams + b.emissions_grams,
        ramp_kwh=a.ramp_kwh + b.ramp_kwh,
        ramp_seconds=a.ramp_seconds + b.ramp_seconds,
        tail_kwh=a.tail_kwh + b.tail_kwh,
        tail_seconds=a.tail_seconds + b.tail_seconds,
        steady_joules=a.steady_joules + b.steady_joules,
        steady_gpu_seconds=a.steady_gpu_seconds + b.steady_gpu_seconds,
        gpus=max(a.gpus, b.gpus),
    )


def remember_pods(account: Account, listed: Iterable[PodRef]) -> Account:
    """Add the pods listed now to those seen before (a suspended Job's pods are deleted while their last energy is
    still on its way to Prometheus). Bounded: the oldest pods no watermark still names are dropped first."""
    known = {p.key: p for p in account.pods}
    for ref in listed:
        old = known.pop(ref.key, None)
        known[ref.key] = ref if ref.uid or old is None else old
    pods = list(known.values())
    if len(pods) > MAX_PODS:
        held = {m.owner for m in account.watermarks}
        spare = {p.key for p in [p for p in pods if p.key not in held][: len(pods) - MAX_PODS]}
        pods = [p for p in pods if p.key not in spare]
    return replace(account, pods=tuple(pods))


def advance(
    account: Account,
    series: Iterable[GpuSeries],
    owns: Owns,
    window_start: float,
    pricing: Pricing,
    settings: Settings,
    forget_before: float,
) -> Account:
    """Fold the samples of one read into the account. `series` may hold any GPUs; only intervals whose holder
    `owns` are counted. Watermarks of GPUs the job no longer holds are forgotten once older than `forget_before`
    (no later read reaches that far back)."""
    marks = {m.gpu: m for m in account.watermarks}
    chunks = list(account.chunks) or [Chunk(start=pricing.to_planning(window_start))]
    acc = account
    gpus_in_chunk: dict[int, set[str]] = {}
    for gpu_series in series:
        mark = marks.get(gpu_series.gpu)
        intervals, last, resets = attribute(gpu_series, mark, owns, window_start, settings)
        if last is None:
            continue
        chunk_of_mark = mark.chunk if mark is not None else -1
        ramping = mark.ramping if mark is not None else False
        for interval in intervals:
            acc, ramping, chunk_of_mark = _fold(acc, chunks, interval, pricing, settings, ramping, chunk_of_mark)
            gpus_in_chunk.setdefault(chunk_of_mark, set()).add(interval.gpu)
        acc = replace(acc, resets=acc.resets + resets)
        # The holder is remembered only when it is this job's pod: a GPU since taken by another pod must not make
        # that pod look like the job's own on the next read.
        marks[gpu_series.gpu] = Watermark(
            gpu_series.gpu,
            gpu_series.node,
            last.t,
            last.owner if last.owner is not None and owns(last.owner, last.owner_uid) else None,
            last.counter_mj,
            last.power_watts,
            max(chunk_of_mark, 0),
            ramping,
        )
    for index, gpus in gpus_in_chunk.items():
        chunks[index] = replace(chunks[index], gpus=max(chunks[index].gpus, len(gpus)))
    kept = tuple(
        sorted(
            (m for m in marks.values() if (m.owner is not None and owns(m.owner)) or m.t >= forget_before),
            key=lambda m: m.gpu,
        )
    )
    return _recount(replace(acc, watermarks=kept, chunks=tuple(chunks)))


def bucket(moment: datetime) -> datetime:
    """Start of the 5-minute bucket (UTC-aligned) holding `moment`."""
    epoch = moment.timestamp()
    step = BUCKET.total_seconds()
    return moment - timedelta(seconds=epoch - step * (epoch // step))


def _share(shares: Iterable[Share], provider: str | None, quality: str, kwh: float) -> tuple[Share, ...]:
    if provider is None or kwh == 0:
        return tuple(shares)
    out, found = [], False
    for s in shares:
        if (s.provider, s.quality) == (provider, quality):
            s, found = replace(s, kwh=s.kwh + kwh), True
        if s.kwh > 1e-12:
            out.append(s)
    if not found and kwh > 0 and len(out) < MAX_SHARES:
        out.append(Share(provider, quality, kwh))
    return tuple(out)


def _book(acc: Account, priced: Priced, kwh: float) -> Account:
    """Provenance of newly priced energy: the receipt's provider and signal, its shares."""
    if priced.quality is Quality.MISSING:
        return acc
    return replace(
        acc,
        provider=acc.provider or priced.provider,
        signal=acc.signal or priced.signal,
        replayed=acc.replayed or priced.trace,
        shares=_share(acc.shares, priced.provider, priced.quality.value, kwh),
    )


def _fold(
    acc: Account,
    chunks: list[Chunk],
    interval: Interval,
    pricing: Pricing,
    settings: Settings,
    ramping: bool,
    chunk_of_mark: int,
) -> tuple[Account, bool, int]:
    start, end = pricing.to_planning(interval.start), pricing.to_planning(interval.end)
    mid = start + (end - start) / 2
    index = _chunk_for(chunks, mid)
    chunk = chunks[index]
    if index != chunk_of_mark:  # this GPU starts running in a new chunk: a resumed chunk starts with a ramp
        ramping = index > 0
        chunk_of_mark = index
    kwh = interval.joules / J_PER_KWH
    seconds = interval.end - interval.start
    # Tail: the part of the interval after the suspension decision.
    tail_share = 0.0
    if chunk.stopped_at is not None and end > chunk.stopped_at:
        tail_share = 1.0 if start >= chunk.stopped_at else (end - chunk.stopped_at) / (end - start)
    ramp_share = 0.0
    if ramping and tail_share < 1.0:
        reference = _reference_watts(chunks, index)
        if reference is None or interval.watts >= settings.ramp_fraction * reference:
            ramping = False
        else:
            ramp_share = 1.0 - tail_share
    steady_share = 1.0 - tail_share - ramp_share
    baseline_at = pricing.submitted_at + _run_offset(chunks, index, mid)
    steady_kwh = kwh * steady_share
    priced = pricing.price(kwh, steady_kwh, mid, baseline_at, acc.signal)
    chunks[index] = replace(
        chunk,
        end=max(chunk.end, end) if chunk.end else end,
        kwh=chunk.kwh + kwh,
        estimated_kwh=chunk.estimated_kwh + (kwh if interval.estimated else 0.0),
        emissions_grams=chunk.emissions_grams + priced.grams,
        ramp_kwh=chunk.ramp_kwh + kwh * ramp_share,
        ramp_seconds=chunk.ramp_seconds + seconds * ramp_share,
        tail_kwh=chunk.tail_kwh + kwh * tail_share,
        tail_seconds=chunk.tail_seconds + seconds * tail_share,
        steady_joules=chunk.steady_joules + interval.joules * steady_share,
        steady_gpu_seconds=chunk.steady_gpu_seconds + seconds * steady_share,
    )
    acc = replace(
        _book(acc, priced, kwh),
        measured_kwh=acc.measured_kwh + (0.0 if interval.estimated else kwh),
        estimated_kwh=acc.estimated_kwh + (kwh if interval.estimated else 0.0),
        emissions_grams=acc.emissions_grams + priced.grams,
        baseline_grams=acc.baseline_grams + priced.baseline_grams,
        home_baseline_grams=acc.home_baseline_grams + priced.home_grams,
        home_cluster=pricing.home_cluster,
        baseline_kwh=acc.baseline_kwh + steady_kwh,
        gpu_seconds=acc.gpu_seconds + seconds,
        embodied_grams=acc.embodied_grams + seconds * pricing.embodied_grams_per_gpu_second,
    )
    if priced.quality is not Quality.ACTUAL:
        acc = _hold(acc, index, mid, baseline_at, kwh, steady_kwh, priced, pricing.to_planning(interval.end))
    return acc, ramping, chunk_of_mark


def _hold(
    acc: Account,
    chunk: int,
    at: datetime,
    base_at: datetime,
    kwh: float,
    steady_kwh: float,
    priced: Priced,
    now: datetime,
) -> Account:
    """Keep energy priced on a forecast, or not priced, in its bucket until actuals come (see reprice)."""
    entry = Pending(
        bucket(at), bucket(base_at), now, priced.quality.value, chunk, kwh, steady_kwh,
        priced.grams, priced.baseline_grams, priced.home_grams, priced.provider, priced.why or None,
    )  # fmt: skip
    pending = list(acc.pending)
    for i, p in enumerate(pending):
        if p.key() == entry.key():
            pending[i] = replace(
                p,
                since=min(p.since, entry.since),
                kwh=p.kwh + kwh,
                steady_kwh=p.steady_kwh + steady_kwh,
                grams=p.grams + entry.grams,
                baseline_grams=p.baseline_grams + entry.baseline_grams,
                home_grams=p.home_grams + entry.home_grams,
                why=entry.why or p.why,
            )
            break
    else:
        pending.append(entry)
    acc = replace(acc, pending=tuple(pending))
    while len(acc.pending) > MAX_PENDING:  # keep the status bounded: the oldest bucket stays as it is
        acc = _let_go(acc, acc.pending[0])
    return acc


def _let_go(acc: Account, p: Pending) -> Account:
    """Declare a pending bucket final: unpriced energy stays unpriced, forecast-priced energy stays on its forecast."""
    rest = tuple(q for q in acc.pending if q is not p)
    extra = p.kwh if p.quality == Quality.MISSING.value else 0.0
    return replace(acc, pending=rest, stayed_unpriced_kwh=acc.stayed_unpriced_kwh + extra)


def reprice(account: Account, pricing: Pricing, now: datetime) -> Account:
    """Price pending energy again: buckets whose actual intensity is now published are priced on it (a forecast's
    grams replaced); buckets older than `pricing.unpriced_wait` are declared final."""
    acc = account
    half = BUCKET / 2
    for p in account.pending:
        priced = pricing.price(p.kwh, p.steady_kwh, p.at + half, p.base_at + half, acc.signal)
        better = priced.quality is Quality.ACTUAL or (
            priced.quality is Quality.FORECAST and p.quality == Quality.MISSING.value
        )
        if better:
            d_grams = priced.grams - p.grams
            chunks = list(acc.chunks)
            if 0 <= p.chunk < len(chunks):
                c = chunks[p.chunk]
                chunks[p.chunk] = replace(c, emissions_grams=c.emissions_grams + d_grams)
            shares = acc.shares
            if p.quality != Quality.MISSING.value:  # the forecast share gives way
                shares = _share(shares, p.provider, p.quality, -p.kwh)
            acc = replace(
                _book(replace(acc, shares=shares), priced, p.kwh),
                chunks=tuple(chunks),
                emissions_grams=acc.emissions_grams + d_grams,
                baseline_grams=acc.baseline_grams + priced.baseline_grams - p.baseline_grams,
                home_baseline_grams=acc.home_baseline_grams + priced.home_grams - p.home_grams,
            )
            rest = [q for q in acc.pending if q is not p]
            if priced.quality is Quality.FORECAST:
                rest.append(
                    replace(
                        p, quality=priced.quality.value, grams=priced.grams, baseline_grams=priced.baseline_grams,
                        home_grams=priced.home_grams, provider=priced.provider, why=None,
                    )
                )  # fmt: skip
            acc = replace(acc, pending=tuple(rest))
        elif now - p.since > pricing.unpriced_wait:
            acc = _let_go(acc, p)
    return _recount(acc)


def _recount(acc: Account) -> Account:
    missing = sum(p.kwh for p in acc.pending if p.quality == Quality.MISSING.value)
    forecast = sum(s.kwh for s in acc.shares if s.quality == Quality.FORECAST.value)
    return replace(acc, unpriced_kwh=missing + acc.stayed_unpriced_kwh, forecast_kwh=forecast)


def provisional_kwh(account: Account, now_wall: float, gpus: int, watts_per_gpu: float) -> float:
    """An estimate of the energy not yet read (metrics down): from the newest watermark of a GPU the job holds to
    `now_wall`. Shown, never stored: the measured counter replaces it once readable."""
    held = [m.t for m in account.watermarks if m.owner is not None]
    if not account.running:
        return 0.0
    since = max(held) if held else None
    if since is None:
        return 0.0
    return max(now_wall - since, 0.0) * gpus * watts_per_gpu / J_PER_KWH
