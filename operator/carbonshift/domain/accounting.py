"""Measured energy and carbon of a CarbonAwareJob: attribution of DCGM samples, watermarks, overheads, the receipt.

Pure: no I/O, no clock; times come in. The adapter hands over, per GPU, the samples Prometheus holds in a window
(wall Unix seconds, the pod holding the GPU, the energy counter in mJ and/or the power in W). `advance()` turns
them into energy per interval and folds it into the job's `Account`, which lives in the CarbonAwareJob status:

- Attribution: the interval between two consecutive samples of a GPU belongs to the pod named by the later sample,
  or by the earlier one when the later shows the GPU unassigned (pod=""). So the energy up to the first sample of a
  resumed pod, and the energy drawn after its last sample until the GPU shows unassigned, are the pod's; what is
  mis-attributed is at most one sampling interval of idle power at each edge.
- Energy of an interval: the counter difference (mJ); after a counter reset (driver reload) the value since the
  reset plus the power-based estimate of the part before it; without a counter, the trapezoid of the power samples;
  across a gap longer than `max_gap_seconds` without a counter, or when nothing was measured, spec.power.wattsPerGPU
  x seconds, flagged estimated.
- Watermarks: per GPU the last sample consumed (time, counter, power, holder). A sample at or before its GPU's
  watermark is never counted again, and a later tick (or a restarted operator reading the watermark back from
  status) continues exactly where the last one stopped: nothing lost, nothing counted twice.
- Chunks: a run between a resume and a suspension. Energy drawn after the suspension decision (checkpoint, pod
  shutdown) is the chunk's tail; the energy of a resumed chunk until each GPU first reaches `ramp_fraction` of the
  steady power of the earlier chunks is its restart ramp. Both are measured, not assumed, and reported.
- Carbon: each interval's facility energy (x PUE) x the intensity of its zone at the interval's midpoint (planning
  time). The baseline runs the same profile, minus the suspend/resume overheads (running at once has none), from
  status.submittedAt: the interval at run offset r is priced at submittedAt + r. avoided = baseline - actual.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from carbonshift.domain.series import IntensitySeries

J_PER_KWH = 3.6e6
MJ_PER_J = 1000.0
MAX_CHUNKS = 64


@dataclass(frozen=True, slots=True)
class Sample:
    """One scrape of one GPU as Prometheus stored it."""

    t: float  # wall Unix seconds
    owner: str | None  # "namespace/pod" holding the GPU; None when unassigned
    counter_mj: float | None = None  # DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION
    power_watts: float | None = None  # DCGM_FI_DEV_POWER_USAGE
    owner_uid: str | None = None  # the holder's pod UID, where the exporter gives it (pod_uid)


@dataclass(frozen=True, slots=True)
class GpuSeries:
    gpu: str  # UUID (or host/index when the exporter gives none)
    node: str
    samples: tuple[Sample, ...]  # sorted by t, one per timestamp


@dataclass(frozen=True, slots=True)
class Watermark:
    """The last sample of a GPU that a job consumed."""

    gpu: str
    node: str
    t: float
    owner: str | None
    counter_mj: float | None
    power_watts: float | None
    chunk: int = 0  # the chunk the GPU last ran in
    ramping: bool = False  # in a restart ramp (power not yet at the steady level)

    def sample(self) -> Sample:
        return Sample(self.t, self.owner, self.counter_mj, self.power_watts)


@dataclass(frozen=True, slots=True)
class Interval:
    gpu: str
    start: float  # wall
    end: float
    joules: float
    estimated: bool
    owner: str

    @property
    def watts(self) -> float:
        return self.joules / (self.end - self.start) if self.end > self.start else 0.0


@dataclass(frozen=True, slots=True)
class Chunk:
    """One run of the job between a resume and the suspension (or completion), in planning time."""

    start: datetime
    stopped_at: datetime | None = None  # when the operator decided to stop it
    end: datetime | None = None  # end of the last energy interval seen for it
    kwh: float = 0.0  # GPU energy (no PUE)
    estimated_kwh: float = 0.0
    emissions_grams: float = 0.0
    ramp_kwh: float = 0.0
    ramp_seconds: float = 0.0  # wall GPU-seconds summed over GPUs
    tail_kwh: float = 0.0
    tail_seconds: float = 0.0
    steady_joules: float = 0.0  # energy outside ramp and tail, for the reference power
    steady_gpu_seconds: float = 0.0
    gpus: int = 0


@dataclass(frozen=True, slots=True)
class Account:
    """What the status keeps: watermarks, totals, chunks. Everything a restarted operator needs."""

    watermarks: tuple[Watermark, ...] = ()
    measured_kwh: float = 0.0
    estimated_kwh: float = 0.0
    unpriced_kwh: float = 0.0  # energy with no intensity data for its time: not in the emissions
    emissions_grams: float = 0.0
    baseline_grams: float = 0.0
    baseline_kwh: float = 0.0  # energy placed on the baseline timeline (the overheads are not)
    resets: int = 0
    running: bool = False
    chunks: tuple[Chunk, ...] = ()
    # Wall time after which a stopped job's energy is complete: its last samples need a scrape or two to reach
    # Prometheus, so a read taken before this may still miss some (None while running).
    settle_after: float | None = None
    pods: tuple[PodRef, ...] = ()  # the workload's pods seen so far (their energy may still be arriving)

    @property
    def kwh(self) -> float:
        return self.measured_kwh + self.estimated_kwh

    @property
    def avoided_grams(self) -> float:
        return self.baseline_grams - self.emissions_grams

    @property
    def overhead_kwh(self) -> float:
        return sum(c.ramp_kwh + c.tail_kwh for c in self.chunks)


@dataclass(frozen=True, slots=True)
class Pricing:
    """How energy becomes emissions for one job."""

    pue: float
    intensity: IntensitySeries | None  # the zone's intensity covering [submittedAt, now], planning time
    submitted_at: datetime
    to_planning: Callable[[float], datetime]  # wall Unix seconds -> planning time

    def g_per_kwh(self, moment: datetime) -> float:
        return self.intensity.at(moment) if self.intensity is not None else math.nan


@dataclass(frozen=True, slots=True)
class Settings:
    watts_per_gpu: float = 683.0
    max_gap_seconds: float = 120.0  # longer gaps between power samples are estimated
    ramp_fraction: float = 0.8


@dataclass(frozen=True, slots=True)
class PodRef:
    """A pod the operator knows is the workload's (listed by the Job's selector and owner chain)."""

    namespace: str
    name: str
    uid: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class Pods:
    """The workload's pods: a GPU series is charged only when its holder is one of them, matched by exact
    namespace and pod name, and by pod UID where both the exporter and the listing give one (a pod deleted and
    re-created under the same name by someone else is not the workload's). Never by name patterns."""

    def __init__(self, refs: Iterable[PodRef]) -> None:
        self.uids: dict[str, str | None] = {}
        for ref in refs:
            self.uids[ref.key] = ref.uid or self.uids.get(ref.key)

    def __call__(self, owner: str, uid: str | None = None) -> bool:
        if owner not in self.uids:
            return False
        known = self.uids[owner]
        return uid is None or known is None or uid == known

    def __iter__(self) -> Iterator[PodRef]:
        for key, uid in self.uids.items():
            namespace, _, name = key.partition("/")
            yield PodRef(namespace, name, uid)


Owns = Callable[..., bool]  # (owner "namespace/pod", pod uid or None) -> whether the workload's


def wall_to_utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


# -- attribution --------------------------------------------------------------------------------------------------
def interval_energy(prev: Sample, cur: Sample, settings: Settings) -> tuple[float, bool, bool]:
    """(joules, estimated, counter reset) of the interval between two samples of one GPU."""
    dt = cur.t - prev.t
    changed_hands = prev.owner != cur.owner and prev.owner is not None and cur.owner is not None
    long_gap = dt > settings.max_gap_seconds
    powers = [p for p in (prev.power_watts, cur.power_watts) if p is not None]
    mean_power = sum(powers) / len(powers) if powers else None
    if prev.counter_mj is not None and cur.counter_mj is not None:
        delta = cur.counter_mj - prev.counter_mj
        if delta >= 0:
            return delta / MJ_PER_J, changed_hands and long_gap, False
        since_reset = cur.counter_mj / MJ_PER_J  # the counter restarted from 0 inside the interval
        before = max((mean_power if mean_power is not None else settings.watts_per_gpu) * dt - since_reset, 0.0)
        return since_reset + before, mean_power is None, True
    if prev.power_watts is not None and cur.power_watts is not None and not long_gap:
        return (prev.power_watts + cur.power_watts) / 2 * dt, False, False
    return settings.watts_per_gpu * dt, True, False


def attribute(
    series: GpuSeries,
    mark: Watermark | None,
    owns: Owns,
    window_start: float,
    settings: Settings,
) -> tuple[list[Interval], Sample | None, int]:
    """The job's intervals on one GPU after its watermark; returns (intervals, last sample consumed, resets).

    A watermark older than the window is continued only while the job still held the GPU (a counter difference
    across a gap is exact); otherwise the window's first sample starts afresh."""
    prev: Sample | None = None
    if mark is not None and (mark.t >= window_start or (mark.owner is not None and owns(mark.owner))):
        prev = mark.sample()
    out: list[Interval] = []
    resets = 0
    for cur in series.samples:
        if prev is not None and cur.t <= prev.t:
            continue
        if prev is not None:
            owner, uid = (cur.owner, cur.owner_uid) if cur.owner is not None else (prev.owner, prev.owner_uid)
            # Across a long gap in which the GPU changed hands (the job was suspended, another pod may have used
            # it and left), nobody knows who drew the energy: count none of it rather than all of it.
            unknown_holder = cur.t - prev.t > settings.max_gap_seconds and cur.owner != prev.owner
            if owner is not None and owns(owner, uid) and not unknown_holder:
                joules, estimated, reset = interval_energy(prev, cur, settings)
                resets += reset
                out.append(Interval(series.gpu, prev.t, cur.t, joules, estimated, owner))
        prev = cur
    return out, prev, resets


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
        # that pod look like the job's own on the next read (the handler trusts the holders it remembers).
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
    return replace(acc, watermarks=kept, chunks=tuple(chunks))


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
    g_per_kwh = pricing.g_per_kwh(mid)
    grams = kwh * pricing.pue * g_per_kwh if math.isfinite(g_per_kwh) else 0.0
    baseline = 0.0
    if steady_share > 0:
        baseline_at = pricing.submitted_at + _run_offset(chunks, index, mid)
        base_g = pricing.g_per_kwh(baseline_at)
        baseline = kwh * steady_share * pricing.pue * (base_g if math.isfinite(base_g) else g_per_kwh)
        if not math.isfinite(baseline):
            baseline = 0.0
    chunks[index] = replace(
        chunk,
        end=max(chunk.end, end) if chunk.end else end,
        kwh=chunk.kwh + kwh,
        estimated_kwh=chunk.estimated_kwh + (kwh if interval.estimated else 0.0),
        emissions_grams=chunk.emissions_grams + grams,
        ramp_kwh=chunk.ramp_kwh + kwh * ramp_share,
        ramp_seconds=chunk.ramp_seconds + seconds * ramp_share,
        tail_kwh=chunk.tail_kwh + kwh * tail_share,
        tail_seconds=chunk.tail_seconds + seconds * tail_share,
        steady_joules=chunk.steady_joules + interval.joules * steady_share,
        steady_gpu_seconds=chunk.steady_gpu_seconds + seconds * steady_share,
    )
    acc = replace(
        acc,
        measured_kwh=acc.measured_kwh + (0.0 if interval.estimated else kwh),
        estimated_kwh=acc.estimated_kwh + (kwh if interval.estimated else 0.0),
        unpriced_kwh=acc.unpriced_kwh + (0.0 if math.isfinite(g_per_kwh) else kwh),
        emissions_grams=acc.emissions_grams + grams,
        baseline_grams=acc.baseline_grams + baseline,
        baseline_kwh=acc.baseline_kwh + kwh * steady_share,
    )
    return acc, ramping, chunk_of_mark


MAX_PODS = 256


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
        spare = [p for p in pods if p.key not in held][: len(pods) - MAX_PODS]
        pods = [p for p in pods if p not in spare]
    return replace(account, pods=tuple(pods))


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


# -- the estimate, for jobs with no measurement -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Estimate:
    """Energy from run time x GPUs x wattsPerGPU, priced as it accrues: the receipt of a job that DCGM never
    measured (no Prometheus configured, or no samples of its GPUs), with emissions and a baseline all the same."""

    run_seconds: float = 0.0  # run time already priced (planning seconds)
    kwh: float = 0.0
    emissions_grams: float = 0.0
    baseline_grams: float = 0.0
    unpriced_kwh: float = 0.0

    @property
    def avoided_grams(self) -> float:
        return self.baseline_grams - self.emissions_grams


def extend_estimate(
    estimate: Estimate, run_seconds: float, now: datetime, gpus: int, watts_per_gpu: float, pricing: Pricing
) -> Estimate:
    """Price the run time added since the last call: it ran just before `now`; its baseline runs at the same
    offset from submission. Intensity gaps leave the energy unpriced (and say so), never guessed."""
    added = run_seconds - estimate.run_seconds
    if added <= 0:
        return estimate
    kwh = added * gpus * watts_per_gpu / J_PER_KWH
    g_per_kwh = pricing.g_per_kwh(now - timedelta(seconds=added / 2))
    base_g = pricing.g_per_kwh(pricing.submitted_at + timedelta(seconds=estimate.run_seconds + added / 2))
    if not math.isfinite(g_per_kwh):
        return replace(
            estimate, run_seconds=run_seconds, kwh=estimate.kwh + kwh, unpriced_kwh=estimate.unpriced_kwh + kwh
        )
    base = base_g if math.isfinite(base_g) else g_per_kwh
    return replace(
        estimate,
        run_seconds=run_seconds,
        kwh=estimate.kwh + kwh,
        emissions_grams=estimate.emissions_grams + kwh * pricing.pue * g_per_kwh,
        baseline_grams=estimate.baseline_grams + kwh * pricing.pue * base,
    )


def estimate_to_wire(estimate: Estimate) -> dict[str, Any]:
    return {
        "runSeconds": _r(estimate.run_seconds, 3),
        "kWh": _r(estimate.kwh, 9),
        "emissionsGrams": _r(estimate.emissions_grams),
        "baselineGrams": _r(estimate.baseline_grams),
        "unpricedKWh": _r(estimate.unpriced_kwh, 9),
    }


def estimate_from_wire(data: Mapping[str, Any] | None) -> Estimate:
    if not data:
        return Estimate()
    return Estimate(
        run_seconds=float(data.get("runSeconds", 0.0)),
        kwh=float(data.get("kWh", 0.0)),
        emissions_grams=float(data.get("emissionsGrams", 0.0)),
        baseline_grams=float(data.get("baselineGrams", 0.0)),
        unpriced_kwh=float(data.get("unpricedKWh", 0.0)),
    )


# -- the wire form (status.energy) -------------------------------------------------------------------------------
def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def _time(text: Any) -> datetime | None:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None


def _r(value: float, digits: int = 6) -> float:
    return round(value, digits)


def account_to_wire(account: Account) -> dict[str, Any]:
    return {
        "watermarks": [
            {
                k: v
                for k, v in {
                    "gpu": m.gpu,
                    "node": m.node,
                    "time": m.t,
                    "pod": m.owner,
                    "counterMJ": m.counter_mj,
                    "powerWatts": m.power_watts,
                    "chunk": m.chunk,
                    "ramping": m.ramping,
                }.items()
                if v is not None
            }
            for m in account.watermarks
        ],
        "measuredKWh": _r(account.measured_kwh, 9),
        "estimatedKWh": _r(account.estimated_kwh, 9),
        "unpricedKWh": _r(account.unpriced_kwh, 9),
        "emissionsGrams": _r(account.emissions_grams),
        "baselineGrams": _r(account.baseline_grams),
        "baselineKWh": _r(account.baseline_kwh, 9),
        "counterResets": account.resets,
        "running": account.running,
        **({"settleAfter": _r(account.settle_after, 3)} if account.settle_after is not None else {}),
        "pods": [
            {k: v for k, v in {"namespace": p.namespace, "name": p.name, "uid": p.uid}.items() if v}
            for p in account.pods
        ],
        "chunks": [
            {
                k: v
                for k, v in {
                    "start": _iso(c.start),
                    "stoppedAt": _iso(c.stopped_at),
                    "end": _iso(c.end),
                    "kWh": _r(c.kwh, 9),
                    "estimatedKWh": _r(c.estimated_kwh, 9),
                    "emissionsGrams": _r(c.emissions_grams),
                    "rampKWh": _r(c.ramp_kwh, 9),
                    "rampSeconds": _r(c.ramp_seconds, 3),
                    "tailKWh": _r(c.tail_kwh, 9),
                    "tailSeconds": _r(c.tail_seconds, 3),
                    "steadyJoules": _r(c.steady_joules, 3),
                    "steadyGPUSeconds": _r(c.steady_gpu_seconds, 3),
                    "gpus": c.gpus,
                }.items()
                if v is not None
            }
            for c in account.chunks
        ],
    }


def account_from_wire(data: Mapping[str, Any] | None) -> Account:
    if not data:
        return Account()
    marks = tuple(
        Watermark(
            gpu=str(m["gpu"]),
            node=str(m.get("node", "")),
            t=float(m["time"]),
            owner=m.get("pod"),
            counter_mj=None if m.get("counterMJ") is None else float(m["counterMJ"]),
            power_watts=None if m.get("powerWatts") is None else float(m["powerWatts"]),
            chunk=int(m.get("chunk", 0)),
            ramping=bool(m.get("ramping", False)),
        )
        for m in data.get("watermarks") or []
    )
    chunks = []
    for c in data.get("chunks") or []:
        start = _time(c.get("start"))
        if start is None:
            continue
        chunks.append(
            Chunk(
                start=start,
                stopped_at=_time(c.get("stoppedAt")),
                end=_time(c.get("end")),
                kwh=float(c.get("kWh", 0.0)),
                estimated_kwh=float(c.get("estimatedKWh", 0.0)),
                emissions_grams=float(c.get("emissionsGrams", 0.0)),
                ramp_kwh=float(c.get("rampKWh", 0.0)),
                ramp_seconds=float(c.get("rampSeconds", 0.0)),
                tail_kwh=float(c.get("tailKWh", 0.0)),
                tail_seconds=float(c.get("tailSeconds", 0.0)),
                steady_joules=float(c.get("steadyJoules", 0.0)),
                steady_gpu_seconds=float(c.get("steadyGPUSeconds", 0.0)),
                gpus=int(c.get("gpus", 0)),
            )
        )
    return Account(
        watermarks=marks,
        settle_after=None if data.get("settleAfter") is None else float(data["settleAfter"]),
        measured_kwh=float(data.get("measuredKWh", 0.0)),
        estimated_kwh=float(data.get("estimatedKWh", 0.0)),
        unpriced_kwh=float(data.get("unpricedKWh", 0.0)),
        emissions_grams=float(data.get("emissionsGrams", 0.0)),
        baseline_grams=float(data.get("baselineGrams", 0.0)),
        baseline_kwh=float(data.get("baselineKWh", 0.0)),
        resets=int(data.get("counterResets", 0)),
        running=bool(data.get("running", False)),
        chunks=tuple(chunks),
        pods=tuple(PodRef(str(p.get("namespace", "")), str(p["name"]), p.get("uid")) for p in data.get("pods") or []),
    )


# -- the receipt --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Receipt:
    namespace: str
    name: str
    phase: str
    zone: str | None
    pue: float | None
    energy_kwh: float
    energy_source: str
    emissions_grams: float
    baseline_grams: float
    avoided_grams: float
    unpriced_kwh: float
    overhead_kwh: float
    suspensions: int
    chunks: tuple[Chunk, ...] = field(default_factory=tuple)
    counter_resets: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "phase": self.phase,
            "zone": self.zone,
            "pue": self.pue,
            "energyKWh": _r(self.energy_kwh),
            "energySource": self.energy_source,
            "emissionsGrams": _r(self.emissions_grams, 3),
            "baselineEmissionsGrams": _r(self.baseline_grams, 3),
            "avoidedEmissionsGrams": _r(self.avoided_grams, 3),
            "avoidedPercent": _r(self.avoided_percent, 2) if self.avoided_percent is not None else None,
            "unpricedKWh": _r(self.unpriced_kwh),
            "overheadKWh": _r(self.overhead_kwh),
            "suspensions": self.suspensions,
            "counterResets": self.counter_resets,
            "chunks": account_to_wire(Account(chunks=self.chunks))["chunks"],
        }

    @property
    def avoided_percent(self) -> float | None:
        return 100 * self.avoided_grams / self.baseline_grams if self.baseline_grams > 0 else None


