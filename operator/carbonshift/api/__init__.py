"""The custom resource API (group carbonshift.io, version v1alpha1): pydantic models, conditions, CRD generation.

`parse_manifest` turns a manifest into its model, or raises `ManifestError` listing each problem by field path,
in the same words as the API server where a cross-field rule is concerned.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from carbonshift.api.base import API_VERSION, GROUP, VERSION, ApiModel
from carbonshift.api.carbonawarejob import CarbonAwareJob
from carbonshift.api.carbonwindowpolicy import CarbonWindowPolicy
from carbonshift.api.computecluster import ComputeCluster
from carbonshift.api.energybudget import EnergyBudget

KINDS: dict[str, type[ApiModel]] = {
    "CarbonAwareJob": CarbonAwareJob,
    "EnergyBudget": EnergyBudget,
    "ComputeCluster": ComputeCluster,
    "CarbonWindowPolicy": CarbonWindowPolicy,
}


class ManifestError(ValueError):
    """A manifest that the API would refuse; `problems` holds one line per mistake, prefixed by its path."""

    def __init__(self, kind: str, name: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(f"{kind} {name!r} is invalid: " + "; ".join(problems))


def _path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append(item)
    return ".".join(parts)


def parse_manifest(doc: dict[str, Any]) -> ApiModel:
    """Validate a manifest of one of our kinds and return its model."""
    kind = str(doc.get("kind", ""))
    name = str((doc.get("metadata") or {}).get("name", "?"))
    if doc.get("apiVersion") != API_VERSION or kind not in KINDS:
        raise ManifestError(
            kind or "object", name, [f"expected apiVersion {API_VERSION} and a kind in {sorted(KINDS)}"]
        )
    try:
        return KINDS[kind].model_validate(doc)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            problems.append(f"{_path(err['loc'])}: {message}" if err["loc"] else message)
        raise ManifestError(kind, name, problems) from None


__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "VERSION",
    "CarbonAwareJob",
    "CarbonWindowPolicy",
    "ComputeCluster",
    "EnergyBudget",
    "ManifestError",
    "parse_manifest",
]
