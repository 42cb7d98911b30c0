"""deploy/kubernetes checked offline: the kustomizations list every manifest, each manifest is
valid against kubernetes-validate's schemas (strict), selectors select pods, pods run non-root
with probes and resources, Triton gets a GPU, probes speak gRPC health over TLS, every VEIL_*
setting is one veil reads, ports, secrets, autoscalers and PodMonitors line up, and the batch
Job's command is a valid ``veil batch`` on the Dask workers.

No cluster is needed; kubernetes-validate comes with the dev extra.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_files import (
    COMPOSE,
    DEPLOY,
    DOCKER,
    KUBERNETES,
    PROMETHEUS,
    _documents,
    _known_names,
)

KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests promise to work on


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
