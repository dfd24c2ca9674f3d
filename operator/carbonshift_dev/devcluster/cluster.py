"""One dev cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as processes.

`DevCluster.start()` lays out a directory (PKI, token file, kubeconfigs, kwok stages, logs, etcd data), starts
the processes on free loopback ports, creates the fake GPU nodes and returns once the cluster is usable:
`/readyz` answers ok, the controller-manager, scheduler and kwok report healthy, every node is Ready without
the not-ready taint, and the `default` ServiceAccount exists. `stop()` stops every process it started, by PID,
in reverse order. In detached mode the processes outlive the launcher; `state.json` records their PIDs so
`stop_detached()` (the `down` command) can stop them later.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import ssl
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

import httpx

from carbonshift_dev.devcluster.binaries import Binaries, find_binaries
from carbonshift_dev.devcluster.kubeconfig import (
    Identity,
    admin_identity,
    component_identities,
    read_kubeconfig_token,
    write_kubeconfig,
    write_token_file,
)
from carbonshift_dev.devcluster.nodes import KWOK_NODE_SELECTOR, gpu_nodes
from carbonshift_dev.devcluster.pki import ClusterPki, create_pki
from carbonshift_dev.devcluster.processes import ManagedProcess, ProcessExitedError, free_loopback_port

STATE_FILE = "state.json"
KUBECONFIG_FILE = "kubeconfig"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
POD_CIDR = "10.244.0.0/16"
NODE_LEASE_DURATION_SECONDS = 40
PORT_ATTEMPTS = 3
_POLL_SECONDS = 0.1
_NOT_READY_TAINTS = frozenset({"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"})

Progress = Callable[[str], None]


class ClusterStartError(RuntimeError):
    """The dev cluster did not become ready; the message says which check failed and where the logs are."""


@dataclass(frozen=True)
class ClusterConfig:
    """What a dev cluster looks like: its name and its fake GPU nodes."""

    name: str = "carbonshift-dev"
    nodes: int = 2
    gpus_per_node: int = 8
    zones: tuple[str, ...] = ("zone-a", "zone-b")
    node_prefix: str = "gpu-node"
    startup_timeout_seconds: float = 180.0
    # One ServiceAccount per controller (kubeadm's --use-service-account-credentials); ~5 s slower to start.
    controller_service_accounts: bool = False
    # Kueue's manager, CRDs and webhooks (devcluster.kueue), started once the cluster is ready.
    kueue: bool = False
    # JobSet's controller manager, CRD and webhooks (devcluster.jobset), started once the cluster is ready.
    jobset: bool = False
    # Kubeflow Trainer v2's controller manager, CRDs and webhooks (devcluster.trainer), after JobSet; needs jobset.
    trainer: bool = False

    def __post_init__(self) -> None:
        if self.trainer and not self.jobset:
            raise ValueError("ClusterConfig(trainer=True) needs jobset=True: a TrainJob runs as a JobSet")


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def allocate(cls) -> Ports:
        return cls(*(free_loopback_port() for _ in range(6)))


@dataclass(frozen=True)
class StartupTimings:
    """Seconds from the start of `DevCluster.start()` until each milestone."""

    apiserver_ready_seconds: float = 0.0
    components_healthy_seconds: float = 0.0
    nodes_ready_seconds: float = 0.0
    total_seconds: float = 0.0


def default_cluster_dir(name: str) -> Path:
    """Where a detached cluster named `name` keeps its files, so `down --name` can find it."""
    root = os.environ.get("CARBONSHIFT_DEVCLUSTER_DIR")
    base = Path(root) if root else Path(tempfile.gettempdir()) / f"carbonshift-devcluster-{os.getuid()}"
    return base / name


class DevCluster:
    """A running dev cluster. Use as a context manager, or call `stop()`."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        server_url: str,
        ca_cert: Path,
        processes: list[ManagedProcess],
        admin_token: str,
        owns_workdir: bool,
        timings: StartupTimings | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.server_url = server_url
        self.ca_cert = ca_cert
        self.processes = processes
        self._admin_token = admin_token
        self._owns_workdir = owns_workdir
        self.timings = timings or StartupTimings()
        self._stopped = False

    def __repr__(self) -> str:
        return f"DevCluster(name={self.name!r}, server_url={self.server_url!r}, workdir={str(self.workdir)!r})"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / KUBECONFIG_FILE

    def export_line(self) -> str:
        return f"export KUBECONFIG={self.kubeconfig}"

    # ---- starting -------------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        config: ClusterConfig | None = None,
        *,
        workdir: Path | None = None,
        binaries: Binaries | None = None,
        detach: bool = False,
        progress: Progress | None = None,
    ) -> DevCluster:
        """Start a cluster and return when it is usable; on failure every started process is stopped."""
        config = config or ClusterConfig()
        binaries = binaries or find_binaries()
        say = progress or (lambda _message: None)
        started_at = time.monotonic()
        owns_workdir = workdir is None
        directory = Path(tempfile.mkdtemp(prefix=f"carbonshift-{config.name}-")) if workdir is None else workdir
        directory.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            launch = _Launch(config, binaries, directory, say, started_at)
            try:
                cluster = launch.run(owns_workdir=owns_workdir and not detach)
                break
            except (ClusterStartError, ProcessExitedError) as exc:
                launch.stop_all()
                # Free ports are picked before the processes bind them; another program may win the race.
                if "address already in use" not in str(exc) or attempt == PORT_ATTEMPTS:
                    raise
                say(f"a port was taken meanwhile; starting again on new ports (attempt {attempt + 1})")
                for leftover in ("etcd", "logs"):
                    shutil.rmtree(directory / leftover, ignore_errors=True)
            except BaseException:
                launch.stop_all()
                raise
        if detach:
            cluster._write_state()
        else:
            _register_atexit(cluster)
        return cluster

    @classmethod
    def attach(cls, workdir: Path) -> DevCluster:
        """A handle on a detached cluster from its `state.json` (to stop it or query it)."""
        state_path = workdir / STATE_FILE
        if not state_path.is_file():
            raise FileNotFoundError(f"no dev cluster state in {workdir} ({STATE_FILE} missing)")
        state = json.loads(state_path.read_text(encoding="utf-8"))
        processes = [ManagedProcess.from_record(r) for r in state["processes"]]
        return cls(
            name=state["name"],
            workdir=workdir,
            server_url=state["server_url"],
            ca_cert=Path(state["ca_cert"]),
            processes=processes,
            admin_token=read_kubeconfig_token(workdir / KUBECONFIG_FILE),
            owns_workdir=True,
        )

    def _write_state(self) -> None:
        state = {
            "name": self.name,
            "server_url": self.server_url,
            "ca_cert": str(self.ca_cert),
            "kubeconfig": str(self.kubeconfig),
            "processes": [p.to_record() for p in self.processes],
        }
        (self.workdir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    # ---- running --------------------------------------------------------------------------------------

    def running_processes(self) -> list[str]:
        """Names of the processes that still run."""
        return [p.name for p in self.processes if p.exit_code() is None]

    def check_running(self) -> None:
        """Raise ProcessExitedError if any process has died."""
        for process in self.processes:
            process.check_running()

    def memory_rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running process, by process name."""
        sizes = {p.name: p.rss_bytes() for p in self.processes}
        return {name: size for name, size in sizes.items() if size is not None}

    def http_client(self, timeout_seconds: float = 10.0) -> httpx.Client:
        """An httpx client authenticated as the cluster admin, verifying the cluster's CA."""
        return _api_client(self.server_url, self.ca_cert, self._admin_token, timeout_seconds)

    def create_gpu_nodes(self, count: int, gpus_per_node: int, zones: Sequence[str], prefix: str) -> list[str]:
        """Create fake GPU nodes (kwok manages them) and return their names; existing ones are kept."""
        nodes = gpu_nodes(count, gpus_per_node, zones, prefix)
        with self.http_client() as client:
            for node in nodes:
                response = client.post("/api/v1/nodes", json=node)
                if response.status_code not in (201, 409):
                    raise ClusterStartError(
                        f"creating node {node['metadata']['name']} failed: HTTP {response.status_code} "
                        f"{response.text[:300]}"
                    )
        return [str(n["metadata"]["name"]) for n in nodes]

    def wait_nodes_schedulable(self, names: Sequence[str], timeout_seconds: float = 60.0) -> None:
        """Wait until every named node is Ready and carries no not-ready/unreachable taint."""
        shown = ", ".join(names[:5]) + (f" (and {len(names) - 5} more)" if len(names) > 5 else "")
        with self.http_client() as client:
            _poll(
                lambda: _nodes_schedulable(client, names),
                timeout_seconds,
                f"nodes {shown} Ready and untainted",
                self.processes,
            )

    # ---- stopping -------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process (reverse start order) and remove the directory if this cluster created it."""
        if self._stopped:
            return
        self._stopped = True
        for process in reversed(self.processes):
            process.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / STATE_FILE).unlink()

    def __enter__(self) -> DevCluster:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def stop_detached(workdir: Path) -> list[str]:
    """Stop a detached cluster from its state file; returns the names of the processes it signalled."""
    cluster = DevCluster.attach(workdir)
    running = cluster.running_processes()
    cluster.stop()
    return running