def receipt_from_status(namespace: str, name: str, status: Mapping[str, Any], pue: float | None = None) -> Receipt:
    """The receipt of a CarbonAwareJob from its status (measured account when there is one, else the estimate)."""
    account = account_from_wire(status.get("energy"))
    return Receipt(
        namespace=namespace,
        name=name,
        phase=str(status.get("phase") or "Pending"),
        zone=(status.get("plan") or {}).get("zone"),
        pue=pue,
        energy_kwh=float(status.get("energyKWh") or 0.0),
        energy_source=str(status.get("energySource") or "estimate"),
        emissions_grams=float(status.get("emissionsGrams") or 0.0),
        baseline_grams=float(status.get("baselineEmissionsGrams") or 0.0),
        avoided_grams=float(status.get("avoidedEmissionsGrams") or 0.0),
        unpriced_kwh=account.unpriced_kwh
        if account.kwh > 0
        else estimate_from_wire(status.get("estimate")).unpriced_kwh,
        overhead_kwh=account.overhead_kwh,
        suspensions=int(status.get("suspensions") or 0),
        chunks=account.chunks,
        counter_resets=account.resets,
    )


def _grams(value: float) -> str:
    return f"{value / 1000:.3f} kg" if abs(value) >= 1000 else f"{value:.1f} g"


