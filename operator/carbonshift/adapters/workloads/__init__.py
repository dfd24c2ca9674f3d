"""Suspendable workloads of several kinds behind one interface (see docs/workloads.md).

`Workload` (base.py) is the interface, after Kueue's jobframework `GenericJob`; kinds.py implements it for
batch/v1 Job, JobSet, Kubeflow TrainJob, PyTorchJob and KubeRay RayJob; registry.py picks the adapter for an object;
client.py reads and patches them through the kube adapter and reports a kind the cluster does not serve.
"""

from carbonshift.adapters.workloads.base import (
    InvalidWorkload,
    KindInfo,
    KindNotInstalled,
    Owner,
    PodSet,
    UnsupportedKind,
    Workload,
    WorkloadError,
)
from carbonshift.adapters.workloads.kinds import BatchJob, JobSet, PyTorchJob, RayJob, TrainJob
from carbonshift.adapters.workloads.registry import KINDS, kind_for, workload_for

__all__ = [
    "KINDS",
    "BatchJob",
    "InvalidWorkload",
    "JobSet",
    "KindInfo",
    "KindNotInstalled",
    "Owner",
    "PodSet",
    "PyTorchJob",
    "RayJob",
    "TrainJob",
    "UnsupportedKind",
    "Workload",
    "WorkloadError",
    "kind_for",
    "workload_for",
]
