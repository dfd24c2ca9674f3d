"""Attribution: which DCGM samples are a workload's, and the energy of each interval between two samples of a GPU.

- Identity, never names: an interval is charged only when its holder is one of the pods the operator listed as the
  workload's (`Pods`: exact namespace/pod, and pod UID where the exporter gives pod_uid). Another workload's pod
  whose name merely starts the same (`train-1-x7k2p` for `train`), a plain pod, a CronJob's pod: nobody's here.
- The interval between two consecutive samples of a GPU belongs to the pod named by the later sample, or by the
  earlier one when the later shows the GPU unassigned (pod=""). So the energy up to the first sample of a resumed
  pod, and the energy drawn after its last sample until the GPU shows unassigned, are the pod's; what is
  mis-attributed is at most one sampling interval of idle power at each edge.
- Each GPU is its own series (UUID, MIG instance): a multi-GPU pod, or a workload over several nodes, is charged
  each GPU once.
- Energy of an interval: the counter difference (mJ); after a counter reset (driver reload) the value since the
  reset plus the power-based estimate of the part before it; without a counter, the trapezoid of the power samples;
  across a gap longer than `max_gap_seconds` without a counter, or when nothing was measured, spec.power.wattsPerGPU
  x seconds, flagged estimated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from carbonshift.domain.accounting.wire import wire

J_PER_KWH = 3.6e6
MJ_PER_J = 1000.0


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

    gpu: str = field(metadata=wire("gpu"))
    node: str = field(metadata=wire("node"))
    t: float = field(metadata=wire("time"))
    owner: str | None = field(default=None, metadata=wire("pod"))
    counter_mj: float | None = field(default=None, metadata=wire("counterMJ"))
    power_watts: float | None = field(default=None, metadata=wire("powerWatts"))
    chunk: int = field(default=0, metadata=wire("chunk"))  # the chunk the GPU last ran in
    ramping: bool = field(default=False, metadata=wire("ramping"))  # in a restart ramp (not yet at steady power)

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
class Settings:
    watts_per_gpu: float = 683.0
    max_gap_seconds: float = 120.0  # longer gaps between power samples are estimated
    ramp_fraction: float = 0.8


@dataclass(frozen=True, slots=True)
class PodRef:
    """A pod the operator knows is the workload's (listed by the Job's selector and owner chain)."""

    namespace: str = field(metadata=wire("namespace"))
    name: str = field(metadata=wire("name"))
    uid: str | None = field(default=None, metadata=wire("uid"))

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