# ---- internals ------------------------------------------------------------------------------------------


_live_clusters: weakref.WeakSet[DevCluster] = weakref.WeakSet()


def _stop_live_clusters() -> None:
    for cluster in list(_live_clusters):
        cluster.stop()


atexit.register(_stop_live_clusters)


def _register_atexit(cluster: DevCluster) -> None:
    """Stop the cluster at interpreter exit; also turn SIGTERM into SystemExit so that exit happens."""
    _live_clusters.add(cluster)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _api_client(server_url: str, ca_cert: Path, token: str, timeout_seconds: float) -> httpx.Client:
    return httpx.Client(
        base_url=server_url,
        verify=ssl.create_default_context(cafile=str(ca_cert)),
        headers={"Authorization": f"Bearer {token}"},
        timeout=timeout_seconds,
    )


def _poll(check: Callable[[], bool], timeout_seconds: float, what: str, processes: Sequence[ManagedProcess]) -> None:
    """Call `check` until it returns True; fail early if a process dies, or after the timeout."""
    deadline = time.monotonic() + timeout_seconds
    last_error = ""
    while True:
        for process in processes:
            process.check_running()
        try:
            if check():
                return
        except httpx.HTTPError as exc:
            last_error = f" (last error: {type(exc).__name__}: {exc})"
        if time.monotonic() >= deadline:
            raise ClusterStartError(f"timed out after {timeout_seconds:.0f} s waiting for {what}{last_error}")
        time.sleep(_POLL_SECONDS)


