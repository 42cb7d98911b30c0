#!/usr/bin/env bash
# System packages the test suite needs beyond the Python venv (run as root, before .ci/run).
#   chromium: tests/test_review.py opens the review report in real headless Chromium.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v chromium >/dev/null 2>&1; then
    apt-get update
    apt-get install -y chromium
fi
chromium --version
