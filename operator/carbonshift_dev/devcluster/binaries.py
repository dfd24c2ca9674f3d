"""Finding the control-plane binaries that `hack/install-tools.sh` installs.

The directory is the one `hack/install-tools.sh --print-dir` prints, computed the same way from
`hack/versions.env` and the cache location, or `CARBONSHIFT_BIN_DIR` when set. A missing binary is reported
in one line that names it and the command that installs it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

BIN_DIR_ENV = "CARBONSHIFT_BIN_DIR"
INSTALL_COMMAND = "hack/install-tools.sh"
CONTROL_PLANE_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")

_REPO_ROOT = Path(__file__).resolve().parents[3]
VERSIONS_FILE = _REPO_ROOT / "hack" / "versions.env"


class MissingBinaryError(RuntimeError):
    """A binary the dev cluster needs is not installed; the message says how to install it."""


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse the `KEY=VALUE` lines of hack/versions.env (comments and blank lines ignored)."""
    versions: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        versions[key.strip()] = value.strip().strip("\"'")
    return versions


def cache_dir() -> Path:
    """`${CARBONSHIFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/carbonshift}`, as the install script computes it."""
    explicit = os.environ.get("CARBONSHIFT_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "carbonshift"


def default_bin_dir(versions_file: Path = VERSIONS_FILE) -> Path:
    """The directory `hack/install-tools.sh --print-dir` prints."""
    if not versions_file.is_file():
        raise MissingBinaryError(
            f"cannot locate the control-plane binaries: {versions_file} is missing "
            f"(run from a source checkout or set {BIN_DIR_ENV})"
        )
    v = read_versions(versions_file)
    try:
        name = (
            f"k8s-{v['KUBERNETES_VERSION']}-etcd-{v['ETCD_VERSION']}-kwok-{v['KWOK_VERSION']}-helm-{v['HELM_VERSION']}"
        )
    except KeyError as exc:
        raise MissingBinaryError(f"{versions_file} does not pin {exc.args[0]}") from exc
    return cache_dir() / "bin" / name


def bin_dir() -> Path:
    """`CARBONSHIFT_BIN_DIR` when set, else the install script's directory."""
    explicit = os.environ.get(BIN_DIR_ENV)
    return Path(explicit) if explicit else default_bin_dir()


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the executables one dev cluster runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kwok: Path
    directory: Path

    def optional(self, name: str) -> Path | None:
        """Another tool from the same directory (kubectl, helm), or None when it is not installed."""
        path = self.directory / name
        return path if _is_executable(path) else None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def require(name: str, directory: Path | None = None) -> Path:
    """The path of one binary from the tools directory; raises MissingBinaryError naming it when absent."""
    where = directory if directory is not None else bin_dir()
    path = where / name
    if _is_executable(path):
        return path
    raise MissingBinaryError(f"{name} not found in {where}: install it with `{INSTALL_COMMAND}`")


def find_binaries(directory: Path | None = None) -> Binaries:
    """Locate every control-plane binary, failing on the first missing one."""
    where = directory if directory is not None else bin_dir()
    paths = {name: require(name, where) for name in CONTROL_PLANE_BINARIES}
    return Binaries(
        etcd=paths["etcd"],
        kube_apiserver=paths["kube-apiserver"],
        kube_controller_manager=paths["kube-controller-manager"],
        kube_scheduler=paths["kube-scheduler"],
        kwok=paths["kwok"],
        directory=where,
    )


def find_prometheus(directory: Path | None = None) -> Path:
    """Prometheus from the tools directory (the install script links it there), else from PATH."""
    where = directory if directory is not None else bin_dir()
    candidate = where / "prometheus"
    if _is_executable(candidate):
        return candidate
    on_path = shutil.which("prometheus")
    if on_path:
        return Path(on_path)
    raise MissingBinaryError(
        f"prometheus not found in {where} or on PATH: install it with `{INSTALL_COMMAND}` (Debian package `prometheus`)"
    )
