"""Attribution of DCGM samples, watermarks, overheads and pricing (carbonshift.domain.accounting)."""

from __future__ import annotations

import csv
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import carbonshift.data
from carbonshift.api.energy import EnergyAccount
from carbonshift.domain.accounting import (
    MAX_PENDING,
    Account,
    Estimate,
    GpuSeries,
    PodRef,
    Pods,
    Pricing,
    Sample,
    Settings,
    Work,
    account_from_wire,
    account_to_wire,
    advance,
    attribute,
    estimate_from_wire,
    estimate_to_wire,
    extend_estimate,
    format_receipt,
    interval_energy,
    open_chunk,
    receipt_from_status,
    remember_pods,
    reprice,
    reprice_estimate,
    wall_to_utc,
)
from carbonshift.domain.series import IntensitySeries, Kind, Signal

T0 = 1_800_000_000.0  # wall seconds
P = "ml/train-ab1cd"
SET = Settings(watts_per_gpu=500.0, max_gap_seconds=60.0)


owns = Pods([PodRef("ml", "train-ab1cd"), PodRef("ml", "train-ef2gh")])


def pricing(values: list[float] | None = None, submitted: float = T0, pue: float = 1.5) -> Pricing:
    start = wall_to_utc(T0).replace(minute=0, second=0) - timedelta(hours=1)
    series = IntensitySeries("DE", start, timedelta(hours=1), np.array(values or [100.0] * 10))
    return Pricing(pue, series, wall_to_utc(submitted), wall_to_utc)


def counter_series(points: list[tuple[float, str | None, float]], gpu: str = "GPU-1") -> GpuSeries:
    """(seconds after T0, owner, watts over the preceding interval) -> samples with an exact counter."""
    samples, counter, last = [], 5e9, 0.0
    for offset, owner, watts in points:
        counter += watts * (offset - last) * 1000
        last = offset
        samples.append(Sample(T0 + offset, owner, counter, watts))
    return GpuSeries(gpu, "node-a", tuple(samples))


def test_the_interval_goes_to_the_later_holder_unless_the_gpu_was_released() -> None:
    series = counter_series([(0, None, 70), (10, P, 70), (20, P, 700), (30, None, 100), (40, None, 70)])
    intervals, last, resets = attribute(series, None, owns, T0 - 60, SET)
    # (0,10]: idle then the pod arrives -> the pod's; (10,20] the pod's; (20,30] released at 30 -> the pod's.
    assert [(i.start - T0, i.end - T0, i.joules) for i in intervals] == [(0, 10, 700), (10, 20, 7000), (20, 30, 1000)]
    assert last is not None and last.t == T0 + 40
    assert resets == 0


def test_a_gpu_handed_to_another_pod_counts_once() -> None:
    other = "ml2/eval-xx1yy"
    series = counter_series([(0, P, 700), (10, P, 700), (20, other, 300), (30, other, 300)])
    mine, _, _ = attribute(series, None, owns, T0 - 60, SET)
    theirs, _, _ = attribute(series, None, Pods([PodRef("ml2", "eval-xx1yy")]), T0 - 60, SET)
    assert sum(i.joules for i in mine) + sum(i.joules for i in theirs) == pytest.approx(7000 + 3000 + 3000)


def test_counter_reset_counts_the_value_since_the_reset_and_estimates_the_rest_from_power() -> None:
    prev = Sample(T0, P, 9_000_000.0, 600.0)
    cur = Sample(T0 + 10, P, 2_000_000.0, 600.0)  # driver reload: 2 kJ since the reset
    joules, estimated, reset = interval_energy(prev, cur, SET)
    assert reset and not estimated
    assert joules == pytest.approx(6000.0)  # 600 W x 10 s: 2 kJ counted + 4 kJ before the reset


def test_power_is_integrated_without_a_counter_and_gaps_are_estimated() -> None:
    a, b = Sample(T0, P, None, 400.0), Sample(T0 + 10, P, None, 600.0)
    assert interval_energy(a, b, SET) == (5000.0, False, False)
    far = Sample(T0 + 600, P, None, 600.0)  # 10 min without samples: wattsPerGPU x seconds, flagged
    assert interval_energy(a, far, SET) == (500.0 * 600, True, False)


