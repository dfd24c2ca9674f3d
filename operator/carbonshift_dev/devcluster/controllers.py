"""What the dev cluster's third-party controller managers (Kueue, JobSet, Kubeflow Trainer) share: where the
project's set-up caches each pinned build, the check that a build is there, the running manager's record, and
waiting until the manager is ready and its webhooks answer."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import httpx

from carbonshift_dev.devcluster.binaries import (
    INSTALL_COMMAND,
    VERSIONS_FILE,
    MissingBinaryError,
    cache_dir,
    read_versions,
)
from carbonshift_dev.devcluster.processes import ManagedProcess

InstallT = TypeVar("InstallT")


@dataclass(frozen=True)
class RunningManager(Generic[InstallT]):
    """A running controller manager of a dev cluster: its process, its ports and the release it runs."""

    process: ManagedProcess
    webhook_port: int
    health_port: int
    install: InstallT


def pinned_dir(env_var: str, version_key: str, prefix: str) -> Path:
    """`$env_var` when set, else the cache folder of the version `hack/versions.env` pins under `version_key`."""
    explicit = os.environ.get(env_var)
    if explicit:
        return Path(explicit)
    version = read_versions(VERSIONS_FILE).get(version_key)
    if not version:
        raise MissingBinaryError(f"{VERSIONS_FILE} does not pin {version_key}")
    return cache_dir() / "bin" / f"{prefix}-{version}"


def release_version(where: Path, binary: Path, files_present: bool, name: str, tool: str) -> str:
    """The release's version (the folder's name after `<tool>-`) when its manager binary is executable and its
    other files are there; else MissingBinaryError naming the set-up command that builds it."""
    if not (binary.is_file() and os.access(binary, os.X_OK)) or not files_present:
        raise MissingBinaryError(f"{name} not found in {where}: install it with `{INSTALL_COMMAND} {tool}`")
    return where.name.removeprefix(f"{tool}-")


def wait_ready(
    what: str,
    process: ManagedProcess,
    health_port: int,
    webhook_answers: Callable[[], bool],
    timeout_seconds: float,
    error: type[Exception],
) -> None:
    """Until the manager's /readyz is 200 and a dry-run through its webhooks is answered; `error` on timeout."""
    deadline = time.monotonic() + timeout_seconds
    last = ""
    with httpx.Client(timeout=5.0) as health:
        while True:
            process.check_running()
            try:
                ready = health.get(f"http://127.0.0.1:{health_port}/readyz").status_code == 200
                if ready and webhook_answers():
                    return
                last = "readyz ok, webhook not yet" if ready else "readyz not ok"
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise error(f"{what} not ready after {timeout_seconds:.0f} s ({last}); log: {process.log_path}")
            time.sleep(0.2)
