# syntax=docker/dockerfile:1
# SpecOps operator image: `specops run` as a non-root user on a read-only root filesystem.
# Runtime dependencies come pinned from requirements.lock (see docs/install.md, "Image").
#   docker build -t specops:0.1.0 .

FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The venv gets no pip of its own: the builder's pip installs into it (--python), so the final
# image carries no installer.
RUN python -m venv --without-pip /opt/specops
# Dependencies first (cached while only the source changes); --no-deps: the lock is the whole
# runtime closure, and `pip check` below fails the build if it is not.
COPY requirements.lock ./
RUN pip --python /opt/specops/bin/python install --no-deps --only-binary=:all: -r requirements.lock
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-deps --wheel-dir /dist . \
    && pip --python /opt/specops/bin/python install --no-deps /dist/specops-*.whl \
    && pip --python /opt/specops/bin/python check

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="specops" \
      org.opencontainers.image.description="Kubernetes operator for speculative decoding on vLLM" \
      org.opencontainers.image.licenses="Apache-2.0"
# The same base image as the builder: the venv's python links to /usr/local/bin/python3.11.
COPY --from=builder /opt/specops /opt/specops
ENV PATH=/opt/specops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# Numeric, so runAsNonRoot can verify it without a passwd entry.
USER 65532:65532
EXPOSE 8080 8081 9443
ENTRYPOINT ["specops", "run"]