def test_watermark_prevents_double_counting_of_overlapping_reads() -> None:
    pr = pricing()
    acc = open_chunk(Account(), True, wall_to_utc(T0))
    points = [(float(t), P, 600.0) for t in range(0, 61, 5)]
    full = counter_series(points)
    first = GpuSeries("GPU-1", "node-a", full.samples[:8])
    acc = advance(acc, [first], owns, T0 - 300, pr, SET, T0 - 300)
    acc = advance(acc, [full], owns, T0 - 300, pr, SET, T0 - 300)  # overlaps the first read entirely
    acc = advance(acc, [full], owns, T0 - 300, pr, SET, T0 - 300)
    assert acc.measured_kwh * 3.6e6 == pytest.approx(600 * 60)
    # A restarted operator reads the account back from status and continues exactly.
    restored = account_from_wire(account_to_wire(acc))
    more = counter_series([*points, (65.0, P, 600.0), (70.0, None, 70.0)])
    restored = advance(restored, [more], owns, T0 - 300, pr, SET, T0 - 300)
    assert restored.measured_kwh * 3.6e6 == pytest.approx(600 * 65 + 70 * 5, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    watts=st.lists(st.floats(min_value=50, max_value=700), min_size=3, max_size=40),
    cuts=st.lists(st.integers(min_value=1, max_value=39), max_size=6),
)
def test_reading_in_any_pieces_gives_the_same_energy(watts: list[float], cuts: list[int]) -> None:
    """Property: whatever the reads (overlapping, repeated, split anywhere), each interval is counted once."""
    series = counter_series([(5.0 * i, P, w) for i, w in enumerate(watts)])
    whole = advance(open_chunk(Account(), True, wall_to_utc(T0)), [series], owns, T0 - 1, pricing(), SET, T0 - 1)
    acc = open_chunk(Account(), True, wall_to_utc(T0))
    for cut in sorted(c for c in cuts if c < len(watts)):
        acc = advance(acc, [GpuSeries("GPU-1", "node-a", series.samples[:cut])], owns, T0 - 1, pricing(), SET, T0 - 1)
    acc = advance(acc, [series], owns, T0 - 1, pricing(), SET, T0 - 1)
    assert acc.measured_kwh == pytest.approx(whole.measured_kwh, rel=1e-12)
    assert acc.measured_kwh * 3.6e6 == pytest.approx(sum(5.0 * w for w in watts[1:]))


def test_tail_ramp_emissions_and_baseline() -> None:
    """Run 600 W for 60 s, suspend (checkpoint at 200 W for 10 s), resume with a 10 s ramp at 100 W, then 600 W."""
    pr = pricing(values=[100.0, 200.0, 400.0, 400.0, 400.0], submitted=T0 - 3600)
    acc = open_chunk(Account(), True, wall_to_utc(T0))
    run1 = [(float(t), P, 600.0) for t in range(0, 61, 10)] + [(70.0, P, 200.0), (80.0, None, 70.0)]
    acc = advance(acc, [counter_series(run1[:7])], owns, T0 - 60, pr, SET, T0 - 60)  # read up to 60 s
    acc = open_chunk(acc, False, wall_to_utc(T0 + 60))  # the suspension decision
    acc = advance(acc, [counter_series(run1)], owns, T0 - 60, pr, SET, T0 - 60)
    acc = open_chunk(acc, True, wall_to_utc(T0 + 200))
    run2 = [*run1, (200.0, None, 70.0), (210.0, P, 100.0), (220.0, P, 600.0), (230.0, P, 600.0)]
    acc = advance(acc, [counter_series(run2)], owns, T0 - 60, pr, SET, T0 - 60)
    first, second = acc.chunks
    assert first.tail_kwh * 3.6e6 == pytest.approx(200 * 10 + 70 * 10)  # decision at 60 s, GPU released at 80 s
    assert first.ramp_kwh == 0
    assert second.ramp_kwh * 3.6e6 == pytest.approx(100 * 10)  # (200,210] at 100 W < 0.8 x 600 W: the ramp
    assert second.ramp_seconds == pytest.approx(10)
    total_j = 600 * 60 + 200 * 10 + 70 * 10 + 100 * 10 + 600 * 20
    assert acc.measured_kwh * 3.6e6 == pytest.approx(total_j)
    # Intensity at T0 is the second slot (200 g/kWh); the baseline runs from T0 - 1 h (100 g/kWh), overheads left out.
    assert acc.emissions_grams == pytest.approx(total_j / 3.6e6 * 1.5 * 200)
    steady_j = total_j - (200 * 10 + 70 * 10) - 100 * 10
    assert acc.baseline_grams == pytest.approx(steady_j / 3.6e6 * 1.5 * 100)
    assert acc.avoided_grams < 0


