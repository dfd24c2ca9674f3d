#!/usr/bin/env bash
# Builds the operator image from the Dockerfile with podman (--isolation chroot), from a Debian base made locally
# with mmdebstrap, and prints its reference, size and build time. Reaches only package registries: Debian (the
# base, the first time) and PyPI (uv, the first time; the locked wheels inside the build).
#
#   hack/build-image.sh              build (or reuse) IMAGE_REPO:IMAGE_TAG
#   hack/build-image.sh --print-ref  print the reference `make image` builds, and nothing else
#
# Environment: IMAGE_REPO (default: the chart's image.repository), IMAGE_TAG (default: the chart's appVersion,
# which is the operator's version), UV_VERSION (the Makefile passes its pin), CARBONSHIFT_CACHE.
# Reuse: the image carries a label with the hash of its inputs (Dockerfile, .dockerignore, pyproject.toml,
# uv.lock, README.md, operator/carbonshift/, the base and uv); when an image of that reference has the same
# label, nothing is built. The base tarball is cached under $cache/image/ (delete it to take Debian's updates).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cd "$root"
log() { printf '[build-image %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

chart_value() {  # the first `key: value` of a chart file, unquoted
  sed -n "s/^ *$2: *\"\{0,1\}\([^\"#]*\)\"\{0,1\} *\(#.*\)\{0,1\}$/\1/p" "$1" | head -n 1 | sed 's/ *$//'
}
repo="${IMAGE_REPO:-$(chart_value charts/carbonshift/values.yaml repository)}"
tag="${IMAGE_TAG:-$(chart_value charts/carbonshift/Chart.yaml appVersion)}"
ref="$repo:$tag"
if [[ "${1:-}" == "--print-ref" ]]; then echo "$ref"; exit 0; fi
[[ -n "$repo" && -n "$tag" ]] || fail "could not read the image repository and tag from charts/carbonshift"
uv_version="${UV_VERSION:-$(sed -n 's/^UV_VERSION := //p' Makefile)}"
cache="${CARBONSHIFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/carbonshift}/image"
mkdir -p "$cache"
started=$SECONDS

"$here/install-image-tools.sh"

# 1. The base: Debian's CPython 3.11, the C++ runtime (numpy and highspy wheels link it), CA certificates and
#    time zones; no apt, no compilers. Docs are left out, copyright files kept.
packages="python$IMAGE_PYTHON,libstdc++6,ca-certificates,tzdata"
base_opts=(--variant=essential "--include=$packages"
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*')
base_key="$(printf '%s\n' "$IMAGE_DEBIAN_SUITE" "${base_opts[@]}" | sha256sum | cut -c1-12)"
base_tar="$cache/base-$IMAGE_DEBIAN_SUITE-$base_key.tar"
base_ref="localhost/carbonshift-base:$IMAGE_DEBIAN_SUITE-$base_key"
if [[ ! -s "$base_tar" ]]; then
  log "base: mmdebstrap $IMAGE_DEBIAN_SUITE ($packages)"
  t=$SECONDS
  mmdebstrap --quiet --format=tar "${base_opts[@]}" "$IMAGE_DEBIAN_SUITE" "$base_tar.partial" \
    || fail "mmdebstrap could not make the $IMAGE_DEBIAN_SUITE base"
  mv "$base_tar.partial" "$base_tar"
  log "base: made in $((SECONDS - t)) s ($base_tar)"
fi
if ! podman image exists "$base_ref"; then
  podman import --quiet "$base_tar" "$base_ref" >/dev/null || fail "podman could not import $base_tar"
fi
python_version="$(tar -xOf "$base_tar" ./var/lib/dpkg/status \
  | awk -v p="python$IMAGE_PYTHON-minimal" '$0 == "Package: " p {f=1} f && /^Version:/ && !done {print $2; done=1}')"
[[ "$python_version" == "$IMAGE_PYTHON".* ]] \
  || fail "the base holds python$IMAGE_PYTHON '$python_version', not CPython $IMAGE_PYTHON.x"
log "base: $base_ref (python$IMAGE_PYTHON $python_version)"

# 2. uv, pinned: its wheel from PyPI, unpacked into a one-file image standing for ghcr.io/astral-sh/uv.
uv_ref="localhost/carbonshift-uv:$uv_version"
if ! podman image exists "$uv_ref"; then
  uv_dir="$cache/uv-$uv_version"
  if [[ ! -x "$uv_dir/root/uv" ]]; then
    log "uv $uv_version: pip download"
    rm -rf "$uv_dir" && mkdir -p "$uv_dir/root"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      -d "$uv_dir" "uv==$uv_version" || fail "could not download uv $uv_version from the package index"
    python3 - "$uv_dir" <<'PY'
import sys, zipfile
from pathlib import Path
d = Path(sys.argv[1])
wheel = next(d.glob("uv-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/uv"))
    out = d / "root" / "uv"
    out.write_bytes(z.read(name))
    out.chmod(0o755)
PY
  fi
  tar -C "$uv_dir/root" -cf "$uv_dir/uv.tar" uv
  podman import --quiet "$uv_dir/uv.tar" "$uv_ref" >/dev/null || fail "podman could not import uv"
fi

# 3. The image, unless one with the same inputs is already there.
inputs="$({ printf '%s\n' "base=$base_key" "uv=$uv_version" "ref=$ref"
  sha256sum Dockerfile .dockerignore pyproject.toml uv.lock README.md
  find operator/carbonshift -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
} | sha256sum | cut -c1-16)"
current="$(podman image inspect --format '{{index .Labels "io.carbonshift.inputs"}}' "$ref" 2>/dev/null || true)"
if [[ "$current" == "$inputs" ]]; then
  log "image: $ref is up to date (inputs $inputs): nothing built"
else
  # The host's CA bundle, lent to the build's downloads (behind a TLS-inspecting proxy PyPI's certificate is
  # signed by the proxy's CA); a build secret, so it is in no layer of the image.
  ca_bundle="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
  secret=()
  [[ -s "$ca_bundle" ]] && secret=(--secret "id=ca-bundle,src=$ca_bundle")
  log "image: podman build $ref"
  t=$SECONDS
  previous="$(podman image inspect --format '{{.Id}}' "$ref" 2>/dev/null || true)"
  podman build --isolation chroot --pull=never --layers \
    --build-arg "BASE=$base_ref" --build-arg "UV_IMAGE=$uv_ref" "${secret[@]}" \
    --label "io.carbonshift.inputs=$inputs" \
    --label "org.opencontainers.image.version=$tag" \
    --tag "$ref" --file Dockerfile . || fail "podman build failed"
  log "image: built in $((SECONDS - t)) s"
  # The image this build replaced (now untagged) is nobody's cache: remove it, so rebuilds do not fill the disk.
  if [[ -n "$previous" && "$previous" != "$(podman image inspect --format '{{.Id}}' "$ref")" ]]; then
    podman rmi "$previous" >/dev/null 2>&1 || true
  fi
fi
size="$(podman image inspect --format '{{.Size}}' "$ref")"
log "image: $ref  id $(podman image inspect --format '{{.Id}}' "$ref" | cut -c1-12)  size $((size / 1048576)) MiB  ($((SECONDS - started)) s in all)"
