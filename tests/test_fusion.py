"""Fused detectors (issue 18): several models on the same frames, one set of faces, each mask
saying which models found it, the same in process and over gRPC (hybrid mode)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mediagen import cut

import veil
from veil import ConfigError, DetectionConfig, Detections
from veil.core._detector import DetectorInfo
from veil.server.engine._fusion import (
    CALIBRATION,
    REFERENCE,
    FusedDetector,
    fuse,
    fused_score,
    member_models,
    members_of,
    native_threshold,
    parse_member,
)
from veil.server.service import ServeConfig

FUSED = "centerface+retinaface_mnet025"
SCALED = "yunet@320+yunet"  # one model at two scales


@given(st.sampled_from(sorted(CALIBRATION.values())), st.floats(0.0, 1.0, allow_subnormal=False))
def test_the_shared_scale_is_monotonic_and_inverts(calibration: float, native: float) -> None:
    fused = fused_score(native, calibration)
    assert 0.0 <= fused <= 1.0
    assert native_threshold(fused, calibration) == pytest.approx(native, abs=1e-9)
    assert fused_score(calibration, calibration) == pytest.approx(REFERENCE)
    assert fused_score(min(1.0, native + 0.01), calibration) >= fused


def _found(*faces: tuple[float, float, float, float, float]) -> Detections:
    return Detections(
        np.array([f[:4] for f in faces], np.float32).reshape(-1, 4),
        np.array([f[4] for f in faces], np.float32),
    )


def test_a_face_both_members_found_is_one_face_found_by_both() -> None:
    a = _found((100, 100, 140, 150, 0.8), (300, 50, 330, 90, 0.45))
    b = _found((104, 98, 146, 152, 0.9))  # the same first face, a looser box
    fused = fuse([a, b], [0.4, 0.5])
    assert len(fused) == 2
    assert fused.sources is not None and list(fused.sources) == [0b11, 0b01]
    # score-weighted mean of the two boxes, best shared-scale score
    sa, sb = fused_score(0.8, 0.4), fused_score(0.9, 0.5)
    expected = (np.array([100, 100, 140, 150]) * sa + np.array([104, 98, 146, 152]) * sb) / (
        sa + sb
    )
    np.testing.assert_allclose(fused.boxes[0], expected, rtol=1e-5)
    assert fused.scores[0] == pytest.approx(max(sa, sb))
    assert fused.scores[1] == pytest.approx(fused_score(0.45, 0.4))


class _Named:
    """A member that finds nothing, with a given identity; keeps the image sizes it got."""

    def __init__(self, model: str, license: str, max_side: int = 640) -> None:
        self.info = DetectorInfo(
            model=model,
            weights_sha256=model,
            backend="onnxruntime",
            execution_provider="CPUExecutionProvider",
            max_side=max_side,
            score_threshold=0.5,
            nms_threshold=0.3,
            license=license,
        )
        self.sizes: list[tuple[int, int]] = []

    def detect(self, images: Any, display_sizes: Any) -> list[Detections]:
        self.sizes += [(i.shape[1], i.shape[0]) for i in images]
        return [Detections.empty() for _ in images]

    def close(self) -> None:
        pass


def test_members_with_different_licences_are_each_named() -> None:
    """Issue 18.1: a member under a restrictive licence is named in the fused record."""
    members = [_Named("centerface", "MIT"), _Named("retinaface_mnet025", "research only")]
    info = FusedDetector(members, score_threshold=0.5, max_side=640).info
    assert info.license == "centerface: MIT; retinaface_mnet025: research only"
    assert [m["license"] for m in info.options["members"]] == ["MIT", "research only"]


def test_a_box_of_no_area_is_its_own_face_found_by_its_member() -> None:
    """A member's box clipped to nothing at the frame's edge overlaps no box, itself
    included: it fused to a [0, 0, 0, 0] box found by no member, and thorough's record of
    the generated crowd of small faces failed its own schema ("by" empty)."""
    a = _found((875, 720, 884, 720, 0.3), (100, 100, 140, 150, 0.8))
    b = _found((102, 99, 142, 151, 0.9))
    fused = fuse([a, b], [0.4, 0.5])
    assert fused.sources is not None and sorted(fused.sources) == [0b01, 0b11]
    flat = fused.boxes[list(fused.sources).index(0b01)]
    np.testing.assert_allclose(flat, [875, 720, 884, 720])


def test_nothing_found_fuses_to_nothing() -> None:
    empty = fuse([Detections.empty(), Detections.empty()], [0.4, 0.5])
    assert len(empty) == 0


@pytest.mark.parametrize(
    "model", ["centerface+centerface", "centerface+nosuchmodel", "yolo+centerface"]
)
def test_a_fused_model_needs_distinct_calibrated_members(model: str) -> None:
    with pytest.raises(ValueError, match="distinct, calibrated"):
        members_of(model)
    with pytest.raises(ConfigError, match="distinct, calibrated"):
        ServeConfig(model=model)


def test_a_member_may_run_at_its_own_smaller_scale() -> None:
    """Issue 18.2: ``yunet@320+yunet``: the first member sees the frame scaled to fit 320 px,
    the second the frame as given (at the detector's max_side); the record names both."""
    assert members_of(SCALED) == ["yunet@320", "yunet"]
    assert member_models(SCALED) == ["yunet"]  # one backend serves both
    assert parse_member("yunet@320") == ("yunet", 320) and parse_member("yunet") == ("yunet", None)
    small, full = _Named("yunet", "MIT", max_side=320), _Named("yunet", "MIT")
    fused = FusedDetector([small, full], score_threshold=0.5, max_side=640, names=["a", "b"])
    image = np.zeros((360, 640, 3), np.uint8)
    fused.detect([image, image[:320, :180]], [(1280, 720), (180, 320)])
    assert small.sizes == [(320, 180), (180, 320)]  # the second already fits 320 px
    assert full.sizes == [(640, 360), (180, 320)]
    members = fused.info.options["members"]
    assert [(m["name"], m["max_side"]) for m in members] == [("a", 320), ("b", 640)]
    assert fused.info.members == ("a", "b")
    with pytest.raises(ValueError, match="size <= max_side"):
        FusedDetector(
            [_Named("yunet", "MIT", max_side=960), full], score_threshold=0.5, max_side=640
        )


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("yunet@320", "for fused members"),
        ("yunet@big+centerface", "32..8192"),
        ("yunet@16+centerface", "32..8192"),
        ("yunet@320+yunet@320", "distinct"),
    ],
)
def test_member_sizes_are_checked(model: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        members_of(model)


@pytest.fixture(scope="module")
def clip(sample_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cut(sample_clip, tmp_path_factory.mktemp("clip") / "in.mp4", 16)


def _config(model: str = FUSED) -> DetectionConfig:
    return DetectionConfig.from_preset(
        "balanced", detector={"model": model, "score_threshold": 0.5, "track_threshold": 0.25}
    )


@pytest.fixture(scope="module", params=[FUSED, SCALED])
def on_prem(
    request: pytest.FixtureRequest, clip: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    record = tmp_path_factory.mktemp("onprem") / "r.json"
    veil.detect(clip, record, config=_config(request.param))
    return json.loads(record.read_text())  # type: ignore[no-any-return]


@pytest.mark.weights
def test_the_record_names_the_members_and_which_found_each_face(on_prem: dict[str, Any]) -> None:
    detector = on_prem["detector"]
    model = detector["model"]
    members = detector["options"]["members"]
    assert [m["name"] for m in members] == members_of(model)
    assert [(m["model"], m["max_side"]) for m in members] == [
        (name, side or detector["max_side"]) for name, side in map(parse_member, members_of(model))
    ]
    # one licence when the members share it; each member's own too (issue 18.1)
    assert detector["license"] == "MIT" and {m["license"] for m in members} == {"MIT"}
    # each member ran at the native threshold of the fused track threshold (0.25)
    for member in members:
        assert member["score_threshold"] == pytest.approx(
            native_threshold(0.25, CALIBRATION[member["model"]])
        )
    detected = [m for f in on_prem["frames"] for m in f["masks"] if m["origin"] == "detected"]
    assert detected, "the astronaut's face was not found"
    assert all(set(m["by"]) <= set(members_of(model)) and m["by"] for m in detected)
    assert any(len(m["by"]) == 2 for m in detected)  # a clear frontal face: both members


@pytest.mark.weights
def test_a_server_serving_the_fused_model_gives_the_on_prem_record(
    clip: Path, on_prem: dict[str, Any], tmp_path: Path
) -> None:
    from veil.remote import RemoteDetector
    from veil.server.service import create_server

    model = on_prem["detector"]["model"]
    config = ServeConfig(listen="127.0.0.1:0", model=model, threads=2)
    with create_server(config) as server:
        settings = _config(model).detector
        with RemoteDetector(f"grpc://127.0.0.1:{server.port}", settings) as remote:
            veil.detect(clip, tmp_path / "r.json", config=_config(model), detector=remote)
    hybrid = json.loads((tmp_path / "r.json").read_text())
    hybrid["detector"].pop("transport")
    assert hybrid["frames"] == on_prem["frames"]
    assert hybrid["detector"] == on_prem["detector"]
