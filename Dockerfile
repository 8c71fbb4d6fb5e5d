# One image for the four services: `<image> gateway|jobs|storage|processor` (see
# deploy/docker/entrypoint.py for every command). docs/deploy.md explains how to build and run it.
#
#   docker build -t radiology .                          # online: wheels from PyPI, UI built with Node
#   make wheels web && docker build --build-arg WEB_FROM=web-prebuilt -t radiology .
#                                                        # air-gapped: wheelhouse/ + web/dist, no download
#
# Stages: web-build (Node: npm ci + build of web/) or web-prebuilt (web/dist from the context),
# build (every Python dependency as a wheel, installed into /opt/venv), runtime (slim Python, no
# compilers, no pip, non-root uid 10001, read-only root filesystem friendly).

ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:20-bookworm-slim
# Where the web UI comes from: web-build (built here) or web-prebuilt (web/dist, from `make web`).
ARG WEB_FROM=web-build

# --- the web UI, built with Node ------------------------------------------------------------
FROM ${NODE_IMAGE} AS web-build
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN rm -rf dist && npm run build

# --- or the web UI built beforehand (`make web`) ----------------------------------------------
FROM scratch AS web-prebuilt
COPY web/dist /src/web/dist

FROM ${WEB_FROM} AS web

# --- Python dependencies as wheels, installed into a virtual environment ----------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml ./
# wheelhouse/ holds what `make wheels` downloaded. When it has wheels the build is offline
# (pip --no-index); when it is empty pip downloads the same pinned versions from the index.
COPY wheelhouse/ /wheelhouse/
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
 && python3 -m venv /opt/venv \
 && if ls /wheelhouse/*.whl >/dev/null 2>&1; then src="--no-index --find-links /wheelhouse"; else src=""; fi \
 && /opt/venv/bin/pip wheel $src --wheel-dir /wheels -r requirements.txt \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -r requirements.txt \
 && /opt/venv/bin/pip uninstall --yes pip \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

# --- runtime ------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
# A fixed non-root user; /var/lib/radiology is the only folder it writes (plus /tmp): mount a
# volume there (compose) or an emptyDir/PVC (Kubernetes) and the root filesystem can be read-only.
# The official python images bring their own pip (/usr/local/bin/pip): removed, as the venv's is
# (also a Debian python3-pip, which would otherwise refuse: externally managed).
RUN if python3 -m pip --version >/dev/null 2>&1; then python3 -m pip uninstall --yes --quiet --break-system-packages pip; fi \
 && echo "radiology:x:10001:" >> /etc/group \
 && echo "radiology:x:10001:10001:radiology:/var/lib/radiology:/usr/sbin/nologin" >> /etc/passwd \
 && mkdir -p /var/lib/radiology \
 && chown 10001:10001 /var/lib/radiology \
 && chmod 0750 /var/lib/radiology
COPY --from=build /opt/venv /opt/venv
COPY --from=web /src/web/dist /app/web/dist
COPY services /app/services
COPY deploy/docker/entrypoint.py /usr/local/bin/radiology
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RADIOLOGY_DATA_DIR=/var/lib/radiology \
    RADIOLOGY_LISTEN_HOST=0.0.0.0 \
    RADIOLOGY_HTTP_HOST=0.0.0.0 \
    RADIOLOGY_WEB_DIR=/app/web/dist
# Bytecode compiled now, since a read-only root filesystem cannot cache it later.
RUN chmod 0755 /usr/local/bin/radiology \
 && python -m compileall -q /app/services /opt/venv/lib
WORKDIR /app
USER 10001:10001
# 8000 gateway HTTP; 50051-50053 jobs, storage, processor gRPC; 9100 metrics of a gRPC service.
EXPOSE 8000 50051 50052 50053 9100
# Every service drains on SIGTERM (finishes or hands back in-flight work); give it
# RADIOLOGY_SHUTDOWN_GRACE_SECONDS plus a margin before a SIGKILL (compose stop_grace_period,
# Kubernetes terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["radiology"]
CMD ["help"]
