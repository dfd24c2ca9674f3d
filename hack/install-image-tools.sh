#!/usr/bin/env bash
# Installs what `make image` and the image tests need, from Debian bookworm's own packages, only when missing:
#   podman (builds with --isolation chroot: no daemon, no registry), mmdebstrap (makes the base image from Debian
#   packages). Needs root (apt-get), as the project's CI machines run; prints one line naming what failed.
# Usage: hack/install-image-tools.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
log() { printf '[install-image-tools %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

missing=()
command -v podman >/dev/null || missing+=("$PODMAN_DEB")
command -v mmdebstrap >/dev/null || missing+=("$MMDEBSTRAP_DEB")
if (( ${#missing[@]} == 0 )); then
  log "podman $(podman --version | awk '{print $3}'), mmdebstrap $(mmdebstrap --version | awk '{print $2}'): installed"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-image-tools: ${missing[*]} missing; run as root, or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
log "apt-get install ${missing[*]}"
logf="$(mktemp)"
# The lock timeout: other set-up steps on the machine may be running apt at the same moment.
if ! { apt-get -o DPkg::Lock::Timeout=600 update -q \
       && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends \
          "${missing[@]}"; } >"$logf" 2>&1; then
  tail -n 20 "$logf" >&2
  echo "install-image-tools: could not install ${missing[*]} (log: $logf)" >&2
  exit 1
fi
rm -f "$logf"
log "podman $(podman --version | awk '{print $3}'), mmdebstrap $(mmdebstrap --version | awk '{print $2}'): installed"
