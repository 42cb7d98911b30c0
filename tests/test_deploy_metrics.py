"""Metric names across deploy/: every Prometheus rule and every Grafana dashboard query reads
a metric that really exists (``veil serve``'s registry, a recording rule, or an exporter listed
in deploy/prometheus/external-metrics.yml), the dashboard shows every server metric and the
issue's panels and is well formed, Grafana's provisioning points at it, the ``veil live`` and
``veil batch`` series listed are the ones their real exporters serve, and docs/deploy.md names
every exported metric.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from deploy_files import (
    COMPOSE,
    DASHBOARD,
    DEPLOY,
    ROOT,
    _external,
    _known_names,
    _rules,
    server_metric_names,
)

_PROMQL_WORDS = {
    # functions and aggregations are followed by "(" and dropped by the tokenizer; these are
    # keywords and modifiers that stand alone
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (no parser needed for our queries)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\w+|\$\{\w+\}", " ", text)  # dashboard variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, rest = match.group(), text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _PROMQL_WORDS:
            continue
        if re.fullmatch(r"\d[\w.]*", word) or text[match.start() - 1 : match.start()].isdigit():
            continue
        names.add(word)
    return names


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _dashboard_exprs() -> Iterator[tuple[str, str]]:
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


@pytest.mark.parametrize(
    "expr, names",
    [
        ('sum by (outcome) (rate(veil_frames_total{instance=~"$instance"}[$__rate_interval]))',
         {"veil_frames_total"}),
        ("histogram_quantile(0.95, sum by (le) (rate(veil_batch_size_bucket[5m])))",
         {"veil_batch_size_bucket"}),
        ("job:veil_x:rate5m > (14.4 * 0.01) and up == 0 or vector(0)", {"job:veil_x:rate5m", "up"}),
        ('nv_gpu_memory_used_bytes{job="triton"} / nv_gpu_memory_total_bytes / 1e6',
         {"nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"}),
    ],
)  # fmt: skip
def test_metric_names_reads_names_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_every_rule_reads_known_metrics() -> None:
    known = _known_names()
    unknown = {
        rule.get("alert") or rule["record"]: sorted(metric_names(rule["expr"]) - known)
        for rule in _rules()
        if metric_names(rule["expr"]) - known
    }
    assert not unknown, f"rules read metrics nobody exports: {unknown}"


def test_every_dashboard_query_reads_known_metrics() -> None:
    known = _known_names()
    unknown = {
        title: sorted(metric_names(expr) - known)
        for title, expr in _dashboard_exprs()
        if metric_names(expr) - known
    }
    assert not unknown, f"panels query metrics nobody exports: {unknown}"


def test_the_dashboard_shows_every_server_metric() -> None:
    used = set().union(*(metric_names(expr) for _, expr in _dashboard_exprs()))
    families = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in server_metric_names()}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", name) for name in used}
    assert families - shown == set(), f"exported but on no panel: {sorted(families - shown)}"


def test_the_dashboard_covers_the_issue_s_panels() -> None:
    used = set().union(*(metric_names(expr) for _, expr in _dashboard_exprs()))
    wanted = {
        "throughput": "veil_frames_total",
        "latency percentiles": "veil_frame_latency_seconds_bucket",
        "batch sizes": "veil_batch_size_bucket",
        "queue depth": "veil_queue_depth",
        "errors by code": "veil_rpc_errors_total",
        "live lag": "veil_live_lag_seconds",
        "Triton GPU utilisation": "nv_gpu_utilization",
        "Triton inference": "nv_inference_exec_count",
        "batch files": "veil_batch_files_done_total",
        "batch frames/s": "veil_batch_frames_total",
    }
    assert {k: v for k, v in wanted.items() if v not in used} == {}


def test_the_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "veil-pool" and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$\{?(\w+)\}?", target["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used - variables)


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["uid"] == "prometheus" and source["type"] == "prometheus"
    datasource = next(v for v in _dashboard()["templating"]["list"] if v["name"] == "datasource")
    assert datasource["current"]["value"] == source["uid"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "veil.yaml").read_text())[
        "providers"
    ]
    grafana = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["../grafana/dashboards"] == provider["options"]["path"]


def live_metric_names() -> set[str]:
    """Every series name `veil live --metrics` exports, scraped from its real exporter."""

    from veil.live._policy import Mode
    from veil.live._stats import LiveStats, _start_metrics

    stats = LiveStats()
    for mode in Mode:  # every labelled series has a sample
        stats.frame(mode, 0.1)
    stats.drop("queue-full")
    return _series(_scrape(_start_metrics("127.0.0.1:0", stats)))


def _scrape(server: Any) -> str:
    """The text of a metrics HTTP server's /metrics, then the server stopped."""
    import urllib.request

    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())
    finally:
        server.shutdown()
        server.server_close()


def _series(text: str) -> set[str]:
    return {re.split(r"[{ ]", line)[0] for line in text.splitlines() if line and line[0] != "#"}


def test_the_live_metrics_listed_are_the_ones_veil_live_exports() -> None:
    exported = {name for name in live_metric_names() if not name.endswith("_created")}
    assert set(_external()["live"]) == exported


def batch_metric_names() -> set[str]:
    """Every series name `veil batch --metrics` exports, scraped from its real exporter
    after a file of each ending."""

    from veil.batch._batch import Outcome, serve_metrics

    count, server = serve_metrics("127.0.0.1:0", 3)
    for status in ("ok", "failed", "skipped"):
        count(Outcome("in.mp4", "out.mp4", status, frames=10))
    text = _scrape(server)
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] not in ("#", ""))
    assert float(values["veil_batch_files"]) == 3
    assert float(values['veil_batch_files_done_total{status="failed"}']) == 1
    assert float(values["veil_batch_frames_total"]) == 30
    return _series(text)


def test_the_batch_metrics_listed_are_the_ones_veil_batch_exports() -> None:
    exported = {name for name in batch_metric_names() if not name.endswith("_created")}
    assert set(_external()["batch"]) == exported


def test_the_documented_metrics_are_the_exported_ones() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text()
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in server_metric_names()}
    exported = families | set(_external()["live"]) | set(_external()["batch"])
    missing = sorted(name for name in exported if name not in guide)
    assert not missing, f"docs/deploy.md does not mention {missing}"
