#!/usr/bin/env bash
# Installs the real CustomResourceDefinitions of the workload kinds carbonshift drives (TrainJob, PyTorchJob,
# RayJob, JobSet), from the Go modules of their projects at the versions pinned in hack/versions.env, into
# $cache/crds/<version key>/ (one YAML per CRD). Only the module zip is fetched (`go mod download`); nothing is built.
# Skips whatever is already there. On failure prints one line naming what failed.
# Usage: hack/install-crds.sh [--print-dir]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${CARBONSHIFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/carbonshift}"
dir="$cache/crds/trainer-$TRAINER_VERSION-training-operator-$TRAINING_OPERATOR_VERSION-kuberay-$KUBERAY_VERSION-jobset-$JOBSET_VERSION"
if [[ "${1:-}" == "--print-dir" ]]; then echo "$dir"; exit 0; fi
log() { printf '[install-crds %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { printf 'install-crds: could not obtain %s\n' "$1" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

# copy MODULE@VERSION FILE...: the module's files (paths inside it) into $dir
copy() {
  local module="$1"; shift
  local missing=0
  for f in "$@"; do [[ -s "$dir/$(basename "$f")" ]] || missing=1; done
  (( missing )) || { log "$module: cached"; return; }
  local src
  src=$(cd "$dir" && go mod download -json "$module" \
    | python3 -c 'import json,sys; d=json.load(sys.stdin); e=d.get("Error"); print(d["Dir"]) if not e else sys.exit(e)') \
    || fail "$module (go mod download)"
  for f in "$@"; do
    [[ -s "$src/$f" ]] || fail "$module: $f is not in the module"
    install -m 0644 "$src/$f" "$dir/$(basename "$f").tmp" && mv "$dir/$(basename "$f").tmp" "$dir/$(basename "$f")"
  done
  log "$module: $# CRDs"
}

mkdir -p "$dir"
copy "github.com/kubeflow/trainer/v2@$TRAINER_VERSION" \
  manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml \
  manifests/base/crds/trainer.kubeflow.org_trainingruntimes.yaml \
  manifests/base/crds/trainer.kubeflow.org_clustertrainingruntimes.yaml
copy "github.com/kubeflow/training-operator@$TRAINING_OPERATOR_VERSION" manifests/base/crds/kubeflow.org_pytorchjobs.yaml
copy "github.com/ray-project/kuberay/ray-operator@$KUBERAY_VERSION" \
  config/crd/bases/ray.io_rayjobs.yaml config/crd/bases/ray.io_rayclusters.yaml
copy "sigs.k8s.io/jobset@$JOBSET_VERSION" config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml
log "workload CRDs ready in $dir"
