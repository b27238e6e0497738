# syntax=docker/dockerfile:1
# meshproxy images.
#
#   docker build -t meshproxy:0.1.0 .                           # the sidecar / virtual gateway (default stage)
#   docker build -t meshproxy:0.1.0-init --target init .        # the init container (iptables rules)
#
# Multi-arch (amd64 + arm64) and pushed, as the README's "Building and pushing the image" shows:
#   docker buildx build --platform linux/amd64,linux/arm64 -t $REPO:0.1.0 --push .
#
# The sidecar runs as UID 1337, the UID the interception rules skip (IgnoredUID / APPMESH_IGNORE_UID, spec
# §6.4), and needs no capabilities. Only the init image runs as root, with NET_ADMIN, and exits.

# The wheel, built once: the request path compiled with mypyc (README "Compiled or pure Python"; about 40 %
# less CPU per request). `--build-arg MESHPROXY_MYPYC=0` builds a pure-Python wheel instead (no C compiler
# needed: quicker under emulation). Either way the wheel also carries every .py source, and
# MESHPROXY_PURE=1 in a container runs them.
FROM python:3.11-slim AS wheel
ARG MESHPROXY_MYPYC=1
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY meshproxy ./meshproxy
# mypyc type-checks what it compiles, so this stage (only) has mypy and meshproxy's dependencies.
RUN pip install "setuptools>=77" "mypy>=2.4,<3" types-PyYAML ".[aws]" \
    && MESHPROXY_MYPYC=$MESHPROXY_MYPYC pip wheel --no-build-isolation --no-deps --wheel-dir /wheels .

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# curl: the container health check is App Mesh's own (`curl ... /server_info | grep state | grep -q LIVE`).
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*
# [aws]: boto3, for s3:// config sources and AWS Cloud Map discovery (imported only when used)
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    pip install "$(ls /wheels/meshproxy-*.whl)[aws]"

# Init container: installs the App Mesh nat chains in the pod / task network namespace and exits.
# Kubernetes: initContainer with securityContext.capabilities.add [NET_ADMIN] (and runAsUser 0).
FROM base AS init
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
COPY iptables /usr/local/lib/meshproxy/iptables
USER 0:0
ENTRYPOINT ["meshproxy", "iptables", "apply"]

# The sidecar (and the virtual gateway: same image, APPMESH_RESOURCE_ARN=mesh/<m>/virtualGateway/<g>).
FROM base AS meshproxy
RUN groupadd --system --gid 1337 meshproxy \
    && useradd --system --uid 1337 --gid 1337 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin meshproxy
USER 1337:1337
# ingress, egress, admin (APPMESH_ENVOY_INGRESS_PORT, APPMESH_ENVOY_EGRESS_PORT, ENVOY_ADMIN_ACCESS_PORT)
EXPOSE 15000 15001 9901
# App Mesh's container health check (spec §6.1), on the configured admin port.
HEALTHCHECK --interval=5s --timeout=2s --start-period=10s --retries=3 \
    CMD curl -s "http://localhost:${ENVOY_ADMIN_ACCESS_PORT:-9901}/server_info" | grep state | grep -q LIVE
# Exec form: meshproxy is PID 1 and gets SIGTERM itself (drain, then exit 0; spec §6.2).
# The config source comes from MESHPROXY_CONFIG (file path or http(s) URL) or `--config SOURCE` as CMD.
ENTRYPOINT ["meshproxy", "run"]
