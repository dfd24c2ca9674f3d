"""Measured energy and carbon of a workload, by concern:

- attribution: which DCGM samples are the workload's (by pod identity), energy per interval;
- pricing: intensity with provenance (provider, signal, actual/forecast/missing) and the two counterfactuals;
- account: the status.energy account (watermarks, chunks, overheads, pending re-pricing, embodied);
- estimate: run time x wattsPerGPU for jobs DCGM never measured;
- receipt: the receipt and its SCI figures;
- wire: the status form, declared on the models' fields.
"""

from carbonshift.domain.accounting.account import (
    MAX_CHUNKS,
    MAX_PENDING,
    Account,
    Chunk,
    Pending,
    Share,
    account_from_wire,
    account_to_wire,
    advance,
    open_chunk,
    provisional_kwh,
    remember_pods,
    reprice,
)
from carbonshift.domain.accounting.attribution import (
    J_PER_KWH,
    GpuSeries,
    Interval,
    Owns,
    PodRef,
    Pods,
    Sample,
    Settings,
    Watermark,
    attribute,
    interval_energy,
    wall_to_utc,
)
from carbonshift.domain.accounting.estimate import (
    Estimate,
    estimate_from_wire,
    estimate_to_wire,
    extend_estimate,
    reprice_estimate,
)
from carbonshift.domain.accounting.pricing import DEFAULT_UNPRICED_WAIT, Priced, Pricing, Quality, is_trace
from carbonshift.domain.accounting.receipt import (
    ANNOTATION_WORK_DONE,
    ANNOTATION_WORK_UNIT,
    Receipt,
    Work,
    format_receipt,
    receipt_from_status,
    work_from_annotations,
)

__all__ = [
    "ANNOTATION_WORK_DONE",
    "ANNOTATION_WORK_UNIT",
    "DEFAULT_UNPRICED_WAIT",
    "J_PER_KWH",
    "MAX_CHUNKS",
    "MAX_PENDING",
    "Account",
    "Chunk",
    "Estimate",
    "GpuSeries",
    "Interval",
    "Owns",
    "Pending",
    "PodRef",
    "Pods",
    "Priced",
    "Pricing",
    "Quality",
    "Receipt",
    "Sample",
    "Settings",
    "Share",
    "Watermark",
    "Work",
    "account_from_wire",
    "account_to_wire",
    "advance",
    "attribute",
    "estimate_from_wire",
    "estimate_to_wire",
    "extend_estimate",
    "format_receipt",
    "interval_energy",
    "is_trace",
    "open_chunk",
    "provisional_kwh",
    "receipt_from_status",
    "remember_pods",
    "reprice",
    "reprice_estimate",
    "wall_to_utc",
    "work_from_annotations",
]
