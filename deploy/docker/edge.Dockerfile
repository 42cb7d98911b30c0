# syntax=docker/dockerfile:1.7
# veil on an edge box: decode, track, render, remux locally; detection on the pool over gRPC
# (hybrid: --detector grpcs://pool:50051) or in process with veil[local]. No onnxruntime or
# tritonclient; prometheus-client only so that `veil live` and `veil batch` can export their
# metrics; veil[cluster] (Dask distributed) so the image is also the batch engine's scheduler,
# workers and Job (deploy/kubernetes/batch/).
#   docker build -f deploy/docker/edge.Dockerfile -t veil-edge:0.1.0 .
#   docker run --rm -v $PWD:/data veil-edge:0.1.0 anonymize /data/in.mp4 -o /data/out.mp4 \
#       --detector grpcs://pool.example:50051 --tls-ca /data/ca.pem
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

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
 && /opt/venv/bin/pip install -c deploy/docker/requirements.lock '.[cluster]' prometheus-client

FROM ${PYTHON_IMAGE}
ARG VEIL_UID=10001
RUN groupadd --system --gid ${VEIL_UID} veil \
 && useradd --system --uid ${VEIL_UID} --gid veil --home-dir /nonexistent --shell /usr/sbin/nologin veil
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/veil/deploy/docker/grpc_health.py /opt/veil/deploy/docker/
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER ${VEIL_UID}:${VEIL_UID}
WORKDIR /data
# Reports whether the pool this box detects on answers SERVING: set VEIL_HEALTH_TARGET (and
# VEIL_HEALTH_TLS_CA, VEIL_HEALTH_TLS_CERT, VEIL_HEALTH_TLS_KEY for mTLS) to the pool.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "/opt/veil/deploy/docker/grpc_health.py"]
ENTRYPOINT ["veil"]
CMD ["--help"]
