"""Certificates and keys for one dev cluster, made with the `openssl` command.

A throw-away CA signs one serving certificate (valid for 127.0.0.1, localhost and the in-cluster service
names) shared by the API server, controller-manager, scheduler and kwok; a separate EC key signs
ServiceAccount tokens. Everything lives in the cluster's own directory with mode 0600 keys.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from carbonshift_dev.devcluster.binaries import MissingBinaryError

SERVING_SANS = (
    "IP:127.0.0.1",
    "IP:10.0.0.1",
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class ClusterPki:
    """Paths of the CA, the serving certificate and the ServiceAccount signing key pair."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    service_account_key: Path
    service_account_public_key: Path


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise MissingBinaryError("openssl not found on PATH: install it (Debian package `openssl`)")
    return found


def _run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[1]} failed in {cwd}: {result.stderr.strip()}")


def create_pki(directory: Path, common_name: str) -> ClusterPki:
    """Generate a CA, a loopback serving certificate and a ServiceAccount key pair under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    openssl = _openssl()
    pki = ClusterPki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "serving.crt",
        serving_key=directory / "serving.key",
        service_account_key=directory / "sa.key",
        service_account_public_key=directory / "sa.pub",
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(
        [openssl, "req", "-x509", *ec, "-keyout", pki.ca_key.name, "-out", pki.ca_cert.name,
         "-days", "30", "-subj", f"/CN={common_name}-ca"],
        directory,
    )  # fmt: skip
    _run(
        [openssl, "req", "-new", *ec, "-keyout", pki.serving_key.name, "-out", "serving.csr",
         "-subj", f"/CN={common_name}-apiserver"],
        directory,
    )  # fmt: skip
    extensions = directory / "serving.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={','.join(SERVING_SANS)}\n",
        encoding="utf-8",
    )
    _run(
        [openssl, "x509", "-req", "-in", "serving.csr", "-CA", pki.ca_cert.name, "-CAkey", pki.ca_key.name,
         "-CAcreateserial", "-days", "30", "-extfile", extensions.name, "-out", pki.serving_cert.name],
        directory,
    )  # fmt: skip
    _run(
        [openssl, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-out", pki.service_account_key.name],
        directory,
    )  # fmt: skip
    _run(
        [openssl, "pkey", "-in", pki.service_account_key.name, "-pubout", "-out",
         pki.service_account_public_key.name],
        directory,
    )  # fmt: skip
    for key in (pki.ca_key, pki.serving_key, pki.service_account_key):
        key.chmod(0o600)
    return pki
