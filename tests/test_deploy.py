"""deploy/ checked offline: Prometheus config and rules (promtool, with rule unit tests that
fire every alert), Kubernetes manifests (kubernetes-validate's schemas, strict), the compose
file (the compose-spec schema vendored by check-jsonschema), the Grafana dashboard (every query
names a metric that really exists), the Dockerfiles (hadolint, COPY sources) and the
health-check script the images and probes run.

No Docker engine or cluster is needed. A missing promtool skips its tests, except in CI
(``CI`` set), where it is a failure; the Python tools come with the dev extra.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
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
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests promise to work on


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


# --- Prometheus -------------------------------------------------------------------------------


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


def _rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


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


# --- metric names: rules and dashboard against what is really exported -----------------------

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


# --- Kubernetes ---------------------------------------------------------------------------------


#: The kustomizations: the pool, and the batch engine (issue 16) applied beside it.
KUSTOMIZATIONS = (KUBERNETES, KUBERNETES / "batch")


def _kustomization(folder: Path = KUBERNETES) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return data


def _manifests() -> list[Path]:
    listed = [f / name for f in KUSTOMIZATIONS for name in _kustomization(f)["resources"]]
    return [*listed, KUBERNETES / "secrets.example.yaml"]


def _objects() -> list[dict[str, Any]]:
    return [doc for path in _manifests() for doc in _documents(path)]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=lambda f: f.name)
def test_the_kustomization_lists_every_manifest(folder: Path) -> None:
    listed = {folder / name for name in _kustomization(folder)["resources"]}
    on_disk = set(folder.glob("*.yaml")) - {
        folder / "kustomization.yaml",
        KUBERNETES / "secrets.example.yaml",  # placeholders: never applied as they are
    }
    assert listed == on_disk


@pytest.mark.parametrize("path", _manifests() if KUBERNETES.is_dir() else [], ids=lambda p: p.name)
def test_manifest_is_valid_against_the_kubernetes_schema(path: Path) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for document in _documents(path):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    [deployment] = [
        o for o in _documents(KUBERNETES / "veil-server.yaml") if o["kind"] == "Deployment"
    ]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessprobe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessprobe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in _objects() if o["kind"] == kind}


def _pod_labels() -> list[dict[str, str]]:
    return [d["spec"]["template"]["metadata"]["labels"] for d in _by_kind("Deployment").values()]


def _selects_a_deployment(selector: dict[str, str]) -> bool:
    return any(selector.items() <= labels.items() for labels in _pod_labels())


def test_every_selector_selects_a_deployment() -> None:
    selectors = [(f"Service/{n}", o["spec"]["selector"]) for n, o in _by_kind("Service").items()]
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        selectors += [
            (f"{kind}/{n}", o["spec"]["podSelector" if kind == "NetworkPolicy" else "selector"])
            for n, o in _by_kind(kind).items()
        ]
    for name, selector in selectors:
        labels = selector.get("matchLabels", selector)
        if name == "NetworkPolicy/default-deny-ingress":
            assert labels == {}
            continue
        assert labels and _selects_a_deployment(labels), name
    for deployment in _by_kind("Deployment").values():
        assert (
            deployment["spec"]["selector"]["matchLabels"].items()
            <= deployment["spec"]["template"]["metadata"]["labels"].items()
        )


def _containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, deployment in _by_kind("Deployment").items():
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield name, container


def test_pods_run_non_root_with_probes_and_resources() -> None:
    for name, deployment in _by_kind("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["automountServiceAccountToken"] is False, name
    for name, container in _containers():
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], name
        assert "readinessProbe" in container and "livenessProbe" in container, name
        assert container["resources"]["requests"], name
        assert re.search(r":[\w.-]+$", container["image"]), f"{name}: image tag not pinned"


def test_triton_requests_a_gpu_and_serves_the_gpu_configs() -> None:
    triton = _by_kind("Deployment")["triton"]["spec"]["template"]["spec"]["containers"][0]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--model-config-name=gpu" in triton["args"]
    assert "--model-repository=/opt/veil-models" in triton["args"]
    gpu_image = (DOCKER / "server-gpu.Dockerfile").read_text()
    for config in sorted((DEPLOY / "triton" / "configs" / "gpu").glob("*.pbtxt")):
        installed = f"/opt/veil-models/{config.stem}/configs/gpu.pbtxt"
        assert f"COPY deploy/triton/configs/gpu/{config.name} {installed}" in gpu_image


def test_the_veil_server_probes_speak_grpc_health_over_its_tls() -> None:
    [(_, veil)] = [(n, c) for n, c in _containers() if n == "veil-server"]
    env = {e["name"]: e["value"] for e in veil["env"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = veil[probe]["exec"]["command"]
        assert command[:2] == ["python", "/opt/veil/deploy/docker/grpc_health.py"], probe
    assert env["VEIL_HEALTH_TARGET"].endswith(env["VEIL_LISTEN"].rsplit(":", 1)[1])
    assert env["VEIL_TLS_CLIENT_CA"] and env["VEIL_HEALTH_TLS_CERT"]


def test_veil_settings_in_the_manifests_are_ones_veil_reads() -> None:
    from veil.server.service import _config as _serve

    known = set(_serve._ENV.values()) | {"VEIL_TOKENS", "VEIL_MODEL_DIR"}
    known |= {
        f"VEIL_HEALTH_{n}" for n in ("TARGET", "TLS_CA", "TLS_CERT", "TLS_KEY", "SERVER_NAME")
    }
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    tls = yaml.safe_load((COMPOSE / "compose.tls.yaml").read_text())
    names = {e["name"] for _, c in _containers() for e in c.get("env", [])}
    for services in (compose["services"], tls["services"]):
        names |= {n for s in services.values() for n in s.get("environment", {})}
    names = {n for n in names if n.startswith("VEIL_")}
    assert names - known == set()


def test_the_ports_line_up() -> None:
    """veil-server's metrics port is the one Prometheus scrapes; the gateway's upstream is
    the headless Service; veil-server dials the Triton Service's gRPC port."""
    [(_, veil)] = [(n, c) for n, c in _containers() if n == "veil-server"]
    env = {e["name"]: e["value"] for e in veil["env"]}
    metrics_port = int(env["VEIL_METRICS"].rsplit(":", 1)[1])
    assert {"name": "metrics", "containerPort": metrics_port} in veil["ports"]
    scrape = yaml.safe_load((PROMETHEUS / "prometheus-kubernetes.yml").read_text())
    jobs = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert jobs["veil"]["dns_sd_configs"][0]["port"] == metrics_port
    assert jobs["veil"]["dns_sd_configs"][0]["names"] == [
        "veil-server-headless.veil.svc.cluster.local"
    ]
    assert _by_kind("Service")["veil-server-headless"]["spec"]["clusterIP"] == "None"
    triton_host, triton_port = env["VEIL_TRITON"].rsplit(":", 1)
    assert triton_host.split(".")[0] in _by_kind("Service")
    assert {
        "name": "grpc",
        "port": int(triton_port),
        "targetPort": "grpc",
        "appProtocol": "grpc",
    } in (_by_kind("Service")["triton"]["spec"]["ports"])
    envoy = yaml.safe_load(_by_kind("ConfigMap")["veil-gateway"]["data"]["envoy.yaml"])
    [cluster] = envoy["static_resources"]["clusters"]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"]["address"].startswith("veil-server-headless.veil.svc")
    assert (
        cluster["lb_policy"] == "LEAST_REQUEST"
        and "grpc_health_check" in cluster["health_checks"][0]
    )
    compose = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    compose_scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    compose_jobs = {j["job_name"]: j for j in compose_scrape["scrape_configs"]}
    veil_metrics = compose["services"]["veil"]["environment"]["VEIL_METRICS"].rsplit(":", 1)[1]
    assert compose_jobs["veil"]["static_configs"][0]["targets"] == [f"veil:{veil_metrics}"]


