# syntax=docker/dockerfile:1.7
# veil detection pool on NVIDIA's Triton image (GPU): tritonserver 2.51.0 with its onnxruntime
# and TensorRT backends, veil serve in front (--backend triton), the model repository baked in
# with the GPU configs (deploy/triton/configs/gpu) installed as configs/gpu.pbtxt.
#   docker build -f deploy/docker/server-gpu.Dockerfile -t veil-server-gpu:0.1.0 .
#   docker run --gpus all --rm -p 127.0.0.1:50051:50051 -e VEIL_INSECURE=1 veil-server-gpu:0.1.0
# The default command runs both (deploy/docker/pool.sh); compose and Kubernetes run Triton and
# veil serve as separate containers of this image. The release (24.10 = Triton 2.51.0) is the
# one CI tests the model repository with (docs/triton.md).
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3

# --- build: Python 3.11 (veil needs >= 3.11; the image's own python3 is 3.10) --------------
FROM ${TRITON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Ubuntu's archive drops superseded package versions, so an exact pin would break the build:
# the base image tag pins the release instead.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/veil
COPY pyproject.toml README.md ./
COPY client/ client/
COPY server/ server/
COPY protos/ protos/
COPY models/ models/
COPY requirements.lock deploy/docker/grpc_health.py deploy/docker/pool.sh deploy/docker/
RUN python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install -c deploy/docker/requirements.lock '.[server,triton]'

FROM build AS weights
# Opt-in models (weights under a restrictive licence, e.g. scrfd: non-commercial research use
# only) are baked in only when named: --build-arg VEIL_OPT_IN_MODELS=scrfd. A model folder
# left without weights is removed, so Triton never meets a config it cannot load.
ARG VEIL_OPT_IN_MODELS=""
COPY deploy/triton/configs/gpu/centerface.pbtxt /opt/veil-models/centerface/configs/gpu.pbtxt
COPY deploy/triton/configs/gpu/retinaface_mnet025.pbtxt /opt/veil-models/retinaface_mnet025/configs/gpu.pbtxt
COPY deploy/triton/configs/gpu/yunet.pbtxt /opt/veil-models/yunet/configs/gpu.pbtxt
COPY deploy/triton/configs/gpu/scrfd.pbtxt /opt/veil-models/scrfd/configs/gpu.pbtxt
RUN /opt/venv/bin/veil models fetch --repository /opt/veil-models --cache /tmp/wheels \
 && for model in ${VEIL_OPT_IN_MODELS}; do \
      /opt/venv/bin/veil models fetch --model "$model" --repository /opt/veil-models --cache /tmp/wheels; \
    done \
 && for folder in /opt/veil-models/*/; do \
      [ -f "${folder}1/model.onnx" ] || rm -rf "$folder"; \
    done \
 && rm -rf /tmp/wheels

# --- runtime ---------------------------------------------------------------------------------
FROM ${TRITON_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/veil/deploy/docker/ /opt/veil/deploy/docker/
COPY --from=weights /opt/veil-models /opt/veil-models
ENV PATH=/opt/venv/bin:/opt/tritonserver/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VEIL_LISTEN=0.0.0.0:50051 \
    VEIL_METRICS=0.0.0.0:9464 \
    VEIL_BACKEND=triton \
    VEIL_TRITON=127.0.0.1:8001 \
    VEIL_MODEL_DIR=/opt/veil-models \
    VEIL_HEALTH_TARGET=127.0.0.1:50051
# The base image's unprivileged user, triton-server (numeric, so runAsNonRoot can check it).
USER 1000:1000
WORKDIR /opt/veil
EXPOSE 50051 9464 8001 8002
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "/opt/veil/deploy/docker/grpc_health.py"]
STOPSIGNAL SIGTERM
CMD ["/opt/veil/deploy/docker/pool.sh"]
