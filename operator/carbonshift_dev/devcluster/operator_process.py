"""The operator as a real process next to a dev cluster: for the e2e tests, the benchmarks and the live demo.

- `operator_kubeconfig`: binds exactly the operator's RBAC rules (carbonshift.api.rbac) to a ServiceAccount and
  writes a kubeconfig that authenticates with its token, so whatever runs the operator this way proves the rules.
  (carbonshift_dev.devcluster.helm_release does the same for the ServiceAccount of a `helm install`ed chart.)
- `service_account_kubeconfig`: a kubeconfig authenticated by a fresh token (TokenRequest) of any ServiceAccount;
  `authenticated_user`: who the API server says a kubeconfig is (SelfSubjectReview).
- `OperatorProcess`: `carbonshift run` in a subprocess with an accelerated clock whose anchor is fixed, so a
  SIGKILLed and restarted operator continues the same planning time.
- `write_trace`: a grid trace CSV in the bundled shape.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import yaml
from kubernetes import client, utils

from carbonshift.api import rbac
from carbonshift_dev.devcluster.testing import api_client_from_kubeconfig

OPERATOR_NAMESPACE = "carbonshift-system"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_namespace(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    except client.ApiException as exc:
        if exc.status != 409:
            raise


def apply_objects(api: client.ApiClient, docs: Sequence[dict[str, Any]]) -> None:
    for doc in docs:
        try:
            utils.create_from_dict(api, doc)  # type: ignore[no-untyped-call]
        except utils.FailToCreateError as exc:
            if not all(e.status == 409 for e in exc.api_exceptions):
                raise


def install_rbac(api: client.ApiClient, namespace: str = OPERATOR_NAMESPACE) -> str:
    """Apply `carbonshift.api.rbac`'s ServiceAccount, roles and bindings (idempotent); returns the account's name."""
    ensure_namespace(api, namespace)
    docs = rbac.manifests(namespace)
    apply_objects(api, docs)
    return str(next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"))


def operator_kubeconfig(api: client.ApiClient, admin_kubeconfig: Path, out: Path) -> Path:
    """A kubeconfig for the operator's ServiceAccount, bound to exactly `carbonshift.api.rbac`'s rules."""
    account = install_rbac(api, OPERATOR_NAMESPACE)
    return service_account_kubeconfig(api, admin_kubeconfig, OPERATOR_NAMESPACE, account, out)


def service_account_kubeconfig(
    api: client.ApiClient,
    admin_kubeconfig: Path,
    namespace: str,
    service_account: str,
    out: Path,
    *,
    expiration_seconds: int = 7200,
) -> Path:
    """A kubeconfig for the server of `admin_kubeconfig` that authenticates with a new token of the ServiceAccount.

    The token is what a pod running as that account gets mounted; the file is written with mode 0600.
    """
    spec = client.V1TokenRequestSpec(audiences=[], expiration_seconds=expiration_seconds)
    request = client.AuthenticationV1TokenRequest(spec=spec)
    token = client.CoreV1Api(api).create_namespaced_service_account_token(service_account, namespace, request)
    if token.status is None or not token.status.token:
        raise RuntimeError(f"the API server issued no token for ServiceAccount {namespace}/{service_account}")
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": service_account, "user": {"token": token.status.token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"], "user": service_account}}],
        "current-context": "operator",
    }
    out.touch(mode=0o600)
    out.chmod(0o600)
    out.write_text(yaml.safe_dump(config))
    return out


def authenticated_user(kubeconfig: Path) -> str:
    """The user name the API server authenticates `kubeconfig` as (a SelfSubjectReview, authentication.k8s.io/v1)."""
    api = api_client_from_kubeconfig(kubeconfig)
    try:
        review = client.AuthenticationV1Api(api).create_self_subject_review(client.V1SelfSubjectReview())
    finally:
        api.close()  # type: ignore[no-untyped-call]
    if review.status is None or review.status.user_info is None or not review.status.user_info.username:
        raise RuntimeError(f"the API server returned no user for {kubeconfig} (SelfSubjectReview)")
    return str(review.status.user_info.username)


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
        self,
        kubeconfig: Path,
        workdir: Path,
        *,
        speed: float,
        epoch: datetime,
        extra: Sequence[str] = (),
        keep_forecasts: bool = False,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.speed = speed
        self.epoch = epoch
        self.anchor = time.time()
        # Off unless asked: tests share the operator's namespace, and one test's recorded forecasts (another trace,
        # another clock) read back by the next would change its decisions (handlers/forecast_store.py).
        self.extra = list(extra) + ([] if keep_forecasts else ["--no-keep-forecasts"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None
        self.metrics_port = free_port()
        self.standalone = True  # False: peer with other replicas (pass --peering NAME in `extra`)
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
        command += ["--standalone"] if self.standalone else []
        command += ["--liveness", "", "--clock", self.clock, "--metrics-port", str(self.metrics_port)]
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