def test_mounted_secrets_are_the_documented_ones() -> None:
    documented = set(_by_kind("Secret"))
    mounted = {
        volume["secret"]["secretName"]
        for deployment in _by_kind("Deployment").values()
        for volume in deployment["spec"]["template"]["spec"].get("volumes", [])
        if "secret" in volume
    }
    assert mounted == documented


def test_the_autoscalers_target_deployments_on_metrics_the_adapter_serves() -> None:
    adapter = yaml.safe_load(
        (KUBERNETES / "monitoring" / "prometheus-adapter-values.yaml").read_text()
    )
    served = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    known = _known_names()
    for name, hpa in _by_kind("HorizontalPodAutoscaler").items():
        assert hpa["spec"]["scaleTargetRef"]["name"] in _by_kind("Deployment"), name
        for metric in hpa["spec"]["metrics"]:
            metric_name = metric["pods"]["metric"]["name"]
            assert metric_name in served and metric_name in known, (name, metric_name)
    assert (
        _by_kind("HorizontalPodAutoscaler")["veil-server"]["spec"]["metrics"][0]["pods"]["metric"][
            "name"
        ]
        == "veil_queue_depth"
    )


def test_the_pod_monitors_select_pods_with_a_metrics_port() -> None:
    """Each PodMonitor selects the pods of a Deployment (or the batch Job) by their labels,
    on a port those pods name."""
    templates = [
        d["spec"]["template"] for d in [*_by_kind("Deployment").values(), *_by_kind("Job").values()]
    ]
    for monitor in _documents(KUBERNETES / "monitoring" / "podmonitors.yaml"):
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["kind"] == "PodMonitor"
        selector = monitor["spec"]["selector"]["matchLabels"]
        [pods] = [t for t in templates if selector.items() <= t["metadata"]["labels"].items()]
        ports = {p["name"] for c in pods["spec"]["containers"] for p in c["ports"]}
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            assert endpoint["port"] in ports


