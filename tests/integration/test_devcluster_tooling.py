"""The dev cluster's tooling that needs no cluster: finding binaries, manifests, configs, process handling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from carbonshift_dev.devcluster import MissingBinaryError, find_binaries, gpu_nodes
from carbonshift_dev.devcluster.binaries import VERSIONS_FILE, default_bin_dir, read_versions
from carbonshift_dev.devcluster.cluster import stages_text
from carbonshift_dev.devcluster.kubeconfig import Identity, read_kubeconfig_token, write_kubeconfig, write_token_file
from carbonshift_dev.devcluster.processes import ManagedProcess, ProcessExitedError
from carbonshift_dev.devcluster.prometheus import prometheus_config

REPO = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "carbonshift_dev.devcluster")


def test_bin_dir_matches_what_the_install_script_prints(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for env in ({"CARBONSHIFT_CACHE": str(tmp_path / "c")}, {"XDG_CACHE_HOME": str(tmp_path / "x")}, {}):
        clean = {k: v for k, v in os.environ.items() if k not in ("CARBONSHIFT_CACHE", "XDG_CACHE_HOME")}
        printed = subprocess.run(
            ["bash", str(REPO / "hack" / "install-tools.sh"), "--print-dir"],
            env={**clean, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        monkeypatch.delenv("CARBONSHIFT_CACHE", raising=False)
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        assert str(default_bin_dir()) == printed


def test_versions_file_pins_every_tool() -> None:
    versions = read_versions(VERSIONS_FILE)
    for key in ("KUBERNETES_VERSION", "ETCD_VERSION", "KWOK_VERSION", "HELM_VERSION"):
        assert versions[key].startswith("v"), key


def test_missing_binary_is_named_with_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "etcd").write_text("#!/bin/sh\n", encoding="utf-8")
    (tmp_path / "etcd").chmod(0o755)
    monkeypatch.setenv("CARBONSHIFT_BIN_DIR", str(tmp_path))
    with pytest.raises(MissingBinaryError) as missing:
        find_binaries()
    message = str(missing.value)
    assert message.startswith("kube-apiserver not found in ")
    assert "hack/install-tools.sh" in message
    assert "\n" not in message


def test_up_without_binaries_fails_with_one_clear_line(tmp_path: Path) -> None:
    env = {**os.environ, "CARBONSHIFT_BIN_DIR": str(tmp_path / "empty")}
    result = subprocess.run([*CLI, "up", "--dir", str(tmp_path / "c")], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"devcluster: etcd not found in {tmp_path / 'empty'}: install it with `hack/install-tools.sh`"
    ]


def test_down_and_status_without_a_cluster(tmp_path: Path) -> None:
    down = subprocess.run([*CLI, "down", "--dir", str(tmp_path)], capture_output=True, text=True)
    status = subprocess.run([*CLI, "status", "--dir", str(tmp_path)], capture_output=True, text=True)
    assert down.returncode == 0
    assert "no detached cluster" in down.stderr
    assert status.returncode == 1


def test_gpu_nodes_spread_over_zones_with_gpu_capacity() -> None:
    nodes = gpu_nodes(5, 4, ["DE", "FR"])
    assert [n["metadata"]["name"] for n in nodes] == [f"gpu-node-{i}" for i in range(5)]
    assert [n["metadata"]["labels"]["topology.kubernetes.io/zone"] for n in nodes] == ["DE", "FR", "DE", "FR", "DE"]
    for node in nodes:
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "4"
        assert node["status"]["allocatable"]["nvidia.com/gpu"] == "4"
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    with pytest.raises(ValueError, match="at least one zone"):
        gpu_nodes(1, 8, [])


def test_stages_finish_pods_only_on_request() -> None:
    stages = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(stages_text())}
    assert set(stages) == {
        "node-initialize",
        "node-heartbeat",
        "pod-ready",
        "pod-complete",
        "pod-fail",
        "pod-terminate",
        "pod-delete",
    }
    for name, annotation in (("pod-complete", "carbonshift.io/complete"), ("pod-fail", "carbonshift.io/fail")):
        keys = [e["key"] for e in stages[name]["spec"]["selector"]["matchExpressions"]]
        assert f'.metadata.annotations["{annotation}"]' in keys


def test_prometheus_config_scrapes_targets_every_second() -> None:
    document = prometheus_config(["127.0.0.1:9000", "127.0.0.1:9001"])
    assert document["global"]["scrape_interval"] == "1s"
    assert document["scrape_configs"][0]["static_configs"] == [{"targets": ["127.0.0.1:9000", "127.0.0.1:9001"]}]


def test_tokens_stay_in_private_files_and_out_of_reprs(tmp_path: Path) -> None:
    ident = Identity("alice", ("system:masters", "team"))
    assert ident.token not in repr(ident)
    write_token_file(tmp_path / "tokens.csv", [ident])
    assert (tmp_path / "tokens.csv").read_text(encoding="utf-8") == f'{ident.token},alice,alice,"system:masters,team"\n'
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    write_kubeconfig(tmp_path / "kubeconfig", "c", "https://127.0.0.1:1", ca, ident)
    assert read_kubeconfig_token(tmp_path / "kubeconfig") == ident.token
    for name in ("tokens.csv", "kubeconfig"):
        assert (tmp_path / name).stat().st_mode & 0o077 == 0


def test_process_is_stopped_by_pid_and_a_dead_one_reports_its_log(tmp_path: Path) -> None:
    sleeper = ManagedProcess.start("sleeper", ["sleep", "60"], tmp_path / "sleeper.log", tmp_path)
    sleeper.check_running()
    sleeper.stop(grace_seconds=5)
    assert sleeper.exit_code() == -15  # SIGTERM

    crasher = ManagedProcess.start("crasher", ["sh", "-c", "echo boom; exit 3"], tmp_path / "crasher.log", tmp_path)
    assert crasher.popen is not None
    crasher.popen.wait(timeout=10)
    with pytest.raises(ProcessExitedError, match=r"crasher \(pid \d+\) exited with code 3[^\n]*\n[\s\S]*boom"):
        crasher.check_running()


def test_recorded_process_is_not_signalled_once_its_pid_runs_something_else(tmp_path: Path) -> None:
    sleeper = ManagedProcess.start("sleeper", ["sleep", "60"], tmp_path / "s.log", tmp_path)
    impostor = ManagedProcess.from_record({**sleeper.to_record(), "executable": "/not/etcd"})
    assert impostor.exit_code() == -1  # the PID runs another executable: treated as gone
    impostor.stop()
    sleeper.check_running()  # untouched
    recorded = ManagedProcess.from_record(sleeper.to_record())
    assert recorded.exit_code() is None
    recorded.stop(grace_seconds=5)
    assert sleeper.popen is not None
    assert sleeper.popen.wait(timeout=5) == -15
