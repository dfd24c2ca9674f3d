"""A suspendable workload as the decision core sees it, whatever its kind (batch/v1 Job, TrainJob, RayJob, ...).

Pure data: the kind-specific reading lives in `carbonshift.adapters.workloads`, which turns an object of any
supported kind into these values; an import contract (pyproject.toml) keeps kind-specific code out of this package.
The field names of `WorkloadObservation` match `domain.lifecycle.Observed`, so the core can take either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class WorkloadObservation:
    """One workload as the API server shows it.

    `active_pods`: pods the workload's controller runs or waits for; `ready_pods`: pods actually running (a resumed
    workload's pods may still wait for GPUs); `desired_pods`: pods it runs at once when resumed, from its spec.
    Kinds that report Jobs or replicas rather than pods are converted to pods by their adapter (see docs/workloads.md).
    """

    kind: str
    exists: bool
    suspended: bool = True
    desired_pods: int = 0
    active_pods: int = 0
    ready_pods: int = 0
    complete: bool = False
    failed: bool = False
    failure_reason: str | None = None
    failure_message: str | None = None
    suspend_at_annotation: datetime | None = None
    running_since: datetime | None = None  # since when its pods run, where the kind reports it
    completed_at: datetime | None = None  # when it completed, where the kind reports it

    @property
    def finished(self) -> bool:
        return self.complete or self.failed

    @property
    def running(self) -> bool:
        """Resumed and not finished: it may hold GPUs now."""
        return self.exists and not self.suspended and not self.finished


@dataclass(frozen=True, slots=True)
class RoleGpus:
    """One role of a workload (a Job's pods, a PyTorchJob's Worker replicas, a RayJob worker group, ...)."""

    role: str
    pods: int
    gpus_per_pod: int

    @property
    def gpus(self) -> int:
        return self.pods * self.gpus_per_pod


@dataclass(frozen=True, slots=True)
class GpuDemand:
    """The GPUs a workload holds at once when it runs: the sum over its roles."""

    roles: tuple[RoleGpus, ...]

    @property
    def total(self) -> int:
        return sum(r.gpus for r in self.roles)

    @property
    def pods(self) -> int:
        return sum(r.pods for r in self.roles)

    @property
    def largest_pod(self) -> int:
        """The most GPUs one pod asks for: a node with fewer cannot run this workload."""
        return max((r.gpus_per_pod for r in self.roles if r.pods), default=0)
