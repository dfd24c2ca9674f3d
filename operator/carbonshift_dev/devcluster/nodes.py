"""Fake GPU Node manifests for kwok: `nvidia.com/gpu` capacity and a `topology.kubernetes.io/zone` label."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
ZONE_LABEL = "topology.kubernetes.io/zone"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_SELECTOR = f"{KWOK_NODE_ANNOTATION}=fake"


def gpu_node(
    name: str,
    zone: str,
    gpus: int,
    cpu: str = "64",
    memory: str = "512Gi",
    pods: int = 110,
    gpu_product: str = "NVIDIA-H100-80GB-HBM3",
) -> dict[str, Any]:
    """One Node object that kwok manages (matched by its annotation), with GPUs in capacity and allocatable."""
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods), GPU_RESOURCE: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                ZONE_LABEL: zone,
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.product": gpu_product,
            },
        },
        "spec": {},
        "status": {"capacity": dict(resources), "allocatable": dict(resources)},
    }


def gpu_nodes(count: int, gpus_per_node: int, zones: Sequence[str], prefix: str = "gpu-node") -> list[dict[str, Any]]:
    """`count` nodes named `<prefix>-<i>`, spread over `zones` round-robin."""
    if count < 0:
        raise ValueError(f"node count must be >= 0, got {count}")
    if gpus_per_node < 0:
        raise ValueError(f"GPUs per node must be >= 0, got {gpus_per_node}")
    if count and not zones:
        raise ValueError("at least one zone is needed to create nodes")
    return [gpu_node(f"{prefix}-{i}", zones[i % len(zones)], gpus_per_node) for i in range(count)]
