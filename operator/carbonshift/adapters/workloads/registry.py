"""Which adapter drives an object: by its apiVersion and kind."""

from __future__ import annotations

from typing import Any

from carbonshift.adapters.workloads.base import KindInfo, UnsupportedKind, Workload
from carbonshift.adapters.workloads.kinds import BatchJob, JobSet, PyTorchJob, RayJob, TrainJob

KINDS: tuple[type[Workload], ...] = (BatchJob, TrainJob, PyTorchJob, RayJob, JobSet)
_BY_TYPE = {(k.info.api_version, k.info.kind): k for k in KINDS}


def kind_for(api_version: str, kind: str) -> type[Workload]:
    """The adapter of this apiVersion and kind; UnsupportedKind names the supported ones otherwise."""
    found = _BY_TYPE.get((api_version, kind))
    if found is None:
        supported = ", ".join(f"{k.info.api_version} {k.info.kind}" for k in KINDS)
        raise UnsupportedKind(f"carbonshift cannot drive {api_version} {kind}; it drives {supported}")
    return found


def workload_for(obj: dict[str, Any]) -> Workload:
    """Wrap an object of a supported kind (a template without apiVersion/kind is a batch/v1 Job)."""
    return kind_for(str(obj.get("apiVersion", "batch/v1")), str(obj.get("kind", "Job")))(obj)


def kind_info(api_version: str, kind: str) -> KindInfo:
    return kind_for(api_version, kind).info
