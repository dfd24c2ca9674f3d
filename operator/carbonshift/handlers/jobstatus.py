"""A CarbonAwareJob's status as one reconcile pass reads and writes it: typed attributes, one wire boundary.

`JobStatus.from_wire` parses the status as the API server stores it, once per pass (handlers/carbonawarejob.Tick);
the steps read and assign typed attributes (Phase, datetime, float, PlanStatus, Display, Condition); `to_wire` gives
the stored form back, field for field as the operator has always written it: datetimes as `translate.iso` (UTC, to
the second, "Z"), numbers as rounded where they were computed, no field that was absent (no defaulted empty list or
`false`). So `to_wire(from_wire(w)) == w` for every status the operator writes, and a pass that changes nothing
patches nothing (tests/unit/test_job_status.py). `Tick.flush` is the one place that turns it into a patch.

Why a dataclass and not the pydantic `api.carbonawarejob.CarbonAwareJobStatus` (which generates the CRD schema and
still checks every patch before it is sent): dumping that model would not give the stored form back. Its nested
energy accounts would gain every defaulted field (`replayedTrace: false`, empty lists, zero totals) and re-format
the domain's datetimes, its own datetimes carry the clock's microseconds unless every assignment truncates them, and
`use_enum_values` leaves the phase a plain string. The nested parts are typed where the handler reads them:
`plan` is the pydantic PlanStatus and `display` the pydantic Display (flat, all fields written each time, dumped
without nulls); the measured-energy account (`energy`) and the estimate (`estimate`) are kept in the form their
owner, domain/accounting, writes and reads (`Account.to_wire`/`account_from_wire`, `estimate_to_wire`/
`estimate_from_wire`): their typed form is the domain's Account and Estimate, parsed where they are used, and the
receipt, the EnergyBudgets and `carbonshift receipt` read the same form. The decision core's fields (`progress`,
`commitment`, `suspendAt`, `suspendAnnouncedAt`) are typed as the Tick's CoreStatus and kept here as
`translate.core_status_wire` wrote them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from carbonshift.api.carbonawarejob import Commitment, Display, EnergySource, PlanStatus
from carbonshift.api.conditions import Condition
from carbonshift.api.jobs import parse_time
from carbonshift.domain.lifecycle import Phase
from carbonshift.handlers.translate import iso


def second(moment: datetime) -> datetime:
    """A moment as status keeps it: to the second (what reading it back gives)."""
    return moment.replace(microsecond=0)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {value!r}")
    return float(value)  # the API server gives an integral float back as an int: the same number


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not an integer: {value!r}")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not a string: {value!r}")
    return value


def _time(value: Any) -> datetime:
    moment = parse_time(_text(value))
    if moment is None:
        raise ValueError("empty time")
    return moment


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"not a boolean: {value!r}")
    return value


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"not an object: {value!r}")
    return value


def _model_wire(model: PlanStatus | Display) -> dict[str, Any]:
    """The plan or the display as stored (the API server drops their nulls)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _same(value: Any) -> Any:
    return value


