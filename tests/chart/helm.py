"""Rendering charts/carbonshift with the real helm binary (the one `hack/install-tools.sh` installs), for the tests.

`render(values)` runs `helm template` with the values written to a file and returns the documents; `HelmError`
carries helm's stderr when it refuses (a schema violation, a template error). `load_gen_chart()` imports
hack/gen_chart.py, the generator of the chart's derived files.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from carbonshift_dev.devcluster.binaries import require

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "carbonshift"
RELEASE = "cs"
NAMESPACE = "carbonshift-system"


class HelmError(AssertionError):
    """helm exited non-zero; the message is its stderr."""


def helm_binary() -> Path:
    return require("helm")


def helm(*args: str, timeout: float = 120.0) -> str:
    done = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, check=False, timeout=timeout)
    if done.returncode != 0:
        raise HelmError(f"helm {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def values_file(values: dict[str, Any] | None, directory: Path) -> list[str]:
    if not values:
        return []
    path = Path(tempfile.mkstemp(suffix=".yaml", dir=directory)[1])
    path.write_text(json.dumps(values), encoding="utf-8")  # JSON is YAML
    return ["--values", str(path)]


def render(
    values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = helm("template", release, str(CHART), "--namespace", namespace, *values_file(values, Path(tmp)))
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def metrics_service(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics Service (the webhook has a Service of its own)."""
    found = [d for d in find(docs, "Service") if d["metadata"]["name"].endswith("-metrics")]
    assert len(found) == 1, f"expected one metrics Service, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def load_gen_chart() -> ModuleType:
    if "gen_chart" in sys.modules:
        return sys.modules["gen_chart"]
    spec = importlib.util.spec_from_file_location("gen_chart", REPO / "hack" / "gen_chart.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_chart"] = module  # its dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module
