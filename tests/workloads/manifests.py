"""Realistic templates of each workload kind, shared by the unit and the real-API-server tests.

Each is what a platform team would write (the shapes of each project's own examples), and each must be accepted by
its kind's real CRD with strict field validation (tests/integration/test_workload_kinds.py). GPU counts are chosen so
every role contributes a different number.
"""

from __future__ import annotations

import copy
from typing import Any

GPU = "nvidia.com/gpu"


def container(name: str, gpus: int, image: str = "registry.example/train:1") -> dict[str, Any]:
    resources: dict[str, Any] = {"limits": {GPU: gpus}} if gpus else {"requests": {"cpu": "1"}}
    return {"name": name, "image": image, "command": ["python", "train.py"], "resources": resources}


def pod_template(*containers: dict[str, Any], restart: str = "Never") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "train"}},
        "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 5, "containers": list(containers)},
    }


def job_template(gpus: int = 2, parallelism: int = 2) -> dict[str, Any]:
    """batch/v1 Job (as a CarbonAwareJob's spec.template today: no apiVersion/kind)."""
    return {
        "metadata": {"labels": {"team": "vision"}, "annotations": {"note": "resnet"}},
        "spec": {
            "parallelism": parallelism,
            "completions": parallelism,
            "backoffLimit": 0,
            "template": pod_template(container("train", gpus)),
        },
    }


def jobset_template() -> dict[str, Any]:
    """JobSet: one driver Job without GPUs, two worker Jobs of 4 pods x 8 GPUs (64 GPUs at once)."""
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"labels": {"team": "llm"}},
        "spec": {
            "network": {"enableDNSHostnames": True},
            "replicatedJobs": [
                {
                    "name": "driver",
                    "replicas": 1,
                    "template": {"spec": {"template": pod_template(container("driver", 0))}},
                },
                {
                    "name": "workers",
                    "replicas": 2,
                    "template": {
                        "spec": {
                            "parallelism": 4,
                            "completions": 4,
                            "backoffLimit": 0,
                            "template": pod_template(container("train", 8)),
                        }
                    },
                },
            ],
        },
    }


def trainjob_template() -> dict[str, Any]:
    """Kubeflow TrainJob on the torch-distributed runtime: 4 nodes x 8 GPUs."""
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"labels": {"team": "llm"}},
        "spec": {
            "runtimeRef": {"name": "torch-distributed"},
            "trainer": {
                "image": "registry.example/llama-finetune:1",
                "command": ["torchrun", "finetune.py"],
                "numNodes": 4,
                "resourcesPerNode": {"limits": {GPU: 8}},
            },
        },
    }


def cluster_training_runtime(name: str = "torch-distributed-gpu") -> dict[str, Any]:
    """A ClusterTrainingRuntime shaped like the trainer's own torch-distributed one: 2 nodes x 8 GPUs."""
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "ClusterTrainingRuntime",
        "metadata": {"name": name},
        "spec": {
            "mlPolicy": {"numNodes": 2, "torch": {"numProcPerNode": "auto"}},
            "template": {
                "spec": {
                    "replicatedJobs": [
                        {
                            "name": "node",
                            "template": {
                                "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                                "spec": {
                                    "template": {
                                        "spec": {
                                            "containers": [
                                                {
                                                    "name": "node",
                                                    "image": "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime",
                                                    "command": ["torchrun", "train.py"],
                                                    "resources": {"limits": {GPU: "8"}},
                                                }
                                            ]
                                        }
                                    }
                                },
                            },
                        }
                    ]
                }
            },
        },
    }


def pytorchjob_template() -> dict[str, Any]:
    """PyTorchJob: a Master with 4 GPUs and 3 Workers with 8 each (28 GPUs at once)."""
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"labels": {"team": "speech"}},
        "spec": {
            "runPolicy": {"cleanPodPolicy": "None"},
            "pytorchReplicaSpecs": {
                "Master": {
                    "replicas": 1,
                    "restartPolicy": "OnFailure",
                    "template": pod_template(container("pytorch", 4)),
                },
                "Worker": {
                    "replicas": 3,
                    "restartPolicy": "OnFailure",
                    "template": pod_template(container("pytorch", 8)),
                },
            },
        },
    }


def rayjob_template() -> dict[str, Any]:
    """RayJob: a head without GPUs, a worker group of 2 replicas x 2 hosts x 4 GPUs, a CPU group (16 GPUs at once)."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"labels": {"team": "rl"}},
        "spec": {
            "entrypoint": "python /home/ray/train.py",
            "shutdownAfterJobFinishes": True,
            "rayClusterSpec": {
                "rayVersion": "2.46.0",
                "headGroupSpec": {
                    "rayStartParams": {"dashboard-host": "0.0.0.0"},
                    "template": pod_template(container("ray-head", 0, "rayproject/ray:2.46.0"), restart="Always"),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": "gpu",
                        "replicas": 2,
                        "minReplicas": 2,
                        "maxReplicas": 2,
                        "numOfHosts": 2,
                        "rayStartParams": {},
                        "template": pod_template(container("ray-worker", 4, "rayproject/ray:2.46.0"), restart="Always"),
                    },
                    {
                        "groupName": "cpu",
                        "replicas": 1,
                        "minReplicas": 1,
                        "maxReplicas": 1,
                        "rayStartParams": {},
                        "template": pod_template(container("ray-worker", 0, "rayproject/ray:2.46.0"), restart="Always"),
                    },
                ],
            },
        },
    }


# kind -> (template, GPUs held at once, pods at once, {role: (pods, GPUs per pod)})
EXPECTED: dict[str, tuple[dict[str, Any], int, int, dict[str, tuple[int, int]]]] = {
    "Job": (job_template(), 4, 2, {"job": (2, 2)}),
    "JobSet": (jobset_template(), 64, 9, {"driver": (1, 0), "workers": (8, 8)}),
    "TrainJob": (trainjob_template(), 32, 4, {"node": (4, 8)}),
    "PyTorchJob": (pytorchjob_template(), 28, 4, {"Master": (1, 4), "Worker": (3, 8)}),
    "RayJob": (rayjob_template(), 16, 6, {"head": (1, 0), "gpu": (4, 4), "cpu": (1, 0)}),
}


def template(kind: str) -> dict[str, Any]:
    """A fresh copy of the kind's template (tests may change it)."""
    return copy.deepcopy(EXPECTED[kind][0])
