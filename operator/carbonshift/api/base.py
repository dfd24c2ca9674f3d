"""Shared pieces of the API models: the base class, field types, and cross-field rules.

A cross-field rule is written once, as a `Rule`: the CEL expression the API server evaluates
(`x-kubernetes-validations` in the generated CRD) and a Python predicate the models evaluate, with one message for
both. So `kubectl apply` and `carbonshift` refuse the same manifest with the same words.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Final, Self

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from carbonshift.api.durations import DURATION_PATTERN, parse_duration

GROUP = "carbonshift.io"
VERSION = "v1alpha1"
API_VERSION: Final = "carbonshift.io/v1alpha1"

Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)]
"""A duration such as 90s, 15m, 4h or 1h30m (units ms, s, m, h)."""

# The API server does not coerce "yes" to true or "5" to 5; neither do the models.
Bool = Annotated[bool, Strict()]
Number = Annotated[float, Strict()]
Integer = Annotated[int, Strict()]


@dataclass(frozen=True)
class Rule:
    """A validation rule across fields of one object: CEL for the API server, a predicate for Python."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    reason: str = "FieldValueInvalid"


def positive(text: str | None) -> bool:
    return text is None or parse_duration(text).total_seconds() > 0


class ApiModel(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields refused, rules checked."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
        validate_default=True,
    )
    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).rules:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self

    def wire(self) -> dict[str, Any]:
        """The object as it is sent to the API server (camelCase, JSON types, unset optionals left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class LabelSelectorRequirement(ApiModel):
    key: str = Field(description="The label key that the selector applies to.", max_length=317)
    operator: Annotated[str, StringConstraints(pattern=r"^(In|NotIn|Exists|DoesNotExist)$")] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[Annotated[str, StringConstraints(max_length=63)]] = Field(
        default_factory=list,
        description="Values for In and NotIn; must be empty for Exists and DoesNotExist.",
        max_length=64,
    )


class LabelSelector(ApiModel):
    """A standard Kubernetes label selector."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels that must all match exactly (key: value)."
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Set-based requirements, all of which must match.", max_length=32
    )

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether `labels` satisfy this selector (an empty selector matches everything)."""
        for key, value in self.match_labels.items():
            if labels.get(key) != value:
                return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


class ObjectMeta(BaseModel):
    """The part of metadata the models read; the API server owns the rest."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, alias_generator=to_camel)

    name: str | None = None
    namespace: str | None = None
    generation: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    uid: str | None = None