def test_wire_form_matches_the_crd_model_and_round_trips() -> None:
    pr = pricing()
    acc = open_chunk(Account(), True, wall_to_utc(T0))
    acc = advance(acc, [counter_series([(0, None, 70), (10, P, 600), (20, P, 600)])], owns, T0 - 60, pr, SET, T0)
    wire = account_to_wire(acc)
    EnergyAccount.model_validate(wire)
    assert account_to_wire(account_from_wire(wire)) == wire


def test_unpriced_energy_is_reported_not_guessed() -> None:
    far = Pricing(1.2, None, wall_to_utc(T0), wall_to_utc)
    acc = open_chunk(Account(), True, wall_to_utc(T0))
    acc = advance(acc, [counter_series([(0, P, 600), (10, P, 600)])], owns, T0 - 60, far, SET, T0)
    assert acc.unpriced_kwh == pytest.approx(6000 / 3.6e6)
    assert acc.emissions_grams == 0


def test_receipt_text_names_energy_emissions_baseline_and_overheads() -> None:
    status = {
        "phase": "Succeeded",
        "energyKWh": 1.25,
        "energySource": "dcgm",
        "emissionsGrams": 300.0,
        "baselineEmissionsGrams": 500.0,
        "avoidedEmissionsGrams": 200.0,
        "suspensions": 1,
        "energy": {
            "measuredKWh": 1.25,
            "emissionsGrams": 300.0,
            "baselineGrams": 400.0,
            "homeBaselineGrams": 500.0,
            "homeCluster": "gpu-de",
            "provider": "electricitymaps",
            "signal": "average",
            "chunks": [
                {
                    "start": "2026-01-01T00:00:00Z",
                    "stoppedAt": "2026-01-01T02:00:00Z",
                    "kWh": 0.75,
                    "emissionsGrams": 200.0,
                    "tailKWh": 0.002,
                    "tailSeconds": 5.0,
                    "gpus": 2,
                },
                {
                    "start": "2026-01-01T05:00:00Z",
                    "end": "2026-01-01T06:00:00Z",
                    "kWh": 0.5,
                    "emissionsGrams": 100.0,
                    "rampKWh": 0.001,
                    "rampSeconds": 12.0,
                    "gpus": 2,
                },
            ],
        },
    }
    text = format_receipt(receipt_from_status("ml", "train", status))
    first, *runs = text.splitlines()
    assert first.startswith("1.2500 kWh GPU energy (dcgm), 300.0 g CO2e (average intensity from electricitymaps)")
    assert "avoided 200.0 g (40%) = temporal 100.0 g + spatial 100.0 g" in first
    assert "1 suspension(s), overhead 3.00 Wh" in first
    assert runs[0] == (
        "  counterfactuals: this cluster at submission 400.0 g (temporal); home cluster gpu-de at submission 500.0 g"
        " (spatial)"
    )
    runs = runs[2:]
    assert runs[0].startswith("  run 1: 2026-01-01T00:00:00Z -> 2026-01-01T02:00:00Z: 750.00 Wh on 2 GPU(s)")
    assert "restart ramp 1.00 Wh (12.0 GPU-s)" in runs[1]


def test_times_are_utc() -> None:
    assert wall_to_utc(T0) == datetime.fromtimestamp(T0, UTC)


def test_a_long_gap_in_which_the_gpu_changed_hands_is_not_attributed() -> None:
    """The job was suspended for hours; another pod used its old GPU and left. The first sample after the gap
    shows the GPU free: the energy of the gap is nobody's we can name, and must not land on the suspended job."""
    series = counter_series([(0, P, 700), (10, P, 700), (10_000, None, 700), (10_010, None, 70)])
    intervals, _, _ = attribute(series, None, owns, T0 - 60, SET)
    assert [(i.start - T0, i.end - T0) for i in intervals] == [(0, 10)]
    # A release seen within the gap limit is still the job's (the suspend tail).
    short = counter_series([(0, P, 700), (10, P, 700), (20, None, 300)])
    tail, _, _ = attribute(short, None, owns, T0 - 60, SET)
    assert [(i.start - T0, i.end - T0, i.joules) for i in tail] == [(0, 10, 7000), (10, 20, 3000)]


