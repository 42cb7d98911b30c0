from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_ENCODING_UNSPECIFIED: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_RAW: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_PNG: _ClassVar[ImageEncoding]
    IMAGE_ENCODING_JPEG: _ClassVar[ImageEncoding]
IMAGE_ENCODING_UNSPECIFIED: ImageEncoding
IMAGE_ENCODING_RAW: ImageEncoding
IMAGE_ENCODING_PNG: ImageEncoding
IMAGE_ENCODING_JPEG: ImageEncoding

class DetectorParams(_message.Message):
    __slots__ = ("model", "max_side", "score_threshold", "nms_threshold")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NMS_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    model: str
    max_side: int
    score_threshold: float
    nms_threshold: float
    def __init__(self, model: _Optional[str] = ..., max_side: _Optional[int] = ..., score_threshold: _Optional[float] = ..., nms_threshold: _Optional[float] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("index", "encoding", "data", "width", "height", "display_width", "display_height")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_WIDTH_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    index: int
    encoding: ImageEncoding
    data: bytes
    width: int
    height: int
    display_width: int
    display_height: int
    def __init__(self, index: _Optional[int] = ..., encoding: _Optional[_Union[ImageEncoding, str]] = ..., data: _Optional[bytes] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., display_width: _Optional[int] = ..., display_height: _Optional[int] = ...) -> None: ...

class Face(_message.Message):
    __slots__ = ("x0", "y0", "x1", "y1", "score", "landmarks", "sources")
    X0_FIELD_NUMBER: _ClassVar[int]
    Y0_FIELD_NUMBER: _ClassVar[int]
    X1_FIELD_NUMBER: _ClassVar[int]
    Y1_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    x0: float
    y0: float
    x1: float
    y1: float
    score: float
    landmarks: _containers.RepeatedScalarFieldContainer[float]
    sources: int
    def __init__(self, x0: _Optional[float] = ..., y0: _Optional[float] = ..., x1: _Optional[float] = ..., y1: _Optional[float] = ..., score: _Optional[float] = ..., landmarks: _Optional[_Iterable[float]] = ..., sources: _Optional[int] = ...) -> None: ...

class FrameResult(_message.Message):
    __slots__ = ("index", "faces")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    index: int
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    def __init__(self, index: _Optional[int] = ..., faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("detector",)
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    detector: DetectorParams
    def __init__(self, detector: _Optional[_Union[DetectorParams, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model", "weights_sha256", "backend", "execution_provider", "max_side", "score_threshold", "nms_threshold", "options_json", "max_batch", "max_image_side", "veil_version", "license")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_SHA256_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NMS_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_JSON_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_SIDE_FIELD_NUMBER: _ClassVar[int]
    VEIL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LICENSE_FIELD_NUMBER: _ClassVar[int]
    model: str
    weights_sha256: str
    backend: str
    execution_provider: str
    max_side: int
    score_threshold: float
    nms_threshold: float
    options_json: str
    max_batch: int
    max_image_side: int
    veil_version: str
    license: str
    def __init__(self, model: _Optional[str] = ..., weights_sha256: _Optional[str] = ..., backend: _Optional[str] = ..., execution_provider: _Optional[str] = ..., max_side: _Optional[int] = ..., score_threshold: _Optional[float] = ..., nms_threshold: _Optional[float] = ..., options_json: _Optional[str] = ..., max_batch: _Optional[int] = ..., max_image_side: _Optional[int] = ..., veil_version: _Optional[str] = ..., license: _Optional[str] = ...) -> None: ...

class DetectRequest(_message.Message):
    __slots__ = ("detector", "frames")
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    detector: DetectorParams
    frames: _containers.RepeatedCompositeFieldContainer[Frame]
    def __init__(self, detector: _Optional[_Union[DetectorParams, _Mapping]] = ..., frames: _Optional[_Iterable[_Union[Frame, _Mapping]]] = ...) -> None: ...

class DetectResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[FrameResult]
    def __init__(self, results: _Optional[_Iterable[_Union[FrameResult, _Mapping]]] = ...) -> None: ...

class StreamStart(_message.Message):
    __slots__ = ("detector",)
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    detector: DetectorParams
    def __init__(self, detector: _Optional[_Union[DetectorParams, _Mapping]] = ...) -> None: ...

class StreamStarted(_message.Message):
    __slots__ = ("model", "window")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    model: ModelInfo
    window: int
    def __init__(self, model: _Optional[_Union[ModelInfo, _Mapping]] = ..., window: _Optional[int] = ...) -> None: ...

class DetectStreamRequest(_message.Message):
    __slots__ = ("start", "frame")
    START_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    start: StreamStart
    frame: Frame
    def __init__(self, start: _Optional[_Union[StreamStart, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ...) -> None: ...

class DetectStreamResponse(_message.Message):
    __slots__ = ("started", "result")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    started: StreamStarted
    result: FrameResult
    def __init__(self, started: _Optional[_Union[StreamStarted, _Mapping]] = ..., result: _Optional[_Union[FrameResult, _Mapping]] = ...) -> None: ...

class DetectorSettings(_message.Message):
    __slots__ = ("model", "max_side", "score_threshold", "nms_threshold", "batch_size", "track_threshold", "stride", "flip", "tiles", "low_light")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_SIDE_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NMS_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    TRACK_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    STRIDE_FIELD_NUMBER: _ClassVar[int]
    FLIP_FIELD_NUMBER: _ClassVar[int]
    TILES_FIELD_NUMBER: _ClassVar[int]
    LOW_LIGHT_FIELD_NUMBER: _ClassVar[int]
    model: str
    max_side: int
    score_threshold: float
    nms_threshold: float
    batch_size: int
    track_threshold: float
    stride: int
    flip: bool
    tiles: int
    low_light: bool
    def __init__(self, model: _Optional[str] = ..., max_side: _Optional[int] = ..., score_threshold: _Optional[float] = ..., nms_threshold: _Optional[float] = ..., batch_size: _Optional[int] = ..., track_threshold: _Optional[float] = ..., stride: _Optional[int] = ..., flip: _Optional[bool] = ..., tiles: _Optional[int] = ..., low_light: _Optional[bool] = ...) -> None: ...

class TrackerSettings(_message.Message):
    __slots__ = ("set", "max_gap", "lead_in", "lead_out", "match_iou", "growth_per_frame", "confirm_hits", "steady_span", "follow_span", "recheck")
    SET_FIELD_NUMBER: _ClassVar[int]
    MAX_GAP_FIELD_NUMBER: _ClassVar[int]
    LEAD_IN_FIELD_NUMBER: _ClassVar[int]
    LEAD_OUT_FIELD_NUMBER: _ClassVar[int]
    MATCH_IOU_FIELD_NUMBER: _ClassVar[int]
    GROWTH_PER_FRAME_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_HITS_FIELD_NUMBER: _ClassVar[int]
    STEADY_SPAN_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_SPAN_FIELD_NUMBER: _ClassVar[int]
    RECHECK_FIELD_NUMBER: _ClassVar[int]
    set: bool
    max_gap: int
    lead_in: int
    lead_out: int
    match_iou: float
    growth_per_frame: float
    confirm_hits: int
    steady_span: int
    follow_span: int
    recheck: int
    def __init__(self, set: _Optional[bool] = ..., max_gap: _Optional[int] = ..., lead_in: _Optional[int] = ..., lead_out: _Optional[int] = ..., match_iou: _Optional[float] = ..., growth_per_frame: _Optional[float] = ..., confirm_hits: _Optional[int] = ..., steady_span: _Optional[int] = ..., follow_span: _Optional[int] = ..., recheck: _Optional[int] = ...) -> None: ...

class StyleSettings(_message.Message):
    __slots__ = ("set", "effect", "shape", "margin", "feather", "blur_strength", "pixel_blocks", "color")
    SET_FIELD_NUMBER: _ClassVar[int]
    EFFECT_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    FEATHER_FIELD_NUMBER: _ClassVar[int]
    BLUR_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    PIXEL_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    set: bool
    effect: str
    shape: str
    margin: float
    feather: float
    blur_strength: float
    pixel_blocks: int
    color: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, set: _Optional[bool] = ..., effect: _Optional[str] = ..., shape: _Optional[str] = ..., margin: _Optional[float] = ..., feather: _Optional[float] = ..., blur_strength: _Optional[float] = ..., pixel_blocks: _Optional[int] = ..., color: _Optional[_Iterable[int]] = ...) -> None: ...

class EncoderOptions(_message.Message):
    __slots__ = ("set", "codec", "preset", "crf", "pix_fmt", "threads")
    SET_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    CRF_FIELD_NUMBER: _ClassVar[int]
    PIX_FMT_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    set: bool
    codec: str
    preset: str
    crf: int
    pix_fmt: str
    threads: int
    def __init__(self, set: _Optional[bool] = ..., codec: _Optional[str] = ..., preset: _Optional[str] = ..., crf: _Optional[int] = ..., pix_fmt: _Optional[str] = ..., threads: _Optional[int] = ...) -> None: ...

class JobStart(_message.Message):
    __slots__ = ("input_name", "input_size", "output_name", "write_record", "preset", "detector", "tracker", "style", "encoder", "drop_streams")
    INPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    WRITE_RECORD_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    TRACKER_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    DROP_STREAMS_FIELD_NUMBER: _ClassVar[int]
    input_name: str
    input_size: int
    output_name: str
    write_record: bool
    preset: str
    detector: DetectorSettings
    tracker: TrackerSettings
    style: StyleSettings
    encoder: EncoderOptions
    drop_streams: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, input_name: _Optional[str] = ..., input_size: _Optional[int] = ..., output_name: _Optional[str] = ..., write_record: _Optional[bool] = ..., preset: _Optional[str] = ..., detector: _Optional[_Union[DetectorSettings, _Mapping]] = ..., tracker: _Optional[_Union[TrackerSettings, _Mapping]] = ..., style: _Optional[_Union[StyleSettings, _Mapping]] = ..., encoder: _Optional[_Union[EncoderOptions, _Mapping]] = ..., drop_streams: _Optional[_Iterable[int]] = ...) -> None: ...

class JobRequest(_message.Message):
    __slots__ = ("start", "chunk")
    START_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    start: JobStart
    chunk: bytes
    def __init__(self, start: _Optional[_Union[JobStart, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class JobProgress(_message.Message):
    __slots__ = ("stage", "frames_done", "frames_total")
    class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STAGE_UNSPECIFIED: _ClassVar[JobProgress.Stage]
        STAGE_RECEIVED: _ClassVar[JobProgress.Stage]
        STAGE_RUNNING: _ClassVar[JobProgress.Stage]
        STAGE_SENDING: _ClassVar[JobProgress.Stage]
    STAGE_UNSPECIFIED: JobProgress.Stage
    STAGE_RECEIVED: JobProgress.Stage
    STAGE_RUNNING: JobProgress.Stage
    STAGE_SENDING: JobProgress.Stage
    STAGE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_DONE_FIELD_NUMBER: _ClassVar[int]
    FRAMES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    stage: JobProgress.Stage
    frames_done: int
    frames_total: int
    def __init__(self, stage: _Optional[_Union[JobProgress.Stage, str]] = ..., frames_done: _Optional[int] = ..., frames_total: _Optional[int] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("kind", "data")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[FileChunk.Kind]
        KIND_OUTPUT: _ClassVar[FileChunk.Kind]
        KIND_RECORD: _ClassVar[FileChunk.Kind]
        KIND_MANIFEST: _ClassVar[FileChunk.Kind]
    KIND_UNSPECIFIED: FileChunk.Kind
    KIND_OUTPUT: FileChunk.Kind
    KIND_RECORD: FileChunk.Kind
    KIND_MANIFEST: FileChunk.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    kind: FileChunk.Kind
    data: bytes
    def __init__(self, kind: _Optional[_Union[FileChunk.Kind, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class JobDone(_message.Message):
    __slots__ = ("output_sha256", "record_sha256", "manifest_sha256", "summary_json")
    OUTPUT_SHA256_FIELD_NUMBER: _ClassVar[int]
    RECORD_SHA256_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    output_sha256: str
    record_sha256: str
    manifest_sha256: str
    summary_json: str
    def __init__(self, output_sha256: _Optional[str] = ..., record_sha256: _Optional[str] = ..., manifest_sha256: _Optional[str] = ..., summary_json: _Optional[str] = ...) -> None: ...

class JobResponse(_message.Message):
    __slots__ = ("progress", "file", "done")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FILE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    progress: JobProgress
    file: FileChunk
    done: JobDone
    def __init__(self, progress: _Optional[_Union[JobProgress, _Mapping]] = ..., file: _Optional[_Union[FileChunk, _Mapping]] = ..., done: _Optional[_Union[JobDone, _Mapping]] = ...) -> None: ...
