"""The operator image, built by `make image` and run here without a container runtime: for the image tests.

`podman run` is refused in the sandboxes the project's CI runs in (crun cannot set RLIMIT_NOFILE), so the tests
run the image's own entrypoint, with the image's environment, from the image's root filesystem mounted by
`podman image mount`, the way a kubelet would start the chart's container:

- `build_image`: `hack/build-image.sh` (reuses the image when its inputs are unchanged) and the image's config
  from `podman image inspect`;
- `mounted_image`: the image's root filesystem, mounted for the duration of a `with` block;
- `service_account_dir`: what the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount (a token of
  the ServiceAccount, the cluster's CA, the namespace);
- `ImageProcess`: the entrypoint plus the container's args in a private mount namespace: the image's root
  mounted read-only, a fresh tmpfs on /tmp (the chart's emptyDir), /proc, a minimal /dev, the ServiceAccount
  files, `no_new_privs`, and the user and group of the pod's security context (no supplementary groups, no
  capabilities). The network is the host's, so in-cluster config reaches the dev cluster on loopback.

Needs root (image mounts and mount namespaces), as the project's CI machines run. What this does not show: a
registry serving the image and a kubelet pulling and starting it (docs/install.md says how to check that).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from kubernetes import client

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "build-image.sh"
SERVICE_ACCOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
INPUTS_LABEL = "io.carbonshift.inputs"

# Runs as root in a new mount namespace (`unshare --mount`); every step execs the next, so the operator ends up
# as the very process the caller started and receives its signals. $1: the image root, $2: the ServiceAccount
# directory, $3: the /tmp size, $4/$5: uid/gid, $6: the working directory; the rest is the command.
_SANDBOX = r"""
set -eu
image_root="$1"; sa_dir="$2"; tmp_size="$3"; uid="$4"; gid="$5"; wd="$6"; shift 6
new="$image_root"  # bound onto itself: the read-only flag and the mounts below exist only in this namespace
mount --bind "$image_root" "$new"
mount -o remount,bind,ro "$new"
mount -t proc -o nosuid,nodev,noexec proc "$new/proc"
mount -t tmpfs -o nosuid,noexec,mode=755,size=1m tmpfs "$new/dev"
for d in null zero full random urandom; do touch "$new/dev/$d"; mount --bind "/dev/$d" "$new/dev/$d"; done
mount -t tmpfs -o "nosuid,nodev,mode=1777,size=$tmp_size" tmpfs "$new/tmp"
mount -t tmpfs -o nosuid,nodev,mode=755,size=1m tmpfs "$new/run"
mkdir -p "$new/run/secrets/kubernetes.io/serviceaccount"
mount --bind "$sa_dir" "$new/run/secrets/kubernetes.io/serviceaccount"
mount -o remount,bind,ro "$new/run/secrets/kubernetes.io/serviceaccount"
mount -o remount,ro,nosuid,nodev "$new/run" 2>/dev/null || true
exec setpriv --no-new-privs unshare --root="$new" --wd="$wd" --setgid="$gid" --setuid="$uid" -- "$@"
"""


class ImageError(RuntimeError):
    """Building, inspecting or mounting the image failed; the message carries the tool's output."""


@dataclass(frozen=True)
class ImageConfig:
    """What `podman image inspect` says about an image: what a runtime starts, and as whom."""

    ref: str
    image_id: str
    size_bytes: int
    user: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: Mapping[str, str]
    working_dir: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_inspect(cls, ref: str, data: Mapping[str, Any]) -> ImageConfig:
        config = data.get("Config") or {}
        env = dict(item.partition("=")[::2] for item in config.get("Env") or [])
        return cls(
            ref=ref,
            image_id=str(data["Id"]),
            size_bytes=int(data.get("Size") or 0),
            user=str(config.get("User") or ""),
            entrypoint=tuple(config.get("Entrypoint") or ()),
            cmd=tuple(config.get("Cmd") or ()),
            env=env,
            working_dir=str(config.get("WorkingDir") or "/"),
            labels=dict(config.get("Labels") or {}),
        )

    def numeric_user(self) -> tuple[int, int]:
        """USER as uid and gid; the image declares both by number, so no /etc/passwd lookup is needed."""
        uid, _, gid = self.user.partition(":")
        if not uid.isdigit() or not gid.isdigit():
            raise ImageError(f"{self.ref}: USER {self.user!r} is not numeric uid:gid")
        return int(uid), int(gid)


def _run(command: Sequence[str], timeout_seconds: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(command), capture_output=True, text=True, check=False, timeout=timeout_seconds)