# attribute -> (wire key, parse, dump). Dumped only when not None.
_FIELDS: dict[str, tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = {
    "phase": ("phase", lambda v: Phase(_text(v)), str),
    "cluster": ("cluster", _text, _same),
    "job_name": ("jobName", _text, _same),
    "deadline": ("deadline", _time, iso),
    "plan": ("plan", PlanStatus.model_validate, _model_wire),
    "next_transition_time": ("nextTransitionTime", _time, iso),
    "submitted_at": ("submittedAt", _time, iso),
    "running_since": ("runningSince", _time, iso),
    "run_seconds": ("runSeconds", _number, _same),
    "suspensions": ("suspensions", _integer, _same),
    "progress": ("progress", _object, _same),
    "commitment": ("commitment", _object, _same),
    "suspend_at": ("suspendAt", _text, _same),
    "suspend_announced_at": ("suspendAnnouncedAt", _text, _same),
    "energy_kwh": ("energyKWh", _number, _same),
    "energy_source": ("energySource", lambda v: EnergySource(_text(v)), str),
    "emissions_grams": ("emissionsGrams", _number, _same),
    "baseline_emissions_grams": ("baselineEmissionsGrams", _number, _same),
    "avoided_emissions_grams": ("avoidedEmissionsGrams", _number, _same),
    "energy": ("energy", _object, _same),
    "estimate": ("estimate", _object, _same),
    "display": ("display", Display.model_validate, _model_wire),
    "receipt_posted": ("receiptPosted", _flag, _same),
    "observed_generation": ("observedGeneration", _integer, _same),
}
_BY_WIRE = {wire: attr for attr, (wire, _, _) in _FIELDS.items()}
_CACHED = frozenset({"plan", "display"})
_DEFAULTS: dict[str, Any] = dict.fromkeys(_FIELDS) | {"_wire": None}


@dataclasses.dataclass
class JobStatus:
    """The fields of CarbonAwareJobStatus (api/carbonawarejob.py), typed as the handler uses them."""

    phase: Phase | None = None
    cluster: str | None = None
    job_name: str | None = None
    deadline: datetime | None = None
    plan: PlanStatus | None = None
    next_transition_time: datetime | None = None
    submitted_at: datetime | None = None
    running_since: datetime | None = None
    run_seconds: float | None = None
    suspensions: int | None = None
    # The decision core's, as translate.core_status_wire writes them (typed: Tick.core, a CoreStatus).
    progress: dict[str, Any] | None = None
    commitment: dict[str, Any] | None = None
    suspend_at: str | None = None
    suspend_announced_at: str | None = None
    energy_kwh: float | None = None
    energy_source: EnergySource | None = None
    emissions_grams: float | None = None
    baseline_emissions_grams: float | None = None
    avoided_emissions_grams: float | None = None
    # domain/accounting's wire forms: typed as its Account (account_from_wire) and Estimate (estimate_from_wire).
    energy: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None
    display: Display | None = None
    receipt_posted: bool | None = None
    conditions: list[Condition] = dataclasses.field(default_factory=list)
    observed_generation: int | None = None
    # Fields this version does not know or cannot read, kept as they were (a newer operator's, a hand edit).
    other: dict[str, Any] = dataclasses.field(default_factory=dict)
    # A pass dumps its status more than once (the flushes, the receipt and its metrics): the last wire form stands
    # until the next assignment, and the plan's and display's dumps while the same objects stand. Values are
    # replaced by the steps, never mutated in place, and a wire form is read, never changed.
    _wire: dict[str, Any] | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    _dumped: dict[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def __setattr__(self, name: str, value: Any) -> None:
        self.__dict__[name] = value
        if name != "_wire":
            self.__dict__["_wire"] = None

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any] | None) -> JobStatus:
        status = cls.__new__(cls)  # once per pass: the defaults set directly, not through __setattr__
        status.__dict__.update(_DEFAULTS)
        status.__dict__.update(conditions=[], other={}, _dumped={})
        status.merge_wire(wire or {})
        return status

    def merge_wire(self, fields: Mapping[str, Any]) -> None:
        """Set the fields given in their wire form (the status read, or the summary fields domain/accounting
        computes for the measured energy: energyKWh, energySource, emissionsGrams, ..., energy)."""
        values = self.__dict__
        for key, value in fields.items():
            if key == "conditions":  # as before the typed status: unreadable conditions fail the pass
                values["conditions"] = [Condition.model_validate(c) for c in value or []]
                continue
            attr = _BY_WIRE.get(key)
            if attr is None:
                if value is not None:
                    self.other[key] = value
                continue
            try:
                values[attr] = None if value is None else _FIELDS[attr][1](value)
            except (TypeError, ValueError):  # pydantic's ValidationError is a ValueError
                self.other[key] = value
            else:
                self.other.pop(key, None)
        self._wire = None

    def to_wire(self, *, leave_out: Collection[str] = ()) -> dict[str, Any]:
        """The status as stored: what `from_wire` read, with this pass's changes (unset fields left out).
        `leave_out`: wire fields not wanted (a partial form, for a reader of a few fields)."""
        if self._wire is not None and not leave_out:
            return self._wire
        wire = {k: v for k, v in self.other.items() if k not in leave_out}
        for attr, (key, _, dump) in _FIELDS.items():
            value = getattr(self, attr)
            if value is not None and key not in leave_out:
                wire[key] = self._dump(key, value, dump) if key in _CACHED else dump(value)
        if "conditions" not in leave_out:  # always written
            wire["conditions"] = [c.model_dump(mode="json", by_alias=True) for c in self.conditions]
        if not leave_out:
            self._wire = wire
        return wire

    def _dump(self, key: str, value: Any, dump: Callable[[Any], Any]) -> Any:
        cached = self._dumped.get(key)
        if cached is not None and cached[0] is value:
            return cached[1]
        wire = dump(value)
        self._dumped[key] = (value, wire)
        return wire

    def snapshot(self) -> JobStatus:
        """A copy that later assignments do not change (nested values are replaced by the steps, never mutated)."""
        copied = object.__new__(JobStatus)
        copied.__dict__.update(self.__dict__, _dumped=dict(self._dumped))
        return copied


def patch_value(key: str, status: JobStatus, value: Any) -> Any:
    """What a status patch sends for a changed field: its stored form, or for the objects written whole (the plan,
    the display) every field, nulls included, so that the merge patch removes the ones they no longer have (the
    API server drops the nulls of fields that are not nullable: what it stores is `to_wire`'s form)."""
    if key == "commitment" and isinstance(value, dict):  # written whole too, from the core's wire form
        return {**dict.fromkeys(_COMMITMENT_KEYS), **value}
    model = status.plan if key == "plan" else status.display if key == "display" else None
    return value if model is None else model.model_dump(mode="json", by_alias=True)


_COMMITMENT_KEYS = tuple(field.alias or name for name, field in Commitment.model_fields.items())