def test_a_gpu_taken_over_by_another_job_never_charges_its_energy_to_the_first() -> None:
    """The handler treats the holders its watermarks remember as the job's own pods. A GPU the job released and
    another job's pod took must not be remembered under that pod, or every later read charges its energy here."""
    other = "ml/eval-zz9yy"
    points = [(0, P, 700), (10, P, 700), (20, None, 70), (30, other, 700)]
    points += [(40 + 10 * i, other, 700) for i in range(30)]
    full = counter_series(points)
    account = Account()
    for cut in (25, 45, 100, 200, 400):  # reads as the ticks make them, each seeing the samples up to `cut`
        remembered = {m.owner for m in account.watermarks if m.owner}

        def owns_as_handler(owner: str, uid: str | None = None, remembered: set[str] = remembered) -> bool:
            return owner in remembered or owns(owner, uid)

        window = GpuSeries(full.gpu, full.node, tuple(s for s in full.samples if s.t <= T0 + cut))
        account = advance(account, [window], owns_as_handler, T0 - 60, pricing(), SET, forget_before=T0 - 60)
        assert all(m.owner in (None, P) for m in account.watermarks), account.watermarks
    # Its own 20 s at 700 W and the release interval (10, 20] at 70 W; nothing of the other job's 300 s.
    assert account.kwh * 3.6e6 == pytest.approx(700 * 10 + 70 * 10)


def test_an_estimate_is_priced_as_it_accrues_with_its_baseline_at_the_same_run_offset() -> None:
    """Hourly intensity 100, 400, 100, ... from T0's hour; submitted at T0, the job waits 1 h and runs 2 h at 500 W
    x 2 GPUs: estimated ticks price each added run time at its own hour, the baseline at submission + offset."""
    values = [100.0, 100.0, 400.0, 100.0, 100.0, 100.0]
    start = wall_to_utc(T0).replace(minute=0, second=0) - timedelta(hours=1)
    series = IntensitySeries("DE", start, timedelta(hours=1), np.array(values))
    submitted = start + timedelta(hours=1)
    price = Pricing(1.5, series, submitted, wall_to_utc)
    estimate = extend_estimate(Estimate(), 3600.0, submitted + timedelta(hours=2), 2, 500.0, price)
    estimate = extend_estimate(estimate, 7200.0, submitted + timedelta(hours=3), 2, 500.0, price)
    assert estimate.kwh == pytest.approx(2.0)
    assert estimate.emissions_grams == pytest.approx(1.0 * 1.5 * 400 + 1.0 * 1.5 * 100)  # hours 2 and 3
    assert estimate.baseline_grams == pytest.approx(1.0 * 1.5 * 100 + 1.0 * 1.5 * 400)  # hours 1 and 2
    assert extend_estimate(estimate, 7200.0, submitted + timedelta(hours=4), 2, 500.0, price) == estimate
    assert estimate_from_wire(estimate_to_wire(estimate)) == pytest.approx(estimate)  # type: ignore[comparison-overlap]


def test_an_estimate_without_intensity_data_is_unpriced_not_guessed() -> None:
    price = Pricing(1.2, None, wall_to_utc(T0), wall_to_utc)
    estimate = extend_estimate(Estimate(), 1800.0, wall_to_utc(T0 + 3600), 1, 700.0, price)
    assert estimate.kwh == pytest.approx(0.35)
    assert estimate.unpriced_kwh == pytest.approx(0.35)
    assert estimate.emissions_grams == 0.0
    receipt = receipt_from_status("ml", "x", {"energyKWh": 0.35, "estimate": estimate_to_wire(estimate)})
    assert "unpriced 0.3500 kWh (no intensity data, not in any figure)" in format_receipt(receipt)


