# The carbonshift operator image: `carbonshift run` from the locked dependencies (uv.lock), as user 65532.
#
#   make image                  # podman, from a Debian bookworm base made locally with mmdebstrap (no registry)
#   docker build -t REGISTRY/carbonshift:0.1.0 .     # anywhere a registry is reachable (the defaults below)
#
# BASE is the root filesystem of both stages; it must hold CPython 3.11 (the venv built in the first stage links to
# that interpreter, so both stages use the same base) and libstdc++ (numpy's and highspy's wheels link it).
# `make image` passes a bookworm base (Debian's python3.11, libstdc++6, ca-certificates, tzdata; made by
# hack/build-image.sh) and a uv image made from the pinned uv wheel; the defaults pull the equivalents.
# Pinned: uv (the Makefile's UV_VERSION), every Python package (uv.lock, hash-checked).
# Only package registries are reached while building: PyPI, for the locked wheels and the build backend.
ARG BASE=docker.io/library/python:3.11.13-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${BASE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PYTHON=python3.11 \
    UV_PROJECT_ENVIRONMENT=/opt/carbonshift UV_NO_CACHE=1
WORKDIR /src
# The optional build secret `ca-bundle` is a CA bundle for the downloads (a network behind a TLS-inspecting proxy;
# `make image` lends the host's): used while a RUN step runs, never stored in a layer.
# Dependencies first (a layer kept while only the operator's code changes), then the operator, as a wheel.
COPY pyproject.toml uv.lock ./
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export SSL_CERT_FILE=/run/secrets/ca-bundle; fi \
 && uv sync --locked --no-dev --no-install-project
COPY README.md ./
COPY operator/carbonshift ./operator/carbonshift
RUN --mount=type=secret,id=ca-bundle \
    if [ -s /run/secrets/ca-bundle ]; then export SSL_CERT_FILE=/run/secrets/ca-bundle; fi \
 && uv sync --locked --no-dev --no-editable \
 && /opt/carbonshift/bin/carbonshift run --help >/dev/null \
 && /opt/carbonshift/bin/python -c "import carbonshift.handlers.carbonawarejob, highspy, numpy" \
 && ! /opt/carbonshift/bin/python -c "import carbonshift_dev" 2>/dev/null

FROM ${BASE}
COPY --from=build /opt/carbonshift /opt/carbonshift
ENV PATH=/opt/carbonshift/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
# 65532: the conventional "nonroot" id; the chart runs the pod as this user with a read-only root filesystem. It
# needs a passwd entry: kopf names its peering identity after getpass.getuser(), which fails for an unknown uid.
RUN echo 'nonroot:x:65532:65532:carbonshift:/tmp:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'nonroot:x:65532:' >> /etc/group
USER 65532:65532
WORKDIR /tmp
# 8080: kopf liveness (/healthz); 9090: Prometheus metrics (/metrics).
EXPOSE 8080 9090
ENTRYPOINT ["carbonshift", "run"]
