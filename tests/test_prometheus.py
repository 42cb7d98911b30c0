"""A real Prometheus scrapes a real ``veil serve``, loads the shipped rules and runs the
dashboard's queries; the counters move after a Detect call.

``veil serve`` runs as a subprocess (in-process onnxruntime backend) on free loopback ports,
Prometheus (Debian's ``prometheus`` package, .ci/setup-system.sh) with its own config and
``--storage.tsdb.path`` in a temporary folder, never the system service. Skipped where the
``prometheus`` binary is missing, except in CI (``CI`` set), where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# the fetched detector weights (make models) and Debian's prometheus (.ci/setup-system.sh)
pytestmark = [pytest.mark.weights, pytest.mark.system]

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "rules" / "veil.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "veil.json"
SAMPLE = ROOT / "samples" / "astronaut.mp4"

pytest_plugins = ["triton_fixture"]  # the real Triton of tests/test_triton.py


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"`{name}` is not installed (apt-get install prometheus; .ci/setup-system.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, predicate: Callable[[], Any], timeout: float, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # not up yet: connection refused, UNAVAILABLE, ...
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _health_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "grpc_health", DEPLOY / "docker" / "grpc_health.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def value(self, query: str) -> float | None:
        """The single value of an instant query (None: no series)."""
        result = self.get("/api/v1/query", query=query)["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def veil_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """``veil serve`` as a subprocess: {"grpc": "127.0.0.1:P", "metrics": "127.0.0.1:Q"}."""
    where = tmp_path_factory.mktemp("veil-serve")
    grpc_address = f"127.0.0.1:{_free_port()}"
    metrics_address = f"127.0.0.1:{_free_port()}"
    log = where / "serve.log"
    command = [
        sys.executable, "-c", "import sys; from veil.cli import main; sys.exit(main())",
        "serve", "--listen", grpc_address, "--metrics", metrics_address, "--threads", "2",
        "--model", "centerface",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    health = _health_module()
    try:
        _wait(
            "veil serve to report SERVING",
            lambda: process.poll() is None and health.check(grpc_address, timeout=1) == "SERVING",
            timeout=120,
            log=log,
        )
        yield {"grpc": grpc_address, "metrics": metrics_address, "log": log}
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def prometheus(
    veil_serve: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Prometheus]:
    """Prometheus on a free loopback port scraping ``veil_serve`` every second, with the
    shipped rules evaluated every second."""
    binary = _binary("prometheus")
    where = tmp_path_factory.mktemp("prometheus")
    config = where / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {RULES}\n"
        "scrape_configs:\n"
        f"  - job_name: veil\n    static_configs:\n      - targets: ['{veil_serve['metrics']}']\n"
    )
    port = _free_port()
    log = where / "prometheus.log"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={where / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=where)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(
            "Prometheus to be ready",
            lambda: (
                process.poll() is None
                and urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200
            ),
            timeout=60,
            log=log,
        )
        yield _Prometheus(url)
    finally:
        _stop(process)


def _detect(address: str, frames: int) -> int:
    """Send the first ``frames`` frames of the bundled sample in one Detect call; returns the
    number of results."""
    import av
    import grpc

    from veil.core._detector import fit_size
    from veil.v1 import detection_pb2 as pb
    from veil.v1 import detection_pb2_grpc as pb_grpc
    from veil.wire import frame_message

    messages = []
    with av.open(str(SAMPLE)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index == frames:
                break
            width, height = fit_size(frame.width, frame.height, 640)
            image = frame.to_ndarray(format="rgb24", width=width, height=height)
            messages.append(frame_message(image, (frame.width, frame.height), index=index))
    request = pb.DetectRequest(
        detector=pb.DetectorParams(model="centerface", max_side=640, score_threshold=0.4),
        frames=messages,
    )
    with grpc.insecure_channel(address) as channel:
        response = pb_grpc.DetectionServiceStub(channel).Detect(request, timeout=120)
    return len(response.results)


def test_prometheus_sees_the_counters_move_after_a_detect_call(
    veil_serve: dict[str, Any], prometheus: _Prometheus
) -> None:
    _wait(
        "the veil target to be up",
        lambda: prometheus.value('up{job="veil"}') == 1,
        timeout=30,
    )
    detected = 'sum(veil_frames_total{job="veil", outcome="detected"})'
    ok_calls = 'sum(veil_requests_total{job="veil", method="Detect", code="OK"})'
    # The counters have no series before their first frame, and rate() sees no increase in
    # a series' first sample: one call first, so that the second one shows as a rise.
    assert _detect(veil_serve["grpc"], frames=1) == 1
    _wait("a first sample of the counters", lambda: prometheus.value(ok_calls) is not None, 30)
    before = prometheus.value(detected) or 0.0
    calls_before = prometheus.value(ok_calls) or 0.0

    assert _detect(veil_serve["grpc"], frames=4) == 4

    _wait(
        "Prometheus to see 4 more detected frames",
        lambda: (prometheus.value(detected) or 0.0) >= before + 4,
        timeout=30,
    )
    _wait(
        "Prometheus to see the Detect call",
        lambda: (prometheus.value(ok_calls) or 0.0) >= calls_before + 1,
        timeout=30,
    )
    assert (prometheus.value('sum(veil_batch_size_count{job="veil"})') or 0) >= 1
    assert (
        prometheus.value('sum(veil_frame_latency_seconds_count{job="veil"})') or 0
    ) >= before + 4
    # The recording rules run on the real series.
    _wait(
        "the recording rule job:veil_frames_detected:rate5m",
        lambda: (prometheus.value('job:veil_frames_detected:rate5m{job="veil"}') or 0) > 0,
        timeout=30,
    )


def test_the_shipped_rules_load_and_evaluate_without_errors(prometheus: _Prometheus) -> None:
    def evaluated() -> list[dict[str, Any]]:
        groups = prometheus.get("/api/v1/rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return (
            rules
            if rules and all(r.get("lastEvaluation", "").startswith("2") for r in rules)
            else []
        )

    rules = _wait("every rule to be evaluated once", evaluated, timeout=30)
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, broken
    assert len(rules) >= 20


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def test_every_dashboard_query_runs_on_prometheus(prometheus: _Prometheus) -> None:
    failures = {}
    for title, expr in _dashboard_queries():
        query = expr.replace("$__rate_interval", "1m")
        query = re.sub(r"\$\{?instance\}?", ".*", query)
        try:
            prometheus.get("/api/v1/query", query=query)
        except urllib.error.HTTPError as exc:
            failures[title] = f"{query}: {exc.read().decode(errors='replace')}"
    assert not failures, failures
    # The veil panels show data from the server scraped above.
    throughput = 'sum by (outcome) (rate(veil_frames_total{instance=~".*"}[1m]))'
    assert prometheus.get("/api/v1/query", query=throughput)["result"]


@pytest.mark.triton
def test_triton_exports_the_metrics_the_dashboard_and_rules_use(triton_server: Any) -> None:
    """The nv_inference_* names in deploy/prometheus/external-metrics.yml, on a real Triton
    (CPU here: the nv_gpu_* ones appear only on a GPU host and are not checked)."""
    import yaml

    from veil.server.engine._triton import TritonBackend

    backend = TritonBackend(triton_server.grpc_url, "centerface")
    try:
        import numpy as np

        backend.infer(np.zeros((1, 3, 32, 32), np.float32))
    finally:
        backend.close()
    with urllib.request.urlopen(triton_server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    external = yaml.safe_load((DEPLOY / "prometheus" / "external-metrics.yml").read_text())
    missing = sorted(set(external["triton"]) - exported)
    assert not missing, f"Triton does not export {missing}; it has {sorted(exported)}"
