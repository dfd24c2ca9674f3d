# The carbonshift operator image: `carbonshift run`, as a non-root user, from the locked dependencies (uv.lock).
#   docker build -t REGISTRY/carbonshift:0.1.0 .
# Base images are pinned by exact tag (pin by digest too in your registry mirror if you need reproducible pulls).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/carbonshift
WORKDIR /src
# Dependencies first (cached while only the code changes), then the project itself, not editable.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project
COPY README.md ./
COPY operator ./operator
RUN uv sync --locked --no-dev --no-editable

FROM ${PYTHON_IMAGE}
COPY --from=build /opt/carbonshift /opt/carbonshift
ENV PATH=/opt/carbonshift/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
# 65532: the conventional "nonroot" id; the chart runs the pod as this user with a read-only root filesystem.
USER 65532:65532
# 8080: kopf liveness (/healthz); 9090: Prometheus metrics (/metrics).
EXPOSE 8080 9090
ENTRYPOINT ["carbonshift", "run"]
