"""kopf handlers of EnergyBudget, and the budget I/O of the CarbonAwareJob reconcile (`decide_and_record`).

Importing this module registers the handlers (`carbonshift run` imports it):
- every EnergyBudget and every CarbonAwareJob event refreshes an in-memory mirror of their specs, labels and usage
  (kopf lists all objects when it starts, so the mirror is rebuilt from the API after a restart);
- usage itself lives in each budget's status, as a ledger keyed by job UID (`domain.budgets`): a timer per
  EnergyBudget (every CARBONSHIFT_BUDGET_INTERVAL_SECONDS, default 30) copies the selected jobs' usage from their
  status into it and reports used, reserved and remaining energy and emissions, the period, projected exhaustion,
  the Exceeded condition (with an Event when it turns true), and the metrics carbonshift_budget_used_ratio /
  carbonshift_budget_exceeded; a deleted or relabelled job's last usage is written into the ledgers that counted it;
- every write of a budget's status is a read-modify-write with the object's resourceVersion (HTTP 409: read again,
  decide again), serialised per budget within one operator by a lock, so that two passes, or two operators, never
  both take the last slice of a budget.

`decide_and_record(budgets, uid, decide, ...)` is the hook of the reconcile: it reads the ledgers of the budgets that
select the job, runs the decision core on them (which admits a (re)start or holds the job: `domain.budgets.verdict`)
and writes the admission into each of them before the Job is resumed (or releases the job's reservation when it is
held), deciding again on a conflicting write. Times are planning times (the operator's clock when one is installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from carbonshift import metrics
from carbonshift.api.base import GROUP, VERSION, LabelSelector
from carbonshift.api.carbonawarejob import PLURAL as CAJ_PLURAL
from carbonshift.api.carbonawarejob import CarbonAwareJob
from carbonshift.api.conditions import Condition, ConditionType, Reason, set_condition
from carbonshift.api.durations import parse_duration
from carbonshift.api.energybudget import CALENDAR_PERIODS, PLURAL, EnergyBudgetSpec, EnergyBudgetStatus
from carbonshift.api.jobs import parse_time
from carbonshift.domain.accounting import account_from_wire
from carbonshift.domain.budgets import (
    Admission,
    BudgetSpec,
    BudgetState,
    Candidate,
    Cap,
    JobRecord,
    JobUsage,
    Ledger,
    LedgerEntry,
    PastBucket,
    UsageChunk,
    admit,
    evaluate,
    release,
    reserved,
    sync,
    used_chunks,
)
from carbonshift.handlers import state as operator_state

log = logging.getLogger(__name__)
INTERVAL_SECONDS = float(os.environ.get("CARBONSHIFT_BUDGET_INTERVAL_SECONDS", "30"))
WRITE_ATTEMPTS = 8  # conflicting writes of one budget before a pass gives up (and the reconcile retries)
FINISHED = ("Succeeded", "Failed")
# Until kopf has listed every CarbonAwareJob, a job missing from the mirror may merely be unseen yet: its ledger
# entries (and reservation) are kept as they are (`mirror_complete`). Deletions and relabels are recorded as they
# happen anyway.
SETTLE_SECONDS = float(os.environ.get("CARBONSHIFT_BUDGET_SETTLE_SECONDS", "30"))
STARTED = time.monotonic()


@dataclass
class JobInfo:
    uid: str
    labels: dict[str, str]
    usage: JobUsage
    finished: bool


@dataclass
class Mirror:
    budgets: dict[tuple[str, str], tuple[BudgetSpec, LabelSelector]]
    jobs: dict[tuple[str, str], JobInfo]
    bodies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # budgets as last read or written
    locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    conflicts: int = 0  # writes refused with HTTP 409 (another writer came first), for tests and logs


MIRROR = Mirror({}, {})


class BudgetConflictError(RuntimeError):
    """A budget's status kept changing under us (another writer each time)."""


def now() -> datetime:
    try:
        return operator_state.current().clock.now()
    except RuntimeError:  # not run by `carbonshift run` (a test, or kopf run -m): wall time
        return datetime.now(UTC)


_standalone: client.CustomObjectsApi | None = None


def _custom() -> client.CustomObjectsApi:
    """The API client: the operator's, or (budget handlers alone, `kopf run -m`) one from KUBECONFIG / in-cluster."""
    global _standalone
    try:
        return operator_state.current().local.custom
    except RuntimeError:
        pass
    if _standalone is None:
        if os.environ.get("KUBECONFIG"):
            api = config.new_client_from_config()  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
            api = client.ApiClient()
        _standalone = client.CustomObjectsApi(api)
    return _standalone