def image_ref() -> str:
    """The reference `make image` builds (the chart's image repository and appVersion)."""
    done = _run([str(BUILD_SCRIPT), "--print-ref"], 30)
    if done.returncode != 0:
        raise ImageError(f"hack/build-image.sh --print-ref failed: {done.stderr.strip()}")
    return done.stdout.strip()


def inspect_image(ref: str) -> ImageConfig:
    done = _run(["podman", "image", "inspect", ref], 60)
    if done.returncode != 0:
        raise ImageError(f"podman image inspect {ref}: {done.stderr.strip()}")
    return ImageConfig.from_inspect(ref, json.loads(done.stdout)[0])


def build_image(timeout_seconds: float = 1800.0, env: Mapping[str, str] | None = None) -> tuple[ImageConfig, str]:
    """Build (or reuse) the image as `make image` does; its config and the build's output."""
    done = subprocess.run(
        [str(BUILD_SCRIPT)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout_seconds,
        env={**os.environ, **(env or {})},
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise ImageError(f"hack/build-image.sh failed:\n{output[-4000:]}")
    return inspect_image(image_ref()), output


@contextmanager
def mounted_image(ref: str) -> Iterator[Path]:
    """The image's root filesystem (`podman image mount`), unmounted afterwards."""
    done = _run(["podman", "image", "mount", ref], 120)
    if done.returncode != 0:
        raise ImageError(f"podman image mount {ref}: {done.stderr.strip()}")
    try:
        yield Path(done.stdout.strip())
    finally:
        _run(["podman", "image", "unmount", ref], 120)


def service_account_dir(
    api: client.ApiClient, admin_kubeconfig: Path, namespace: str, service_account: str, out: Path
) -> Path:
    """The files a kubelet projects into a pod of `service_account`: token, ca.crt, namespace (world-readable,
    as the projected volume's default mode 0644 makes them)."""
    spec = client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        service_account, namespace, client.AuthenticationV1TokenRequest(spec=spec)
    )
    if token.status is None or not token.status.token:
        raise ImageError(f"the API server issued no token for ServiceAccount {namespace}/{service_account}")
    cluster = yaml.safe_load(admin_kubeconfig.read_text())["clusters"][0]["cluster"]
    if "certificate-authority-data" in cluster:
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    else:
        ca = (admin_kubeconfig.parent / cluster["certificate-authority"]).read_text()
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o755)
    for name, text in (("token", token.status.token), ("ca.crt", ca), ("namespace", namespace)):
        path = out / name
        path.write_text(text)
        path.chmod(0o644)
    return out


def api_server_address(admin_kubeconfig: Path) -> tuple[str, str]:
    """KUBERNETES_SERVICE_HOST and _PORT for in-cluster config, from the admin kubeconfig's server URL."""
    server = str(yaml.safe_load(admin_kubeconfig.read_text())["clusters"][0]["cluster"]["server"])
    hostport = server.removeprefix("https://").rstrip("/")
    host, _, port = hostport.rpartition(":")
    return host.strip("[]"), port


class ImageProcess:
    """The image's entrypoint with a container's args and env, run from the mounted image (see the module doc)."""

    def __init__(
        self,
        image: ImageConfig,
        root: Path,
        *,
        args: Sequence[str],
        env: Mapping[str, str],
        service_account: Path,
        workdir: Path,
        user: tuple[int, int] | None = None,
        tmp_size: str = "64m",
    ) -> None:
        self.image = image
        self.root = root
        self.args = list(args)
        self.env = dict(env)
        self.service_account = service_account
        self.workdir = workdir
        self.user = user if user is not None else image.numeric_user()
        self.tmp_size = tmp_size
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        if not self.image.entrypoint:
            raise ImageError(f"{self.image.ref} has no ENTRYPOINT")
        uid, gid = self.user
        sandbox = [str(self.root), str(self.service_account), self.tmp_size, str(uid), str(gid), self.image.working_dir]
        inner = [*self.image.entrypoint, *self.args]
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            _SANDBOX,
            "sandbox",
            *sandbox,
            *inner,
        ]

    def environment(self) -> dict[str, str]:
        """The image's Env, then the container's (the container's win, as in Kubernetes)."""
        return {**self.image.env, **self.env}

    def start(self) -> None:
        self.starts += 1
        self._close_log()
        self.log = log = (self.workdir / f"image-operator-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.environment())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def _close_log(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.workdir.glob("image-operator-*.log")))

    def assert_alive(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"operator exited:\n{self.logs()[-4000:]}"
