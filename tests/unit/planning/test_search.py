"""The search algorithms against brute force on small instances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonshift.domain.planning.search import (
    ChunkedSearch,
    cheapest_slots,
    cheapest_window,
    chunked_runs,
    runs_of,
    threshold_runs,
    window_costs,
)

costs_strategy = st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=10).map(
    lambda v: np.array(v, dtype=np.float64)
)


def brute_force(costs: np.ndarray, count: int, min_run: int, resume: float) -> float | None:
    """Cheapest `count` slots where every chunk but the last lasts >= min_run, each resume costing `resume`."""
    best = None
    for combo in itertools.combinations(range(len(costs)), count):
        chunks = runs_of(list(combo))
        if any(b - a < min_run for a, b in chunks[:-1]):
            continue
        total = float(costs[list(combo)].sum()) + resume * max(len(chunks) - 1, 0)
        best = total if best is None else min(best, total)
    return best


@given(costs=costs_strategy, data=st.data())
@settings(max_examples=200, deadline=None)
def test_chunked_dp_equals_brute_force_with_min_run_and_resume_energy(costs: np.ndarray, data: st.DataObject) -> None:
    count = data.draw(st.integers(0, len(costs)))
    min_run = data.draw(st.integers(1, 4))
    resume = float(data.draw(st.integers(0, 12)))
    chosen = chunked_runs(costs, count, min_run_slots=min_run, resume_costs=np.full(len(costs), resume))
    expected = brute_force(costs, count, min_run, resume)
    if expected is None:
        assert chosen is None
        return
    assert chosen is not None
    assert len(chosen.slots) == count
    got = float(costs[list(chosen.slots)].sum()) + resume * chosen.paying_chunks
    assert got == pytest.approx(expected)
    assert all(b - a >= min_run for a, b in chosen.chunks()[:-1])


@given(costs=costs_strategy, data=st.data())
@settings(max_examples=200, deadline=None)
def test_zero_overhead_no_min_chunk_equals_k_cheapest_slots(costs: np.ndarray, data: st.DataObject) -> None:
    count = data.draw(st.integers(0, len(costs)))
    chosen = chunked_runs(costs, count)
    cheapest = cheapest_slots(costs, count)
    assert chosen is not None and cheapest is not None
    assert float(costs[list(chosen.slots)].sum()) == pytest.approx(float(np.sort(costs)[:count].sum()))
    assert float(costs[list(cheapest)].sum()) == pytest.approx(float(np.sort(costs)[:count].sum()))


@given(costs=costs_strategy, data=st.data())
@settings(max_examples=100, deadline=None)
def test_one_search_answers_every_horizon(costs: np.ndarray, data: st.DataObject) -> None:
    count = data.draw(st.integers(1, len(costs)))
    min_run = data.draw(st.integers(1, 3))
    search = ChunkedSearch(costs, count, min_run_slots=min_run, resume_costs=np.full(len(costs), 2.0))
    for horizon in range(1, len(costs) + 1):
        shared = search.best(horizon)
        alone = chunked_runs(costs[:horizon], count, min_run_slots=min_run, resume_costs=np.full(horizon, 2.0))
        assert (shared is None) == (alone is None)
        if shared is not None and alone is not None:
            assert all(s < horizon for s in shared.slots)
            cost = float(costs[list(shared.slots)].sum()) + 2.0 * shared.paying_chunks
            assert cost == pytest.approx(float(costs[list(alone.slots)].sum()) + 2.0 * alone.paying_chunks)


def test_time_overhead_needs_one_more_slot_per_resume_when_work_is_whole() -> None:
    costs = np.array([1.0, 9.0, 9.0, 1.0, 9.0, 9.0, 1.0, 1.0])
    chosen = chunked_runs(costs, 3, overhead_slots=0.1)
    assert chosen is not None
    # 3 slots of work split in two chunks need 3 + 0.1 slots of run time: a fourth slot.
    assert len(chosen.slots) >= 3 + (1 if chosen.paying_chunks else 0)
    assert len(chosen.slots) + 1e-9 >= 3 + 0.1 * chosen.paying_chunks


def test_running_job_continues_free_but_pays_to_resume() -> None:
    costs = np.array([5.0, 1.0, 5.0, 5.0])
    # Running now: continuing through slot 0 costs 5, stopping and resuming at slot 1 costs 1 + 10 (resume).
    chosen = chunked_runs(costs, 2, resume_costs=np.full(4, 10.0), running=True, first_start_free=False)
    assert chosen is not None
    assert chosen.slots == (0, 1)
    assert chosen.paying_chunks == 0


def test_window_costs_charge_the_partly_used_last_slot() -> None:
    costs = np.array([4.0, 2.0, 6.0, 8.0])
    totals = window_costs(costs, 1.5)
    assert totals.tolist() == pytest.approx([4 + 1, 2 + 3, 6 + 4])
    assert cheapest_window(costs, 1.5) == 0
    blocked = window_costs(np.array([1.0, np.inf, 1.0, 1.0]), 2)
    assert blocked.tolist() == [np.inf, np.inf, 2.0]


def test_cheapest_window_takes_the_earliest_of_equal_windows() -> None:
    assert cheapest_window(np.array([3.0, 1.0, 1.0, 3.0, 1.0, 1.0]), 2) == 1


def test_threshold_runs_below_threshold_and_is_forced_at_the_end() -> None:
    g = np.array([500.0, 100.0, 500.0, 500.0, 500.0, 500.0])
    allowed = g <= 200
    result = threshold_runs(g, g, allowed, 3.0)
    assert result is not None
    selection, forced = result
    assert selection.slots == (1, 4, 5)
    assert forced


long_costs_strategy = st.lists(st.integers(min_value=1, max_value=9), min_size=2, max_size=60).map(
    lambda v: np.array(v, dtype=np.float64)
)


@given(costs=long_costs_strategy, data=st.data())
@settings(max_examples=200, deadline=None)
def test_fast_paths_choose_the_same_slots_as_the_plain_search(costs: np.ndarray, data: st.DataObject) -> None:
    """The vectorised back-tracking, the pruning of candidates and the shared zero-overhead answer give the very
    slots the plain search gives (ties included: integer costs make many), for every horizon."""
    import carbonshift.domain.planning.search as search_module

    count = data.draw(st.integers(1, len(costs)))
    min_run = data.draw(st.integers(1, 4))
    overhead = data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.3]))
    running = data.draw(st.booleans())
    first_free = data.draw(st.booleans())
    resume = np.full(len(costs), float(data.draw(st.integers(0, 5))))

    def answers(fast: bool) -> list[object]:
        search_module.FAST = fast
        try:
            return ask(fast)
        finally:
            search_module.FAST = True

    def ask(fast: bool) -> list[object]:
        search = ChunkedSearch(
            costs,
            count,
            overhead_slots=overhead,
            resume_costs=resume,
            min_run_slots=min_run,
            first_start_free=first_free,
            running=running,
        )
        out: list[object] = []
        for horizon in range(1, len(costs) + 1):
            out.append(search.best(horizon))
            if fast:
                out.append(search.best(horizon, overhead_slots=0.0))
            else:
                plain = ChunkedSearch(
                    costs, count, resume_costs=resume, min_run_slots=min_run,
                    first_start_free=first_free, running=running,
                )  # fmt: skip
                out.append(plain.best(horizon))
        return out

    assert answers(True) == answers(False)


def reference_layers(search: ChunkedSearch, costs: np.ndarray) -> np.ndarray:
    """The programme's layers as the plain expressions compute them (the search writes them in place with out=)."""
    n, m, rows, top, base = search.n, search.m, search.rows, search.top, search.base
    layers = np.full((max(top, 0) + 1, rows, n + 1), np.inf)
    if base == 0 or top < base:
        return layers
    if search.running:
        layers[0, m, 0] = 0.0
        layers[0, 0, 1:] = 0.0
    else:
        layers[0, 0, :] = 0.0
    for j in range(1, top + 1):
        prev, cur = layers[j - 1], layers[j]
        pay = 0.0 if (j == 1 and search.first_start_free) else 1.0
        start = prev[0, :n] + costs + search.rc * pay
        if m == 1:
            np.minimum(start, prev[1, :n] + costs, out=cur[1, 1:])
        else:
            cur[1, 1:] = start
            if m > 2:
                np.add(prev[1 : m - 1, :n], costs, out=cur[2:m, 1:])
            np.minimum(prev[m - 1, :n], prev[m, :n], out=cur[m, 1:])
            cur[m, 1:] += costs
        np.minimum.accumulate(cur[m, :n], out=cur[0, 1:])
        if m > 1 and j >= base:
            np.minimum.accumulate(np.min(cur[1:m, :n], axis=0), out=cur[m + 1, 1:])
    return layers


