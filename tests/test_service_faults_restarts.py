"""Faults around the detection service (issue 9, hardening): servers that go away and come back.

- a real ``veil serve`` SIGKILLed while a hybrid ``veil anonymize --detector grpc://...``
  runs: the client resumes when the server comes back within its retry budget (same record
  as an uninterrupted run), else fails cleanly (exit 6, a clear message, no output file);
- Triton stopped and restarted under a server with ``--backend triton``: health says
  NOT_SERVING (and calls get UNAVAILABLE) while Triton is down, SERVING again after.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from mediagen import cut
from serve_subprocess import (
    NOT_SERVING,
    ROOT,
    SERVING,
    ServeProcess,
    free_port,
    health,
    metric,
    wait_for,
)

from veil import DetectorSettings, fit_size
from veil.v1 import detection_pb2 as pb
from veil.v1 import detection_pb2_grpc as pb_grpc
from veil.wire import frame_message

pytest_plugins = ["serve_subprocess"]  # the serve_process fixture


@pytest.fixture(scope="module")
def clip(sample_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 48 frames of the sample (a real face, with audio), stream-copied."""
    return cut(sample_clip, tmp_path_factory.mktemp("faults") / "astronaut48.mp4", 48)


def hybrid(clip: Path, out: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "veil.cli", "anonymize", str(clip), "-o", str(out),
         "--detector", f"grpc://127.0.0.1:{port}", "--frame-encoding", "raw"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


def kill_mid_stream(server: ServeProcess, metrics_port: int, frames: int) -> None:
    """SIGKILL ``server`` once it has detected at least ``frames`` frames."""
    model = DetectorSettings().model
    detected = f'veil_frames_total{{backend="onnxruntime",model="{model}",outcome="detected"}}'
    wait_for(lambda: metric(metrics_port, detected) >= frames, 120, f"{frames} frames detected")
    server.kill()


@pytest.mark.weights
def test_hybrid_job_resumes_when_the_killed_server_comes_back(
    serve_process: Any, clip: Path, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    first = serve_process(port, "--metrics", f"127.0.0.1:{metrics_port}").wait_serving()
    out = tmp_path / "out" / "out.mp4"
    out.parent.mkdir()
    job = hybrid(clip, out, port)
    kill_mid_stream(first, metrics_port, 8)
    assert job.poll() is None, job.communicate()
    serve_process(port).wait_serving()  # same port; the client is retrying meanwhile
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr
    assert "resuming from frame" in stderr
    assert "Traceback" not in stderr
    record = json.loads(out.with_name("out.mp4.veil.json").read_text())
    assert record["summary"]["frames_masked_by_policy"] == 0
    assert len(record["frames"]) == 48
    # The same detections as an uninterrupted on-prem run of the same clip.
    reference = tmp_path / "ref.json"
    done = subprocess.run(
        [sys.executable, "-m", "veil.cli", "detect", "-q", str(clip), "-o", str(reference)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = json.loads(reference.read_text())
    assert record["frames"] == expected["frames"]
    assert any(frame["masks"] for frame in record["frames"])  # the face was found


@pytest.mark.weights
def test_hybrid_job_fails_cleanly_when_the_server_stays_down(
    serve_process: Any, clip: Path, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    server = serve_process(port, "--metrics", f"127.0.0.1:{metrics_port}").wait_serving()
    work = tmp_path / "work"
    work.mkdir()
    job = hybrid(clip, work / "out.mp4", port)
    kill_mid_stream(server, metrics_port, 8)
    started = time.monotonic()
    _, stderr = job.communicate(timeout=300)
    assert job.returncode == 6, stderr  # DetectorError's exit code
    assert "the server stayed unreachable after 8 attempts" in stderr
    assert "Traceback" not in stderr
    assert time.monotonic() - started < 120
    assert list(work.iterdir()) == []  # no output, no partial, no record


# -- Triton stopped and restarted -------------------------------------------------------------


@pytest.mark.triton
def test_health_follows_triton_down_and_back(tmp_path: Path) -> None:
    from triton_server import TritonServer, TritonServerConfig

    from veil.server.service import ServeConfig, create_server

    base = TritonServerConfig()
    if not (base.venv / ".installed").is_file():
        pytest.skip(f"no Triton server environment at {base.venv}: run `make triton-env`")
    ports = {"grpc_port": free_port(), "http_port": free_port(), "metrics_port": free_port()}
    config = TritonServerConfig(**ports)
    triton = TritonServer.start(config)
    server = None
    try:
        server = create_server(
            ServeConfig(
                listen="127.0.0.1:0",
                metrics="127.0.0.1:0",
                backend="triton",
                triton=triton.grpc_url,
                health_interval_s=0.2,
            )
        ).start()
        ready = "veil_backend_ready "
        assert health(server.port) == SERVING
        assert metric(server.metrics_port, ready) == 1.0
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.DetectionServiceStub(channel)
            image = np.full((*fit_size(1280, 720, 640)[::-1], 3), 90, np.uint8)
            request = pb.DetectRequest(frames=[frame_message(image, (1280, 720), index=0)])
            before = stub.Detect(request, timeout=60)

            triton.stop()
            wait_for(lambda: health(server.port) == NOT_SERVING, 30, "NOT_SERVING")
            assert metric(server.metrics_port, ready) == 0.0
            with pytest.raises(grpc.RpcError) as caught:
                stub.Detect(request, timeout=30)
            assert caught.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            assert "not ready" in caught.value.details()  # type: ignore[attr-defined]

            triton = TritonServer.start(config)  # same ports
            wait_for(lambda: health(server.port) == SERVING, 60, "SERVING again")
            assert metric(server.metrics_port, ready) == 1.0
            assert stub.Detect(request, timeout=60) == before
    finally:
        if server is not None:
            server.stop(0)
        triton.stop()