def test_only_the_workloads_own_pods_are_charged_by_exact_name_and_uid() -> None:
    """Name lookalikes (another CarbonAwareJob's `train-1-x7k2p`, a plain `train-debug`, a CronJob's
    `train-29123456-x9z8y`) are never the workload's; a pod re-created under a known name with another UID is not
    either, where the exporter gives pod_uid."""
    pods = Pods([PodRef("ml", "train-ab1cd", "uid-1")])
    assert pods("ml/train-ab1cd") and pods("ml/train-ab1cd", "uid-1")
    assert not pods("ml/train-ab1cd", "uid-2")
    for stranger in ("ml/train-1-x7k2p", "ml/train-debug", "ml/train-29123456-x9z8y", "other/train-ab1cd"):
        assert not pods(stranger)
    samples = tuple(Sample(T0 + 10 * i, "ml/train-ab1cd", 5e9 + 7e6 * i, 700.0, "uid-2") for i in range(4))
    intervals, _, _ = attribute(GpuSeries("GPU-1", "node-a", samples), None, pods, T0 - 60, SET)
    assert intervals == []  # the same name, another pod


def test_the_pods_seen_are_remembered_bounded_and_round_trip() -> None:
    account = remember_pods(Account(), [PodRef("ml", "train-ab1cd", "u1")])
    account = remember_pods(account, [PodRef("ml", "train-ef2gh")])  # the first one deleted meanwhile
    assert [p.name for p in account.pods] == ["train-ab1cd", "train-ef2gh"]
    assert account_from_wire(account_to_wire(account)).pods == account.pods
    many = remember_pods(account, [PodRef("ml", f"p{i}") for i in range(400)])
    assert len(many.pods) == 256 and many.pods[-1].name == "p399"


def hourly(values: list[float], **kwargs: Any) -> IntensitySeries:
    start = wall_to_utc(T0).replace(minute=0, second=0) - timedelta(hours=1)
    return IntensitySeries(kwargs.pop("zone", "DE"), start, timedelta(hours=1), np.array(values), **kwargs)


def run_hour(account: Account, price: Pricing, watts: float = 700.0, hours: float = 1.0) -> Account:
    """One GPU at `watts` for `hours` from T0, read in one go."""
    points = [(600.0 * i, P, watts) for i in range(int(hours * 6) + 1)]
    account = open_chunk(account, True, wall_to_utc(T0))
    return advance(account, [counter_series(points)], owns, T0 - 60, price, SET, T0 - 60)


def test_energy_without_intensity_is_unpriced_never_avoided_then_repriced_when_actuals_come() -> None:
    """The issue's case: 0.7 kWh whose hour has no value yet, while its baseline hour has one. It used to give 0 g
    emitted and 336 g avoided; now it is unpriced (no emissions, no baseline), then priced once published."""
    nan = float("nan")
    lagging = hourly([400.0, nan, nan, nan])  # the provider's history stops before T0's hour
    submitted = T0 - 3600  # the baseline hour (400 g) is known
    account = run_hour(Account(), Pricing(1.2, lagging, wall_to_utc(submitted), wall_to_utc))
    assert account.kwh == pytest.approx(0.7)
    assert account.unpriced_kwh == pytest.approx(0.7)
    assert account.emissions_grams == 0 and account.baseline_grams == 0 and account.avoided_grams == 0
    assert account.pending and account.pending[0].why is not None
    receipt = receipt_from_status("ml", "t", {"energyKWh": 0.7, "energySource": "dcgm", "energy": account.to_wire()})
    assert "unpriced 0.7000 kWh" in format_receipt(receipt) and "0.7000 kWh of it awaiting actuals" in format_receipt(
        receipt
    )
    published = hourly([400.0, 100.0, 100.0, 100.0], provider="electricitymaps")
    later = wall_to_utc(T0 + 7200)
    account = reprice(
        Account.from_wire(account.to_wire()), Pricing(1.2, published, wall_to_utc(submitted), wall_to_utc), later
    )
    assert not account.pending and account.unpriced_kwh == 0
    assert account.emissions_grams == pytest.approx(0.7 * 1.2 * 100)
    assert account.baseline_grams == pytest.approx(0.7 * 1.2 * 400)
    assert account.provider == "electricitymaps" and account.signal == "average"
    assert [(s.provider, s.quality) for s in account.shares] == [("electricitymaps", "actual")]
    assert account.chunks[0].emissions_grams == pytest.approx(account.emissions_grams)


