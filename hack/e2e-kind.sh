#!/usr/bin/env bash
# End-to-end suite on a kind cluster, for machines with Docker (the project's CI machines have none).
#   1. create a kind cluster (reused if it exists), 2. build the operator image and load it into kind,
#   3. advertise fake nvidia.com/gpu capacity on the nodes, 4. apply crds/, 5. run `pytest e2e`
#   with E2E_KUBECONFIG pointing at the kind cluster.
# Env: KIND_CLUSTER (default carbonshift-e2e), IMAGE (default carbonshift:dev), GPUS_PER_NODE (default 8),
#      KEEP_CLUSTER=1 to leave the cluster running afterwards. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cluster="${KIND_CLUSTER:-carbonshift-e2e}"
image="${IMAGE:-carbonshift:dev}"
gpus="${GPUS_PER_NODE:-8}"
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "e2e-kind: $tool is required (not found on PATH)" >&2; exit 1; }
done
kubeconfig="$(mktemp -t "kind-$cluster.XXXXXX")"
cleanup() {
  rm -f "$kubeconfig"
  if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then kind delete cluster --name "$cluster" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

kind get clusters 2>/dev/null | grep -qx "$cluster" || kind create cluster --name "$cluster" --wait 120s
kind get kubeconfig --name "$cluster" >"$kubeconfig"
export KUBECONFIG="$kubeconfig"

docker build -t "$image" .
kind load docker-image "$image" --name "$cluster"

# kind nodes have no GPUs; advertise an extended resource so GPU requests schedule (the kubelet keeps it).
for node in $(kubectl get nodes -o name); do
  kubectl patch "$node" --subresource=status --type=merge \
    -p "{\"status\":{\"capacity\":{\"nvidia.com/gpu\":\"$gpus\"}}}"
done

kubectl apply --server-side -f crds/
kubectl wait --for=condition=Established --timeout=60s -f crds/

E2E_KUBECONFIG="$kubeconfig" E2E_IMAGE="$image" .venv/bin/pytest e2e "$@"