def reference_step(search: ChunkedSearch, row: int, j: int, i: int) -> tuple[int, int, int]:
    """One scalar back-tracking step from a state inside a chunk, with every comparison written out."""
    layers, m, c = search.layers, search.m, search.costs
    value = layers[j, row, i]
    i -= 1
    prev = layers[j - 1]
    if row == 1:
        pay = 0.0 if (j == 1 and search.first_start_free) else 1.0
        from_start = prev[0, i] + c[i] + search.rc[i] * pay
        row = 0 if (m > 1 or from_start == value) else 1
    elif row < m:
        row -= 1
    else:
        row = m - 1 if prev[m - 1, i] + c[i] == value else m
    return row, j - 1, i


@given(data=st.data())
@settings(max_examples=150, deadline=None)
def test_layers_and_back_tracking_are_the_plain_expressions_bit_for_bit(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 40))
    values = data.draw(st.lists(st.sampled_from([1.0, 2.0, 2.5, 3.0, 0.1, 7.3, np.inf]), min_size=n, max_size=n))
    costs = np.array(values) * data.draw(st.sampled_from([1.0, 0.37, 113.9]))
    resume = np.where(np.isfinite(costs), costs, 1.0) * data.draw(st.sampled_from([0.0, 0.05, 1.3]))
    search = ChunkedSearch(
        costs,
        data.draw(st.floats(0.5, n, allow_nan=False)),
        overhead_slots=data.draw(st.sampled_from([0.0, 0.02, 0.3, 1.0])),
        resume_costs=resume,
        min_run_slots=data.draw(st.integers(1, 4)),
        first_start_free=data.draw(st.booleans()),
        running=data.draw(st.booleans()),
    )
    assert np.array_equal(search.layers, reference_layers(search, costs))
    for j in range(1, search.layers.shape[0]):
        for row in range(1, search.m + 1):
            for i in range(1, n + 1):
                if not np.isfinite(search.layers[j, row, i]):
                    continue
                expected = reference_step(search, row, j, i)
                # The back-tracking from that state takes the reference's step first.
                slots = search._backtrack(row, j, i)
                assert slots and slots[-1] == i - 1
                rest = search._backtrack(expected[0], expected[1], expected[2]) if expected[1] > 0 else []
                assert slots == [*rest, i - 1] or expected[2] == 0