def test_unpriced_energy_is_declared_to_stay_unpriced_after_the_wait() -> None:
    nan = float("nan")
    price = Pricing(1.2, hourly([nan] * 4), wall_to_utc(T0), wall_to_utc, unpriced_wait=timedelta(hours=6))
    account = run_hour(Account(), price)
    assert reprice(account, price, wall_to_utc(T0 + 3 * 3600)).pending  # still waiting
    final = reprice(account, price, wall_to_utc(T0 + 8 * 3600))
    assert not final.pending
    assert final.stayed_unpriced_kwh == pytest.approx(0.7) and final.unpriced_kwh == pytest.approx(0.7)
    assert final.emissions_grams == 0 and final.avoided_grams == 0


def test_a_receipt_never_mixes_signals_nor_prices_on_a_trace_it_was_not_told_to_use() -> None:
    average = hourly([100.0] * 4, provider="electricitymaps")
    account = run_hour(Account(), Pricing(1.0, average, wall_to_utc(T0), wall_to_utc))
    assert account.signal == "average"
    marginal = hourly([900.0] * 4, provider="watttime", signal=Signal.MARGINAL)
    later = [(3600.0 + 600 * i, P, 700.0) for i in range(7)]
    more = advance(
        account,
        [counter_series(later)],
        owns,
        T0 - 60,
        Pricing(1.0, marginal, wall_to_utc(T0), wall_to_utc),
        SET,
        T0 - 60,
    )
    assert more.emissions_grams == pytest.approx(account.emissions_grams)  # the marginal hour is not mixed in
    assert more.unpriced_kwh == pytest.approx(0.7)
    assert "marginal" in (more.pending[0].why or "")
    trace = hourly([100.0] * 4, provider="trace:DE_2020")
    refused = run_hour(Account(), Pricing(1.0, trace, wall_to_utc(T0), wall_to_utc, traces_allowed=False))
    assert refused.emissions_grams == 0 and refused.unpriced_kwh == pytest.approx(0.7)
    allowed = run_hour(Account(), Pricing(1.0, trace, wall_to_utc(T0), wall_to_utc, traces_allowed=True))
    assert allowed.replayed and allowed.emissions_grams == pytest.approx(70.0)
    text = format_receipt(
        receipt_from_status("ml", "t", {"energyKWh": 0.7, "energySource": "dcgm", "energy": allowed.to_wire()})
    )
    assert "replayed trace" in text


def test_forecast_priced_energy_is_flagged_and_replaced_by_actuals() -> None:
    forecast = hourly([200.0] * 4, provider="gb-carbon-intensity", kind=Kind.FORECAST)
    account = run_hour(Account(), Pricing(1.0, forecast, wall_to_utc(T0), wall_to_utc))
    assert account.emissions_grams == pytest.approx(140.0) and account.forecast_kwh == pytest.approx(0.7)
    actual = hourly([300.0] * 4, provider="gb-carbon-intensity")
    account = reprice(account, Pricing(1.0, actual, wall_to_utc(T0), wall_to_utc), wall_to_utc(T0 + 7200))
    assert account.emissions_grams == pytest.approx(210.0) and account.forecast_kwh == 0 and not account.pending


def test_avoided_splits_into_temporal_and_spatial_parts() -> None:
    """Submitted at T0 - 1 h into a 450 g home grid; it waited an hour and ran in a 50 g cluster whose intensity at
    submission was 80 g. temporal = 80 -> 50, spatial = 450 -> 80; the total is their sum."""
    here = hourly([80.0, 50.0, 50.0, 50.0], zone="GB")
    home = hourly([450.0, 450.0, 450.0, 450.0], zone="DE")
    price = Pricing(1.1, here, wall_to_utc(T0 - 3600), wall_to_utc, home=home, home_pue=1.2, home_cluster="gpu-de")
    account = run_hour(Account(), price)
    assert account.emissions_grams == pytest.approx(0.7 * 1.1 * 50)
    assert account.baseline_grams == pytest.approx(0.7 * 1.1 * 80)
    assert account.home_baseline_grams == pytest.approx(0.7 * 1.2 * 450)
    assert account.temporal_avoided_grams == pytest.approx(0.7 * 1.1 * 30)
    assert account.spatial_avoided_grams == pytest.approx(0.7 * (1.2 * 450 - 1.1 * 80))
    assert account.avoided_grams == pytest.approx(account.temporal_avoided_grams + account.spatial_avoided_grams)
    fields = account.status_fields()
    assert fields["avoidedEmissionsGrams"] == pytest.approx(account.avoided_grams, abs=1e-3)
    assert fields["energy"]["homeCluster"] == "gpu-de"
    # A home zone on another signal is not compared: no spatial claim.
    marginal_home = hourly([900.0] * 4, zone="DE", signal=Signal.MARGINAL)
    other = run_hour(Account(), replace(price, home=marginal_home))
    assert other.spatial_avoided_grams == 0


