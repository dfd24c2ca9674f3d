"""The CarbonAwareJob handler's typed status (handlers/jobstatus.py) and its one wire boundary (Tick.flush).

The wire form must not change with the typing: every status the operator writes reads back to the same wire form
(same keys, times to the second as `translate.iso` writes them, the same rounding, no defaulted field that was
absent, nested accounts as written), or every pass would patch fields that did not change. Checked on the statuses
of whole job lifecycles driven through the reconcile pass against an in-memory API server that stores what the real
one stores (JSON merge patch, nulls dropped, whole numbers read back as integers), and on statuses a real operator
wrote against a real kube-apiserver in e2e (tests/unit/data/caj_statuses.json)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import kopf
import pytest

from carbonshift.adapters.kube import Kube
from carbonshift.adapters.workloads.client import WorkloadClient
from carbonshift.api.carbonawarejob import Display, EnergySource, PlanStatus
from carbonshift.domain.lifecycle import Phase
from carbonshift.handlers import carbonawarejob as handler
from carbonshift.handlers.jobstatus import JobStatus
from carbonshift.handlers.state import LOCAL, OperatorState, Settings
from tests.unit.test_reconcile_fake import T0, ZONE, FakeKube, FakeWorkloads, StepClock, Trace, caj_body

REAL_STATUSES = Path(__file__).parent / "data" / "caj_statuses.json"


def stored(value: Any) -> Any:
    """What the API server keeps of a value it was sent: nulls of (non-nullable) fields dropped, a whole number
    read back as an integer (Go's JSON)."""
    if isinstance(value, dict):
        return {k: stored(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [stored(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch, as the API server applies a status patch."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


class ApiServerKube(FakeKube):
    """FakeKube whose status patches are merged and stored as the API server does; every patch is kept."""

    def __init__(self, clock: StepClock, caj: dict[str, Any]) -> None:
        super().__init__(clock, caj)
        self.patches: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []

    async def patch_caj_status(self, namespace: str, name: str, patch: dict[str, Any]) -> str:
        self.patches.append(copy.deepcopy(patch))
        self.caj["status"] = stored(merge(self.caj.get("status") or {}, json.loads(json.dumps(patch))))
        self.statuses.append(copy.deepcopy(self.caj["status"]))
        self.version += 1
        return str(self.version)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> tuple[OperatorState, ApiServerKube]:
    monkeypatch.setattr(kopf, "event", lambda *_, **__: None)
    clock = StepClock()
    kube = ApiServerKube(clock, caj_body())
    settings = Settings(zone=ZONE, pue=1.0, tick=timedelta(minutes=5), margin=timedelta(minutes=10))
    state = OperatorState(settings, clock, cast(Kube, kube), cast(Any, Trace()))
    state._workloads[LOCAL] = cast(WorkloadClient, FakeWorkloads(kube))
    return state, kube


async def run_pass(state: OperatorState, kube: ApiServerKube, at: datetime) -> datetime | None:
    cast(StepClock, state.clock).at[0] = at
    return await handler.reconcile(state, copy.deepcopy(kube.caj))


async def lifecycle(state: OperatorState, kube: ApiServerKube, *, repeat: bool) -> list[tuple[bool, int]]:
    """Drive the job through waiting, running, suspended and succeeded, a pass every 5 minutes (the first at
    T0 + 7.25 s, so times carry seconds and microseconds); with `repeat`, each pass is run twice at the same planning
    time. Returns, per repeated pass, whether the first one acted on the Job (created, resumed or suspended it) and
    how many patches the second one sent."""
    t = T0 + timedelta(seconds=7, microseconds=250_000)
    repeats: list[tuple[bool, int]] = []
    while t < T0 + timedelta(hours=12):
        job = kube.jobs.get(("team", "train"))
        if job is not None and not job["spec"].get("suspend"):
            kube.pods_ready(2)
        status = kube.caj.get("status") or {}
        if float((status.get("progress") or {}).get("workSeconds") or 0) >= 3 * 3600 - 1:
            kube.complete()
        writes = len(kube.writes)
        nxt = await run_pass(state, kube, t)
        if repeat:
            acted = any(kind in ("create", "resume", "suspend") for _, kind, _ in kube.writes[writes:])
            before = len(kube.patches)
            await run_pass(state, kube, t)
            repeats.append((acted, len(kube.patches) - before))
        if nxt is None:
            break
        t += timedelta(minutes=5)
    return repeats


async def test_every_status_of_a_lifecycle_reads_back_to_the_same_wire_form(
    cluster: tuple[OperatorState, ApiServerKube],
) -> None:
    state, kube = cluster
    await lifecycle(state, kube, repeat=False)
    statuses = kube.statuses
    assert statuses[-1]["phase"] == "Succeeded" and statuses[-1]["receiptPosted"] is True, statuses[-1]
    phases = {s.get("phase") for s in statuses}
    assert {"Waiting", "Running", "Suspended", "Succeeded"} <= phases, phases
    assert any("runningSince" in s for s in statuses) and any("suspendAt" in s for s in statuses)
    assert any("display" in s and "estimate" in s for s in statuses)
    for wire in statuses:
        status = JobStatus.from_wire(wire)
        assert status.to_wire() == wire
        assert not status.other, status.other  # every field was read typed
    last = JobStatus.from_wire(statuses[-1])
    assert last.phase is Phase.SUCCEEDED and last.energy_source is EnergySource.ESTIMATE
    assert isinstance(last.plan, PlanStatus) and isinstance(last.display, Display)
    assert isinstance(last.submitted_at, datetime) and last.submitted_at.microsecond == 0


async def test_a_pass_that_changes_nothing_sends_no_patch(cluster: tuple[OperatorState, ApiServerKube]) -> None:
    state, kube = cluster
    repeats = await lifecycle(state, kube, repeat=True)
    # Run twice at the same planning time, the second pass finds what the first wrote: nothing to send (a pass that
    # resumed or suspended the Job leaves a changed world behind: the second pass re-plans from it).
    quiet = [sent for acted, sent in repeats if not acted]
    assert len(quiet) > 20 and sum(acted for acted, _ in repeats) >= 3, repeats
    assert quiet == [0] * len(quiet), repeats


async def test_flush_sends_the_changed_fields_only_and_removes_what_is_gone(
    cluster: tuple[OperatorState, ApiServerKube],
) -> None:
    state, kube = cluster
    await lifecycle(state, kube, repeat=False)
    running = next(s for s in kube.statuses if "runningSince" in s and s.get("plan", {}).get("provider"))
    body = copy.deepcopy(kube.caj)
    body["status"] = copy.deepcopy(running)
    tick = handler.Tick(state, body)
    assert tick.st.observed_generation == 1
    await tick.flush()
    assert len(kube.patches) == len(kube.statuses) and kube.statuses[-1] != running  # nothing sent
    kube.statuses.clear()
    kube.patches.clear()
    assert tick.st.plan is not None
    tick.st.plan = tick.st.plan.model_copy(update={"provider": None})
    tick.st.running_since = None
    tick.st.suspensions = 3
    await tick.flush()
    (patch,) = kube.patches
    assert set(patch) == {"plan", "runningSince", "suspensions"}, patch
    assert patch["runningSince"] is None and patch["suspensions"] == 3
    # The plan goes whole, its unset fields as nulls: the merge patch removes the provider it had.
    assert patch["plan"]["provider"] is None and patch["plan"]["zone"] == running["plan"]["zone"]
    assert "provider" not in kube.caj["status"]["plan"] and "runningSince" not in kube.caj["status"]
    assert JobStatus.from_wire(kube.caj["status"]).to_wire() == kube.caj["status"]
    await tick.flush()
    assert len(kube.patches) == 1  # written once


def test_statuses_a_real_api_server_stored_read_back_to_the_same_wire_form() -> None:
    """Statuses the operator wrote in e2e (lifecycle, measured energy with DCGM, placement), as kube-apiserver
    returned them."""
    statuses = json.loads(REAL_STATUSES.read_text())
    assert len(statuses) >= 10
    assert any("energy" in s for s in statuses) and any("commitment" in s for s in statuses)
    for wire in statuses:
        status = JobStatus.from_wire(wire)
        assert status.to_wire() == wire
        assert not status.other, status.other


def test_fields_it_cannot_read_are_kept_as_they_were() -> None:
    wire = {"phase": "Running", "futureField": {"a": 1}, "runSeconds": "soon", "conditions": []}
    status = JobStatus.from_wire(wire)
    assert status.phase is Phase.RUNNING and status.run_seconds is None
    assert status.other == {"futureField": {"a": 1}, "runSeconds": "soon"}
    assert status.to_wire() == wire
    status.run_seconds = 12.5
    assert status.to_wire()["runSeconds"] == 12.5
    status.merge_wire({"runSeconds": 3})  # read again, and readable now: typed, the unreadable value gone
    assert status.run_seconds == 3.0 and "runSeconds" not in status.other


def test_the_wire_form_follows_every_assignment_and_a_snapshot_keeps_its_own() -> None:
    wire = json.loads(REAL_STATUSES.read_text())[0]
    status = JobStatus.from_wire(wire)
    first = status.to_wire()
    assert status.to_wire() is first  # unchanged: dumped once
    old = status.snapshot()
    status.phase = Phase.SUSPENDED
    status.merge_wire({"energyKWh": 2.5, "jobName": None})
    status.conditions = status.conditions[:1]
    now = status.to_wire()
    assert now["phase"] == "Suspended" and now["energyKWh"] == 2.5 and "jobName" not in now
    assert len(now["conditions"]) == 1
    assert old.to_wire() == wire and old.phase is Phase(wire["phase"])
    assert status.to_wire(leave_out=("conditions", "plan")) == {
        k: v for k, v in now.items() if k not in ("conditions", "plan")
    }
