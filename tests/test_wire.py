"""``veil.wire``, the one mapping between the ``veil.v1`` protobufs and veil's types that the
clients and the server share: every core type survives core -> proto -> core unchanged, and a
message that breaks the contract is refused with the error the server answers
INVALID_ARGUMENT (the same messages ``test_service.py`` expects over a real server)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from veil import ConfigError, DetectionConfig, DetectorInfo, fit_size
from veil.core import Detections
from veil.job import PRESETS, DetectorSettings, Preset
from veil.mask import Effect, Shape, Style
from veil.media import EncoderSettings
from veil.track import TrackerConfig
from veil.v1 import detection_pb2 as pb
from veil.wire import (
    DetectorQuery,
    Encoding,
    JobSettings,
    ServedModel,
    WireError,
    frame_message,
    job_start,
    model_info_message,
    params_message,
    read_frame,
    read_job_start,
    read_model_info,
    read_params,
    read_result,
    result_message,
)


def _picture(width: int, height: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def _decoded(frame: pb.Frame, max_side: int = 640) -> tuple[Any, tuple[int, int]]:
    """``frame`` after a trip through its bytes, as the server gets it."""
    return read_frame(pb.Frame.FromString(frame.SerializeToString()), max_side=max_side, **_LIMIT)


_LIMIT = {"max_image_side": 4096}

# -- frames ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("display", "max_side"),
    [((1280, 720), 640), ((720, 1280), 640), ((64, 36), 640), ((1920, 1080), 1280)],
)
@pytest.mark.parametrize("encoding", [Encoding.RAW, Encoding.PNG])
def test_a_lossless_frame_arrives_pixel_for_pixel(
    encoding: Encoding, display: tuple[int, int], max_side: int
) -> None:
    image = _picture(*fit_size(*display, max_side))
    message = frame_message(image, display, index=7, encoding=encoding)
    assert message.index == 7
    decoded, size = _decoded(message, max_side)
    assert size == display
    np.testing.assert_array_equal(decoded, image)
    assert encoding.lossless


def test_a_jpeg_frame_arrives_at_its_size_and_is_lossy() -> None:
    image = _picture(640, 360)
    decoded, size = _decoded(frame_message(image, (1280, 720), index=0, encoding=Encoding.JPEG))
    assert decoded.shape == image.shape and size == (1280, 720)
    assert not Encoding.JPEG.lossless


def _raw() -> pb.Frame:
    return frame_message(_picture(640, 360), (1280, 720), index=3, encoding=Encoding.RAW)


def _png() -> pb.Frame:
    return frame_message(_picture(640, 360), (1280, 720), index=3, encoding=Encoding.PNG)


def _jpeg() -> pb.Frame:
    return frame_message(_picture(640, 360), (1280, 720), index=3, encoding=Encoding.JPEG)


def _small_png() -> pb.Frame:
    return frame_message(_picture(320, 180), (1280, 720), index=3, encoding=Encoding.PNG)


def _set(**fields: Any) -> Callable[[pb.Frame], None]:
    def spoil(frame: pb.Frame) -> None:
        for name, value in fields.items():
            setattr(frame, name, value(frame) if callable(value) else value)

    return spoil


BAD_FRAMES: list[tuple[str, Callable[[], pb.Frame], Callable[[pb.Frame], None], str]] = [
    (
        "not fit_size",
        _raw,
        _set(width=600),
        "frame 3: a 1280x720 frame must be sent scaled to 640x360",
    ),
    ("zero size", _raw, _set(height=0), "frame 3: image 640x0 is outside 1..4096 pixels a side"),
    ("huge", _raw, _set(width=100_000), "outside 1..4096"),
    ("no display", _raw, _set(display_width=0), "frame 3: display size 0x720 is not valid"),
    ("huge display", _raw, _set(display_height=1 << 17), "display size"),
    ("raw too short", _raw, _set(data=lambda f: f.data[:-1]), "RAW data has 691199 bytes"),
    ("no encoding", _raw, _set(encoding=pb.IMAGE_ENCODING_UNSPECIFIED), "RAW, PNG or JPEG"),
    ("raw as png", _raw, _set(encoding=pb.IMAGE_ENCODING_PNG), "not a 640x360 PNG image"),
    ("png of another size", _small_png, _set(width=640, height=360), "not a 640x360 PNG image"),
    ("truncated png", _png, _set(data=lambda f: f.data[: len(f.data) // 2]), "does not decode"),
    ("truncated jpeg", _jpeg, _set(data=lambda f: f.data[:40]), "not a 640x360 JPEG"),
]


@pytest.mark.parametrize(
    ("name", "make", "spoil", "message"), BAD_FRAMES, ids=[b[0] for b in BAD_FRAMES]
)
def test_a_frame_that_breaks_the_contract_is_a_wire_error(
    name: str, make: Callable[[], pb.Frame], spoil: Callable[[pb.Frame], None], message: str
) -> None:
    frame = make()
    spoil(frame)
    with pytest.raises(WireError, match=r"^frame 3: ") as caught:
        _decoded(frame)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)  # the server answers it INVALID_ARGUMENT


# -- detections ------------------------------------------------------------------------------

_BOXES = np.array([[10.5, 20.25, 110.0, 140.75], [300.125, 40.0, 360.5, 118.0]], np.float32)
_SCORES = np.array([0.93, 0.41], np.float32)
_LANDMARKS = np.arange(20, dtype=np.float32).reshape(2, 5, 2) * 1.5 + 100

DETECTIONS = {
    "none": Detections.empty(),
    "boxes": Detections(_BOXES, _SCORES),
    "landmarks": Detections(_BOXES, _SCORES, _LANDMARKS),
    "fused": Detections(_BOXES, _SCORES, None, np.array([0b01, 0b11], np.uint32)),
    "all": Detections(_BOXES, _SCORES, _LANDMARKS, np.array([0b100, 0b010], np.uint32)),
}


@pytest.mark.parametrize("detections", DETECTIONS.values(), ids=DETECTIONS.keys())
def test_detections_cross_the_wire_to_the_bit(detections: Detections) -> None:
    message = result_message(12, detections)
    back = read_result(pb.FrameResult.FromString(message.SerializeToString()))
    assert message.index == 12
    for name in ("boxes", "scores", "landmarks", "sources"):
        ours, theirs = getattr(detections, name), getattr(back, name)
        assert (ours is None) == (theirs is None), name
        if ours is not None:
            assert theirs.dtype == ours.dtype, name
            np.testing.assert_array_equal(theirs, ours, err_msg=name)


# -- the detector ------------------------------------------------------------------------------

QUERIES = {
    "the server's choice": DetectorQuery(),
    "all set": DetectorQuery(model="yunet", max_side=1280, score_threshold=0.4, nms_threshold=0.3),
    "model only": DetectorQuery(model="centerface"),
}


@pytest.mark.parametrize("query", QUERIES.values(), ids=QUERIES.keys())
def test_a_detector_query_crosses_the_wire(query: DetectorQuery) -> None:
    message = params_message(query)
    assert read_params(pb.DetectorParams.FromString(message.SerializeToString())) == query


def test_unset_params_are_the_servers_choice_and_640_pixels() -> None:
    assert read_params(pb.DetectorParams()) == DetectorQuery(max_side=640)


@pytest.mark.parametrize("preset", list(Preset))
def test_a_query_runs_the_model_at_the_track_threshold_as_in_process(preset: Preset) -> None:
    settings, _ = PRESETS[preset]
    query = DetectorQuery.for_settings(settings)
    assert query.score_threshold == settings.model_threshold
    assert (query.model, query.max_side) == (settings.model, settings.max_side)
    off = DetectorQuery.for_settings(replace(settings, track_threshold=None))
    assert off.score_threshold == settings.score_threshold


_INFO = DetectorInfo(
    model="centerface+yunet@640",
    weights_sha256="ab" * 32,
    backend="onnxruntime",
    execution_provider="CPUExecutionProvider",
    max_side=1280,
    score_threshold=0.4,
    nms_threshold=0.3,
    options={"members": [{"name": "centerface"}, {"name": "yunet@640"}], "low_light": True},
    license="MIT",
)


@pytest.mark.parametrize(
    "served",
    [
        ServedModel(info=_INFO, max_batch=16, max_image_side=4096),
        ServedModel(
            info=replace(_INFO, options={}, license=""),
            max_batch=1,
            max_image_side=640,
            veil_version="0.0.9",
        ),
    ],
    ids=["fused", "bare"],
)
def test_the_served_model_crosses_the_wire(served: ServedModel) -> None:
    message = model_info_message(served)
    assert read_model_info(pb.ModelInfo.FromString(message.SerializeToString())) == served


# -- a cloud job's settings --------------------------------------------------------------------

_TUNED = DetectionConfig(
    preset=Preset.BALANCED,
    detector=replace(
        PRESETS[Preset.BALANCED][0], stride=1, track_threshold=0.3, flip=True, tiles=2
    ),
    tracker=replace(PRESETS[Preset.BALANCED][1], confirm_hits=5, follow_span=7, recheck=5),
)
JOBS = {
    **{p.value: (DetectionConfig(preset=p), Style(), EncoderSettings()) for p in Preset},
    "tuned": (
        _TUNED,
        Style(effect=Effect.SOLID, shape=Shape.ELLIPSE, margin=0.3, color=(10, 200, 30)),
        EncoderSettings(codec="libx264", preset="slow", crf=23, pix_fmt="yuv420p", threads=2),
    ),
    "weak off": (
        DetectionConfig(
            preset=Preset.FAST,
            detector=replace(PRESETS[Preset.FAST][0], track_threshold=None, low_light=False),
            tracker=TrackerConfig(),
        ),
        Style(effect=Effect.PIXELATE),
        EncoderSettings(),
    ),
}


@pytest.mark.parametrize(("config", "style", "encoder"), JOBS.values(), ids=JOBS.keys())
def test_a_jobs_settings_cross_the_wire(
    config: DetectionConfig, style: Style, encoder: EncoderSettings
) -> None:
    start = job_start(
        input_name="in.mp4",
        input_size=1234,
        output_name="out.mp4",
        write_record=True,
        preset=config.preset.value,
        detector=config.detector,
        tracker=config.tracker,
        style=style,
        encoder=encoder,
        drop_streams=(2,),
    )
    start = pb.JobStart.FromString(start.SerializeToString())
    assert read_job_start(start) == JobSettings(config, style, encoder)
    assert read_job_start(start).config.tracker_for_run == config.tracker_for_run
    assert (start.input_name, start.input_size, start.output_name) == ("in.mp4", 1234, "out.mp4")
    assert list(start.drop_streams) == [2]


def test_an_empty_job_start_is_the_balanced_preset_and_the_defaults() -> None:
    assert read_job_start(pb.JobStart()) == JobSettings(
        DetectionConfig(preset=Preset.BALANCED), Style(), EncoderSettings()
    )


BAD_JOBS: list[tuple[str, pb.JobStart, type[Exception], str]] = [
    ("unknown preset", pb.JobStart(preset="fastest"), WireError, "unknown preset 'fastest'"),
    (
        "threshold",
        pb.JobStart(detector=pb.DetectorSettings(model="yunet", score_threshold=2)),
        ConfigError,
        "score_threshold 2.0 must be in (0, 1)",
    ),
    (
        "effect",
        pb.JobStart(style=pb.StyleSettings(set=True, effect="smear")),
        ConfigError,
        "smear",
    ),
    (
        "encoder",
        pb.JobStart(encoder=pb.EncoderOptions(set=True, preset="veryfast", threads=0)),
        ConfigError,
        "encoder threads 0",
    ),
]


@pytest.mark.parametrize(
    ("name", "start", "error", "message"), BAD_JOBS, ids=[b[0] for b in BAD_JOBS]
)
def test_invalid_job_settings_are_refused(
    name: str, start: pb.JobStart, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        read_job_start(start)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)  # the server answers INVALID_ARGUMENT


def test_a_hybrid_detector_setting_is_what_the_job_sends() -> None:
    """The detector settings a job sends are the ones ``open_detector`` would run: the model
    at the track threshold, the provider the server's own."""
    settings = DetectorSettings(
        model="yunet", max_side=800, score_threshold=0.6, track_threshold=0.2
    )
    start = job_start(
        input_name="a.mp4",
        input_size=1,
        output_name="",
        write_record=True,
        preset="fast",
        detector=settings,
        tracker=TrackerConfig(),
        style=Style(),
        encoder=EncoderSettings(),
    )
    served = read_job_start(start).config.detector
    assert served == settings
    assert DetectorQuery.for_settings(served) == DetectorQuery.for_settings(settings)