def _healthy(client: httpx.Client, url: str) -> bool:
    return client.get(url).status_code == 200


def _nodes_schedulable(client: httpx.Client, names: Sequence[str]) -> bool:
    response = client.get("/api/v1/nodes", params={"labelSelector": "type=kwok"})
    if response.status_code != 200:
        return False
    by_name = {item["metadata"]["name"]: item for item in response.json()["items"]}
    return all(name in by_name and _node_schedulable(by_name[name]) for name in names)


def _node_schedulable(node: dict[str, Any]) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    taints = node.get("spec", {}).get("taints") or []
    return ready and not any(t.get("key") in _NOT_READY_TAINTS for t in taints)


def stages_text() -> str:
    """The kwok Stage definitions shipped with this package (see stages.yaml for what each does)."""
    return resources.files("carbonshift_dev.devcluster").joinpath("stages.yaml").read_text(encoding="utf-8")


@dataclass
class _Launch:
    """The steps of one `DevCluster.start()`; keeps the started processes so a failure can stop them."""

    config: ClusterConfig
    binaries: Binaries
    workdir: Path
    say: Progress
    started_at: float
    processes: list[ManagedProcess] = field(default_factory=list)

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def spawn(self, name: str, argv: Sequence[str | Path]) -> ManagedProcess:
        process = ManagedProcess.start(
            name, [str(a) for a in argv], self.workdir / "logs" / f"{name}.log", self.workdir
        )
        self.processes.append(process)
        return process

    def run(self, owns_workdir: bool) -> DevCluster:
        cfg, bins, d = self.config, self.binaries, self.workdir
        pki = create_pki(d / "pki", cfg.name)
        admin = admin_identity()
        components = component_identities(cfg.controller_service_accounts)
        write_token_file(d / "tokens.csv", [admin, *components.values()])
        ports = Ports.allocate()
        server_url = f"https://127.0.0.1:{ports.apiserver}"
        write_kubeconfig(d / KUBECONFIG_FILE, cfg.name, server_url, pki.ca_cert, admin)
        for component, ident in components.items():
            write_kubeconfig(d / f"{component}.kubeconfig", cfg.name, server_url, pki.ca_cert, ident)
        (d / "kwok-stages.yaml").write_text(stages_text(), encoding="utf-8")

        self.say(f"starting etcd and kube-apiserver for {cfg.name} in {d}")
        self.spawn("etcd", _etcd_argv(bins, d, ports))
        self.wait_http(f"http://127.0.0.1:{ports.etcd_client}/health", None, None, "etcd /health", 30.0)
        self.spawn("kube-apiserver", _apiserver_argv(bins, d, ports, pki))
        self.wait_http(f"{server_url}/readyz", pki.ca_cert, admin, "kube-apiserver /readyz", self.remaining())
        apiserver_ready = self.elapsed()
        self.say(f"kube-apiserver ready after {apiserver_ready:.1f} s; starting controller-manager, scheduler, kwok")

        self.spawn("kube-controller-manager", _controller_manager_argv(bins, d, ports, pki, cfg))
        self.spawn("kube-scheduler", _scheduler_argv(bins, d, ports, pki))
        self.spawn("kwok", _kwok_argv(bins, d, ports, pki))
        cluster = DevCluster(cfg.name, d, server_url, pki.ca_cert, self.processes, admin.token, owns_workdir)
        names = cluster.create_gpu_nodes(cfg.nodes, cfg.gpus_per_node, cfg.zones, cfg.node_prefix)
        for what, port in (
            ("kube-controller-manager", ports.controller_manager),
            ("kube-scheduler", ports.scheduler),
        ):
            self.wait_http(f"https://127.0.0.1:{port}/healthz", pki.ca_cert, None, f"{what} /healthz", self.remaining())
        self.wait_http(f"http://127.0.0.1:{ports.kwok}/healthz", None, None, "kwok /healthz", self.remaining())
        components_healthy = self.elapsed()
        with cluster.http_client() as client:
            _poll(
                lambda: _healthy(client, "/api/v1/namespaces/default/serviceaccounts/default"),
                self.remaining(),
                "the default ServiceAccount (controller-manager's serviceaccount controller)",
                self.processes,
            )
        cluster.wait_nodes_schedulable(names, self.remaining())
        nodes_ready = self.elapsed()
        if cfg.kueue:
            from carbonshift_dev.devcluster.kueue import start_kueue

            self.say("starting Kueue")
            with cluster.http_client() as client:
                start_kueue(client, cluster.kubeconfig, d, self.processes, timeout_seconds=self.remaining())
        if cfg.jobset:
            from carbonshift_dev.devcluster.jobset import start_jobset

            self.say("starting JobSet")
            with cluster.http_client() as client:
                start_jobset(client, cluster.kubeconfig, d, self.processes, timeout_seconds=self.remaining())
        if cfg.trainer:
            from carbonshift_dev.devcluster.trainer import start_trainer

            self.say("starting Kubeflow Trainer")
            with cluster.http_client() as client:
                start_trainer(client, cluster.kubeconfig, d, self.processes, timeout_seconds=self.remaining())
        cluster.timings = StartupTimings(apiserver_ready, components_healthy, nodes_ready, self.elapsed())
        self.say(f"cluster {cfg.name} ready after {nodes_ready:.1f} s with {len(names)} GPU node(s)")
        return cluster

    def remaining(self) -> float:
        return max(1.0, self.config.startup_timeout_seconds - self.elapsed())

    def wait_http(self, url: str, ca: Path | None, ident: Identity | None, what: str, timeout: float) -> None:
        headers = {"Authorization": f"Bearer {ident.token}"} if ident else {}
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca)) if ca else True
        with httpx.Client(verify=verify, headers=headers, timeout=5.0) as client:
            try:
                _poll(lambda: _healthy(client, url), timeout, what, self.processes)
            except (ClusterStartError, ProcessExitedError) as exc:
                raise ClusterStartError(f"{exc}\n(cluster directory kept: {self.workdir})") from exc


