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

#   prometheus: promtool checks deploy/prometheus (tests/test_deploy_prometheus.py, make
#   deploy-check) and tests/test_prometheus.py runs its own prometheus on a free loopback port
#   with its own storage in a temporary folder: nothing depends on the package's system service.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq prometheus >/dev/null
fi
promtool --version 2>&1 | head -n 1
