# syntax=docker/dockerfile:1
#
# newstagger container image.
#
#   docker build -t ghcr.io/newstagger/newstagger:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp -p 50051:50051 -p 9102:9102 \
#     -v "$PWD/models:/models:ro" ghcr.io/newstagger/newstagger:0.1.0          # gRPC server
#   docker run ... ghcr.io/newstagger/newstagger:0.1.0 stream                   # Kafka worker
#
# The install step is exactly what the tests install: `pip install .` into a fresh venv.
# Pin PYTHON_IMAGE to a digest in CI for reproducible builds; both stages must use the same base
# because the venv's interpreter is a symlink to the base image's python.
#
# Offline builds: --build-arg WHEELHOUSE=DIR (a folder in the build context holding this package's
# and every dependency's wheels, from `pip wheel . -w DIR` on this checkout) installs from DIR only,
# never the package index. `make image` does this where the build cannot reach the index
# (scripts/image.sh, with buildah). The folder is bind-mounted, never copied into a layer.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Only what the package needs (see .dockerignore): metadata first, then the code.
COPY pyproject.toml README.md LICENSE ./
COPY newstagger ./newstagger
COPY service ./service
COPY training ./training

# Every dependency ships manylinux wheels, so no compiler is needed even here. Byte-code is compiled
# now, so the read-only runtime never needs to write __pycache__. pip itself is then removed: the
# runtime image installs nothing.
ARG WHEELHOUSE=""
RUN --mount=type=bind,target=/context \
    if [ -n "$WHEELHOUSE" ]; then \
      pip install --no-index --find-links "/context/$WHEELHOUSE" newstagger; \
    else \
      pip install --upgrade pip && pip install .; \
    fi \
 && python -m compileall -q /opt/venv \
 && pip uninstall --yes pip \
 && newstagger --help > /dev/null

# ---------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="newstagger" \
      org.opencontainers.image.description="News-article tagging service: gRPC API, Kafka stream worker, Prometheus metrics" \
      org.opencontainers.image.source="https://github.com/newstagger/newstagger" \
      org.opencontainers.image.licenses="MIT"

# A fixed non-root uid/gid (10001) that the Helm chart's securityContext also uses. The base's own
# pip and ensurepip go too: the runtime installs nothing (checked by tests/image).
RUN groupadd --system --gid 10001 newstagger \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin newstagger \
 && mkdir -p /models \
 && chown 10001:10001 /models \
 && (python -m pip uninstall --yes --quiet pip setuptools wheel 2>/dev/null || true) \
 && rm -rf /usr/local/bin/pip* /usr/share/python-wheels /usr/lib/python3*/ensurepip \
      /usr/local/lib/python3*/ensurepip

COPY --from=builder /opt/venv /opt/venv

# In a container the service listens on every interface. The root filesystem can be read-only:
# the service writes only to /tmp (mount a tmpfs/emptyDir there) and, when training, to the model
# registry. PROMETHEUS_MULTIPROC_DIR is set by the chart only when --workers > 1.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    NEWSTAGGER_HOST=0.0.0.0 \
    NEWSTAGGER_METRICS_HOST=0.0.0.0 \
    NEWSTAGGER_MODEL_DIR=/models \
    NEWSTAGGER_LOG_FORMAT=json

USER 10001:10001
WORKDIR /tmp

# gRPC (DEFAULT_GRPC_PORT) and HTTP /metrics, /healthz, /readyz (DEFAULT_METRICS_PORT).
EXPOSE 50051 9102

ENTRYPOINT ["newstagger"]
CMD ["serve"]
