#!/usr/bin/env bash
# The GPU image's default command: Triton and veil serve in one container (a single-host pool).
# Triton serves the baked-in repository with the GPU configs on loopback; veil serve starts
# once Triton is ready and the container stops when either process exits.
set -euo pipefail

repository=${VEIL_MODEL_DIR:-/opt/veil-models}
tritonserver \
  --model-repository="$repository" \
  --model-config-name="${VEIL_TRITON_CONFIG:-gpu}" \
  --strict-readiness=true \
  --exit-on-error=true \
  --grpc-address=127.0.0.1 --grpc-port=8001 \
  --http-address=127.0.0.1 --http-port=8000 \
  --metrics-port=8002 &
triton=$!
trap 'kill -TERM "$triton" "${veil:-}" 2>/dev/null || true' TERM INT

for _ in $(seq 1 300); do
  if python - <<'PY' 2>/dev/null; then break; fi
import urllib.request
urllib.request.urlopen("http://127.0.0.1:8000/v2/health/ready", timeout=1)
PY
  kill -0 "$triton" 2>/dev/null || { echo "tritonserver exited while loading" >&2; exit 1; }
  sleep 1
done

veil serve --backend triton --triton 127.0.0.1:8001 "$@" &
veil=$!
wait -n "$triton" "$veil"
status=$?
kill -TERM "$triton" "$veil" 2>/dev/null || true
wait || true
exit "$status"
