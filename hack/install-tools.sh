#!/usr/bin/env bash
# Installs the real control-plane binaries the tests and the demo use, into a cache outside the repo:
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (built from the Kubernetes Go modules),
#   etcd (built from go.etcd.io/etcd/server/v3), kwok and kwokctl, helm (go install), prometheus (Debian),
#   Kueue's manager and CRDs (go install of sigs.k8s.io/kueue/cmd/kueue; CRDs from the same module).
# Skips whatever is already there. Prints progress; on failure prints one line naming what failed.
#   JobSet's controller manager and its webhook manifests (go install of sigs.k8s.io/jobset@JOBSET_VERSION).
#   Kubeflow Trainer's controller manager and its webhook manifests (github.com/kubeflow/trainer/v2@TRAINER_VERSION).
# Usage: hack/install-tools.sh [--print-dir | --print-kueue-dir | --print-jobset-dir | --print-trainer-dir
#                               | kueue | jobset | trainer]   (kueue, jobset, trainer: build only that one)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${CARBONSHIFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/carbonshift}"
bin="$cache/bin/k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION"
if [[ "${1:-}" == "--print-dir" ]]; then echo "$bin"; exit 0; fi
kueue_dir="$cache/bin/kueue-$KUEUE_VERSION"
if [[ "${1:-}" == "--print-kueue-dir" ]]; then echo "$kueue_dir"; exit 0; fi
jobset_dir="$cache/bin/jobset-$JOBSET_VERSION"
if [[ "${1:-}" == "--print-jobset-dir" ]]; then echo "$jobset_dir"; exit 0; fi
trainer_dir="$cache/bin/trainer-$TRAINER_VERSION"
if [[ "${1:-}" == "--print-trainer-dir" ]]; then echo "$trainer_dir"; exit 0; fi
mkdir -p "$bin" "$cache/logs"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0
log() { printf '[install-tools %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { printf 'install-tools: could not obtain %s (log: %s)\n' "$1" "$2" >&2; exit 1; }

# Run a long command, printing a heartbeat every 30 s so CI shows progress.
with_progress() {
  local what="$1" logf="$2"; shift 2
  "$@" >"$logf" 2>&1 &
  local pid=$! start=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    if (( (SECONDS - start) % 30 < 5 )); then log "$what: still building ($((SECONDS - start)) s)"; fi
  done
  wait "$pid" || { tail -n 20 "$logf" >&2; fail "$what" "$logf"; }
  log "$what: done in $((SECONDS - start)) s"
}

build_kubernetes() {
  local need=0
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do [[ -x "$bin/$b" ]] || need=1; done
  (( need )) || { log "kubernetes $KUBERNETES_VERSION: cached"; return; }
  local minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  local staging="v0.${KUBERNETES_VERSION#v1.}"
  local mod="$cache/src/k8s-$KUBERNETES_VERSION"
  mkdir -p "$mod"
  # The kubernetes module replaces its staging modules with local paths, so `go install` of it fails.
  # A wrapper module requires it and points every staging module at its published release instead.
  local gomodurl="https://proxy.golang.org/k8s.io/kubernetes/@v/$KUBERNETES_VERSION.mod"
  local stagings
  stagings=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])' \
    | xargs grep -oE '^\s+k8s.io/[a-z0-9-]+ => ./staging' | awk '{print $1}') \
    || fail "kubernetes $KUBERNETES_VERSION go.mod ($gomodurl)" "-"
  {
    echo "module carbonshift.io/k8s-build"
    echo
    echo "go 1.26.0"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    for s in $stagings; do echo "	$s => $s $staging"; done
    echo ")"
  } > "$mod/go.mod"
  cat > "$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "kubernetes $KUBERNETES_VERSION: resolving modules"
  (cd "$mod" && with_progress "kubernetes modules" "$cache/logs/k8s-mod.log" go mod tidy -e)
  local pkg="k8s.io/component-base/version"
  local ldflags="-s -w -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  log "kubernetes $KUBERNETES_VERSION: building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (15-40 min cold on 2 cores)"
  (cd "$mod" && with_progress "kubernetes binaries" "$cache/logs/k8s-build.log" \
    go build -trimpath -ldflags "$ldflags" -o "$bin/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
}

