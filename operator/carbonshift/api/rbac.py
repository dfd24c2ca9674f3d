"""The operator's permissions, written once: the tests bind exactly these, and the chart renders the same rules.

Cluster-wide: what kopf needs to watch and record (CRDs, namespaces, peering, events), the carbonshift resources,
the workloads it drives (Jobs, JobSets, TrainJobs, PyTorchJobs, RayJobs), pods (to annotate ahead of a suspension)
and nodes (to count free GPUs), for its admission webhook SubjectAccessReviews and its
ValidatingWebhookConfiguration, and Kueue's Workloads, AdmissionChecks and ClusterQueues for the carbon-window
AdmissionCheck. Secrets are read only in the operator's own namespace (provider keys, kubeconfigs of remote
ComputeClusters) and written only there (the webhook's TLS certificate), through a namespaced Role, which also
keeps the ConfigMaps of the forecasts recorded per zone (read back after a restart).
"""

from __future__ import annotations

from typing import Any

from carbonshift.api.base import GROUP

CLUSTER_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": ["carbonawarejobs", "energybudgets", "computeclusters"],
     "verbs": ["get", "list", "watch", "patch", "update"]},
    {"apiGroups": [GROUP], "resources": ["carbonawarejobs/status", "energybudgets/status", "computeclusters/status"],
     "verbs": ["get", "patch", "update"]},
    {"apiGroups": [GROUP], "resources": ["carbonawarejobs/finalizers"], "verbs": ["update"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    # The other workload kinds it creates from a template or drives through a workloadRef (docs/workloads.md), and
    # the TrainingRuntimes a TrainJob takes its GPUs from. Discovery (is a kind installed?) needs no grant.
    {"apiGroups": ["jobset.x-k8s.io"], "resources": ["jobsets"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainingruntimes", "clustertrainingruntimes"],
     "verbs": ["get"]},
    {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"],
     "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": ["ray.io"], "resources": ["rayjobs"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
     "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["kopf.dev"], "resources": ["clusterkopfpeerings", "kopfpeerings"],
     "verbs": ["get", "list", "watch", "patch", "create"]},
    # The admission webhook: may the author create the Job (SubjectAccessReview), and the operator keeps the
    # webhook's ValidatingWebhookConfiguration (creates it when absent, patches its webhooks, address and CA bundle).
    {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
    {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["validatingwebhookconfigurations"],
     "verbs": ["get", "create", "patch"]},
    # Adoption (handlers/adoption.py, docs/design/adoption.md): the MutatingWebhookConfiguration that creates labelled
    # workloads suspended, and the tracking CarbonAwareJob of each (created; deleted when its labels are removed).
    # The adopted kinds' objects are watched and patched under the rules above.
    {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
     "verbs": ["get", "create", "patch"]},
    {"apiGroups": [GROUP], "resources": ["carbonawarejobs"], "verbs": ["create", "delete"]},
    # Kueue's AdmissionCheck (docs/kueue.md): the check's state on Workloads, the checks' Active condition.
    {"apiGroups": [GROUP], "resources": ["carbonwindowpolicies"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads", "admissionchecks", "clusterqueues"],
     "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": ["kueue.x-k8s.io"], "resources": ["workloads/status", "admissionchecks/status"],
     "verbs": ["get", "patch"]},
]  # fmt: skip

NAMESPACE_RULES: list[dict[str, Any]] = [
    # create/update: the webhook's TLS Secret, which the operator provisions and rotates (handlers/admission.py).
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "update"]},
    # Each zone's recorded forecasts, kept across restarts (handlers/forecast_store.py): one ConfigMap per zone.
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]},
]


def manifests(namespace: str, name: str = "carbonshift") -> list[dict[str, Any]]:
    """ServiceAccount, ClusterRole + binding, and the Role + binding for Secrets in `namespace`."""
    labels = {"app.kubernetes.io/name": "carbonshift", "app.kubernetes.io/part-of": "carbonshift"}
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": name, "namespace": namespace, "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name, "labels": labels}, "rules": CLUSTER_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"{name}-{namespace}", "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": subject},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": f"{name}-secrets", "namespace": namespace, "labels": labels}, "rules": NAMESPACE_RULES},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": f"{name}-secrets", "namespace": namespace, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": f"{name}-secrets"},
         "subjects": subject},
    ]  # fmt: skip
