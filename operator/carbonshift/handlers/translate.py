"""Between the API and the domain: a CarbonAwareJob becomes planner inputs; a plan and a decision become status.

Pure functions (no kopf, no API calls), so the handler module is left with reading, acting and reporting.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from carbonshift.api.carbonawarejob import (
    DEFAULT_CHECKPOINT_OVERHEAD,
    DEFAULT_GRACE_PERIOD,
    DEFAULT_MIN_RUN,
    DEFAULT_WATTS_PER_GPU,
    CarbonAwareJobSpec,
    CarbonAwareJobStatus,
)
from carbonshift.api.carbonawarejob import Progress as ProgressStatus
from carbonshift.api.durations import parse_duration
from carbonshift.domain.core import Commitment, CoreStatus, JobNeeds, Progress
from carbonshift.domain.lifecycle import Phase
from carbonshift.domain.planning.model import Flag, Plan, Policy, Reason, RunWindow


def effective_deadline(spec: CarbonAwareJobSpec, submitted_at: datetime) -> datetime:
    if spec.deadline is not None:
        return spec.deadline
    assert spec.max_delay is not None  # the CRD's CEL rule guarantees exactly one
    return submitted_at + parse_duration(spec.max_delay)


def checkpoint_settings(spec: CarbonAwareJobSpec) -> tuple[timedelta, timedelta, timedelta]:
    """(overhead, grace period, minimum run) of an interruptible job; zero overhead for others."""
    if not spec.interruptible:
        return timedelta(0), timedelta(0), timedelta(0)
    cp = spec.checkpoint
    return (
        parse_duration(cp.overhead if cp else DEFAULT_CHECKPOINT_OVERHEAD),
        parse_duration(cp.grace_period if cp else DEFAULT_GRACE_PERIOD),
        parse_duration(cp.min_run_duration if cp else DEFAULT_MIN_RUN),
    )


def iso(moment: datetime | None) -> str | None:
    """RFC 3339 in UTC to the second (what status and events show)."""
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z") if moment else None


def kg(grams: float) -> str:
    if not math.isfinite(grams):
        return "unknown"
    return f"{grams / 1000:.1f} kg" if abs(grams) >= 100 else f"{grams:.0f} g"


def plan_status(plan: Plan, provider: str | None, signal: str | None, now: datetime) -> dict[str, Any]:
    def finite(x: float) -> float | None:
        return round(x, 3) if math.isfinite(x) else None

    return {
        "windows": [
            {"start": iso(w.start), "end": iso(w.end), "gPerKWh": finite(w.mean_g_per_kwh)} for w in plan.windows
        ],
        "zone": plan.zone,
        "provider": provider,
        "signal": signal,
        "plannedEmissionsGrams": finite(plan.planned_grams),
        "runNowEmissionsGrams": finite(plan.baseline_grams),
        "latestSafeStart": iso(plan.latest_safe_start),
        "computedAt": iso(now),
        "flags": sorted(str(flag) for flag in plan.flags) or None,
    }


FLAG_NOTES: dict[Flag, str] = {
    Flag.PARTIAL_FORECAST: "the forecast does not cover every slot before the deadline: those are counted at the"
    " dearest value it holds",
    Flag.FORCED: "some run time is forced by the latest safe start, above the threshold",
    Flag.UNANCHORED: "the provider gave no current measurement, so this deferral was not checked against one",
}


def plan_summary(plan: Plan, now_g_per_kwh: float | None, now: datetime) -> str:
    """One line in numbers, for the event: "Deferred to 03:00Z: forecast 112 g/kWh vs 388 now, saves about 41 kg"."""
    if plan.reason in (Reason.INFEASIBLE_DEADLINE, Reason.DEADLINE_PASSED):
        return f"Cannot meet the deadline ({plan.reason}); running as soon as possible"
    if plan.reason is Reason.NO_CAPACITY:
        return "No cluster has enough free GPUs for this job; waiting for capacity"
    if plan.reason is Reason.NO_DATA:
        return f"No carbon-intensity data; running at the latest safe start {iso(plan.latest_safe_start)}"
    if not plan.windows:
        return "Nothing left to run"
    if plan.reason is Reason.WITHIN_ERROR:
        return (
            "Running now: the best deferral's forecast gain is within the forecast's expected error "
            f"(do no harm; cluster {plan.cluster})"
        )
    if plan.reason is Reason.WITHOUT_SKILL:
        return (
            "Running now: this zone's recent forecasts, backtested for a job of this length and window, "
            f"did not deliver the gains they promised (do no harm; cluster {plan.cluster})"
        )
    first = plan.windows[0]
    saved = plan.baseline_grams - plan.planned_grams
    notes = "".join(f"; {FLAG_NOTES[flag]}" for flag in sorted(plan.flags) if flag in FLAG_NOTES)
    now_text = f"{now_g_per_kwh:.0f}" if now_g_per_kwh is not None and math.isfinite(now_g_per_kwh) else "unknown"
    chunks = f" ({len(plan.windows)} windows)" if len(plan.windows) > 1 else ""
    head = "Running now" if first.start <= now else f"Deferred to {iso(first.start)}"
    return (
        f"{head}{chunks}: forecast {first.mean_g_per_kwh:.0f} g/kWh vs {now_text} now, "
        f"saves about {kg(saved)} ({plan.reason}, cluster {plan.cluster}){notes}"
    )


def terminal(phase: str | None) -> bool:
    return phase in (Phase.SUCCEEDED, Phase.FAILED)


# -- the decision core's status <-> CarbonAwareJobStatus ----------------------------------------------------------


def job_needs(name: str, spec: CarbonAwareJobSpec, deadline: datetime, *, gpus: int) -> JobNeeds:
    """What the spec asks for, in the decision core's units. `gpus`: what the workload holds at once (its kind's
    `gpu_demand()`)."""
    overhead, grace, min_run = checkpoint_settings(spec)
    return JobNeeds(
        name=name,
        duration=parse_duration(spec.duration),
        deadline=deadline,
        interruptible=spec.interruptible,
        overhead=overhead,
        min_run=min_run,
        grace=grace,
        gpus=gpus,
        watts_per_gpu=spec.power.watts_per_gpu if spec.power else DEFAULT_WATTS_PER_GPU,
        policy=Policy(spec.policy),
        max_intensity_g_per_kwh=spec.max_intensity,
    )


def core_status(status: CarbonAwareJobStatus, now: datetime) -> CoreStatus:
    """The core's status from the CarbonAwareJob's. A status written before the core (runSeconds/runningSince,
    no `progress`) is read as work done so far: the closed run time counts, and an open interval is credited from
    its start as one last observation (at full rate, as the old accounting did), within the core's gap rule."""
    p = status.progress
    if p is not None:
        progress = Progress(
            work_seconds=p.work_seconds,
            run_seconds=p.run_seconds,
            chunk_run_seconds=p.chunk_run_seconds,
            chunk_pays=p.chunk_pays,
            chunk_started_at=p.chunk_started_at,
            observed_at=p.observed_at,
            rate=p.rate,
            resumes=p.resumes,
            ran=p.ran,
        )
    else:
        ran = float(status.run_seconds or 0.0)
        since = status.running_since
        progress = Progress(
            work_seconds=ran,
            run_seconds=ran,
            observed_at=since,
            rate=1.0 if since is not None else 0.0,
            ran=ran > 0 or since is not None,
        )
    commitment = None
    c = status.commitment
    if c is not None and c.windows:
        windows = tuple(
            RunWindow(w.start, w.end, w.g_per_kwh if w.g_per_kwh is not None else math.nan) for w in c.windows
        )
        commitment = Commitment(
            windows,
            c.cluster,
            c.zone,
            c.made_at or now,
            (),
            c.remaining_seconds,
            checked_at=c.checked_at,
            fits_from=c.fits_from,
            flags=frozenset(Flag(flag) for flag in c.flags or ()),
        )
    phase = Phase(status.phase) if status.phase else Phase.PENDING
    return CoreStatus(
        progress=progress,
        commitment=commitment,
        suspend_at=status.suspend_at,
        announced_at=status.suspend_announced_at,
        phase=phase,
    )