build_etcd() {
  [[ -x "$bin/etcd" ]] && { log "etcd $ETCD_VERSION: cached"; return; }
  local mod="$cache/src/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  cat > "$mod/go.mod" <<GOMOD
module carbonshift.io/etcd-build

go 1.24.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat > "$mod/main.go" <<'GO'
// Command etcd runs the etcd server from its published Go module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$mod" && with_progress "etcd modules" "$cache/logs/etcd-mod.log" go mod tidy \
    && with_progress "etcd $ETCD_VERSION" "$cache/logs/etcd-build.log" go build -trimpath -ldflags "-s -w" -o "$bin/etcd" .)
}

go_install() {
  local name="$1" pkg="$2"
  [[ -x "$bin/$name" ]] && { log "$name: cached"; return; }
  with_progress "$name" "$cache/logs/$name.log" env GOBIN="$bin" go install -trimpath -ldflags "-s -w" "$pkg"
}

install_prometheus() {
  if [[ -x "$bin/prometheus" ]]; then log "prometheus: cached"; return; fi
  if ! command -v prometheus >/dev/null 2>&1; then
    if [[ $(id -u) -ne 0 ]]; then fail "prometheus (run as root, or: apt-get install $PROMETHEUS_DEB)" "-"; fi
    log "prometheus: apt-get install $PROMETHEUS_DEB"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$PROMETHEUS_DEB"; } \
      >"$cache/logs/prometheus.log" 2>&1 || fail "prometheus (Debian package $PROMETHEUS_DEB)" "$cache/logs/prometheus.log"
  fi
  ln -sf "$(command -v prometheus)" "$bin/prometheus"
  log "prometheus: $("$bin/prometheus" --version 2>&1 | head -1)"
}

