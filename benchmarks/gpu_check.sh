#!/usr/bin/env bash
# GPU path check on a lent NVIDIA machine only (it links into its copy of the tree; no network,
# its own python3): installs the wheels
# carried in .whl/ (PyAV, jsonschema and friends, cryptography; see docs/throughput.md) into
# /tmp/site, makes the source tree importable as `veil` without installing it, and runs
# benchmarks/gpu_check.py. On a GPU host with veil installed, run gpu_check.py directly.
# The model files (models/*/1/model.onnx, from `make models`) must travel with the tree.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
mkdir -p /tmp/pkg
ln -sfn "$PWD/client" /tmp/pkg/veil      # package veil = client/ (pyproject's package-dir)
ln -sfn "$PWD/server" client/server      # veil.server = server/
ln -sfn "$PWD/protos/veil/v1" client/v1  # veil.v1 = protos/veil/v1/
export PYTHONPATH=/tmp/pkg:/tmp/site
exec python3 benchmarks/gpu_check.py "$@"