def format_receipt(receipt: Receipt) -> str:
    """The receipt as text: one summary line (the Event message), then one line per run chunk."""
    pct = receipt.avoided_percent
    lines = [
        f"{receipt.energy_kwh:.4f} kWh GPU energy ({receipt.energy_source}), {_grams(receipt.emissions_grams)} CO2e; "
        f"running at submission: {_grams(receipt.baseline_grams)}; avoided {_grams(receipt.avoided_grams)}"
        + (f" ({pct:.0f}%)" if pct is not None else "")
        + f"; {receipt.suspensions} suspension(s), overhead {receipt.overhead_kwh * 1000:.2f} Wh"
        + (f"; {receipt.unpriced_kwh:.4f} kWh without intensity data" if receipt.unpriced_kwh > 0 else "")
        + (f"; {receipt.counter_resets} counter reset(s)" if receipt.counter_resets else "")
    ]
    for i, c in enumerate(receipt.chunks, 1):
        lines.append(
            f"  run {i}: {_iso(c.start)} -> {_iso(c.stopped_at or c.end)}: {c.kwh * 1000:.2f} Wh on {c.gpus} GPU(s), "
            f"{_grams(c.emissions_grams)}; restart ramp {c.ramp_kwh * 1000:.2f} Wh ({c.ramp_seconds:.1f} GPU-s), "
            f"suspend tail {c.tail_kwh * 1000:.2f} Wh ({c.tail_seconds:.1f} GPU-s)"
        )
    return "\n".join(lines)