def _etcd_argv(b: Binaries, d: Path, p: Ports) -> list[str | Path]:
    peer = f"http://127.0.0.1:{p.etcd_peer}"
    client = f"http://127.0.0.1:{p.etcd_client}"
    return [
        b.etcd, "--name=default", f"--data-dir={d / 'etcd'}",
        f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}", "--unsafe-no-fsync=true", "--log-level=warn",
    ]  # fmt: skip


def _apiserver_argv(b: Binaries, d: Path, p: Ports, pki: ClusterPki) -> list[str | Path]:
    return [
        b.kube_apiserver,
        f"--etcd-servers=http://127.0.0.1:{p.etcd_client}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={p.apiserver}",
        f"--cert-dir={d / 'apiserver-certs'}",
        f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        f"--token-auth-file={d / 'tokens.csv'}",
        "--authorization-mode=RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.service_account_public_key}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # Kubernetes 1.37 refuses a loopback advertise address for the endpoint reconciler; nothing in the
        # cluster dials the `kubernetes` Service here (no real pods), so do without its Endpoints.
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true", "--profiling=false",
    ]  # fmt: skip


def _component_serving(d: Path, name: str, port: int, pki: ClusterPki) -> list[str | Path]:
    return [
        "--bind-address=127.0.0.1", f"--secure-port={port}", f"--cert-dir={d / (name + '-certs')}",
        f"--tls-cert-file={pki.serving_cert}", f"--tls-private-key-file={pki.serving_key}",
    ]  # fmt: skip


