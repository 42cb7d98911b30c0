"""What the deploy/ tests (``tests/test_deploy_*.py``) share: where deploy/'s files are, the
command-line checkers they run, the YAML documents, the Prometheus rules, and every metric name
the stack exports (``veil serve``'s registry, the recording rules, and the other exporters'
series listed in deploy/prometheus/external-metrics.yml).

A checker missing from PATH and the venv skips its tests, except in CI (``CI`` set), where it
is a failure (see .ci/setup-system.sh and the dev extra).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "rules" / "veil.rules.yml"
RULE_TESTS = PROMETHEUS / "tests" / "veil.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "veil.json"
COMPOSE = DEPLOY / "compose"
KUBERNETES = DEPLOY / "kubernetes"
DOCKER = DEPLOY / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def _tool(name: str) -> str:
    """A command from PATH or beside this interpreter (the venv's bin/)."""
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        message = f"`{name}` is not installed (see .ci/setup-system.sh and the dev extra)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _run(*command: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return output


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def server_metric_names() -> set[str]:
    """Every series name veil serve exports, from server/service/_metrics.py's registry."""
    from veil.server.service._metrics import Metrics

    names = set()
    for family in Metrics().registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",),
        }[family.type]
        names |= {family.name + suffix for suffix in suffixes}
    return names


def _external() -> dict[str, list[str]]:
    data: dict[str, list[str]] = yaml.safe_load((PROMETHEUS / "external-metrics.yml").read_text())
    return data


def _recorded() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


def _known_names() -> set[str]:
    external = {name for names in _external().values() for name in names}
    return server_metric_names() | _recorded() | external
