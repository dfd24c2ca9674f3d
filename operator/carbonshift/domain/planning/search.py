"""The search algorithms over one cost vector: which slots to run in.

Each function takes `costs` (grams of CO2e for running one whole slot, +inf where the job cannot run, e.g.
no free GPUs) and returns slot indices; they know nothing about dates, jobs or clusters. Work is counted
in slots and may be fractional (the last slot of a job is often only partly used).

- `cheapest_window`: one contiguous block (sliding sums over a cumulative sum), earliest on ties.
- `cheapest_slots`: the k cheapest slots anywhere (the zero-overhead interruptible case), earliest on ties.
- `chunked_runs`: a dynamic programme that picks the cheapest set of slots where every chunk after a
  suspension pays its overhead in time and energy, and every chunk lasts at least `min_run_slots`.
- `threshold_runs`: run while the intensity is at or below a threshold, forced when the deadline
  otherwise could not be met.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from carbonshift.domain.series import FloatArray

IntArray = npt.NDArray[np.int64]
EPS = 1e-9
# The fast paths of the chunked search (a back-tracking stretch found with one numpy pass, candidates pruned by a
# bound, answers cached, the zero-overhead variant sharing the layers); False runs the plain path, for the tests
# that check both give the same plans and for the benchmarks' baseline.
FAST = True
_VECTOR_STRETCH = 24  # back-tracking looks along a chunk with numpy only when it may be longer than this
_TIE = 1e-9  # relative tolerance under which two costs count as equal (cumulative sums are not exact)


@dataclass(frozen=True, slots=True)
class Selection:
    """Chosen slot indices (sorted) and how many chunks must pay the suspend/resume overhead."""

    slots: tuple[int, ...]
    paying_chunks: int

    def chunks(self) -> list[tuple[int, int]]:
        """The runs of consecutive slots as [first, last+1)."""
        return runs_of(self.slots)


def runs_of(slots: tuple[int, ...] | list[int]) -> list[tuple[int, int]]:
    """The runs of consecutive slots of sorted `slots`, as [first, last+1)."""
    if len(slots) > 24:  # (long selections: the breaks found with numpy)
        array = np.asarray(slots, dtype=np.int64)
        breaks = np.flatnonzero(np.diff(array) != 1) + 1
        firsts = np.concatenate(([0], breaks))
        lasts = np.concatenate((breaks, [array.shape[0]]))
        return list(zip(array[firsts].tolist(), (array[lasts - 1] + 1).tolist(), strict=True))
    out: list[tuple[int, int]] = []
    for s in slots:
        if out and out[-1][1] == s:
            out[-1] = (out[-1][0], s + 1)
        else:
            out.append((s, s + 1))
    return out


def whole_slots(work_slots: float) -> int:
    """Slots needed to hold `work_slots` of work (a partly used slot counts as one)."""
    return max(0, math.ceil(work_slots - EPS))


def _first_minimum(values: FloatArray) -> int:
    """Index of the earliest value within the tie tolerance of the minimum."""
    best = float(values.min())
    tolerance = _TIE * max(1.0, abs(best))
    return int(np.flatnonzero(values <= best + tolerance)[0])


def window_costs(costs: FloatArray, work_slots: float) -> FloatArray:
    """Cost of a contiguous run of `work_slots` starting at each slot s (inf where it does not fit or is
    blocked). The last, partly used slot is charged for its used fraction only."""
    n = costs.shape[0]
    span = whole_slots(work_slots)
    starts = n - span + 1
    if span == 0:
        return np.zeros(max(n, 1))
    if starts <= 0:
        return np.empty(0)
    full = math.floor(work_slots + EPS)
    fraction = max(0.0, work_slots - full)
    blocked = ~np.isfinite(costs)
    if not blocked.any():  # (the same sums as below, with nothing blocked)
        cumulative = np.empty(n + 1)
        cumulative[0] = 0.0
        np.cumsum(costs, out=cumulative[1:])
        total = cumulative[full : full + starts] - cumulative[:starts]
        if fraction > EPS:
            total = total + fraction * costs[full : full + starts]
        return total
    finite = np.where(blocked, 0.0, costs)
    cumulative = np.empty(n + 1)
    cumulative[0] = 0.0
    np.cumsum(finite, out=cumulative[1:])
    total = cumulative[full : full + starts] - cumulative[:starts]
    if fraction > EPS:
        total = total + fraction * finite[full : full + starts]
    blocked_count = np.empty(n + 1, dtype=np.int64)
    blocked_count[0] = 0
    np.cumsum(blocked, out=blocked_count[1:])
    hit = blocked_count[span : span + starts] - blocked_count[:starts]
    return np.where(hit > 0, np.inf, total)


def cheapest_window(costs: FloatArray, work_slots: float) -> int | None:
    """Start slot of the cheapest contiguous run of `work_slots`, earliest on ties; None if none fits."""
    totals = window_costs(costs, work_slots)
    if totals.shape[0] == 0 or not np.isfinite(totals).any():
        return None
    return _first_minimum(totals)


def cheapest_slots(costs: FloatArray, count: int) -> tuple[int, ...] | None:
    """The `count` cheapest slots (sorted by time), earliest on ties; None if fewer are available."""
    if count == 0:
        return ()
    finite = np.isfinite(costs)
    if int(np.count_nonzero(finite)) < count:
        return None
    order = np.argsort(np.where(finite, costs, np.inf), kind="stable")
    return tuple(sorted(int(i) for i in order[:count]))


def chunked_runs(
    costs: FloatArray,
    work_slots: float,
    *,
    overhead_slots: float = 0.0,
    resume_costs: FloatArray | None = None,
    min_run_slots: int = 1,
    first_start_free: bool = True,
    running: bool = False,
) -> Selection | None:
    """The cheapest set of slots holding `work_slots` of work, by dynamic programming over slots.

    Every chunk that pays (all chunks but a first one that starts a fresh job, or that continues a job
    running at slot 0) needs `overhead_slots` more run time and adds `resume_costs[i]` when it starts at
    slot i. Every chunk lasts at least `min_run_slots`, except a last one that completes the job.
    See `ChunkedSearch` for the method.
    """
    search = ChunkedSearch(
        costs,
        work_slots,
        overhead_slots=overhead_slots,
        resume_costs=resume_costs,
        min_run_slots=min_run_slots,
        first_start_free=first_start_free,
        running=running,
    )
    return search._best(costs.shape[0], overhead_slots)  # (answered once: no sharing to look up)


class ChunkedSearch:
    """The chunked dynamic programme, answerable for any horizon (`best(horizon)`).

    State (row, j, i): after the first i slots, with j slots run so far, in row 0 = suspended, rows
    1..m-1 = inside a chunk shorter than the minimum m, row m = inside a chunk that may stop, row m+1 =
    finished from a short last chunk (never restarts). The programme is computed layer by layer in j
    (slots run), each layer a handful of numpy operations over all slots at once: the run rows of layer
    j come from layer j-1 shifted by one slot, and the suspended row is a running minimum
    (`np.minimum.accumulate`). Cost: O(count x slots) array work in a Python loop of `count` steps. All
    layers are kept, so jobs that differ only by their deadline share one search, and the back-tracking
    recomputes each step's choice from the stored values (a min returns one of its operands exactly).

    With zero time overhead the answer is exact. With a time overhead, the cheapest solution of each
    slot count is checked for enough run time (count >= work + overhead x paying chunks) and the
    cheapest sufficient one is returned.
    """

    def __init__(
        self,
        costs: FloatArray,
        work_slots: float,
        *,
        overhead_slots: float = 0.0,
        resume_costs: FloatArray | None = None,
        min_run_slots: int = 1,
        first_start_free: bool = True,
        running: bool = False,
    ) -> None:
        n = costs.shape[0]
        self.n = n
        self.costs = costs
        self.rc = np.zeros(n) if resume_costs is None else np.asarray(resume_costs, dtype=np.float64)
        self.work = work_slots
        self.overhead = overhead_slots
        self.first_start_free = first_start_free
        self.running = running
        self.base = base = whole_slots(work_slots)
        self.m = m = max(1, min_run_slots)
        extra = math.ceil(overhead_slots * (n / m + 1) - EPS) if overhead_slots > 0 else 0
        self.top = top = min(n, base + extra)
        self.rows = rows = m + 2 if m > 1 else m + 1
        self.layers = np.full((max(top, 0) + 1, rows, n + 1), np.inf)
        self._answers: dict[tuple[int, float], Selection | None] = {}
        self._blocks: dict[int, FloatArray] = {}
        self._columns: dict[tuple[float, bytes, bytes], Selection | None] = {}
        if base == 0 or top < base:
            return
        layers = self.layers
        first = layers[0]
        if running:
            first[m, 0] = 0.0
            first[0, 1:] = 0.0
        else:
            first[0, :] = 0.0
        c, rc = costs, self.rc
        # (Written into preallocated rows with out=, each sum in the same order as (prev + c) + rc x pay: the
        # same floats as the plain expressions; rc x 1.0 is rc exactly, so the multiply is skipped when paying.)
        # Resume costs of zero (no overhead energy: most fleets) add nothing: x + 0.0 is x for every value here
        # (all >= 0, or inf), so the add is skipped, one numpy call in six per layer.
        resumes = bool(np.any(rc))
        if m == 1:
            # (The same steps as below for m = 1, with each layer's rows taken as views in one pass over the layers
            # rather than indexed layer by layer: a quarter less time, the same floats.)
            stay = np.empty(n)
            before, after = layers[:-1], layers[1:]
            steps = zip(
                before[:, 0, :n], before[:, 1, :n], after[:, 1, 1:], after[:, 1, :n], after[:, 0, 1:], strict=True
            )
            for j, (suspended, inside, start, run, resting) in enumerate(steps, 1):
                np.add(suspended, c, out=start)
                if resumes:
                    start += rc * 0.0 if j == 1 and first_start_free else rc
                np.add(inside, c, out=stay)
                np.minimum(start, stay, out=start)
                np.minimum.accumulate(run, out=resting)
            return
        for j in range(1, top + 1):
            prev, cur = layers[j - 1], layers[j]
            start = cur[1, 1:]
            np.add(prev[0, :n], c, out=start)
            if resumes:
                start += rc * 0.0 if j == 1 and first_start_free else rc
            if m > 2:
                np.add(prev[1 : m - 1, :n], c, out=cur[2:m, 1:])
            top_row = cur[m, 1:]
            np.minimum(prev[m - 1, :n], prev[m, :n], out=top_row)
            top_row += c
            np.minimum.accumulate(cur[m, :n], out=cur[0, 1:])
            if j >= base:
                shortest = cur[1, :n] if m == 2 else np.min(cur[1:m, :n], axis=0)
                np.minimum.accumulate(shortest, out=cur[m + 1, 1:])

    def best(self, horizon: int, overhead_slots: float | None = None) -> Selection | None:
        """The cheapest sufficient selection using only slots [0, horizon).

        `overhead_slots` (at most the search's own) answers for a smaller time overhead from the same layers
        (the layers do not depend on it; only how many are needed does): the zero-overhead plan of a job shares
        the search of its plan with overhead."""
        overhead = self.overhead if overhead_slots is None else overhead_slots
        if overhead > self.overhead + EPS:
            raise ValueError(f"overhead {overhead} exceeds the search's {self.overhead}")
        key = (horizon, overhead)
        if not FAST:
            return self._best(horizon, overhead)
        if key not in self._answers:  # (jobs that share a search and a horizon share the answer)
            self._answers[key] = self._best_by_column(horizon, overhead)
        return self._answers[key]

    def _best_by_column(self, horizon: int, overhead: float) -> Selection | None:
        """`_best`, shared by horizons whose final states are the same. The answer depends on the horizon only
        through the final column (each slot count's cheapest row and value: the candidates, their order and
        where each back-tracking starts) and through the bounds that prune candidates (exact: they skip only
        candidates that cannot win). When every candidate ends suspended or finished (not inside a chunk), its
        back-tracking jumps to where that value first appears in its running minimum, the same slot from any
        column holding the same value: so two horizons with the same final rows and values get the same answer."""
        if self.base == 0 or self.top < self.base or horizon <= 0 or horizon > self.n:
            return self._best(horizon, overhead)
        final = self.layers[self.base : self.top + 1, :, horizon]
        rows = final.argmin(axis=1)
        resting = rows == 0
        if self.m > 1:
            resting |= rows == self.m + 1
        if not resting.all():
            return self._best(horizon, overhead)
        signature = (overhead, final.min(axis=1).tobytes(), rows.tobytes())
        if signature not in self._columns:
            self._columns[signature] = self._best(horizon, overhead)
        return self._columns[signature]

    def _best(self, horizon: int, overhead: float) -> Selection | None:
        if self.base == 0:
            return Selection((), 0)
        if self.top < self.base or horizon <= 0 or horizon > self.n:
            return None
        final = self.layers[self.base : self.top + 1, :, horizon]  # (counts, rows)
        final_rows = final.argmin(axis=1)
        final_costs = final.min(axis=1)  # (the values at final_rows)
        order = final_costs.argsort(kind="stable")  # cheapest first, fewest slots on ties
        # A candidate's cost is its layer's value less at most one slot's cost (the unused end of its last slot):
        # once the layer value, less the dearest slot, cannot beat the best so far, no later candidate can.
        dearest = math.nan  # (found when a second candidate is looked at)
        chosen: Selection | None = None
        chosen_cost = math.inf
        for k in order.tolist():
            value = float(final_costs[k])
            if not math.isfinite(value):
                break
            if FAST and chosen is not None:
                if math.isnan(dearest):
                    usable = self.costs[:horizon]
                    finite = usable[np.isfinite(usable)]
                    dearest = max(float(finite.max()), 0.0) if finite.shape[0] else 0.0
                if value - dearest >= chosen_cost:
                    break
            count = self.base + k
            if count - 1 - self.work >= math.ceil(count / self.m) * overhead - EPS:
                # Even with the most chunks possible a whole slot would stay unused: the optimum of
                # one slot fewer is at least as good.
                continue
            if FAST and count + EPS < self.work + overhead and self._surely_split(count, value, horizon):
                # Cheaper than any single block of `count` slots, so it has two chunks or more, of which one pays
                # the overhead at least: too short whatever the back-tracking would find.
                continue
            slots = self._backtrack(int(final_rows[k]), count, horizon)
            chunks = runs_of(slots)
            free_first = (self.first_start_free and not self.running) or (
                self.running and bool(slots) and slots[0] == 0
            )
            paying = len(chunks) - (1 if free_first and chunks else 0)
            used = self.work + paying * overhead
            if count + EPS < used:
                continue
            # The run ends inside the last slot: charge only the part used (as the plan's windows do).
            unused = min(count - used, 1.0)
            cost = value - (unused * float(self.costs[slots[-1]]) if slots else 0.0)
            if cost < chosen_cost - _TIE * max(1.0, abs(cost)):
                chosen, chosen_cost = Selection(tuple(slots), paying), cost
        return chosen

    def _surely_split(self, count: int, value: float, horizon: int) -> bool:
        """Whether a selection of `count` slots worth `value` is cheaper than every single block of `count` slots in
        [0, horizon) by more than rounding (a single block costs at least its slots' sum)."""
        lowest = self._blocks.get(count)
        if lowest is None:  # the cheapest block ending by each horizon (a prefix's sums are the whole's)
            lowest = self._blocks[count] = np.minimum.accumulate(window_costs(self.costs, float(count)))
        if horizon - count < 0 or lowest.shape[0] == 0:
            return True
        cheapest = float(lowest[min(horizon - count, lowest.shape[0] - 1)])
        return value < cheapest - 1e-9 * max(1.0, abs(cheapest))

    def _backtrack(self, row: int, j: int, i: int) -> list[int]:
        """Recover the run slots of the state (row, j, i) by recomputing each step's choice.

        Suspended and finished rows are running minima (non-increasing in i), so a stretch without
        running is skipped in one binary search: the state was entered where the value first appears."""
        layers, m, c = self.layers, self.m, self.costs
        slots: list[int] = []
        while i > 0:
            if row == 0 or row == m + 1:
                if row == 0 and j == 0 and not (self.running and i == 1):
                    break
                if row == 0 and j == 0:
                    row, i = m, 0
                    continue
                series = layers[j, row, : i + 1]
                first = int(np.searchsorted(-series, -series[i], side="left"))
                i = first - 1
                row = m if row == 0 else 1 + int(np.argmin(layers[j, 1:m, i]))
                continue
            if row == m and FAST and min(i, j) > _VECTOR_STRETCH:
                # A stretch inside a chunk that may stop: it stays in row m (one slot a step, back along the
                # diagonal) until the first step whose value came from the row below; found in one pass.
                d = self._stay_in_top_row(j, i)
                if d > 0:
                    slots.extend(range(i - 1, i - 1 - d, -1))
                    i -= d
                    j -= d
                    if i <= 0:
                        break
            i -= 1
            slots.append(i)
            if row == 1 and m > 1:
                row = 0
            elif row == 1:
                pay = 0.0 if (j == 1 and self.first_start_free) else 1.0
                from_start = layers[j - 1, 0, i] + c[i] + self.rc[i] * pay
                row = 0 if from_start == layers[j, 1, i + 1] else 1
            elif row < m:
                row -= 1
            else:
                row = m - 1 if layers[j - 1, m - 1, i] + c[i] == layers[j, m, i + 1] else m
            j -= 1
        slots.reverse()
        return slots

    def _stay_in_top_row(self, j: int, i: int) -> int:
        """How many steps back from state (m, j, i) stay in row m: the number of leading diagonal states
        (m, j - d, i - d) whose value did not come from the row below (the step the scalar back-tracking takes
        one at a time, with the same comparisons: a value equal to both operands comes from the row below).

        The diagonal is one fixed stride apart in the (contiguous) layers, so it is read as a strided slice, from
        the deepest state (d = length - 1) up to d = 0, with no index arrays."""
        m, c = self.m, self.costs
        length = min(i, j)
        if length <= 1:
            return 0
        flat = self.layers.reshape(-1)  # (a view: the layers are one contiguous array)
        width = self.layers.shape[2]
        stride = self.layers.shape[1] * width + 1  # from (row, j, i) to (row, j + 1, i + 1)
        deepest = length - 1
        top = (j * self.layers.shape[1] + m) * width + i  # (m, j, i)
        low = ((j - 1) * self.layers.shape[1] + m - 1) * width + i - 1  # (m - 1, j - 1, i - 1)
        values = flat[top - deepest * stride : top + 1 : stride]
        below = flat[low - deepest * stride : low + 1 : stride] + c[i - length : i]
        if m == 1:
            resume = self.rc[i - length : i]
            if self.first_start_free and j - deepest == 1:  # the first chunk's start (layer 1) pays nothing
                resume = resume.copy()
                resume[0] = resume[0] * 0.0
            below = below + resume
        hits = np.flatnonzero(below == values)
        return deepest - int(hits[-1]) if hits.shape[0] else deepest


def threshold_runs(
    costs: FloatArray,
    g_per_kwh: FloatArray,
    allowed: npt.NDArray[np.bool_],
    work_slots: float,
    *,
    overhead_slots: float = 0.0,
    min_run_slots: int = 1,
    first_start_free: bool = True,
    running: bool = False,
) -> tuple[Selection, bool] | None:
    """Run in slots where `allowed` (intensity at or below the threshold), but start or keep running
    whenever waiting longer would miss the end of the grid. Returns the selection and whether any slot
    was forced; None when blocked slots (inf cost) make the work impossible to fit."""
    n = costs.shape[0]
    runnable = np.isfinite(costs)
    left = work_slots
    debt = 0.0
    in_chunk = running
    chunk_length = min_run_slots if running else 0
    started = running or not first_start_free
    slots: list[int] = []
    paying = 0
    forced_any = False
    for i in range(n):
        if left <= EPS:
            break
        after = n - i - 1
        pay_later = overhead_slots if (started or in_chunk) else 0.0
        if in_chunk:
            must = left + debt + pay_later > after + EPS or chunk_length < min_run_slots
        else:
            must = left + pay_later > after + EPS
        want = bool(allowed[i]) or must
        if not runnable[i]:
            want = False
        if want:
            if not in_chunk:
                if started:
                    paying += 1
                    debt += overhead_slots
                in_chunk, chunk_length, started = True, 0, True
            forced_any = forced_any or not bool(allowed[i])
            slots.append(i)
            chunk_length += 1
            progress = 1.0
            paid = min(debt, progress)
            debt -= paid
            left -= progress - paid
        else:
            in_chunk = False
    if left > EPS or debt > EPS:
        return None
    return Selection(tuple(slots), paying), forced_any