def _controller_manager_argv(b: Binaries, d: Path, p: Ports, pki: ClusterPki, cfg: ClusterConfig) -> list[str | Path]:
    return [
        b.kube_controller_manager,
        f"--kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
        "--leader-elect=false", f"--use-service-account-credentials={str(cfg.controller_service_accounts).lower()}",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca_cert}", "--profiling=false",
        *_component_serving(d, "kube-controller-manager", p.controller_manager, pki),
    ]  # fmt: skip


def _scheduler_argv(b: Binaries, d: Path, p: Ports, pki: ClusterPki) -> list[str | Path]:
    return [
        b.kube_scheduler,
        f"--kubeconfig={d / 'kube-scheduler.kubeconfig'}",
        "--leader-elect=false", "--profiling=false",
        *_component_serving(d, "kube-scheduler", p.scheduler, pki),
    ]  # fmt: skip


def _kwok_argv(b: Binaries, d: Path, p: Ports, pki: ClusterPki) -> list[str | Path]:
    del pki  # kwok serves plain HTTP on loopback (healthz only)
    return [
        b.kwok,
        f"--kubeconfig={d / 'kwok.kubeconfig'}",
        f"--config={d / 'kwok-stages.yaml'}",
        "--manage-all-nodes=false", f"--manage-nodes-with-annotation-selector={KWOK_NODE_SELECTOR}",
        "--node-ip=127.0.0.1", f"--cidr={POD_CIDR}",
        f"--node-lease-duration-seconds={NODE_LEASE_DURATION_SECONDS}",
        f"--server-address=127.0.0.1:{p.kwok}",
    ]  # fmt: skip


def iter_cluster_dirs(root: Path) -> Iterator[Path]:
    """Directories under `root` that hold a detached cluster's state file."""
    if root.is_dir():
        yield from sorted(p for p in root.iterdir() if (p / STATE_FILE).is_file())