@given(costs=long_costs_strategy, data=st.data())
@settings(max_examples=150, deadline=None)
def test_horizons_with_the_same_final_states_share_an_answer_that_is_each_ones_own(
    costs: np.ndarray, data: st.DataObject
) -> None:
    # Integer costs on few values: many horizons end with the same final states, so the shared answers are used.
    n = costs.shape[0]
    search = ChunkedSearch(
        costs,
        data.draw(st.floats(1.0, max(1.0, n * 0.7))),
        overhead_slots=data.draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        resume_costs=np.full(n, data.draw(st.sampled_from([0.0, 1.0, 3.0]))),
        min_run_slots=data.draw(st.integers(1, 3)),
        first_start_free=data.draw(st.booleans()),
        running=data.draw(st.booleans()),
    )
    horizons = data.draw(st.permutations(list(range(1, n + 1))))
    for horizon in horizons:
        assert search.best(horizon) == search._best(horizon, search.overhead)  # the horizon's own answer


def test_horizons_past_the_cheap_slots_share_one_answer() -> None:
    costs = np.array([9.0, 1.0, 1.0, 9.0, 1.0, 1.0] + [9.0] * 20)
    search = ChunkedSearch(costs, 4.0, overhead_slots=0.0, resume_costs=np.full(26, 1.0), min_run_slots=2)
    answers = {search.best(h) for h in range(6, 27)}
    assert answers == {search._best(26, 0.0)}
    assert search._best(26, 0.0) is not None and search._best(26, 0.0).slots == (1, 2, 4, 5)  # type: ignore[union-attr]
    assert len(search._columns) == 1  # 21 horizons, one programme answer
