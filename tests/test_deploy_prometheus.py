"""deploy/prometheus checked offline: promtool accepts the scrape configs and the rules, the
rule unit tests pass and fire every alert, and the alerts the issue asks for exist, each with a
severity, a summary and a description.

promtool comes from Debian (.ci/setup-system.sh); without it these tests skip, except in CI
(``CI`` set), where it is a failure. ``make deploy-check`` runs them with the other deploy/ tests.
"""

from __future__ import annotations

import re

import pytest
import yaml
from deploy_files import PROMETHEUS, RULE_TESTS, RULES, _rules, _run, _tool


@pytest.mark.system  # promtool, from Debian (.ci/setup-system.sh)
@pytest.mark.parametrize(
    "config", ["prometheus.yml", "prometheus-kubernetes.yml"], ids=lambda c: c.split(".")[0]
)
def test_promtool_accepts_the_scrape_config(config: str) -> None:
    _run(_tool("promtool"), "check", "config", "--syntax-only", str(PROMETHEUS / config))


@pytest.mark.system  # promtool, from Debian (.ci/setup-system.sh)
def test_promtool_accepts_the_rules() -> None:
    output = _run(_tool("promtool"), "check", "rules", str(RULES))
    assert "SUCCESS" in output


@pytest.mark.system  # promtool, from Debian (.ci/setup-system.sh)
def test_promtool_rule_unit_tests_pass() -> None:
    output = _run(_tool("promtool"), "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert "SUCCESS" in output


def test_every_alert_is_fired_by_a_rule_unit_test() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts - fired == set(), f"alerts no unit test fires: {sorted(alerts - fired)}"
    assert fired <= alerts


@pytest.mark.parametrize(
    "topic, pattern",
    [
        ("detector not serving", r"^(VeilPoolDown|VeilDetectorFailing|TritonDown)$"),
        ("queue saturated", r"^VeilQueueSaturated$"),
        ("latency objective burning", r"^VeilLatencyBudgetBurn(Fast|Slow)$"),
        ("error ratio", r"^VeilErrorRatioHigh$"),
        ("live streams falling behind", r"^VeilLiveFallingBehind$"),
        ("frames masked by fail-closed policy", r"^VeilLiveFramesMaskedByPolicy$"),
    ],
)
def test_the_issue_s_alerts_exist(topic: str, pattern: str) -> None:
    names = [rule["alert"] for rule in _rules() if "alert" in rule]
    assert any(re.match(pattern, name) for name in names), topic


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in _rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
