# carbonshift: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
setup: python-deps tools ## Install everything: Python deps (uv, locked) and the control-plane binaries (cached)

.PHONY: python-deps
python-deps: ## Install the Python environment from uv.lock into .venv
	@uv --version 2>/dev/null | grep -q "uv $(UV_VERSION)" || python3 -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	@uv sync --locked --quiet
	@echo "python deps: ok ($(VENV))"

.PHONY: tools
tools: ## Build or reuse kube-apiserver, controller-manager, scheduler, kubectl, etcd, kwok, helm; install prometheus
	@hack/install-tools.sh

.PHONY: lint
lint: python-deps ## ruff (lint + format check), mypy --strict, import contracts
	$(VENV)/bin/ruff check operator tests e2e bench hack
	$(VENV)/bin/ruff format --check operator tests e2e bench hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/carbonshift crds --check
	$(PY) hack/gen_chart.py --check

.PHONY: test
test: setup lint ## Set up, lint, then run every test (unit, providers, chart, real control plane and Prometheus, e2e)
	$(VENV)/bin/pytest tests e2e

.PHONY: test-unit
test-unit: python-deps ## Only the fast tests that need no cluster, no Prometheus and no helm
	$(VENV)/bin/pytest tests -m "not cluster and not prometheus" --ignore=tests/chart

.PHONY: e2e
e2e: setup ## End-to-end suite on a local control plane (or the cluster in E2E_KUBECONFIG)
	$(VENV)/bin/pytest e2e

.PHONY: e2e-kind
e2e-kind: ## End-to-end suite on a kind cluster (needs Docker; not available on the project's CI machines)
	hack/e2e-kind.sh

.PHONY: crds
crds: python-deps ## Regenerate crds/ from the API models, and the chart files made from them
	$(VENV)/bin/carbonshift crds
	$(PY) hack/gen_chart.py

.PHONY: chart
chart: python-deps ## Regenerate the chart's CRDs, RBAC rules, values schema and dashboard
	$(PY) hack/gen_chart.py

.PHONY: bench
bench: setup ## Run every benchmark (bench/bench_*.py); each prints its numbers against a baseline
	@set -e; for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b; done

.PHONY: image
image: ## Build the operator image (podman, Debian base made with mmdebstrap; reused when its inputs are unchanged)
	@UV_VERSION=$(UV_VERSION) IMAGE_REPO=$(IMAGE_REPO) IMAGE_TAG=$(IMAGE_TAG) hack/build-image.sh

.PHONY: dev-cluster
dev-cluster: setup ## Start a local control plane with fake GPU nodes and leave it running
	$(PY) -m carbonshift_dev.devcluster up --detach

.PHONY: dev-cluster-down
dev-cluster-down: ## Stop the control plane started by `make dev-cluster`
	$(PY) -m carbonshift_dev.devcluster down

.PHONY: demo
demo: setup ## The live demo: two local control planes (DE, GB), the operator, DCGM replay, Prometheus, example jobs
	$(PY) -m carbonshift_dev demo --out-dir out/demo

.PHONY: simulate
simulate: python-deps ## Replay a year of German grid data through the planner (no cluster) and print the savings
	$(VENV)/bin/carbonshift simulate --zone DE --scenario II --out-dir out/simulate

.PHONY: clean
clean: ## Remove build and test outputs (not the cached binaries)
	rm -rf out .pytest_cache .mypy_cache .ruff_cache .hypothesis
