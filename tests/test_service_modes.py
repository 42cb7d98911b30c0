"""Hybrid (``--detector``) and cloud (``--remote``) give the on-prem record and byte-identical
output, on a 30-frame cut (PyAV stream copy, audio kept) of a ground-truth clip, and on a dim,
noisy copy of it (where the low-light pass runs)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mediagen import cut, darken

from veil import DetectionConfig, anonymize, detect
from veil.cli import main
from veil.remote import ChannelOptions, RemoteDetector, run_remote_job
from veil.wire import Encoding, job_start

pytestmark = pytest.mark.weights  # the fetched detector weights (make models)

FRAMES = 30


@pytest.fixture(scope="module")
def clip(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = shared_data / "clips" / "wider_group_tilted_pan.mp4"
    return cut(source, tmp_path_factory.mktemp("clip") / source.name, FRAMES)


@pytest.fixture(scope="module")
def on_prem(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], bytes]:
    out = tmp_path_factory.mktemp("onprem") / "out.mp4"
    anonymize(clip, out)
    return json.loads(out.with_name("out.mp4.veil.json").read_bytes()), out.read_bytes()


def without_transport(record: dict[str, Any]) -> dict[str, Any]:
    detector = dict(record["detector"])
    detector.pop("transport")
    return {**record, "detector": detector}


@pytest.mark.parametrize("encoding", [Encoding.PNG, Encoding.RAW])
def test_hybrid_equals_on_prem(
    veil_server: Callable[..., Any],
    clip: Path,
    on_prem: tuple[dict[str, Any], bytes],
    tmp_path: Path,
    encoding: Encoding,
) -> None:
    server = veil_server()
    out = tmp_path / "out.mp4"
    with RemoteDetector(
        f"grpc://127.0.0.1:{server.port}",
        DetectionConfig().detector,
        ChannelOptions(encoding=encoding),
    ) as remote:
        anonymize(clip, out, detector=remote)
    record = json.loads(out.with_name("out.mp4.veil.json").read_bytes())
    expected_record, expected_bytes = on_prem
    assert record["detector"]["transport"] == {
        "mode": "hybrid",
        "encoding": encoding.value,
        "lossless": True,
    }
    assert without_transport(record) == expected_record
    assert record["detector"]["license"] == "MIT"  # ModelInfo.license carries it (issue 18.1)
    assert record["summary"]["frames"] == FRAMES and record["summary"]["tracks"] > 0
    assert out.read_bytes() == expected_bytes


def test_jpeg_is_recorded_as_lossy(veil_server: Callable[..., Any], clip: Path) -> None:
    server = veil_server()
    options = ChannelOptions(encoding=Encoding.JPEG, jpeg_quality=80)
    with RemoteDetector(
        f"grpc://127.0.0.1:{server.port}", DetectionConfig().detector, options
    ) as remote:
        record = detect(clip, detector=remote)
    assert record.detector["transport"] == {
        "mode": "hybrid",
        "encoding": "jpeg",
        "lossless": False,
        "jpeg_quality": 80,
    }


def test_cloud_equals_on_prem(
    veil_server: Callable[..., Any],
    clip: Path,
    on_prem: tuple[dict[str, Any], bytes],
    tmp_path: Path,
) -> None:
    server = veil_server(metrics="127.0.0.1:0")
    out = tmp_path / "out.mp4"
    code = main(
        [
            "anonymize",
            "-q",
            str(clip),
            "-o",
            str(out),
            "--remote",
            f"grpc://127.0.0.1:{server.port}",
        ]
    )
    assert code == 0
    record = json.loads(out.with_name("out.mp4.veil.json").read_bytes())
    expected_record, expected_bytes = on_prem
    assert record["detector"]["transport"] == {"mode": "cloud"}
    assert without_transport(record) == expected_record
    assert out.read_bytes() == expected_bytes
    manifest = json.loads(out.with_name("out.mp4.manifest.json").read_bytes())
    assert manifest["output"]["name"] == "out.mp4"
    assert not list(tmp_path.glob(".*partial*"))


def _balanced_job(name: str, size: int, config: DetectionConfig) -> Any:
    """The ``JobStart`` of a balanced cloud job with ``config``'s settings, default style
    and encoder."""
    from veil import EncoderSettings, Style

    return job_start(
        input_name=name,
        input_size=size,
        output_name="out.mp4",
        write_record=True,
        preset="balanced",
        detector=config.detector,
        tracker=config.tracker,
        style=Style(),
        encoder=EncoderSettings(),
    )


def test_cloud_job_refusals(veil_server: Callable[..., Any], clip: Path, tmp_path: Path) -> None:
    from veil.remote import RemoteError, RetryPolicy

    server = veil_server(limits={"max_job_bytes": 1000})
    start = _balanced_job(clip.name, clip.stat().st_size, DetectionConfig())
    url = f"grpc://127.0.0.1:{server.port}"
    options = ChannelOptions(retry=RetryPolicy(attempts=1))
    with pytest.raises(RemoteError, match="RESOURCE_EXHAUSTED: RunJob: input of"):
        run_remote_job(
            url, clip, output=tmp_path / "o.mp4", record=None, start=start, options=options
        )
    server = veil_server()
    url = f"grpc://127.0.0.1:{server.port}"
    start.input_name = "../escape.mp4"
    with pytest.raises(RemoteError, match="INVALID_ARGUMENT: input_name"):
        run_remote_job(
            url, clip, output=tmp_path / "o.mp4", record=None, start=start, options=options
        )
    start.input_name = "x" * 300 + ".mp4"  # regression: the file system refused it (INTERNAL)
    with pytest.raises(RemoteError, match="INVALID_ARGUMENT: input_name is 304 bytes long"):
        run_remote_job(
            url, clip, output=tmp_path / "o.mp4", record=None, start=start, options=options
        )
    start.input_name = clip.name
    start.input_size += 10  # the upload then comes up short
    with pytest.raises(RemoteError, match="INVALID_ARGUMENT: RunJob: the upload is truncated"):
        run_remote_job(
            url, clip, output=tmp_path / "o.mp4", record=None, start=start, options=options
        )
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(
    ("detector", "tracker"),
    [
        ({}, {}),  # the preset as it is
        (
            {"stride": 1, "track_threshold": 0.3, "flip": True, "tiles": 2},
            {"confirm_hits": 5, "steady_span": 3, "follow_span": 7, "recheck": 5},
        ),
        (
            {"track_threshold": None},
            {"confirm_hits": 0, "follow_span": 0},
        ),  # weak detections off, no following
        ({"low_light": False}, {}),
    ],
)
def test_a_cloud_job_runs_the_detector_and_tracker_settings_it_was_sent(
    detector: dict[str, Any], tracker: dict[str, Any]
) -> None:
    """Regression: the wire carried neither the stride, track threshold, mirror pass and
    tiles nor ``confirm_hits``, so a cloud job ran the preset's where the user had set
    others (``--stride 1`` detected every other frame). The server's settings now equal the
    client's."""
    from dataclasses import replace

    from veil.wire import read_job_start as _job_settings

    base = DetectionConfig.from_preset("balanced")
    config = DetectionConfig(
        preset=base.preset,
        detector=replace(base.detector, **detector),
        tracker=replace(base.tracker, **tracker),
    )
    served, _, _ = _job_settings(_balanced_job("in.mp4", 1, config))
    assert served.detector == replace(config.detector, provider=served.detector.provider)
    assert served.tracker == config.tracker
    assert served.tracker_for_run == config.tracker_for_run


