"""CarbonWindowPolicy: the parameters of carbonshift's Kueue AdmissionCheck (`carbonshift.io/carbon-window`).

Cluster-scoped, named by an AdmissionCheck's `spec.parameters`. It says where the workloads of the ClusterQueues
using the check draw power from (a grid zone, or a ComputeCluster whose zone and PUE apply) and the terms a
workload gets when its own annotations say nothing (see docs/kueue.md).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field, StringConstraints

from carbonshift.api.base import API_VERSION, ApiModel, Bool, Duration, ObjectMeta, Rule, positive
from carbonshift.api.computecluster import ZONE_PATTERN
from carbonshift.api.conditions import Condition

KIND: Final = "CarbonWindowPolicy"
PLURAL = "carbonwindowpolicies"
CONTROLLER_NAME: Final = "carbonshift.io/carbon-window"


class CarbonWindowPolicySpec(ApiModel):
    zone: Annotated[str, StringConstraints(pattern=ZONE_PATTERN)] | None = Field(
        default=None,
        description="Grid zone the queue's workloads run in, e.g. DE; absent: the cluster's zone or the operator's.",
    )
    cluster: str | None = Field(
        default=None, max_length=253, description="ComputeCluster whose zone and PUE apply (instead of zone)."
    )
    default_max_delay: Duration = Field(
        default="12h",
        description="Deadline of a workload without a carbonshift.io/deadline or max-delay annotation, from creation.",
    )
    default_duration: Duration | None = Field(
        default=None,
        description=(
            "Run time of a workload without a carbonshift.io/duration annotation or maximumExecutionTimeSeconds."
        ),
    )
    interruptible: Bool = Field(
        default=False,
        description="Whether workloads without a carbonshift.io/interruptible annotation may be evicted between windows.",  # noqa: E501
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!(has(self.zone) && has(self.cluster))",
            "set zone or cluster, not both",
            lambda s: s.zone is None or s.cluster is None,
        ),
        Rule(
            "duration(self.defaultMaxDelay) > duration('0s')",
            "defaultMaxDelay must be positive",
            lambda s: positive(s.default_max_delay),
        ),
    )


class CarbonWindowPolicyStatus(ApiModel):
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions.")


class CarbonWindowPolicy(ApiModel):
    """Parameters of the carbon-window AdmissionCheck for Kueue."""

    api_version: Literal["carbonshift.io/v1alpha1"] = Field(default=API_VERSION, description="API version.")
    kind: Literal["CarbonWindowPolicy"] = Field(default=KIND, description="Kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: CarbonWindowPolicySpec = Field(default_factory=CarbonWindowPolicySpec, description="Desired state.")
    status: CarbonWindowPolicyStatus | None = Field(default=None, description="Observed state.")
