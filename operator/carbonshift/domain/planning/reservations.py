"""GPU reservations: what every job's current plan will use, per cluster and time slot, so each job plans around
the others.

The operator plans each CarbonAwareJob on its own (one daemon per job, see docs/design/operator.md). Planned alone,
a thousand jobs would all pick the same clean window and queue for its GPUs. Instead each job's plan is recorded
here as it is made, and the next job plans against the GPUs the others leave:

    free(slot) = available - GPUs the other jobs plan to use in slot

where `available` is the cluster's GPUs net of everything carbonshift does not manage (free now plus the GPUs of
carbonshift's pods now, both from one pod listing so they agree), assumed to stay as it is now. This is the fleet
planner's greedy rule applied incrementally, in the order jobs (re)plan; each re-plan costs O(slots of the
horizon), however many jobs there are.

Time is cut into absolute slots of `resolution` (5 minutes: the finest resolution any provider has), so plans made
at different moments on grids of different resolutions meet on one scale. A planning slot that straddles absolute
slots takes the largest use among them: never optimistic. Per cluster the use is one numpy array over absolute slots
(grown as plans reach further, its old empty head cut), so a re-plan reads it with a few array operations.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np

from carbonshift.domain.planning.model import RunWindow

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_GROW = 288  # absolute slots (a day of 5 minutes) added beyond what a span needs when the array grows
_KEEP_BEHIND = 2 * _GROW  # leading slots with no use kept when the array grows; older ones are cut


@dataclass(frozen=True, slots=True)
class _Entry:
    cluster: str
    gpus: int
    spans: tuple[tuple[int, int], ...]  # absolute slot ranges [a, b)


@dataclass
class _Usage:
    """GPUs planned on one cluster per absolute slot: `counts[i]` is slot `lo + i` (slots outside hold none)."""

    lo: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    jobs: int = 0  # entries on this cluster

    def add(self, spans: Sequence[tuple[int, int]], gpus: int) -> None:
        for a, b in spans:
            self._cover(a, b)
            self.counts[a - self.lo : b - self.lo] += gpus

    def _cover(self, a: int, b: int) -> None:
        lo, hi = self.lo, self.lo + self.counts.shape[0]
        if self.counts.shape[0] and lo <= a and b <= hi:
            return
        used = np.flatnonzero(self.counts)
        if used.shape[0]:  # keep the slots in use (and a little before them), cut older empty ones and the empty tail
            lo = max(self.lo, self.lo + int(used[0]) - _KEEP_BEHIND)
            hi = self.lo + int(used[-1]) + 1
        else:
            lo, hi = a, a
        new_lo = min(lo, a) - (_GROW if a < lo else 0)
        new_hi = max(hi, b) + (_GROW if b > hi else 0)
        counts = np.zeros(new_hi - new_lo, dtype=np.int64)
        if hi > lo:
            counts[lo - new_lo : hi - new_lo] = self.counts[lo - self.lo : hi - self.lo]
        self.lo, self.counts = new_lo, counts

    def window(self, first: int, n: int) -> np.ndarray:
        """The use of absolute slots [first, first + n), as a fresh array."""
        out = np.zeros(n, dtype=np.int64)
        a, b = max(first, self.lo), min(first + n, self.lo + self.counts.shape[0])
        if b > a:
            out[a - first : b - first] = self.counts[a - self.lo : b - self.lo]
        return out


@dataclass
class Reservations:
    """Every job's planned GPU use by cluster and absolute slot."""

    resolution: timedelta = timedelta(minutes=5)
    _jobs: dict[Hashable, _Entry] = field(default_factory=dict)
    _use: dict[str, _Usage] = field(default_factory=dict)

    def _slot(self, moment: datetime, *, up: bool = False) -> int:
        x = (moment - EPOCH) / self.resolution
        return math.ceil(x - 1e-9) if up else math.floor(x + 1e-9)

    def put(self, key: Hashable, cluster: str, gpus: int, windows: Sequence[RunWindow]) -> None:
        """Record `key`'s plan: `gpus` on `cluster` during `windows` (replacing its previous plan)."""
        spans = tuple((self._slot(w.start), max(self._slot(w.end, up=True), self._slot(w.start) + 1)) for w in windows)
        entry = _Entry(cluster, max(gpus, 0), spans)
        if self._jobs.get(key) == entry:
            return
        self.drop(key)
        self._jobs[key] = entry
        use = self._use.setdefault(cluster, _Usage())
        use.jobs += 1
        use.add(spans, entry.gpus)

    def drop(self, key: Hashable) -> None:
        entry = self._jobs.pop(key, None)
        if entry is None:
            return
        use = self._use[entry.cluster]
        use.add(entry.spans, -entry.gpus)
        use.jobs -= 1
        if use.jobs == 0:
            del self._use[entry.cluster]

    def free_by_slot(
        self, key: Hashable, cluster: str, available: int, now: datetime, step: timedelta, count: int
    ) -> tuple[int, ...]:
        """Free GPUs for `key` on `cluster` in planning slots [now + i*step, now + (i+1)*step), i < count.

        `available`: the cluster's GPUs net of the work carbonshift does not manage (free now, plus what
        carbonshift's own pods hold now)."""
        own = self._jobs.get(key)
        base = available
        use = self._use.get(cluster)
        if use is None or (use.jobs == 1 and own is not None and own.cluster == cluster):
            return (max(base, 0),) * count
        # Others' use on the absolute slots the grid covers (numpy: this runs on every re-plan of every job).
        res, step_s = self.resolution.total_seconds(), step.total_seconds()
        t0 = (now - EPOCH).total_seconds()
        first = math.floor(t0 / res + 1e-9)
        n = max(math.ceil((t0 + count * step_s) / res - 1e-9) - first, 1) + 1
        others = use.window(first, n)
        if own is not None and own.cluster == cluster:
            for a, b in own.spans:
                lo, hi = max(a, first), min(b, first + n)
                if hi > lo:
                    others[lo - first : hi - first] -= own.gpus
        # Planning slot i covers absolute slots [a_i, b_i); one that straddles two takes the larger use. b_i is
        # a_(i+1) or a_(i+1) + 1 (the straddled slot), so the max over [a_i, a_(i+1)) (reduceat) and others[b_i - 1]
        # together are the max over [a_i, b_i). (Same float expressions as one slot at a time.)
        edges = t0 + np.arange(count + 1, dtype=np.float64) * step_s
        starts = np.floor(edges[:-1] / res + 1e-9).astype(np.int64) - first
        ends = np.maximum(np.ceil(edges[1:] / res - 1e-9).astype(np.int64) - first, starts + 1)
        widest = np.maximum(np.maximum.reduceat(others[: int(ends[-1])], starts), others[ends - 1])
        return tuple(np.maximum(base - widest, 0).tolist())

    def __len__(self) -> int:
        return len(self._jobs)
