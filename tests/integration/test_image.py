"""The operator image that `make image` builds, installed with the chart and run from its own filesystem.

The module builds the image exactly as `make image` does (hack/build-image.sh; reused when its inputs are
unchanged) and checks what it holds: the operator and nothing of the development tools, no compilers, no package
installers, a numeric non-root user. Then `helm install` of charts/carbonshift with the reference the build
produced, and the image's own entrypoint and environment (from `podman image inspect`) run with the installed
Deployment's args and env, as the pod's user, on a read-only root with /tmp as the only writable place and the
ServiceAccount files where a kubelet mounts them (in-cluster config, no kubeconfig): it plans one job and runs
another to completion on the dev cluster. Not shown here: a registry serving the image and a kubelet pulling and
starting it (the Deployment's pods are kwok's); docs/install.md says how a user checks those.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from e2e.harness import Cluster, caj_manifest, free_port
from kubernetes import client

import carbonshift
from carbonshift_dev.devcluster.binaries import require
from carbonshift_dev.devcluster.testing import WaitTimeoutError, create_namespace, delete_namespace, wait_for
from carbonshift_dev.image import (
    INPUTS_LABEL,
    ImageConfig,
    ImageProcess,
    api_server_address,
    build_image,
    mounted_image,
    service_account_dir,
)
from tests.chart.helm import CHART

# A cold build (mmdebstrap, then the image) takes about 4 minutes on CI's machines, in the first test's setup.
pytestmark = [pytest.mark.cluster, pytest.mark.image, pytest.mark.timeout(1800)]
T = TypeVar("T")

RELEASE = "carbonshift-image"
PEERING = "carbonshift-image"
SITE_PACKAGES = Path("opt/carbonshift/lib/python3.11/site-packages")
BUILD_TOOLS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld", "as", "uv", "pip", "pip3", "apt", "apt-get")


@dataclass
class Built:
    image: ImageConfig
    output: str
    seconds: float


@pytest.fixture(scope="module")
def built() -> Built:
    if os.geteuid() != 0:
        pytest.fail("the image tests need root: podman image mount and mount namespaces (as CI runs)")
    started = time.monotonic()
    image, output = build_image()
    seconds = time.monotonic() - started
    print(f"\nmake image: {seconds:.0f} s\n{output}")
    return Built(image, output, seconds)


def test_make_image_builds_the_reference_the_chart_deploys_by_default(built: Built) -> None:
    repository, _, tag = built.image.ref.rpartition(":")
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert tag == chart["appVersion"] == carbonshift.__version__
    assert repository == values["image"]["repository"]
    assert values["image"]["tag"] == ""  # empty: the appVersion, i.e. what `make image` tags
    assert built.image.labels["org.opencontainers.image.version"] == tag
    assert re.search(rf"image: {re.escape(built.image.ref)}  id \w+  size \d+ MiB", built.output), built.output


def test_unchanged_inputs_reuse_the_image(built: Built) -> None:
    again, output = build_image()
    assert "is up to date" in output, output
    assert again.image_id == built.image.image_id
    assert again.labels[INPUTS_LABEL] == built.image.labels[INPUTS_LABEL]


def test_the_image_runs_carbonshift_as_the_charts_non_root_user(built: Built) -> None:
    image = built.image
    assert image.entrypoint == ("carbonshift", "run")
    assert image.cmd == ()
    assert image.numeric_user() == (65532, 65532)
    assert image.env["HOME"] == "/tmp"  # the only writable place under the chart's read-only root
    assert image.env["PATH"].startswith("/opt/carbonshift/bin:")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pod = values["podSecurityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == image.numeric_user()
    assert values["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_image_holds_the_operator_and_no_development_or_build_tools(built: Built) -> None:
    with mounted_image(built.image.ref) as root:
        site = root / SITE_PACKAGES
        assert (site / "carbonshift" / "cli.py").is_file()
        assert (site / "carbonshift" / "handlers").is_dir()
        assert (site / "carbonshift" / "data").is_dir()  # the bundled grid traces
        assert [p.name for p in site.glob("carbonshift*.dist-info")] == [
            f"carbonshift-{carbonshift.__version__}.dist-info"
        ]
        # Not editable: the code is in the venv, not a path into a source tree.
        assert not list(site.glob("*carbonshift*.pth"))
        assert not (site / "carbonshift_dev").exists()
        assert not (site / "carbonshift" / "devcluster").exists()
        assert not (site / "carbonshift" / "commands" / "demo.py").exists()
        assert not list(site.glob("pip")) and not list(site.glob("setuptools"))
        found = [
            f"{d}/{tool}"
            for d in ("usr/bin", "usr/local/bin", "usr/sbin", "opt/carbonshift/bin")
            for tool in BUILD_TOOLS
            if (root / d / tool).exists()
        ]
        assert found == []
        assert not list((root / "usr/lib").glob("gcc*"))
        assert (root / "etc/ssl/certs/ca-certificates.crt").is_file()  # for the carbon-intensity providers' HTTPS
        # kopf names its peering identity after the user's name: uid 65532 must have one.
        assert "nonroot:x:65532:65532:" in (root / "etc/passwd").read_text()


def helm(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(require("helm")), "--kubeconfig", str(kubeconfig), *args]
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=240)


@dataclass
class Release:
    namespace: str
    health_port: int
    metrics_port: int
    install_output: str


@pytest.fixture(scope="module")
def release(
    api_client: client.ApiClient,
    kubeconfig: Path,
    installed_crds: object,
    built: Built,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Release]:
    namespace = create_namespace(api_client, "image")
    repository, _, tag = built.image.ref.rpartition(":")
    # Free ports for the probe and metrics endpoints: the operator below shares the host's network.
    health_port, metrics_port = free_port(), free_port()
    values = {
        "image": {"repository": repository, "tag": tag},
        # No provider can be reached here: plan on the bundled traces, said so in every plan (the chart's explicit
        # demo setting). The webhook is left off: the API server cannot reach a Service without kube-proxy, and the
        # webhook served from a local process is tested in test_helm_install.py and the admission e2e.
        "operator": {"peeringName": PEERING, "demoTraces": True},
        "webhook": {"enabled": False},
        "healthPort": health_port,
        "metrics": {"port": metrics_port},
    }
    values_path = tmp_path_factory.mktemp("image-helm") / "values.yaml"
    values_path.write_text(json.dumps(values))
    done = helm(kubeconfig, "install", RELEASE, str(CHART), "--namespace", namespace, "--values", str(values_path),
                "--take-ownership", "--wait", "--timeout", "180s")  # fmt: skip
    assert done.returncode == 0, done.stderr
    yield Release(namespace, health_port, metrics_port, done.stdout)
    helm(kubeconfig, "uninstall", RELEASE, "--namespace", namespace, "--wait")
    delete_namespace(api_client, namespace)


def test_helm_install_deploys_the_built_image(api_client: client.ApiClient, release: Release, built: Built) -> None:
    assert "STATUS: deployed" in release.install_output
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment(RELEASE, release.namespace)
    container = deployment.spec.template.spec.containers[0]
    assert container.image == built.image.ref
    assert container.command is None  # the image's ENTRYPOINT runs; the chart gives only its args
    assert deployment.status.available_replicas == deployment.spec.replicas  # kwok's pods: the API objects are real


def container_env(container: Any, namespace: str) -> dict[str, str]:
    """The container's environment as the kubelet would set it; of the downward API, the pod's namespace."""
    env = {}
    for var in container.env or []:
        field = var.value_from.field_ref if var.value_from else None
        if field is not None and field.field_path == "metadata.namespace":
            env[var.name] = namespace
            continue
        assert var.value_from is None, f"{var.name}: valueFrom is not emulated here"
        env[var.name] = var.value or ""
    return env


@pytest.fixture
def image_operator(
    api_client: client.ApiClient, kubeconfig: Path, release: Release, built: Built, tmp_path: Path
) -> Iterator[ImageProcess]:
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment(RELEASE, release.namespace)
    pod = deployment.spec.template.spec
    container = pod.containers[0]
    # What the kubelet would enforce, read from the installed Deployment, and applied below.
    assert container.security_context.read_only_root_filesystem is True
    assert container.security_context.allow_privilege_escalation is False
    user = (pod.security_context.run_as_user, pod.security_context.run_as_group)
    tmp = next(v for v in pod.volumes if v.name == "tmp")
    assert [m.mount_path for m in container.volume_mounts if m.name == "tmp"] == ["/tmp"]
    accounts = service_account_dir(
        api_client, kubeconfig, release.namespace, pod.service_account_name, tmp_path / "serviceaccount"
    )
    host, port = api_server_address(kubeconfig)
    env = {
        **container_env(container, release.namespace),
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
    }
    with mounted_image(built.image.ref) as root:
        proc = ImageProcess(
            built.image,
            root,
            args=container.args,
            env=env,
            service_account=accounts,
            workdir=tmp_path,
            user=user,
            tmp_size=tmp.empty_dir.size_limit.replace("Mi", "m"),
        )
        proc.start()
        try:
            yield proc
        finally:
            proc.stop()


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


def until(operator: ImageProcess, check: Callable[[], T | None], what: str) -> T:
    """wait_for, with the operator's log in the failure."""
    try:
        return wait_for(check, what, timeout_seconds=90)
    except WaitTimeoutError as exc:
        raise WaitTimeoutError(f"{exc}\noperator log:\n{operator.logs()[-4000:]}") from None


