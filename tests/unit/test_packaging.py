"""What ships: the wheel holds the operator package and nothing of the development tools (carbonshift_dev: the
local control plane and the demo), and its only command is `carbonshift`. The image is built from this wheel
(tests/integration/test_image.py checks the image itself)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import carbonshift

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = shutil.which("uv")
    assert uv is not None, "uv is installed by `make python-deps`"
    out = tmp_path_factory.mktemp("dist")
    command = [uv, "build", "--wheel", "--out-dir", str(out), str(REPO)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    [built] = out.glob("*.whl")
    return built


def test_the_wheel_holds_only_the_operator(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = f"carbonshift-{carbonshift.__version__}.dist-info/"
    assert {n.split("/")[0] + "/" for n in names} == {"carbonshift/", dist_info}
    assert not [n for n in names if "devcluster" in n or n.endswith("demo.py") or "carbonshift_dev" in n]
    assert "carbonshift/handlers/carbonawarejob.py" in names
    assert "carbonshift/commands/run.py" in names
    assert any(n.startswith("carbonshift/data/") for n in names)  # the bundled traces


def test_the_wheels_only_command_is_carbonshift(wheel: Path) -> None:
    entry_points = zipfile.ZipFile(wheel).read(f"carbonshift-{carbonshift.__version__}.dist-info/entry_points.txt")
    assert entry_points.decode().split() == ["[console_scripts]", "carbonshift", "=", "carbonshift.cli:main"]


def test_the_dockerfiles_default_uv_is_the_pinned_one() -> None:
    """`docker build .` (registry defaults) and `make image` (UV_VERSION from the Makefile) use the same uv."""
    pinned = re.search(r"^UV_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    default = re.search(r"^ARG UV_IMAGE=ghcr.io/astral-sh/uv:(\S+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    assert pinned and default
    assert default.group(1) == pinned.group(1)


def test_the_image_context_leaves_the_development_tools_out() -> None:
    """.dockerignore sends the operator package, not carbonshift_dev, into the build."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in lines and "!operator/carbonshift/" in lines
    assert not [line for line in lines if line.startswith("!") and "carbonshift_dev" in line]
    assert "!operator/" not in lines


def test_the_demo_is_a_development_command_not_an_operator_one() -> None:
    from carbonshift.cli import COMMANDS

    assert "demo" not in COMMANDS
    command = [sys.executable, "-m", "carbonshift_dev", "demo", "--help"]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--speed" in done.stdout and "--out-dir" in done.stdout
