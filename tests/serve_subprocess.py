"""``veil serve`` as a real subprocess for the fault tests (tests/test_service_faults_*.py):
``ServeProcess`` and the ``serve_process`` fixture that starts them (and kills what it started
when the test ends), and the probes the tests watch a server with: gRPC health, one metric of
its /metrics, free loopback ports, waiting for a condition.

Register the fixture where it is needed with ``pytest_plugins = ["serve_subprocess"]``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def health(port: int) -> int | None:
    """The server's overall health status, or None when nothing answers."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="veil.v1.DetectionService"), timeout=2
            )
        except grpc.RpcError:
            return None
        return int(response.status)


def wait_for(predicate: Any, timeout: float, what: str, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step)


class ServeProcess:
    """``veil serve`` as a real subprocess on loopback (1 inference thread)."""

    def __init__(self, port: int, *args: str, log: Path) -> None:
        self.port = port
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "veil.cli", "serve", "-v", "--listen",
                 f"127.0.0.1:{port}", "--threads", "1", *args],
                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
            )  # fmt: skip

    def wait_serving(self, timeout: float = 120) -> ServeProcess:
        def serving() -> bool:
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            return health(self.port) == SERVING

        wait_for(serving, timeout, f"veil serve on port {self.port}")
        return self

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Any]:
    started: list[ServeProcess] = []

    def start(port: int, *args: str) -> ServeProcess:
        server = ServeProcess(port, *args, log=tmp_path / f"serve-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def metric(port: int, line_start: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