TRACE_DIR = Path(carbonshift.data.__file__).parent / "gpu-power" / "h100-train-suspend-resume"


def test_sci_per_million_tokens_of_the_replayed_h100_trace_matches_a_hand_computation() -> None:
    """The measured H100 run (shared/data/gpu-power): trained, checkpointed on SIGTERM, suspended, resumed,
    checkpointed again. Replayed sample by sample through the accounting (pod 1 holds the GPU in `train` and
    `checkpoint_on_sigterm`, pod 2 in `resume` and `checkpoint_on_sigterm_2`), priced at 300 g/kWh and PUE 1.2, on a
    cluster whose GPUs embody 2,500 kgCO2e over 4 years; the work is the trace's own token count."""
    with (TRACE_DIR / "nvml_samples.csv").open() as f:
        rows = [(float(r["t_unix"]), r["phase"], float(r["power_w"]), float(r["energy_mj"])) for r in csv.DictReader(f)]
    with (TRACE_DIR / "steps_run2.csv").open() as f:
        tokens = float(list(csv.DictReader(f))[-1]["tokens_total"])  # cumulative across the resume
    holders = {
        "train": P,
        "checkpoint_on_sigterm": P,
        "resume": "ml/train-ef2gh",
        "checkpoint_on_sigterm_2": "ml/train-ef2gh",
    }
    rows = [
        r for r in rows if r[1] != "power_cap_sweep" or r[0] < min(t for t, p, *_ in rows if p == "power_cap_sweep") + 5
    ]
    samples = tuple(Sample(t, holders.get(phase), mj, w) for t, phase, w, mj in rows)
    start = {phase: min(t for t, p, *_ in rows if p == phase) for phase in {r[1] for r in rows}}
    embodied = 2500e3 / (4 * 365.25 * 24 * 3600)
    flat = IntensitySeries("DE", wall_to_utc(rows[0][0]).replace(minute=0, second=0) - timedelta(hours=1),
                           timedelta(hours=1), np.full(4, 300.0))  # fmt: skip
    price = Pricing(1.2, flat, wall_to_utc(rows[0][0]), wall_to_utc, embodied_grams_per_gpu_second=embodied)
    account = Account()
    # The operator's decisions at the phase boundaries, each followed by a read of the samples so far.
    decisions = [
        ("train", True),
        ("checkpoint_on_sigterm", False),
        ("resume", True),
        ("checkpoint_on_sigterm_2", False),
    ]
    for moment, running in [(start[phase], run) for phase, run in decisions] + [(rows[-1][0], False)]:
        account = open_chunk(account, running, wall_to_utc(moment))
        seen = GpuSeries("GPU-1", "node-a", tuple(s for s in samples if s.t <= moment))
        account = advance(account, [seen], owns, rows[0][0] - 1, price, SET, rows[0][0] - 1)

    # By hand: the counter from the last sample before each pod's first to the first sample showing it gone.
    def counter_at(t: float) -> float:
        return next(mj for tt, _, _, mj in rows if tt >= t)

    def last_before(t: float) -> float:
        return max(tt for tt, *_ in rows if tt < t)

    runs = [(last_before(start["train"]), start["suspended"]), (last_before(start["resume"]), start["power_cap_sweep"])]
    kwh = sum(counter_at(b) - counter_at(a) for a, b in runs) / 3.6e9
    gpu_hours = sum(b - a for a, b in runs) / 3600
    by_hand = (kwh * 1.2 * 300 + gpu_hours * 2500e3 / (4 * 365.25 * 24)) / tokens * 1e6
    status = {"energyKWh": account.kwh, "energySource": "dcgm", "emissionsGrams": account.emissions_grams}
    receipt = receipt_from_status("ml", "train", {**status, "energy": account.to_wire()}, work=Work(tokens, "tokens"))
    assert receipt.sci_per_million == pytest.approx(by_hand, rel=0.01)
    assert receipt.embodied_grams == pytest.approx(gpu_hours * 2500e3 / (4 * 365.25 * 24), rel=0.01)
    # The README's steady 1.01 Wh per 1M tokens, plus start-up, checkpoints and the idle tail around the pods.
    assert 1.01 < (receipt.wh_per_million or 0) < 1.4
    assert receipt.work_lost is not None and receipt.work_lost > 0  # the restart ramp and checkpoint tails
    text = format_receipt(receipt)
    print(text.splitlines()[2], f"by hand {by_hand:.4f} g per 1M tokens")
    assert f"{receipt.sci_per_million:.3f} gCO2e and" in text and "per 1M tokens" in text
    assert "tokens lost to suspend/resume overhead" in text


