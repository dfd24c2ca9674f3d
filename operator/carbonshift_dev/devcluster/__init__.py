"""A real Kubernetes control plane on loopback for tests and the demo, with kwok fake GPU nodes.

Processes, not containers: etcd, kube-apiserver (RBAC, ServiceAccount tokens), kube-controller-manager (Job
controller), kube-scheduler and kwok (fake kubelets driven by the Stage definitions in stages.yaml), plus a
Prometheus runner. Binaries come from `hack/install-tools.sh` (see `binaries`). Command line:
`python -m carbonshift_dev.devcluster up|down|status`. Design and measurements: docs/design/control-plane.md.
"""

from carbonshift_dev.devcluster.binaries import Binaries, MissingBinaryError, bin_dir, find_binaries, find_prometheus
from carbonshift_dev.devcluster.cluster import (
    ClusterConfig,
    ClusterStartError,
    DevCluster,
    StartupTimings,
    default_cluster_dir,
    stop_detached,
)
from carbonshift_dev.devcluster.nodes import GPU_RESOURCE, ZONE_LABEL, gpu_node, gpu_nodes
from carbonshift_dev.devcluster.processes import ProcessExitedError
from carbonshift_dev.devcluster.prometheus import PrometheusError, PrometheusServer

# Pod annotations the kwok stages react to (see stages.yaml).
COMPLETE_ANNOTATION = "carbonshift.io/complete"
FAIL_ANNOTATION = "carbonshift.io/fail"
EXIT_CODE_ANNOTATION = "carbonshift.io/exit-code"
TERMINATION_DELAY_ANNOTATION = "carbonshift.io/termination-delay"

__all__ = [
    "COMPLETE_ANNOTATION",
    "EXIT_CODE_ANNOTATION",
    "FAIL_ANNOTATION",
    "GPU_RESOURCE",
    "TERMINATION_DELAY_ANNOTATION",
    "ZONE_LABEL",
    "Binaries",
    "ClusterConfig",
    "ClusterStartError",
    "DevCluster",
    "MissingBinaryError",
    "ProcessExitedError",
    "PrometheusError",
    "PrometheusServer",
    "StartupTimings",
    "bin_dir",
    "default_cluster_dir",
    "find_binaries",
    "find_prometheus",
    "gpu_node",
    "gpu_nodes",
    "stop_detached",
]
