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
slots takes the largest use among them: never optimistic.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from carbonshift.domain.planning.model import RunWindow

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Entry:
    cluster: str
    gpus: int
    spans: tuple[tuple[int, int], ...]  # absolute slot ranges [a, b)


@dataclass
class Reservations:
    """Every job's planned GPU use by cluster and absolute slot."""

    resolution: timedelta = timedelta(minutes=5)
    _jobs: dict[Hashable, _Entry] = field(default_factory=dict)
    _use: dict[str, Counter[int]] = field(default_factory=dict)

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
        use = self._use.setdefault(cluster, Counter())
        for a, b in spans:
            for s in range(a, b):
                use[s] += entry.gpus

    def drop(self, key: Hashable) -> None:
        entry = self._jobs.pop(key, None)
        if entry is None:
            return
        use = self._use[entry.cluster]
        for a, b in entry.spans:
            for s in range(a, b):
                use[s] -= entry.gpus
                if use[s] <= 0:
                    del use[s]

    def free_by_slot(
        self, key: Hashable, cluster: str, available: int, now: datetime, step: timedelta, count: int
    ) -> tuple[int, ...]:
        """Free GPUs for `key` on `cluster` in planning slots [now + i*step, now + (i+1)*step), i < count.

        `available`: the cluster's GPUs net of the work carbonshift does not manage (free now, plus what
        carbonshift's own pods hold now)."""
        own = self._jobs.get(key)
        mine_here = own is not None and own.cluster == cluster
        base = available
        use = self._use.get(cluster)
        if not use:
            return (max(base, 0),) * count
        # Others' use on the absolute slots the grid covers, as a list (plain floats: this runs on every re-plan).
        res, step_s = self.resolution.total_seconds(), step.total_seconds()
        t0 = (now - EPOCH).total_seconds()
        first = math.floor(t0 / res + 1e-9)
        n = max(math.ceil((t0 + count * step_s) / res - 1e-9) - first, 1) + 1
        others = [0] * n
        for slot, gpus in use.items():
            if first <= slot < first + n:
                others[slot - first] = gpus
        if own is not None and mine_here:
            for a, b in own.spans:
                for slot in range(max(a, first), min(b, first + n)):
                    others[slot - first] -= own.gpus
        result = []
        for i in range(count):
            a = math.floor((t0 + i * step_s) / res + 1e-9) - first
            b = max(math.ceil((t0 + (i + 1) * step_s) / res - 1e-9) - first, a + 1)
            result.append(max(base - max(others[a:b]), 0))
        return tuple(result)

    def __len__(self) -> int:
        return len(self._jobs)