# --- compose ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["compose.yaml", "compose.tls.yaml"])
def test_compose_file_is_valid_against_the_compose_spec(name: str) -> None:
    _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE / name))


def test_the_compose_schema_check_catches_a_misspelt_key(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        (COMPOSE / "compose.yaml").read_text().replace("healthcheck:", "healthchek:", 1)
    )
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "healthchek" in result.stdout + result.stderr


def test_compose_brings_up_the_whole_pool_with_health_checks() -> None:
    services = yaml.safe_load((COMPOSE / "compose.yaml").read_text())["services"]
    assert set(services) == {"triton", "veil", "prometheus", "grafana"}
    for name, service in services.items():
        assert "healthcheck" in service, name
        assert re.search(r":v?\d[\w.-]*}?$", service["image"]), f"{name}: image tag not pinned"
    assert services["veil"]["depends_on"]["triton"]["condition"] == "service_healthy"
    devices = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith(("127.0.0.1:", "${VEIL_PUBLISH_ADDRESS:-127.0.0.1}")), name


def test_compose_paths_exist() -> None:
    for name in ("compose.yaml", "compose.tls.yaml"):
        services = yaml.safe_load((COMPOSE / name).read_text())["services"]
        for service in services.values():
            build = service.get("build")
            if build:
                context = (COMPOSE / build["context"]).resolve()
                assert (context / build["dockerfile"]).is_file()
            for volume in service.get("volumes", []):
                source = volume.split(":", 1)[0]
                if source.startswith("."):
                    if source == "./certs":  # made by the operator (docs/deploy.md, mTLS)
                        continue
                    assert (COMPOSE / source).exists(), volume


