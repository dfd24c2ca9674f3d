"""The operator as a real process for end-to-end tests: run under its own ServiceAccount, killed and restarted.

- `operator_kubeconfig`: binds exactly the operator's RBAC rules to a ServiceAccount and writes a kubeconfig that
  authenticates with that account's token, so every test proves the rules are sufficient.
- `OperatorProcess`: `carbonshift run` in a subprocess, with an accelerated clock whose anchor is fixed, so a
  SIGKILLed and restarted operator continues the same planning time.
- `write_trace`: a grid trace CSV in the bundled shape, for scenarios with a known low-carbon window.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, TypeVar

import yaml
from kubernetes import client, utils

from carbonshift.api import rbac

T = TypeVar("T")
OPERATOR_NAMESPACE = "carbonshift-system"
GROUP, VERSION, PLURAL = "carbonshift.io", "v1alpha1", "carbonawarejobs"


def wait_until(check: Callable[[], T | None], what: str, timeout: float = 60.0, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    try:
        core.create_namespace({"metadata": {"name": name}})
    except client.ApiException as exc:
        if exc.status != 409:
            raise


def apply_objects(api: client.ApiClient, docs: Sequence[dict[str, Any]]) -> None:
    for doc in docs:
        try:
            utils.create_from_dict(api, doc)
        except utils.FailToCreateError as exc:
            if not all(e.status == 409 for e in exc.api_exceptions):
                raise


def operator_kubeconfig(api: client.ApiClient, admin_kubeconfig: Path, out: Path) -> Path:
    """A kubeconfig for the operator's ServiceAccount, bound to exactly `carbonshift.api.rbac`'s rules."""
    ensure_namespace(api, OPERATOR_NAMESPACE)
    apply_objects(api, rbac.manifests(OPERATOR_NAMESPACE))
    request = {"spec": {"expirationSeconds": 7200}}
    token = client.CoreV1Api(api).create_namespaced_service_account_token("carbonshift", OPERATOR_NAMESPACE, request)
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "carbonshift", "user": {"token": token.status.token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": "carbonshift"}}],
        "current-context": "operator",
    }
    out.write_text(yaml.safe_dump(config))
    return out


def write_trace(path: Path, start: datetime, g_per_kwh: Sequence[float], resolution: timedelta) -> Path:
    lines = ["timestamp,gco2_per_kwh"]
    for i, value in enumerate(g_per_kwh):
        stamp = (start + i * resolution).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        lines.append(f"{stamp},{value}")
    path.write_text("\n".join(lines) + "\n")
    return path


class OperatorProcess:
    """`carbonshift run` as a subprocess. Planning time = epoch + (wall - anchor) * speed, across restarts."""

    def __init__(
        self, kubeconfig: Path, workdir: Path, *, speed: float, epoch: datetime, extra: Sequence[str] = ()
    ) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.speed = speed
        self.epoch = epoch
        self.anchor = time.time()
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None
        self.metrics_port = free_port()
        self.starts = 0

    @property
    def clock(self) -> str:
        epoch = self.epoch.strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"speed={self.speed},epoch={epoch},anchor={self.anchor}"

    def planning_now(self) -> datetime:
        return self.epoch + timedelta(seconds=(time.time() - self.anchor) * self.speed)

    def wall_until(self, planning: datetime) -> float:
        return max((planning - self.planning_now()).total_seconds() / self.speed, 0.0)

    def start(self) -> None:
        self.starts += 1
        self._close_log()
        self.log = log = (self.workdir / f"operator-{self.starts}.log").open("wb")
        command = [sys.executable, "-m", "carbonshift.cli", "run", "--kubeconfig", str(self.kubeconfig)]
        command += ["--standalone", "--liveness", "", "--clock", self.clock, "--metrics-port", str(self.metrics_port)]
        command += self.extra
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye; whatever was half done stays half done."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    def serving(self) -> bool:
        """Whether the current process is up far enough to serve its metrics endpoint."""
        try:
            self.metrics()
        except OSError:
            return False
        return True

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("operator-*.log")))

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"operator exited:\n{self.logs()[-4000:]}"


def caj_manifest(
    name: str,
    *,
    duration: str,
    max_delay: str | None = None,
    deadline: datetime | None = None,
    gpus: int = 1,
    interruptible: bool = False,
    checkpoint: dict[str, str] | None = None,
    policy: str | None = None,
    extra_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "duration": duration,
        "interruptible": interruptible,
        "template": {
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [
                            {
                                "name": "train",
                                "image": "example/train:1",
                                "resources": {"limits": {"nvidia.com/gpu": gpus}},
                            }
                        ],
                    }
                },
            }
        },
    }
    if max_delay:
        spec["maxDelay"] = max_delay
    if deadline:
        spec["deadline"] = deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
    if checkpoint:
        spec["checkpoint"] = checkpoint
    if policy:
        spec["policy"] = policy
    spec.update(extra_spec or {})
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CarbonAwareJob", "metadata": {"name": name}, "spec": spec}


class Cluster:
    """Small conveniences over one cluster's API for the scenarios."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    def create_caj(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest
        )
        return created

    def caj(self, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return obj

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.caj(namespace, name).get("status") or {})

    def job(self, namespace: str, name: str) -> client.V1Job | None:
        try:
            return self.batch.read_namespaced_job(name, namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def pods(self, namespace: str, name: str) -> list[client.V1Pod]:
        selector = f"carbonshift.io/carbonawarejob={name}"
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def running_pods(self, namespace: str, name: str) -> list[client.V1Pod]:
        return [
            p for p in self.pods(namespace, name)
            if p.status and p.status.phase == "Running" and not p.metadata.deletion_timestamp
        ]  # fmt: skip

    def complete_pods(self, namespace: str, name: str) -> None:
        """Tell kwok to finish the job's pods successfully (the devcluster's completion stage)."""
        for pod in self.running_pods(namespace, name):
            body = {"metadata": {"annotations": {"carbonshift.io/complete": "true"}}}
            self.core.patch_namespaced_pod(pod.metadata.name, namespace, body)

    def events(self, namespace: str, name: str) -> list[client.CoreV1Event]:
        selector = f"involvedObject.name={name}"
        return list(self.core.list_namespaced_event(namespace, field_selector=selector).items)

    def event_reasons(self, namespace: str, name: str) -> list[str]:
        return [e.reason for e in self.events(namespace, name)]
