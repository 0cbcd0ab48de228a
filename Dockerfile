# syntax=docker/dockerfile:1
# Sentinel Mesh: one image for every role; the role is the command, e.g.
#   docker run IMAGE serve orchestrator
#   docker run IMAGE serve model --model iforest-v2
# Build:  docker build -t sentinel:dev .

ARG PYTHON_VERSION=3.12
# The base of both stages: any Debian-based image with python3, python3-venv and pip (a mirror,
# or an image built from Debian's packages for air-gapped builds; see docs/deploy.md).
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim-bookworm

# ---- builder: build the wheel, install it with its dependencies into a venv ----
FROM ${BASE_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only what the wheel needs (see .dockerignore).
COPY pyproject.toml README.md ./
COPY sentinel ./sentinel
COPY orchestrator ./orchestrator
COPY specialists ./specialists

RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-compile /wheels/*.whl \
 && /opt/venv/bin/sentinel --help > /dev/null

# ---- runtime: slim Python + the venv, no build tools, non-root ----
FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="sentinel-mesh" \
      org.opencontainers.image.description="Streaming anomaly detection as a gRPC service mesh" \
      org.opencontainers.image.licenses="Apache-2.0"

# uid/gid 10001 = runAsUser/runAsGroup in k8s/components/pod-defaults.
RUN groupadd --system --gid 10001 sentinel \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin sentinel

COPY --from=builder /opt/venv /opt/venv

# No .pyc writes (the root filesystem is read-only in Kubernetes); logs go
# straight to stdout. Defaults bind to loopback: Kubernetes sets
# SENTINEL_HOST=0.0.0.0 (the Istio sidecar does mTLS in front).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SENTINEL_PORT=50051 \
    SENTINEL_METRICS_PORT=9464

USER 10001:10001
WORKDIR /tmp
EXPOSE 50051 9464

# exec form: the Python process is PID 1 and gets SIGTERM itself (it drains).
ENTRYPOINT ["sentinel"]
CMD ["serve", "orchestrator"]