def test_the_low_light_pass_runs_alike_in_every_mode(
    veil_server: Callable[..., Any], shared_data: Path, tmp_path: Path
) -> None:
    """The pass runs in client code whoever detects: a hybrid run and a cloud job give the
    on-prem record and bytes on a dim clip, where the pass changes what is masked."""
    source = shared_data / "clips" / "wider_group_tilted_pan.mp4"
    dark = darken(source, tmp_path / "dark.mp4", exposure=0.12, noise=5, frames=FRAMES)
    on_prem = tmp_path / "on_prem.mp4"
    anonymize(dark, on_prem)
    expected = json.loads(on_prem.with_name("on_prem.mp4.veil.json").read_bytes())
    assert "low_light" in expected["detector"]["options"]
    without = detect(
        dark, config=DetectionConfig.from_preset("balanced", detector={"low_light": False})
    )
    masks = sum(len(f["masks"]) for f in expected["frames"])
    assert masks > sum(len(f.masks) for f in without.frames)

    server = veil_server()
    url = f"grpc://127.0.0.1:{server.port}"
    hybrid = tmp_path / "hybrid.mp4"
    with RemoteDetector(url, DetectionConfig().detector) as remote:
        anonymize(dark, hybrid, detector=remote)
    cloud = tmp_path / "cloud.mp4"
    assert main(["anonymize", "-q", str(dark), "-o", str(cloud), "--remote", url]) == 0
    for out in (hybrid, cloud):
        record = json.loads(out.with_name(out.name + ".veil.json").read_bytes())
        assert without_transport(record) == expected, out.name
        assert out.read_bytes() == on_prem.read_bytes(), out.name


@pytest.mark.parametrize("settings", [{"flip": True}, {"tiles": 2}])
def test_hybrid_refuses_passes_the_server_would_not_run(settings: dict[str, Any]) -> None:
    """The server's detector runs without the mirror pass and tiles; asked for in hybrid mode
    they would silently not run, so the job is refused before any connection is made."""
    from veil import ConfigError

    config = DetectionConfig.from_preset("balanced", detector=settings)
    with pytest.raises(ConfigError, match="mirror pass"):
        RemoteDetector("grpc://127.0.0.1:9", config.detector)