def test_pending_buckets_are_bounded_and_the_oldest_is_declared_first() -> None:
    """Two days of energy with no intensity at all: the status keeps at most MAX_PENDING buckets; what falls out is
    declared unpriced (never lost, never priced)."""
    price = Pricing(1.0, None, wall_to_utc(T0), wall_to_utc)
    points = [(60.0 * i, P, 700.0) for i in range(48 * 60 + 1)]
    account = advance(open_chunk(Account(), True, wall_to_utc(T0)), [counter_series(points)], owns, T0 - 60, price,
                      SET, T0 - 60)  # fmt: skip
    assert len(account.pending) == MAX_PENDING
    assert account.unpriced_kwh == pytest.approx(account.kwh)
    assert account.stayed_unpriced_kwh == pytest.approx(account.kwh - sum(p.kwh for p in account.pending))
    assert min(p.at for p in account.pending) > wall_to_utc(T0 + 20 * 3600)  # the newest are kept


def test_an_account_written_before_repricing_keeps_its_unpriced_energy_and_baseline() -> None:
    old = {"measuredKWh": 1.0, "unpricedKWh": 0.25, "emissionsGrams": 100.0, "baselineGrams": 150.0}
    account = reprice(Account.from_wire(old), pricing(), wall_to_utc(T0))
    assert account.unpriced_kwh == pytest.approx(0.25) and account.stayed_unpriced_kwh == pytest.approx(0.25)
    assert account.home_baseline_grams == 150.0 and account.avoided_grams == 50.0


def test_an_unpriced_estimate_is_repriced_when_actuals_come_or_declared_after_the_wait() -> None:
    nan = float("nan")
    lagging = Pricing(1.2, hourly([400.0, nan, nan, nan]), wall_to_utc(T0 - 3600), wall_to_utc)
    estimate = extend_estimate(Estimate(), 1800.0, wall_to_utc(T0 + 1800), 1, 700.0, lagging)
    assert estimate.unpriced_kwh == pytest.approx(0.35) and estimate.pending
    assert estimate.emissions_grams == 0 and estimate.avoided_grams == 0  # its baseline hour is known: not claimed
    text = format_receipt(receipt_from_status("ml", "x", {"energyKWh": 0.35, "estimate": estimate_to_wire(estimate)}))
    assert "0.3500 kWh of it awaiting actuals" in text
    published = replace(lagging, intensity=hourly([400.0, 100.0, 100.0, 100.0], provider="electricitymaps"))
    priced = reprice_estimate(estimate_from_wire(estimate_to_wire(estimate)), published, wall_to_utc(T0 + 7200))
    assert not priced.pending and priced.unpriced_kwh == pytest.approx(0)
    assert priced.emissions_grams == pytest.approx(0.35 * 1.2 * 100)
    assert priced.baseline_grams == pytest.approx(0.35 * 1.2 * 400) and priced.provider == "electricitymaps"
    declared = reprice_estimate(estimate, lagging, wall_to_utc(T0 + 30 * 3600))
    assert not declared.pending and declared.stayed_unpriced_kwh == pytest.approx(0.35)
    assert declared.unpriced_kwh == pytest.approx(0.35) and declared.emissions_grams == 0
