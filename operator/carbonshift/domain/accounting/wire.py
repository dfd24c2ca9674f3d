"""The status (wire) form of the accounting's dataclasses, declared once on each field instead of copied by hand.

A field names its wire key and rounding in its metadata (`wire("measuredKWh", 9)`); `to_wire` and `from_wire`
walk the dataclass: floats rounded, datetimes as RFC 3339 UTC, tuples of nested dataclasses as lists, None and
defaults-only values left out where the field says so. Adding a field to a model is the whole change.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")


def wire(name: str, digits: int | None = None, *, skip_none: bool = True) -> dict[str, Any]:
    """Field metadata: the wire key, float rounding, whether None is left out."""
    return {"wire": name, "digits": digits, "skip_none": skip_none}


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


def parse_time(text: Any) -> datetime | None:
    return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _value_to_wire(value: Any, digits: int | None) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return round(value, digits) if digits is not None else value
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, tuple):
        return [_value_to_wire(v, digits) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_wire(value)
    return str(value)  # enums


def to_wire(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        meta = f.metadata
        if "wire" not in meta:
            continue
        value = getattr(obj, f.name)
        if value is None and meta["skip_none"]:
            continue
        out[meta["wire"]] = _value_to_wire(value, meta["digits"])
    return out


def _value_from_wire(hint: Any, data: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value_from_wire(inner, data)
    if origin is tuple:
        inner = typing.get_args(hint)[0]
        return tuple(_value_from_wire(inner, item) for item in data or [])
    if hint is datetime:
        return parse_time(data)
    if hint is float:
        return float(data)
    if hint is int:
        return int(data)
    if hint is bool:
        return bool(data)
    if hint is str:
        return str(data)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return from_wire(hint, data)
    return hint(data)  # enums


def from_wire(cls: type[T], data: Mapping[str, Any] | None) -> T:
    """Build `cls` from its wire form; missing keys take the field's default."""
    hints = _hints(cls)  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = f.metadata.get("wire")
        if key is None or not data or data.get(key) is None:
            continue
        values[f.name] = _value_from_wire(hints[f.name], data[key])
    return cls(**values)
