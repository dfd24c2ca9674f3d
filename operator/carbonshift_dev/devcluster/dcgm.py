"""A stand-in for NVIDIA dcgm-exporter that replays a real H100 power trace, for tests and the demo.

It serves `/metrics` on 127.0.0.1 in dcgm-exporter's text format (label order, names and value formatting as in
`render_metrics.go` of dcgm-exporter 4.5.x; see shared/reference/carbon-and-power-apis.md section 6):
`DCGM_FI_DEV_POWER_USAGE` (W, six decimals) and `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` (integer mJ counter), one
series per GPU, with the pod that holds the GPU (`pod=""` when none). Values replay the measured trace bundled in
`carbonshift/data/gpu-power/h100-train-suspend-resume/nvml_samples.csv` (the project's own measurement; provenance
in the README beside it): power is the trace's `power_w`, the counter grows by the trace's `energy_mj` deltas.

Replay: trace time tau = start_offset + (wall - started) x speed, looping at the end of the trace. The counter is
integrated over wall time (trace energy / speed), so it always agrees with the power gauge: a GPU replayed five
times faster passes through the trace's phases five times faster, at the same watts. A GPU no pod holds draws the
trace's idle power (69 W, its `idle_start` phase) unless `idle_when_unassigned=False`, in which case every GPU
follows the trace (align assignments with the trace's phases to reproduce its suspend/resume exactly).

The test side: `assign()` / `unassign()` change which pod holds a GPU at run time (a resumed pod appears, a
suspended one disappears), `reset_counter()` simulates a driver reload (counter back to 0), and
`energy_mj(namespace, pod)` is the exact energy the GPUs drew while assigned to that pod: the ground truth a
reader of Prometheus is checked against. Label spellings: `hostname_label` Hostname (release 4.5.x) or hostname
(main after PR #655); `pod_labels` plain (namespace/pod/container) or exported (exported_namespace/...: what
Prometheus stores when honor_labels is false and the target already has those labels).

Command line: `python -m carbonshift_dev.devcluster.dcgm --port 9400 --nodes gpu-node-a:8 --assign
gpu-node-a/0=ml/train-x2k4q`. As a process it also accepts POST /assign, /unassign, /reset (query parameters
node, gpu, namespace, pod, container) and answers GET /ground-truth?namespace=&pod= with JSON.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Literal
from urllib.parse import parse_qs, urlparse

import numpy as np
import numpy.typing as npt

TRACE_PACKAGE = "carbonshift.data"
TRACE_FILE = ("gpu-power", "h100-train-suspend-resume", "nvml_samples.csv")
MODEL_NAME = "NVIDIA H100 80GB HBM3"
DRIVER_VERSION = "580.159.04"  # the driver of the measured run
POWER_METRIC = "DCGM_FI_DEV_POWER_USAGE"
ENERGY_METRIC = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
HostnameLabel = Literal["Hostname", "hostname"]
PodLabels = Literal["plain", "exported"]
FloatArray = npt.NDArray[np.float64]
MJ_PER_J = 1000.0


@dataclass(frozen=True)
class PowerTrace:
    """The measured trace on its own time axis: seconds from the first sample, cumulative mJ from 0."""

    seconds: FloatArray
    energy_mj: FloatArray
    power_watts: FloatArray
    phases: tuple[tuple[str, float], ...]  # (phase, first second), in order

    @property
    def duration_seconds(self) -> float:
        return float(self.seconds[-1])

    @property
    def total_mj(self) -> float:
        return float(self.energy_mj[-1])

    def phase_start(self, phase: str) -> float:
        for name, start in self.phases:
            if name == phase:
                return start
        raise KeyError(f"no phase {phase!r} in the trace; phases: {[n for n, _ in self.phases]}")

    def cumulative_mj(self, tau: float) -> float:
        """Energy drawn from trace second 0 to `tau` (any tau >= 0; the trace loops)."""
        loops, rest = divmod(max(tau, 0.0), self.duration_seconds)
        return loops * self.total_mj + float(np.interp(rest, self.seconds, self.energy_mj))

    def power_at(self, tau: float) -> float:
        """Board power of the sample in force at trace second `tau` (the trace loops)."""
        rest = max(tau, 0.0) % self.duration_seconds
        index = int(np.searchsorted(self.seconds, rest, side="right")) - 1
        return float(self.power_watts[max(index, 0)])


@lru_cache(maxsize=1)
def load_power_trace() -> PowerTrace:
    """The bundled H100 trace (10 Hz NVML samples of a training run with suspend/resume and a power-cap sweep)."""
    path = resources.files(TRACE_PACKAGE).joinpath(*TRACE_FILE)
    rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    t = np.array([float(r["t_unix"]) for r in rows])
    mj = np.array([float(r["energy_mj"]) for r in rows])
    phases: list[tuple[str, float]] = []
    for r, moment in zip(rows, t - t[0], strict=True):
        if not phases or phases[-1][0] != r["phase"]:
            phases.append((r["phase"], float(moment)))
    return PowerTrace(t - t[0], mj - mj[0], np.array([float(r["power_w"]) for r in rows]), tuple(phases))


@dataclass(frozen=True)
class Holder:
    namespace: str
    pod: str
    container: str = "main"


@dataclass
class Gpu:
    node: str
    index: int
    uuid: str
    pci_bus_id: str
    base_mj: float  # counter value (without resets) at `changed_at`; a driver counter starts anywhere
    changed_at: float  # wall time of the last change of holder
    reset_offset_mj: float = 0.0
    holder: Holder | None = None
    served: dict[tuple[str, str], float] = field(default_factory=dict)  # closed assignments, mJ by (ns, pod)


def _uuid(node: str, index: int) -> str:
    digest = hashlib.sha256(f"{node}/{index}".encode()).hexdigest()
    return f"GPU-{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


class DcgmStandIn:
    """The exporter: GPUs on nodes, who holds each, and an HTTP server; use as a context manager."""

    def __init__(
        self,
        nodes: dict[str, int],
        *,
        speed: float = 1.0,
        start_offset_seconds: float = 0.0,
        hostname_label: HostnameLabel = "Hostname",
        pod_labels: PodLabels = "plain",
        counter: bool = True,
        power: bool = True,
        idle_when_unassigned: bool = True,
        port: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if speed <= 0:
            raise ValueError(f"replay speed must be positive, got {speed}")
        self.trace = load_power_trace()
        self.speed = speed
        self.start_offset_seconds = start_offset_seconds
        self.hostname_label: HostnameLabel = hostname_label
        self.pod_labels: PodLabels = pod_labels
        self.counter_enabled = counter
        self.power_enabled = power
        self.idle_when_unassigned = idle_when_unassigned
        self.idle_watts = float(np.median(self.trace.power_watts[self.trace.seconds < self.trace.phases[1][1]]))
        self.clock = clock
        self.started = clock()
        self.scrapes = 0
        self._lock = threading.Lock()
        self.gpus: dict[tuple[str, int], Gpu] = {}
        for node, count in nodes.items():
            for i in range(count):
                initial = 2.0e10 + 1.0e9 * len(self.gpus)  # ~5.6 kWh since boot, distinct per GPU
                pci = f"00000000:{0x19 + 0x22 * i:02X}:00.0"
                self.gpus[(node, i)] = Gpu(node, i, _uuid(node, i), pci, initial, self.started)
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- replay ------------------------------------------------------------------------------------------------
    def trace_time(self, wall: float) -> float:
        return self.start_offset_seconds + (wall - self.started) * self.speed

    def wall_time(self, tau: float) -> float:
        """The wall time at which the replay reaches trace second `tau` (first pass)."""
        return self.started + (tau - self.start_offset_seconds) / self.speed

    def _draws_trace(self, gpu: Gpu) -> bool:
        return gpu.holder is not None or not self.idle_when_unassigned

    def _raw_mj(self, gpu: Gpu, wall: float) -> float:
        """Energy counter without resets at `wall` (>= the GPU's last change): a GPU held by a pod (or any GPU when
        idle_when_unassigned is off) draws the trace's power, an unassigned one the trace's idle power."""
        if not self._draws_trace(gpu):
            return gpu.base_mj + self.idle_watts * (wall - gpu.changed_at) * MJ_PER_J
        trace = self.trace
        drawn = trace.cumulative_mj(self.trace_time(wall)) - trace.cumulative_mj(self.trace_time(gpu.changed_at))
        return gpu.base_mj + drawn / self.speed

    def counter_mj(self, node: str, index: int, wall: float | None = None) -> int:
        """The counter as served at `wall` (default now; not before the GPU's last change of holder)."""
        gpu = self.gpus[(node, index)]
        return int(self._raw_mj(gpu, self.clock() if wall is None else wall) + gpu.reset_offset_mj)

    def power_watts(self, node: str, index: int, wall: float | None = None) -> float:
        if not self._draws_trace(self.gpus[(node, index)]):
            return self.idle_watts
        return self.trace.power_at(self.trace_time(self.clock() if wall is None else wall))

    def _change(self, gpu: Gpu, holder: Holder | None, now: float) -> None:
        if gpu.holder is not None:
            key = (gpu.holder.namespace, gpu.holder.pod)
            gpu.served[key] = gpu.served.get(key, 0.0) + self._raw_mj(gpu, now) - gpu.base_mj
        gpu.base_mj, gpu.changed_at, gpu.holder = self._raw_mj(gpu, now), now, holder

    # -- test controls -----------------------------------------------------------------------------------------
    def assign(self, node: str, index: int, namespace: str, pod: str, container: str = "main") -> None:
        """The GPU is now held by this pod (what the kubelet's pod-resources API would report)."""
        with self._lock:
            self._change(self.gpus[(node, index)], Holder(namespace, pod, container), self.clock())

    def unassign(self, node: str, index: int) -> None:
        """The pod holding the GPU is gone (suspended, finished); the GPU shows pod=""."""
        with self._lock:
            self._change(self.gpus[(node, index)], None, self.clock())

    def reset_counter(self, node: str, index: int) -> None:
        """A driver reload: the GPU's energy counter restarts from 0 now (the energy itself goes on)."""
        with self._lock:
            gpu = self.gpus[(node, index)]
            gpu.reset_offset_mj = -self._raw_mj(gpu, self.clock())

    def energy_mj(self, namespace: str, pod: str, wall: float | None = None) -> float:
        """Ground truth: mJ the GPUs drew while held by this pod, up to `wall` (default now), over all GPUs."""
        with self._lock:
            now = self.clock() if wall is None else wall
            total = 0.0
            for gpu in self.gpus.values():
                total += gpu.served.get((namespace, pod), 0.0)
                holder = gpu.holder
                if holder is not None and (holder.namespace, holder.pod) == (namespace, pod):
                    total += self._raw_mj(gpu, now) - gpu.base_mj
            return total

    # -- exposition --------------------------------------------------------------------------------------------
    def _labels(self, gpu: Gpu) -> str:
        holder = gpu.holder
        ns, pod, container = (holder.namespace, holder.pod, holder.container) if holder else ("", "", "")
        prefix = "exported_" if self.pod_labels == "exported" else ""
        return (
            f'gpu="{gpu.index}",UUID="{gpu.uuid}",pci_bus_id="{gpu.pci_bus_id}",device="nvidia{gpu.index}",'
            f'modelName="{MODEL_NAME}",{self.hostname_label}="{gpu.node}",DCGM_FI_DRIVER_VERSION="{DRIVER_VERSION}",'
            f'{prefix}container="{container}",{prefix}namespace="{ns}",{prefix}pod="{pod}"'
        )

    def render(self, wall: float | None = None) -> str:
        """The /metrics body at wall time `wall` (default now)."""
        with self._lock:
            now = self.clock() if wall is None else wall
            gpus = sorted(self.gpus.values(), key=lambda g: (g.node, g.index))
            lines: list[str] = []
            if self.power_enabled:
                lines += [f"# HELP {POWER_METRIC} Power draw (in W).", f"# TYPE {POWER_METRIC} gauge"]
                lines += [
                    f"{POWER_METRIC}{{{self._labels(g)}}} {self.power_watts(g.node, g.index, now):f}" for g in gpus
                ]
            if self.counter_enabled:
                lines += [
                    f"# HELP {ENERGY_METRIC} Total energy consumption since boot (in mJ).",
                    f"# TYPE {ENERGY_METRIC} counter",
                ]
                for g in gpus:
                    counter = int(self._raw_mj(g, now) + g.reset_offset_mj)
                    lines.append(f"{ENERGY_METRIC}{{{self._labels(g)}}} {counter}")
            self.scrapes += 1
            return "\n".join(lines) + "\n"

    # -- HTTP ----------------------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the dcgm stand-in is not serving; call start()")
        return int(self._server.server_address[1])

    @property
    def target(self) -> str:
        """host:port for a Prometheus scrape config."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> DcgmStandIn:
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="dcgm-stand-in", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> DcgmStandIn:
        return self.start() if self._server is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.target if self._server is not None else "stopped"
        return f"DcgmStandIn({where}, gpus={len(self.gpus)}, speed={self.speed})"


def _handler(exporter: DcgmStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet: Prometheus scrapes a lot
            return

        def _send(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the scraper gave up (scrape timeout): not our error
                return

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path == "/metrics":
                self._send(200, exporter.render(), "text/plain; version=0.0.4; charset=utf-8")
            elif url.path == "/ground-truth":
                mj = exporter.energy_mj(query.get("namespace", ""), query.get("pod", ""))
                self._send(200, json.dumps({"energyMJ": mj}), "application/json")
            else:
                self._send(404, "not found\n", "text/plain")

        def do_POST(self) -> None:
            url = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                node, index = q["node"], int(q["gpu"])
                if url.path == "/assign":
                    exporter.assign(node, index, q["namespace"], q["pod"], q.get("container", "main"))
                elif url.path == "/unassign":
                    exporter.unassign(node, index)
                elif url.path == "/reset":
                    exporter.reset_counter(node, index)
                else:
                    self._send(404, "not found\n", "text/plain")
                    return
            except (KeyError, ValueError) as exc:
                self._send(400, f"bad request: {exc}\n", "text/plain")
                return
            self._send(200, "ok\n", "text/plain")

    return Handler


def parse_nodes(text: str) -> dict[str, int]:
    """`node-a:8,node-b:4` -> {'node-a': 8, 'node-b': 4}."""
    nodes: dict[str, int] = {}
    for item in text.split(","):
        name, _, count = item.strip().partition(":")
        if not name or not count.isdigit():
            raise ValueError(f"--nodes item {item!r}: expected NODE:GPUS")
        nodes[name] = int(count)
    return nodes


def parse_assignment(text: str) -> tuple[str, int, str, str, str]:
    """`node/gpu=namespace/pod[/container]`."""
    where, sep, who = text.partition("=")
    node, _, index = where.partition("/")
    parts = who.split("/")
    if not sep or not node or not index.isdigit() or len(parts) not in (2, 3):
        raise ValueError(f"--assign {text!r}: expected NODE/GPU=NAMESPACE/POD[/CONTAINER]")
    return node, int(index), parts[0], parts[1], parts[2] if len(parts) == 3 else "main"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m carbonshift_dev.devcluster.dcgm", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--port", type=int, default=9400, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--nodes", default="gpu-node-a:8", help="NODE:GPUS,... (default gpu-node-a:8)")
    parser.add_argument("--speed", type=float, default=1.0, help="replay speed (trace seconds per wall second)")
    parser.add_argument("--start-offset", type=float, default=0.0, help="trace second to start the replay at")
    parser.add_argument("--assign", action="append", default=[], help="NODE/GPU=NAMESPACE/POD[/CONTAINER] (repeat)")
    parser.add_argument("--hostname-label", choices=["Hostname", "hostname"], default="Hostname")
    parser.add_argument("--pod-labels", choices=["plain", "exported"], default="plain")
    parser.add_argument("--no-counter", action="store_true", help="do not export the energy counter")
    args = parser.parse_args(argv)
    try:
        exporter = DcgmStandIn(
            parse_nodes(args.nodes),
            speed=args.speed,
            start_offset_seconds=args.start_offset,
            hostname_label=args.hostname_label,
            pod_labels=args.pod_labels,
            counter=not args.no_counter,
            port=args.port,
        )
        assignments: Iterable[tuple[str, int, str, str, str]] = [parse_assignment(a) for a in args.assign]
        for node, index, ns, pod, container in assignments:
            exporter.assign(node, index, ns, pod, container)
    except (ValueError, KeyError) as exc:
        print(f"dcgm stand-in: {exc}")
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with exporter:
        print(f"serving dcgm-exporter metrics on http://{exporter.target}/metrics", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