# Kueue: its manager binary, and the CRDs and webhook configurations of the same release, side by side.
build_kueue() {
  if [[ -x "$kueue_dir/kueue" ]]; then
    log "kueue $KUEUE_VERSION: cached"
  else
    mkdir -p "$kueue_dir"
    log "kueue $KUEUE_VERSION: building the manager (measured 12.4 min cold on 2 busy cores)"
    with_progress "kueue $KUEUE_VERSION" "$cache/logs/kueue.log" env GOBIN="$kueue_dir" go install -trimpath \
      -ldflags "-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  fi
  [[ -f "$kueue_dir/webhook/manifests.yaml" && -d "$kueue_dir/crd" ]] && return
  local src
  src=$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') \
    || fail "kueue $KUEUE_VERSION CRDs" "-"
  rm -rf "$kueue_dir/webhook" "$kueue_dir/crd" "$kueue_dir/crd.tmp" && mkdir -p "$kueue_dir/webhook" "$kueue_dir/crd.tmp"
  cp "$src/config/components/webhook/manifests.yaml" "$kueue_dir/webhook/"
  cp "$src"/config/components/crd/bases/*.yaml "$kueue_dir/crd.tmp/" && mv "$kueue_dir/crd.tmp" "$kueue_dir/crd"
}
if [[ "${1:-}" == "kueue" ]]; then build_kueue; exit 0; fi

# JobSet: its controller manager, and the webhook manifests with their kustomize patches (the pod webhooks'
# objectSelector) of the same release, side by side. The CRD comes from hack/install-crds.sh (same JOBSET_VERSION).
# `go install sigs.k8s.io/jobset@v` fails: it reads the module's version list, which the proxy forbids. A wrapper
# module requires exactly that version (its go.mod has no replace directives) and builds its root package, `main`.
build_jobset() {
  if [[ -x "$jobset_dir/jobset" ]]; then
    log "jobset $JOBSET_VERSION: cached"
  else
    local mod="$cache/src/jobset-$JOBSET_VERSION"
    mkdir -p "$mod" "$jobset_dir"
    printf 'module carbonshift.io/jobset-build\n\ngo 1.23.0\n\nrequire sigs.k8s.io/jobset %s\n' "$JOBSET_VERSION" > "$mod/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/jobset/pkg/controllers"\n' > "$mod/tools.go"
    log "jobset $JOBSET_VERSION: building the controller manager (measured 3 min cold, empty Go build cache, on 2 busy cores)"
    (cd "$mod" && with_progress "jobset modules" "$cache/logs/jobset-mod.log" go mod tidy -e \
      && with_progress "jobset $JOBSET_VERSION" "$cache/logs/jobset.log" go build -mod=mod -trimpath \
        -ldflags "-s -w -X sigs.k8s.io/jobset/pkg/version.GitVersion=$JOBSET_VERSION" -o "$jobset_dir/jobset" sigs.k8s.io/jobset)
  fi
  [[ -f "$jobset_dir/webhook/manifests.yaml" && -d "$jobset_dir/webhook/patches" ]] && return
  local src
  src=$(go mod download -json "sigs.k8s.io/jobset@$JOBSET_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') \
    || fail "jobset $JOBSET_VERSION webhook manifests" "-"
  rm -rf "$jobset_dir/webhook" "$jobset_dir/webhook.tmp" && mkdir -p "$jobset_dir/webhook.tmp/patches"
  cp "$src/config/components/webhook/manifests.yaml" "$jobset_dir/webhook.tmp/"
  cp "$src"/config/components/webhook/patches/*.yaml "$jobset_dir/webhook.tmp/patches/"
  chmod -R u+w "$jobset_dir/webhook.tmp" && mv "$jobset_dir/webhook.tmp" "$jobset_dir/webhook"
}
if [[ "${1:-}" == "jobset" ]]; then build_jobset; exit 0; fi

# Kubeflow Trainer v2: its controller manager (TrainJob -> JobSet) and the webhook manifests of the same release.
# Same wrapper-module way as JobSet (the proxy refuses version lists; its go.mod has no replace directives); the
# wrapper imports one of its packages so `go mod tidy` keeps the requirement, then builds its cmd's `main`.
build_trainer() {
  if [[ -x "$trainer_dir/trainer-controller-manager" ]]; then
    log "trainer $TRAINER_VERSION: cached"
  else
    local mod="$cache/src/trainer-$TRAINER_VERSION"
    mkdir -p "$mod" "$trainer_dir"
    printf 'module carbonshift.io/trainer-build\n\ngo 1.24.0\n\nrequire github.com/kubeflow/trainer/v2 %s\n' "$TRAINER_VERSION" > "$mod/go.mod"
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/kubeflow/trainer/v2/pkg/controller"\n' > "$mod/tools.go"
    log "trainer $TRAINER_VERSION: building the controller manager (measured 2.5 min cold, empty Go build cache, on 2 busy cores)"
    (cd "$mod" && with_progress "trainer modules" "$cache/logs/trainer-mod.log" go mod tidy -e \
      && with_progress "trainer $TRAINER_VERSION" "$cache/logs/trainer.log" go build -mod=mod -trimpath -ldflags "-s -w" \
        -o "$trainer_dir/trainer-controller-manager" github.com/kubeflow/trainer/v2/cmd/trainer-controller-manager)
  fi
  [[ -f "$trainer_dir/webhook/manifests.yaml" ]] && return
  local src
  src=$(go mod download -json "github.com/kubeflow/trainer/v2@$TRAINER_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])') \
    || fail "trainer $TRAINER_VERSION webhook manifests" "-"
  rm -rf "$trainer_dir/webhook" "$trainer_dir/webhook.tmp" && mkdir -p "$trainer_dir/webhook.tmp"
  cp "$src/manifests/base/webhook/manifests.yaml" "$trainer_dir/webhook.tmp/"
  chmod -R u+w "$trainer_dir/webhook.tmp" && mv "$trainer_dir/webhook.tmp" "$trainer_dir/webhook"
}
if [[ "${1:-}" == "trainer" ]]; then build_trainer; exit 0; fi

start=$SECONDS
install_prometheus
build_etcd
go_install kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
go_install kwokctl "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
go_install helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
build_kubernetes
"$here/install-crds.sh"
build_kueue
build_jobset
build_trainer
log "all tools ready in $bin ($((SECONDS - start)) s)"
