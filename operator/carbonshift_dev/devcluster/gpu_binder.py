"""Which pod holds which GPU, for the DCGM stand-in: the part a real kubelet's pod-resources API plays.

kwok's fake kubelets run no device plugin, so nothing says which of a node's GPUs a pod got. `GpuBinder` polls the
pods bound to the stand-in's nodes and assigns each Running pod that asks for `nvidia.com/gpu` that many free GPU
indexes on its node (unassigning them when the pod stops running), so the stand-in labels its series with the pod
exactly as dcgm-exporter does with pod mapping on.
"""

from __future__ import annotations

import threading

from kubernetes import client

from carbonshift.api.jobs import GPU_RESOURCE
from carbonshift_dev.devcluster.dcgm import DcgmStandIn, Gpu


class GpuBinder(threading.Thread):
    def __init__(
        self, api: client.ApiClient, exporter: DcgmStandIn, nodes: dict[str, int], poll_seconds: float = 0.2
    ) -> None:
        super().__init__(daemon=True, name="gpu-binder")
        self.core = client.CoreV1Api(api)
        self.exporter = exporter
        self.free = {node: list(range(count)) for node, count in nodes.items()}
        self.held: dict[tuple[str, str], tuple[str, list[int]]] = {}  # (namespace, pod) -> (node, gpus)
        self.seen: set[tuple[str, str]] = set()  # every pod that ever held a GPU
        self.poll_seconds = poll_seconds
        self.halt = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.halt.wait(self.poll_seconds):
            try:
                self.sync()
            except Exception as exc:  # keep binding through a restarting API server; report at the end
                self.errors.append(str(exc))

    def sync(self) -> None:
        running: dict[tuple[str, str], tuple[str, int]] = {}
        for pod in self.core.list_pod_for_all_namespaces().items:
            if not (pod.spec and pod.status and pod.metadata) or pod.spec.node_name not in self.free:
                continue
            if pod.status.phase != "Running" or pod.metadata.deletion_timestamp:
                continue
            want = 0
            for container in pod.spec.containers or []:
                limits = (container.resources.limits or {}) if container.resources else {}
                want += int(limits.get(GPU_RESOURCE, 0))
            if want:
                running[(str(pod.metadata.namespace), str(pod.metadata.name))] = (pod.spec.node_name, want)
        for key in list(self.held):
            if key not in running:
                node, gpus = self.held.pop(key)
                for index in gpus:
                    self.exporter.unassign(node, index)
                self.free[node].extend(gpus)
        for (namespace, name), (node, want) in running.items():
            if (namespace, name) in self.held or len(self.free[node]) < want:
                continue
            gpus = sorted(self.free[node])[:want]
            self.free[node] = [i for i in self.free[node] if i not in gpus]
            for index in gpus:
                self.exporter.assign(node, index, namespace, name, container="train")
            self.held[(namespace, name)] = (node, gpus)
            self.seen.add((namespace, name))


class TimeLapseDcgm(DcgmStandIn):
    """The stand-in for an accelerated demo: energy counted in planning time.

    With the operator's clock S times faster than the wall clock, jobs, grid and GPUs all run in time-lapse: the
    H100 trace replays S times faster (the base class's `speed`) and the energy counter advances S times faster,
    so a job that runs for 2 planning hours draws 2 hours' worth of energy. The power gauge still shows real watts;
    a reader that integrates power over wall time (the fallback) would under-count by S, so the demo relies on the
    counter, as dcgm-exporter users should.
    """

    def _raw_mj(self, gpu: Gpu, wall: float) -> float:
        plain = super()._raw_mj(gpu, wall)
        return gpu.base_mj + (plain - gpu.base_mj) * self.speed
