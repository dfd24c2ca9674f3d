"""ComputeCluster: a Kubernetes cluster jobs can be placed in, with its grid zone and power usage effectiveness."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field, StringConstraints

from carbonshift.api.base import API_VERSION, ApiModel, Integer, LabelSelector, Number, ObjectMeta, Rule
from carbonshift.api.conditions import Condition

KIND: Final = "ComputeCluster"
PLURAL = "computeclusters"
ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
NAMESPACE_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class SecretKeyRef(ApiModel):
    name: str = Field(description="Name of the Secret holding a kubeconfig.", max_length=253)
    namespace: str = Field(description="Namespace of the Secret.", max_length=63)
    key: str = Field(default="kubeconfig", description="Key in the Secret's data.", max_length=253)


class Embodied(ApiModel):
    """Embodied (manufacturing) emissions of the cluster's GPUs, amortised over their lifetime: the M of SCI."""

    kg_per_gpu: Number = Field(
        ge=0, le=100_000, alias="kgCO2ePerGPU",
        description="Embodied emissions of one GPU with its share of the server (kgCO2e), e.g. 2500 for an H100 node.",
    )  # fmt: skip
    lifetime_years: Number = Field(
        default=4.0, gt=0, le=30, description="Years the GPUs are expected in service (amortisation period)."
    )

    def grams_per_gpu_second(self) -> float:
        return self.kg_per_gpu * 1000 / (self.lifetime_years * 365.25 * 24 * 3600)


class ComputeClusterSpec(ApiModel):
    zone: Annotated[str, StringConstraints(pattern=ZONE_PATTERN)] = Field(
        description="Grid zone code the cluster draws power from, e.g. DE, GB, US-CAL-CISO."
    )
    pue: Number = Field(
        default=1.2, ge=1.0, le=3.0, description="Power usage effectiveness of the data centre (>= 1.0)."
    )
    kubeconfig_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret with a kubeconfig for this cluster; absent means the local cluster."
    )
    gpu_capacity: Integer | None = Field(
        default=None, ge=0, description="GPUs carbonshift may use in this cluster; absent means all it finds."
    )
    embodied: Embodied | None = Field(
        default=None, description="Embodied emissions per GPU and lifetime, for SCI receipts; absent: M not counted."
    )
    namespace_selector: LabelSelector | None = Field(
        default=None,
        description="Which namespaces (of the cluster the operator runs in) may place CarbonAwareJobs here, by their "
        "labels; {} admits every namespace. Absent: the local cluster admits every namespace, a remote cluster none. "
        "Set by the cluster's administrator: ComputeClusters are cluster-scoped.",
    )
    target_namespace: Annotated[str, StringConstraints(pattern=NAMESPACE_PATTERN, max_length=63)] | None = Field(
        default=None,
        description="Namespace in the remote cluster that Jobs are created in (required with kubeconfigSecretRef; "
        "the kubeconfig's identity needs to create Jobs only there). Not allowed for the local cluster, where a Job "
        "goes to its CarbonAwareJob's namespace.",
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            "!has(self.kubeconfigSecretRef) || has(self.targetNamespace)",
            "spec.targetNamespace is required for a remote cluster (one with spec.kubeconfigSecretRef)",
            lambda s: s.kubeconfig_secret_ref is None or s.target_namespace is not None,
        ),
        Rule(
            "has(self.kubeconfigSecretRef) || !has(self.targetNamespace)",
            "spec.targetNamespace is only for a remote cluster: Jobs in the local cluster go to their "
            "CarbonAwareJob's namespace",
            lambda s: s.kubeconfig_secret_ref is not None or s.target_namespace is None,
        ),
    )

    def admits(self, namespace_labels: dict[str, str]) -> bool:
        """Whether a namespace with these labels may place work here (see namespace_selector)."""
        if self.namespace_selector is None:
            return self.kubeconfig_secret_ref is None
        return self.namespace_selector.matches(namespace_labels)


class ComputeClusterStatus(ApiModel):
    gpus_total: Integer | None = Field(default=None, description="nvidia.com/gpu allocatable in the cluster.")
    gpus_free: Integer | None = Field(default=None, description="GPUs not requested by running pods.")
    g_per_kwh: Number | None = Field(default=None, description="Latest grid intensity for the zone.")
    last_seen: datetime | None = Field(default=None, description="Last successful contact.")
    conditions: list[Condition] = Field(default_factory=list, description="Standard conditions (Ready).")


class ComputeCluster(ApiModel):
    """A cluster that CarbonAwareJobs can be placed in."""

    api_version: Literal["carbonshift.io/v1alpha1"] = Field(default=API_VERSION, description="API version.")
    kind: Literal["ComputeCluster"] = Field(default=KIND, description="Kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Standard object metadata.")
    spec: ComputeClusterSpec = Field(description="Desired state.")
    status: ComputeClusterStatus | None = Field(default=None, description="Observed state.")
