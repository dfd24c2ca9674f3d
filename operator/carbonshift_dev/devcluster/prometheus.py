"""A real Prometheus as a child process, scraping given targets every second, for tests and the demo.

`PrometheusServer.start(["127.0.0.1:9000"])` writes a config file, starts Prometheus on a free loopback port
with storage in a temporary directory, and returns once `/-/ready` answers. `query()` runs an instant PromQL
query; `wait_for_sample()` polls a query until it returns at least one sample.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from carbonshift_dev.devcluster.binaries import find_prometheus
from carbonshift_dev.devcluster.processes import ManagedProcess, free_loopback_port

_POLL_SECONDS = 0.2


class PrometheusError(RuntimeError):
    """Prometheus did not start, or a query failed."""


def prometheus_config(
    targets: Sequence[str],
    job_name: str = "carbonshift",
    metrics_path: str = "/metrics",
    scrape_interval_seconds: float = 1.0,
    rule_files: Sequence[Path] = (),
) -> dict[str, Any]:
    """The prometheus.yml document: one static scrape job over `targets` (host:port)."""
    interval = f"{scrape_interval_seconds:g}s"
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job_name, "metrics_path": metrics_path, "static_configs": [{"targets": list(targets)}]}
        ],
    }


class PrometheusServer:
    """A running Prometheus; use as a context manager or call `stop()`."""

    def __init__(self, process: ManagedProcess, url: str, workdir: Path, owns_workdir: bool) -> None:
        self.process = process
        self.url = url
        self.workdir = workdir
        self._owns_workdir = owns_workdir

    def __repr__(self) -> str:
        return f"PrometheusServer(url={self.url!r}, pid={self.process.pid})"

    @classmethod
    def start(
        cls,
        targets: Sequence[str],
        *,
        job_name: str = "carbonshift",
        metrics_path: str = "/metrics",
        scrape_interval_seconds: float = 1.0,
        rule_files: Sequence[Path] = (),
        workdir: Path | None = None,
        binary: Path | None = None,
        startup_timeout_seconds: float = 30.0,
    ) -> PrometheusServer:
        executable = binary or find_prometheus()
        owns_workdir = workdir is None
        directory = Path(tempfile.mkdtemp(prefix="carbonshift-prometheus-")) if workdir is None else workdir
        directory.mkdir(parents=True, exist_ok=True)
        config_path = directory / "prometheus.yml"
        document = prometheus_config(targets, job_name, metrics_path, scrape_interval_seconds, rule_files)
        config_path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        port = free_loopback_port()
        argv = [
            str(executable),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        process = ManagedProcess.start("prometheus", argv, directory / "prometheus.log", directory)
        server = cls(process, f"http://127.0.0.1:{port}", directory, owns_workdir)
        try:
            server._wait_ready(startup_timeout_seconds)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        with httpx.Client(base_url=self.url, timeout=2.0) as client:
            while True:
                self.process.check_running()
                try:
                    if client.get("/-/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() >= deadline:
                    raise PrometheusError(f"Prometheus at {self.url} not ready after {timeout_seconds:.0f} s")
                time.sleep(_POLL_SECONDS)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query; returns the `data.result` list (vector samples)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10.0)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise PrometheusError(f"query {promql!r} failed: HTTP {response.status_code} {body.get('error', '')}")
        result = body["data"]["result"]
        return list(result) if isinstance(result, list) else [result]

    def wait_for_sample(self, promql: str, timeout_seconds: float = 30.0) -> list[dict[str, Any]]:
        """Poll `promql` until it returns at least one sample; raise PrometheusError on timeout."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            self.process.check_running()
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() >= deadline:
                raise PrometheusError(f"no sample for {promql!r} after {timeout_seconds:.0f} s at {self.url}")
            time.sleep(_POLL_SECONDS)

    def target_health(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health and last error (from /api/v1/targets)."""
        response = httpx.get(f"{self.url}/api/v1/targets", timeout=10.0)
        response.raise_for_status()
        return list(response.json()["data"]["activeTargets"])

    def stop(self) -> None:
        self.process.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
