"""Starting and stopping dev clusters: port races are retried, Ctrl-C stops every process started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from carbonshift_dev.devcluster import ClusterConfig, DevCluster
from carbonshift_dev.devcluster import cluster as cluster_module
from carbonshift_dev.devcluster.testing import wait_for

pytestmark = pytest.mark.cluster


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text` (the cluster directory appears in every component's flags)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z" and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_start_retries_on_new_ports_when_a_port_was_taken(
    occupied_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = cluster_module.free_loopback_port
    handed: list[int] = []

    def first_one_taken() -> int:
        port = occupied_port if not handed else real()
        handed.append(port)
        return port

    monkeypatch.setattr(cluster_module, "free_loopback_port", first_one_taken)
    messages: list[str] = []
    with DevCluster.start(ClusterConfig(name="retry", nodes=1), workdir=tmp_path / "c", progress=messages.append) as c:
        assert c.running_processes() == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
    assert any("port was taken" in m for m in messages), messages
    assert handed[0] == occupied_port
    assert processes_mentioning(str(tmp_path / "c")) == []


def test_foreground_up_stops_every_process_on_ctrl_c(tmp_path: Path) -> None:
    workdir = tmp_path / "fg"
    cli = [
        sys.executable,
        "-m",
        "carbonshift_dev.devcluster",
        "up",
        "--dir",
        str(workdir),
        "--name",
        "fg",
        "--nodes",
        "1",
    ]
    with subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as up:
        try:
            assert up.stdout is not None
            assert up.stdout.readline().strip() == f"export KUBECONFIG={workdir / 'kubeconfig'}"
            assert len([p for p in processes_mentioning(str(workdir)) if p != up.pid]) == 5
            up.send_signal(signal.SIGINT)
            assert up.wait(timeout=60) == 0
        finally:
            if up.poll() is None:
                up.send_signal(signal.SIGINT)
                up.wait(timeout=60)
            leaked = processes_mentioning(str(workdir))
            for pid in leaked:  # only if the launcher failed to stop them; the assertion below reports it
                os.kill(pid, signal.SIGKILL)
    assert leaked == []


def test_two_launches_at_once_get_separate_clusters(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "carbonshift_dev.devcluster", "up", "--detach", "--nodes", "1"]
    dirs = [tmp_path / "a", tmp_path / "b"]
    launches = [
        subprocess.Popen([*cli, "--dir", str(d), "--name", d.name], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for d in dirs
    ]
    try:
        for launch in launches:
            _, stderr = launch.communicate(timeout=180)
            assert launch.returncode == 0, stderr
        clusters = [DevCluster.attach(d) for d in dirs]
        assert clusters[0].server_url != clusters[1].server_url
        for c in clusters:
            with c.http_client() as http:
                names = [n["metadata"]["name"] for n in http.get("/api/v1/nodes").json()["items"]]
                assert names == ["gpu-node-0"]
                http.post("/api/v1/namespaces", json={"metadata": {"name": f"only-in-{c.name}"}}).raise_for_status()
        for c, other in zip(clusters, reversed(clusters), strict=True):
            with c.http_client() as http:
                assert http.get(f"/api/v1/namespaces/only-in-{other.name}").status_code == 404
    finally:
        for d in dirs:
            subprocess.run([sys.executable, "-m", "carbonshift_dev.devcluster", "down", "--dir", str(d)], check=False)
    for d in dirs:
        wait_for(lambda d=d: processes_mentioning(str(d)) == [], f"processes of {d.name} gone", 30)
