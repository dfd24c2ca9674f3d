"""Finding the real CRDs of the workload kinds (TrainJob, PyTorchJob, RayJob, JobSet) `hack/install-crds.sh` installs.

The directory is the one `hack/install-crds.sh --print-dir` prints, computed the same way from hack/versions.env and
the cache location. A missing file is reported in one line naming it and the command that installs it.
"""

from __future__ import annotations

from pathlib import Path

from carbonshift_dev.devcluster.binaries import VERSIONS_FILE, cache_dir, read_versions

INSTALL_COMMAND = "hack/install-crds.sh"
CRD_FILES = {
    "TrainJob": "trainer.kubeflow.org_trainjobs.yaml",
    "TrainingRuntime": "trainer.kubeflow.org_trainingruntimes.yaml",
    "ClusterTrainingRuntime": "trainer.kubeflow.org_clustertrainingruntimes.yaml",
    "PyTorchJob": "kubeflow.org_pytorchjobs.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayCluster": "ray.io_rayclusters.yaml",
    "JobSet": "jobset.x-k8s.io_jobsets.yaml",
}


class MissingCrdError(RuntimeError):
    """A workload kind's CRD file is not installed; the message says how to install it."""


def crd_dir(versions_file: Path = VERSIONS_FILE) -> Path:
    v = read_versions(versions_file)
    try:
        name = (
            f"trainer-{v['TRAINER_VERSION']}-training-operator-{v['TRAINING_OPERATOR_VERSION']}"
            f"-kuberay-{v['KUBERAY_VERSION']}-jobset-{v['JOBSET_VERSION']}"
        )
    except KeyError as exc:
        raise MissingCrdError(f"{versions_file} does not pin {exc.args[0]}") from exc
    return cache_dir() / "crds" / name


def crd_path(kind: str) -> Path:
    """The CRD file of `kind`; MissingCrdError names the install command when it is absent."""
    path = crd_dir() / CRD_FILES[kind]
    if not path.is_file():
        raise MissingCrdError(f"the {kind} CRD is not installed ({path} is missing); run {INSTALL_COMMAND}")
    return path