async def _api(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    result = await asyncio.get_running_loop().run_in_executor(None, fn, *args)
    return result if isinstance(result, dict) else {}


# -- wire <-> domain ----------------------------------------------------------------------------------------------
def budget_spec(namespace: str, name: str, spec: dict[str, Any]) -> tuple[BudgetSpec, LabelSelector]:
    model = EnergyBudgetSpec.model_validate(spec)
    rolling = None if model.period in CALENDAR_PERIODS else parse_duration(model.period)
    return (
        BudgetSpec(
            namespace=namespace,
            name=name,
            period=model.period,
            rolling=rolling,
            energy_kwh=model.limits.energy_kwh,
            emissions_kg=model.limits.emissions_kg,
            action=str(model.action),
            defer_below_g_per_kwh=model.defer_below_intensity,
        ),
        model.selector,
    )


def job_usage(namespace: str, name: str, labels: dict[str, str], status: dict[str, Any]) -> JobUsage:
    """A job's usage from its status: the measured run chunks, else one chunk from the estimate."""
    account = account_from_wire(status.get("energy"))
    chunks: list[UsageChunk] = []
    seen = parse_time((status.get("plan") or {}).get("computedAt"))  # the job's last reconcile
    for c in account.chunks:
        # A chunk still running ends, as far as its energy is known, at the last reconcile (not at its start).
        end = c.end or c.stopped_at or (seen if seen is not None and seen > c.start else c.start)
        chunks.append(UsageChunk(c.start, max(end, c.start), c.kwh, c.emissions_grams))
    if not chunks and status.get("energyKWh"):
        start = parse_time(status.get("submittedAt"))
        if start is not None:
            seconds = float(status.get("runSeconds") or 0.0)
            # runSeconds holds the closed intervals; a running job's open one lasts until its last reconcile.
            since = parse_time(status.get("runningSince"))
            if since is not None and seen is not None and seen > since:
                seconds += (seen - since).total_seconds()
            end = start + timedelta(seconds=seconds)
            grams = float(status.get("emissionsGrams") or 0.0)
            chunks.append(UsageChunk(start, end, float(status["energyKWh"]), grams))
    return JobUsage(namespace, name, dict(labels), tuple(chunks))


def job_info(body: dict[str, Any]) -> JobInfo:
    meta = body.get("metadata") or {}
    status = dict(body.get("status") or {})
    labels = dict(meta.get("labels") or {})
    usage = job_usage(meta.get("namespace") or "", meta.get("name") or "", labels, status)
    return JobInfo(str(meta.get("uid") or ""), labels, usage, status.get("phase") in FINISHED)


def ledger_from_wire(status: dict[str, Any] | None) -> Ledger:
    model = EnergyBudgetStatus.model_validate({k: v for k, v in (status or {}).items() if k in ("ledger", "history")})
    entries = tuple(
        LedgerEntry(
            uid=e.uid,
            job=e.job,
            bucket=e.bucket,
            used_kwh=e.used_kwh,
            used_kg=e.used_kg,
            used_from=e.used_from,
            used_to=e.used_to,
            reserved_kwh=e.reserved_kwh,
            reserved_kg=e.reserved_kg,
            reserved_from=e.reserved_from,
            reserved_to=e.reserved_to,
            base_kwh=e.base_kwh,
            base_kg=e.base_kg,
            active=e.active,
        )
        for e in model.ledger
    )
    history = tuple(PastBucket(h.start, h.end, h.energy_kwh, h.emissions_kg, h.jobs) for h in model.history)
    return Ledger(entries, history)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def ledger_to_wire(ledger: Ledger) -> dict[str, Any]:
    def entry(e: LedgerEntry) -> dict[str, Any]:
        out: dict[str, Any] = {"uid": e.uid, "job": e.job, "bucket": _iso(e.bucket)}
        numbers = {"usedKWh": e.used_kwh, "usedKg": e.used_kg, "reservedKWh": e.reserved_kwh,
                   "reservedKg": e.reserved_kg, "baseKWh": e.base_kwh, "baseKg": e.base_kg}  # fmt: skip
        out.update({k: round(v, 9) for k, v in numbers.items() if v})
        times = {"usedFrom": e.used_from, "usedTo": e.used_to, "reservedFrom": e.reserved_from,
                 "reservedTo": e.reserved_to}  # fmt: skip
        out.update({k: _iso(v) for k, v in times.items() if v is not None})
        if not e.active:
            out["active"] = False
        return out

    return {
        "ledger": [entry(e) for e in ledger.entries],
        "history": [
            {
                "start": _iso(h.start),
                "end": _iso(h.end),
                "energyKWh": round(h.kwh, 9),
                "emissionsKg": round(h.kg, 9),
                "jobs": h.jobs,
            }
            for h in ledger.history
        ],
    }


def status_fields(spec: BudgetSpec, state: BudgetState, ledger: Ledger | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "usedEnergyKWh": round(state.used_kwh, 6),
        "usedEmissionsKg": round(state.used_kg, 6),
        "usedRatio": round(state.used_ratio, 6) if state.used_ratio != float("inf") else 1e9,
        "periodStart": _iso(state.period_start),
        "periodEnd": _iso(state.period_end),
        "projectedExhaustion": _iso(state.projected_exhaustion),
    }
    if state.remaining_kwh is not None:
        fields["remainingEnergyKWh"] = round(state.remaining_kwh, 6)
    if state.remaining_kg is not None:
        fields["remainingEmissionsKg"] = round(state.remaining_kg, 6)
    if ledger is not None:
        kwh, kg, jobs = reserved(ledger)
        fields.update(reservedEnergyKWh=round(kwh, 6), reservedEmissionsKg=round(kg, 6), admittedJobs=jobs)
        fields.update(ledger_to_wire(ledger))
    return fields


# -- the budget's status: read-modify-write with its resourceVersion ----------------------------------------------
def _lock(key: tuple[str, str]) -> asyncio.Lock:
    return MIRROR.locks.setdefault(key, asyncio.Lock())


async def _read(key: tuple[str, str]) -> dict[str, Any]:
    body = await _api(_custom().get_namespaced_custom_object, GROUP, VERSION, key[0], PLURAL, key[1])
    MIRROR.bodies[key] = body
    return body


async def _write(key: tuple[str, str], body: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None:
    """Merge-patch the status on condition that the object is still at `body`'s resourceVersion; None on 409."""
    version = (body.get("metadata") or {}).get("resourceVersion")
    patch = {"metadata": {"resourceVersion": version}, "status": status}
    try:
        new = await _api(_custom().patch_namespaced_custom_object_status, GROUP, VERSION, key[0], PLURAL, key[1], patch)
    except ApiException as exc:
        if exc.status == 409:
            MIRROR.bodies.pop(key, None)
            MIRROR.conflicts += 1
            return None
        raise
    MIRROR.bodies[key] = new
    return new


async def _current(key: tuple[str, str]) -> dict[str, Any]:
    return MIRROR.bodies.get(key) or await _read(key)


async def update_budget(
    key: tuple[str, str], change: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> dict[str, Any] | None:
    """Apply `change` (body -> status fields to write, or None) to the budget until a write lands on the version
    it was computed from. Returns the body written (None: nothing to write, or the budget is gone)."""
    async with _lock(key):
        for _ in range(WRITE_ATTEMPTS):
            try:
                body = await _current(key)
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise
            fields = change(body)
            if fields is None:
                return None
            written = await _write(key, body, fields)
            if written is not None:
                return written
        raise BudgetConflictError(f"EnergyBudget {key[0]}/{key[1]}: {WRITE_ATTEMPTS} conflicting writes in a row")


# -- admission: the hook of the CarbonAwareJob reconcile ----------------------------------------------------------
def selecting(
    namespace: str,
    labels: dict[str, str],
    budgets: dict[tuple[str, str], tuple[BudgetSpec, LabelSelector]] | None = None,
) -> list[tuple[tuple[str, str], BudgetSpec]]:
    """The namespace's budgets (`budgets`, by default the watch's mirror) that select `labels`, in key order."""
    return [
        (key, spec)
        for key, (spec, selector) in sorted((MIRROR.budgets if budgets is None else budgets).items())
        if key[0] == namespace and selector.matches(labels)
    ]


def selecting_listed(
    namespace: str, labels: dict[str, str], listed: list[dict[str, Any]]
) -> list[tuple[tuple[str, str], BudgetSpec]]:
    """`selecting`, on the namespace's EnergyBudgets as the API lists them now (`listed`) rather than as the watch
    has delivered them so far. A pass about to start a chunk asks this: a budget applied together with the job (one
    `kubectl apply -f` of both) can reach the mirror after the job's first pass (a watch that is reconnecting, a
    busy operator), which then started the job unbudgeted. A budget whose spec does not parse is left out, as the
    watch leaves it out."""
    parsed = {}
    for body in listed:
        name = str((body.get("metadata") or {}).get("name") or "")
        with contextlib.suppress(ValueError):
            parsed[(namespace, name)] = budget_spec(namespace, name, dict(body.get("spec") or {}))
    return selecting(namespace, labels, parsed)


def _poke_selected(namespace: str, selectors: list[LabelSelector]) -> None:
    """Wake the daemons of the namespace's jobs that one of `selectors` selects: a budget created, changed or
    deleted applies to a waiting job at once, not at its next planned pass (which may be hours away)."""
    try:
        state = operator_state.current()
    except RuntimeError:  # the budget handlers alone (`kopf run -m`): no daemons to wake
        return
    for (ns, name), info in sorted(MIRROR.jobs.items()):
        if ns == namespace and any(selector.matches(info.labels) for selector in selectors):
            state.poke(ns, name)


def job_cap(caj: CarbonAwareJob) -> Cap | None:
    cap = caj.spec.cap
    if cap is None:
        return None
    return Cap(cap.energy_kwh, cap.emissions_kg, str(cap.action), cap.defer_below_intensity)


T = TypeVar("T")


async def decide_and_record(
    budgets: list[tuple[tuple[str, str], BudgetSpec]],
    uid: str,
    decide: Callable[[list[tuple[BudgetSpec, Ledger]]], T],
    admission_of: Callable[[T], Admission | None],
) -> T:
    """Read the budgets' ledgers, `decide` on them (a pure function: the decision core, or `admit`), and write the
    admission it makes (`admission_of`: None when it asks none) into each budget (admitted: the job's reservation;
    held: its reservation released) with their resourceVersion, before the caller acts on the decision: when
    another pass or another operator wrote one of them in between, everything is read and decided again. The
    budgets' locks are held throughout, taken in the order of their keys (two passes never wait on each other's)."""
    keys = [key for key, _ in budgets]
    locks = [_lock(key) for key in keys]
    for lock in locks:
        await lock.acquire()
    try:
        for _ in range(WRITE_ATTEMPTS):
            bodies = {}
            for key, _spec in budgets:
                try:
                    bodies[key] = await _current(key)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
            present = [(key, spec) for key, spec in budgets if key in bodies]
            ledgers = {key: ledger_from_wire(bodies[key].get("status")) for key, _ in present}
            result = decide([(spec, ledgers[key]) for key, spec in present])
            answer = admission_of(result)
            if answer is None or await _record(present, bodies, ledgers, answer, uid):
                return result
        raise BudgetConflictError(f"admission of {uid}: {WRITE_ATTEMPTS} conflicting writes in a row")
    finally:
        for lock in reversed(locks):
            lock.release()


async def admit_and_record(
    budgets: list[tuple[tuple[str, str], BudgetSpec]],
    job: Candidate,
    cap: Cap | None,
    at: datetime,
    *,
    g_per_kwh: float | None,
) -> Admission:
    """The admission rule alone (`domain.budgets.admit`) on the budgets as they are in the API, recorded as
    `decide_and_record` does."""

    def decide(pairs: list[tuple[BudgetSpec, Ledger]]) -> Admission:
        return admit(job, pairs, cap, at, g_per_kwh=g_per_kwh)

    return await decide_and_record(budgets, job.uid, decide, lambda answer: answer)


async def _record(
    present: list[tuple[tuple[str, str], BudgetSpec]],
    bodies: dict[tuple[str, str], dict[str, Any]],
    ledgers: dict[tuple[str, str], Ledger],
    answer: Admission,
    uid: str,
) -> bool:
    """Write the admission's ledgers; False when a budget changed since it was read (nothing else is written then,
    and what was written already is rewritten by the next attempt)."""
    for key, _spec in present:
        new = answer.ledgers[f"{key[0]}/{key[1]}"] if answer.admitted else release(ledgers[key], uid)
        if new == ledgers[key]:
            continue
        if await _write(key, bodies[key], ledger_to_wire(new) | _reserved_fields(new)) is None:
            return False
    return True


def _reserved_fields(ledger: Ledger) -> dict[str, Any]:
    kwh, kg, jobs = reserved(ledger)
    return {"reservedEnergyKWh": round(kwh, 6), "reservedEmissionsKg": round(kg, 6), "admittedJobs": jobs}


# -- kopf wiring --------------------------------------------------------------------------------------------------
@kopf.on.event(GROUP, VERSION, PLURAL)
async def budget_event(type: str, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    key = (namespace or "", name)
    old = MIRROR.budgets.get(key)
    if type == "DELETED":
        MIRROR.budgets.pop(key, None)
        MIRROR.bodies.pop(key, None)
        if _has_metric(key):
            metrics.BUDGET_USED_RATIO.remove(*key)
            metrics.BUDGET_EXCEEDED.remove(*key)
        if old is not None:
            _poke_selected(key[0], [old[1]])  # the jobs it held may start now
        return
    MIRROR.bodies.setdefault(key, dict(body))  # later, our own writes keep it current (a stale one costs a 409)
    try:
        MIRROR.budgets[key] = budget_spec(key[0], key[1], dict(body.get("spec") or {}))
    except ValueError as exc:  # the CRD's validation makes this rare (a manifest from before a schema change)
        log.warning("EnergyBudget %s/%s ignored: %s", key[0], key[1], str(exc).splitlines()[0])
        MIRROR.budgets.pop(key, None)
    new = MIRROR.budgets.get(key)
    if new != old:  # created, or its spec changed (not our own status writes): the jobs it selects decide again
        _poke_selected(key[0], [entry[1] for entry in (old, new) if entry is not None])


def _has_metric(key: tuple[str, str]) -> bool:
    return any(
        sample.labels.get("namespace") == key[0] and sample.labels.get("budget") == key[1]
        for family in metrics.BUDGET_USED_RATIO.collect()
        for sample in family.samples
    )


@kopf.on.event(GROUP, VERSION, CAJ_PLURAL)
async def job_event(type: str, body: kopf.Body, name: str, namespace: str | None, **_: Any) -> None:
    key = (namespace or "", name)
    info = job_info(dict(body))
    if type == "DELETED":
        # Its last usage goes into the ledgers (the delete handler did so already when the operator's finalizer
        # held the object; this covers the budget handlers running alone). Then it is forgotten here.
        await record_final(key[0], info, info.labels)
        MIRROR.jobs.pop(key, None)
        return
    old = MIRROR.jobs.get(key)
    MIRROR.jobs[key] = info
    if old is not None and old.uid == info.uid and old.labels != info.labels:
        await record_final(key[0], old, info.labels)  # relabelled: the budgets it leaves keep its usage so far


@kopf.on.delete(GROUP, VERSION, CAJ_PLURAL, optional=True)
async def job_deleted(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    """While the operator's finalizer holds a deleted job, its last usage is written into the ledgers."""
    info = job_info(dict(body))
    await record_final(namespace or "", info, info.labels)


async def record_final(namespace: str, info: JobInfo, labels_now: dict[str, str]) -> None:
    """Write a job's usage into the ledgers of the budgets that select `info.labels`, as inactive where the job no
    longer belongs (deleted: `labels_now` is its last labels too, and it is gone; relabelled: not selected now)."""
    deleted = labels_now is info.labels
    for key, spec in selecting(namespace, info.labels):
        selector = MIRROR.budgets[key][1]
        stays = not deleted and selector.matches(labels_now)
        if stays or not info.uid:
            continue
        record = JobRecord(info.uid, info.usage.name, info.usage.chunks, finished=True)
        at = now()

        def change(
            body: dict[str, Any], spec: BudgetSpec = spec, record: JobRecord = record, at: datetime = at
        ) -> dict[str, Any] | None:
            ledger = ledger_from_wire(body.get("status"))
            new = _record_one(spec, ledger, record, at)
            return None if new == ledger else ledger_to_wire(new) | _reserved_fields(new)

        try:
            await update_budget(key, change)
        except (ApiException, BudgetConflictError) as exc:
            log.warning("EnergyBudget %s/%s: job %s's last usage not recorded: %s", *key, info.usage.name, exc)


def _record_one(spec: BudgetSpec, ledger: Ledger, job: JobRecord, at: datetime) -> Ledger:
    """`sync` for one job only: the other entries are left as they are."""
    mine = Ledger(tuple(e for e in ledger.entries if e.uid == job.uid), ())
    theirs = tuple(e for e in ledger.entries if e.uid != job.uid)
    synced = sync(spec, mine, [job], at)
    # Whatever `sync` moved to the history belongs to this job alone: fold it into the budget's history.
    history = {h.start: h for h in ledger.history}
    for h in synced.history:
        old = history.get(h.start)
        history[h.start] = h if old is None else PastBucket(h.start, h.end, old.kwh + h.kwh, old.kg + h.kg,
                                                             old.jobs + h.jobs)  # fmt: skip
    entries = tuple(sorted(theirs + synced.entries, key=lambda e: (e.bucket, e.uid)))
    return Ledger(entries, tuple(sorted(history.values(), key=lambda h: h.start)))


def selected_records(spec: BudgetSpec, selector: LabelSelector) -> list[JobRecord]:
    return [
        JobRecord(j.uid, j.usage.name, j.usage.chunks, j.finished)
        for (ns, _), j in MIRROR.jobs.items()
        if ns == spec.namespace and j.uid and selector.matches(j.labels)
    ]


async def mirror_complete(key: tuple[str, str]) -> bool:
    """Whether the ledger's active jobs that the mirror does not hold are really gone, so `sync` may end their
    reservations. Not before SETTLE_SECONDS after the start; and not while one of them still exists in the API
    with the same UID (the mirror has not seen it yet: kopf lists the jobs after it starts, which took longer than
    the settle time on a loaded machine, and ending an admitted job's reservation then let one more job in than the
    budget held). Each absent entry is looked up once: a job found gone is inactive after this pass's sync."""
    if time.monotonic() - STARTED <= SETTLE_SECONDS:
        return False
    seen = {info.uid for info in MIRROR.jobs.values()}
    ledger = ledger_from_wire((await _current(key)).get("status"))
    for name, uid in sorted({(e.job, e.uid) for e in ledger.entries if e.active and e.uid not in seen}):
        try:
            body = await _api(_custom().get_namespaced_custom_object, GROUP, VERSION, key[0], CAJ_PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise
        if (body.get("metadata") or {}).get("uid") == uid:
            log.debug("EnergyBudget %s/%s: job %s not seen yet; its reservation is kept", *key, name)
            return False
    return True


@kopf.timer(GROUP, VERSION, PLURAL, interval=INTERVAL_SECONDS, initial_delay=0.5)
async def refresh_budget(body: kopf.Body, name: str | None, namespace: str | None, **_: Any) -> None:
    key = (namespace or "", name or "")
    entry = MIRROR.budgets.get(key)
    if entry is None:
        entry = budget_spec(key[0], key[1], dict(body.get("spec") or {}))
        MIRROR.budgets[key] = entry
    spec, selector = entry
    at = now()
    records = selected_records(spec, selector)
    complete = await mirror_complete(key)
    outcome: dict[str, Any] = {}

    def change(current: dict[str, Any]) -> dict[str, Any] | None:
        old = dict(current.get("status") or {})
        ledger = sync(spec, ledger_from_wire(old), records, at, complete=complete)
        state = evaluate(spec, [JobUsage(spec.namespace, "ledger", {}, tuple(used_chunks(ledger)))], at)
        fields = status_fields(spec, state, ledger)
        conditions = [Condition.model_validate(c) for c in old.get("conditions") or []]
        generation = int((current.get("metadata") or {}).get("generation") or 0)
        if state.exceeded:
            message = f"used {state.used_ratio:.0%} of the budget; action {spec.action} until {_iso(state.period_end)}"
            conditions, _changed = set_condition(
                conditions, ConditionType.EXCEEDED, True, Reason.BUDGET_EXHAUSTED, message, at, generation
            )
            before = old.get("conditions") or []
            if not any(c.get("type") == "Exceeded" and c.get("status") == "True" for c in before):
                outcome["warn"] = message
        else:
            message = f"used {state.used_ratio:.0%} of the budget this period"
            conditions, _changed = set_condition(
                conditions, ConditionType.EXCEEDED, False, Reason.WITHIN_BUDGET, message, at, generation
            )
        fields["conditions"] = [c.model_dump(mode="json", by_alias=True) for c in conditions]
        fields["observedGeneration"] = generation
        outcome["state"] = state
        patch = {k: v for k, v in fields.items() if old.get(k) != v}
        return patch or None

    await update_budget(key, change)
    state = outcome.get("state")
    if isinstance(state, BudgetState):
        metrics.BUDGET_USED_RATIO.labels(*key).set(
            min(state.used_ratio, 1e9) if math.isfinite(state.used_ratio) else 1e9
        )
        metrics.BUDGET_EXCEEDED.labels(*key).set(1 if state.exceeded else 0)
    if "warn" in outcome:
        kopf.warn(body, reason=Reason.BUDGET_EXHAUSTED, message=str(outcome["warn"]))