# --- Dockerfiles ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    _run(_tool("hadolint"), "--failure-threshold", "info", str(dockerfile))


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _copy_sources(dockerfile: Path) -> list[str]:
    sources = []
    for instruction, args in _instructions(dockerfile):
        if instruction != "COPY" or "--from=" in args:
            continue
        words = [w for w in args.split() if not w.startswith("--")]
        sources += words[:-1]
    return sources


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile: Path) -> None:
    ignore = Path(f"{dockerfile}.dockerignore")
    patterns = [
        line.strip()
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the context starts empty and lets in what the image copies"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    sources = _copy_sources(dockerfile)
    assert sources
    for source in sources:
        assert list(ROOT.glob(source.rstrip("/"))), (
            f"{dockerfile.name}: COPY {source}: no such path"
        )
        path = source.rstrip("/")
        assert any(
            fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/") for pattern in allowed
        ), f"{dockerfile.name}: COPY {source} is left out of the context by {ignore.name}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_are_multi_stage_non_root_pinned_and_health_checked(dockerfile: Path) -> None:
    instructions = _instructions(dockerfile)
    stages = [args for name, args in instructions if name == "FROM"]
    assert len(stages) >= 2, "multi-stage"
    args = dict(a.split("=", 1) for name, a in instructions if name == "ARG" and "=" in a)
    for stage in stages:
        image = stage.split()[0]
        image = args.get(image.strip("${}"), image)
        assert image in {"build"} or re.search(r":[\w.-]*\d", image), f"unpinned base {image}"
    users = [a for name, a in instructions if name == "USER"]
    assert users and not re.match(r"^(root|0)(:|$)", users[-1])
    assert re.match(r"^(\$\{\w+\}|\d+)(:(\$\{\w+\}|\d+))?$", users[-1]), "numeric user"
    [healthcheck] = [a for name, a in instructions if name == "HEALTHCHECK"]
    assert "grpc_health.py" in healthcheck


# --- the health check the images and probes run ----------------------------------------------


def _health() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("grpc_health", DOCKER / "grpc_health.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_health_check_encodes_like_the_generated_messages() -> None:
    from grpc_health.v1 import health_pb2

    health = _health()
    for service in ("", "veil.v1.DetectionService"):
        assert (
            health._request(service)
            == health_pb2.HealthCheckRequest(service=service).SerializeToString()
        )
    for status in (0, 1, 2, 3):
        message = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        assert health._status(message) == status


@pytest.mark.weights
def test_the_health_check_over_mutual_tls(veil_server: Any, tls_files: dict[str, Path]) -> None:
    """What the Kubernetes probes and the compose TLS override run against veil serve."""
    server = veil_server(
        tls_cert=str(tls_files["server_cert"]),
        tls_key=str(tls_files["server_key"]),
        tls_client_ca=str(tls_files["ca"]),
    )
    health = _health()
    argv = [
        "--target", f"127.0.0.1:{server.port}", "--tls-ca", str(tls_files["ca"]),
        "--server-name", "localhost",
    ]  # fmt: skip
    client = [
        "--tls-cert",
        str(tls_files["client_cert"]),
        "--tls-key",
        str(tls_files["client_key"]),
    ]
    assert health.main([*argv, *client]) == 0
    assert health.main([*argv, "--service", "veil.v1.DetectionService", *client]) == 0
    assert health.main(argv) == 1  # no client certificate: refused
    assert health.main(["--target", f"127.0.0.1:{server.port}", "--timeout", "2"]) == 1


def test_the_batch_job_is_a_valid_veil_batch_on_the_engine() -> None:
    """The Job's command parses as `veil batch`, names the scheduler the workers join (the
    Service's port), mounts the archive the workers mount, and exports the metrics the
    PodMonitor scrapes; the workers have every file the per-file options name."""
    from veil.cli._parser import build_parser as _parser

    job = _by_kind("Job")["veil-batch"]["spec"]["template"]["spec"]
    [container] = job["containers"]
    args = _parser().parse_args(container["args"])
    assert args.command == "batch" and args.cluster and args.metrics
    [worker] = _by_kind("Deployment")["veil-batch-worker"]["spec"]["template"]["spec"]["containers"]
    assert worker["args"][0] == args.cluster
    service = _by_kind("Service")["veil-batch-scheduler"]
    assert args.cluster.endswith(f":{service['spec']['ports'][0]['port']}")
    assert args.cluster.split("//")[1].startswith(service["metadata"]["name"] + ".veil.svc")

    def mounts(c: dict[str, Any]) -> list[str]:
        return [m["mountPath"] for m in c["volumeMounts"]]

    assert "/archive" in mounts(container) and "/archive" in mounts(worker)
    assert str(args.input[0]).startswith("/archive/") and str(args.output).startswith("/archive/")
    for path in (args.tls_ca, args.tls_cert, args.tls_key, args.token_file):
        assert any(str(path).startswith(m + "/") for m in mounts(worker)), path
    port = int(args.metrics.rsplit(":", 1)[1])
    assert {"name": "metrics", "containerPort": port} in container["ports"]
    monitors = _documents(KUBERNETES / "monitoring" / "podmonitors.yaml")
    assert any(m["metadata"]["name"] == "veil-batch" for m in monitors)