def test_the_image_plans_and_runs_jobs_under_the_chart(
    api_client: client.ApiClient, release: Release, image_operator: ImageProcess
) -> None:
    namespace = create_namespace(api_client, "image-job")
    try:
        k = Cluster(api_client)
        # A flexible job waits for a planned window (Threshold at 1 g/kWh, below every slot of the bundled DE trace:
        # its forced start, whatever the hour; with Optimal on the trace replayed at the wall clock it ran at once at
        # some hours, and the fresh-clone CI failed at 18:09 UTC); an Immediate one runs now, to the end.
        flexible = caj_manifest("flexible", duration="2h", max_delay="20h", policy="Threshold")
        flexible["spec"]["maxIntensity"] = 1
        k.create_caj(namespace, flexible)
        now = caj_manifest("now", duration="1h", max_delay="20h", policy="Immediate")
        now["spec"]["template"]["spec"]["template"]["metadata"] = {"annotations": {"carbonshift.io/complete": "true"}}
        k.create_caj(namespace, now)
        status = until(image_operator, lambda: (s := k.status(namespace, "flexible")).get("phase") == "Waiting" and s,
                       "the flexible job planned and Waiting")  # fmt: skip
        assert status["plan"]["windows"], status
        assert next(c for c in status["conditions"] if c["type"] == "Planned")["status"] == "True"
        job = wait_for(lambda: k.job(namespace, "flexible"), "the flexible job's Job")
        assert job.spec.suspend is True
        ran = until(image_operator, lambda: (s := k.status(namespace, "now")).get("phase") == "Succeeded" and s,
                    "the Immediate job run to Succeeded")  # fmt: skip
        assert ran["cluster"], ran
        assert k.job(namespace, "now").status.succeeded == 1
        status_code, _ = http_get(f"http://127.0.0.1:{release.health_port}/healthz")
        assert status_code == 200
        _, metrics = http_get(f"http://127.0.0.1:{release.metrics_port}/metrics")
        assert "carbonshift_jobs" in metrics
        image_operator.assert_alive()
        logs = image_operator.logs()
        assert "Read-only file system" not in logs
        denials = re.findall(r"is forbidden: User .{1,200}? cannot \w+ resource", logs)
        assert not denials, denials
    finally:
        delete_namespace(api_client, namespace)
