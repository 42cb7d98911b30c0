"""The Triton path end to end: `veil serve --backend triton` in front of a real Triton server,
driven in hybrid mode by the client, gives the on-prem masks and byte-identical output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mediagen import cut

from veil import DetectionConfig, anonymize
from veil.remote import RemoteDetector

pytest_plugins = ["triton_fixture"]
pytestmark = pytest.mark.triton

FRAMES = 20


def test_hybrid_through_veil_serve_on_triton_equals_on_prem(
    triton_server: object, sample_clip: Path, tmp_path: Path
) -> None:
    from veil.server.service import ServeConfig, create_server

    clip = cut(sample_clip, tmp_path / "clip.mp4", FRAMES)
    on_prem = tmp_path / "on_prem.mp4"
    anonymize(clip, on_prem)

    server = create_server(
        ServeConfig(
            listen="127.0.0.1:0",
            backend="triton",
            triton=triton_server.grpc_url,  # type: ignore[attr-defined]
        )
    ).start()
    try:
        hybrid = tmp_path / "hybrid.mp4"
        config = DetectionConfig()
        with RemoteDetector(f"grpc://127.0.0.1:{server.port}", config.detector) as remote:
            anonymize(clip, hybrid, detector=remote, config=config)
    finally:
        server.stop(0)

    expected = json.loads(on_prem.with_name("on_prem.mp4.veil.json").read_bytes())
    record = json.loads(hybrid.with_name("hybrid.mp4.veil.json").read_bytes())
    assert record["detector"]["backend"] == "triton"
    assert record["detector"]["execution_provider"].startswith("triton:")
    assert record["detector"]["weights_sha256"] == expected["detector"]["weights_sha256"]
    assert record["frames"] == expected["frames"]
    assert record["summary"]["tracks"] >= 1
    assert hybrid.read_bytes() == on_prem.read_bytes()