def core_status_wire(core: CoreStatus) -> dict[str, Any]:
    """The status fields the core owns, as written to the CarbonAwareJob (None: remove the field)."""
    p = core.progress
    progress = ProgressStatus(
        work_seconds=round(p.work_seconds, 3),
        run_seconds=round(p.run_seconds, 3),
        chunk_run_seconds=round(p.chunk_run_seconds, 3),
        chunk_pays=p.chunk_pays,
        chunk_started_at=p.chunk_started_at,
        observed_at=p.observed_at,
        rate=round(p.rate, 6),
        resumes=p.resumes,
        ran=p.ran,
    ).model_dump(mode="json", by_alias=True, exclude_none=True)
    commitment: dict[str, Any] | None = None
    c = core.commitment
    if c is not None and c.windows:
        commitment = {
            "windows": [
                {
                    "start": w.start.isoformat().replace("+00:00", "Z"),
                    "end": w.end.isoformat().replace("+00:00", "Z"),
                    "gPerKWh": round(w.mean_g_per_kwh, 3) if math.isfinite(w.mean_g_per_kwh) else None,
                }
                for w in c.windows
            ],
            "cluster": c.cluster,
            "zone": c.zone,
            "madeAt": c.made_at.isoformat().replace("+00:00", "Z"),
            "checkedAt": c.checked_at.isoformat().replace("+00:00", "Z") if c.checked_at is not None else None,
            "remainingSeconds": round(max(c.remaining_at_plan, 0.0), 3),
            "fitsFrom": c.fits_from.isoformat().replace("+00:00", "Z") if c.fits_from is not None else None,
            "flags": sorted(str(flag) for flag in c.flags),
        }
        # As stored: no nulls or empty lists (a pass that changes nothing then sends nothing; the status patch
        # sends nulls for the fields left out, `jobstatus.patch_value`).
        commitment = {k: v for k, v in commitment.items() if v is not None and v != []}
    return {
        "progress": progress,
        "commitment": commitment,
        "suspendAt": core.suspend_at.isoformat().replace("+00:00", "Z") if core.suspend_at else None,
        "suspendAnnouncedAt": core.announced_at.isoformat().replace("+00:00", "Z") if core.announced_at else None,
    }
