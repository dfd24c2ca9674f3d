"""Fixtures over a real control plane (carbonshift_dev.devcluster) and a real Prometheus.

- `dev_cluster`: one cluster per test session (2 fake GPU nodes, 8 GPUs each, zones zone-a and zone-b).
- `second_cluster`: a second, independent cluster, started only when a test asks for it.
- `kubeconfig`, `api_client`: the admin kubeconfig and an official `kubernetes` ApiClient for it.
- `namespace`: a fresh namespace per test (its `default` ServiceAccount exists), deleted afterwards.
- `installed_crds`: every crds/*.yaml installed and Established, by kind.
- `start_prometheus`: a factory; `start_prometheus(["127.0.0.1:PORT"])` scrapes that endpoint every second.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from kubernetes import client

from carbonshift_dev.devcluster import ClusterConfig, DevCluster, PrometheusServer
from carbonshift_dev.devcluster.testing import (
    InstalledCrd,
    api_client_from_kubeconfig,
    create_namespace,
    delete_namespace,
    install_crds,
    load_crd_documents,
)

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
ZONES = ("zone-a", "zone-b")
NODES = 2
GPUS_PER_NODE = 8
DEVCLUSTER_CLI = (sys.executable, "-m", "carbonshift_dev.devcluster")


@pytest.fixture(scope="session")
def dev_cluster() -> Iterator[DevCluster]:
    config = ClusterConfig(name="it-main", nodes=NODES, gpus_per_node=GPUS_PER_NODE, zones=ZONES)
    with DevCluster.start(config) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def second_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    """Started the way `make dev-cluster` starts one (`up --detach`), and stopped with `down`."""
    workdir = tmp_path_factory.mktemp("second-cluster") / "it-second"
    up = [*DEVCLUSTER_CLI, "up", "--detach", "--dir", str(workdir), "--name", "it-second"]
    up += ["--nodes", "1", "--gpus-per-node", "4", "--zones", "zone-c"]
    started = subprocess.run(up, capture_output=True, text=True, check=False, timeout=240)
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == f"export KUBECONFIG={workdir / 'kubeconfig'}"
    cluster = DevCluster.attach(workdir)
    yield cluster
    down = subprocess.run([*DEVCLUSTER_CLI, "down", "--dir", str(workdir)], capture_output=True, text=True, check=False)
    assert down.returncode == 0, down.stderr
    left = [p.name for p in cluster.processes if p.exit_code() is None]
    assert not left, f"`down` left processes running: {left}"


@pytest.fixture(scope="session")
def kubeconfig(dev_cluster: DevCluster) -> Path:
    return dev_cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = api_client_from_kubeconfig(kubeconfig)
    yield api
    api.close()


@pytest.fixture
def namespace(api_client: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    name = create_namespace(api_client, request.node.name)
    yield name
    delete_namespace(api_client, name)


@pytest.fixture(scope="session")
def installed_crds(api_client: client.ApiClient) -> dict[str, InstalledCrd]:
    paths = sorted(CRD_DIR.glob("*.yaml"))
    assert paths, f"no CRDs in {CRD_DIR}"
    return install_crds(api_client, load_crd_documents(paths))


@pytest.fixture
def start_prometheus() -> Iterator[Callable[[Sequence[str]], PrometheusServer]]:
    servers: list[PrometheusServer] = []

    def start(targets: Sequence[str]) -> PrometheusServer:
        server = PrometheusServer.start(targets)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
