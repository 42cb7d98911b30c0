"""The in-process detector: model pre/post-processing around a swappable inference backend."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

import cv2
import numpy as np
import numpy.typing as npt

from veil.core import Detections, DetectorError, DetectorInfo, Image, merge

from ._fusion import (
    CALIBRATION,
    FusedDetector,
    member_models,
    members_of,
    native_threshold,
    parse_member,
)
from ._models import FaceModel, make_model
from .weights import WeightsError, model_path, weights_license, weights_sha256

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_SIDE",
    "InferenceBackend",
    "LocalDetector",
    "build_detector",
    "load_detector",
    "to_display",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_SIDE = 1280
"""Longest side, in pixels, of the images the detector is given (720p passes unscaled)."""
DEFAULT_MAX_BATCH = 16
"""Most images in one inference (the Triton configs' ``max_batch_size``)."""


class InferenceBackend(Protocol):
    """Runs a model's graph on an NCHW float32 batch: onnxruntime in process, or Triton."""

    @property
    def name(self) -> str:
        """The backend's name for the record: ``"onnxruntime"``, ``"triton"``."""
        ...

    @property
    def provider(self) -> str:
        """Where it runs, e.g. ``"CPUExecutionProvider"``, ``"CUDAExecutionProvider"``."""
        ...

    @property
    def weights_sha256(self) -> str:
        """sha256 (hex) of the model file it runs."""
        ...

    def infer(self, batch: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]: ...

    def close(self) -> None: ...


def to_display(
    detections: Detections, image_size: tuple[int, int], display_size: tuple[int, int]
) -> Detections:
    """Map detections from scaled-image pixels to display pixels of the original frame.

    ``image_size`` and ``display_size`` are ``(width, height)``. Continuous coordinates (pixel
    ``i`` spans ``[i, i + 1)``) scale by the size ratio exactly, as an area/linear resize
    maps them. Boxes are then clipped to the display frame; landmarks are not clipped (a
    face cut by the frame edge keeps its outside points).
    """
    (iw, ih), (dw, dh) = image_size, display_size
    if min(iw, ih, dw, dh) <= 0:
        raise ValueError(f"sizes must be positive: image {image_size}, display {display_size}")
    scaled = detections.scaled(dw / iw, dh / ih)
    boxes = np.clip(scaled.boxes, 0.0, np.array([dw, dh, dw, dh], np.float32))
    return Detections(boxes, scaled.scores, scaled.landmarks, scaled.sources)


_MIRROR_LANDMARKS = [1, 0, 2, 4, 3]  # left/right eye and mouth corner swap in a mirror


def _unmirror(found: Detections, width: int) -> Detections:
    """Detections on a horizontally mirrored image, mapped back to the image."""
    boxes = found.boxes.copy()
    boxes[:, 0], boxes[:, 2] = width - found.boxes[:, 2], width - found.boxes[:, 0]
    landmarks = None
    if found.landmarks is not None:
        landmarks = found.landmarks[:, _MIRROR_LANDMARKS].copy()
        landmarks[:, :, 0] = width - landmarks[:, :, 0]
    return Detections(boxes, found.scores, landmarks)


def _tile_boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Four equal tiles covering the image, overlapping by 1/8 of its size (a face up to
    that size cut by one tile's edge is whole in its neighbour)."""
    tw, th = min(width, (width + 1) // 2 + width // 8), min(height, (height + 1) // 2 + height // 8)
    return [(x, y, x + tw, y + th) for y in (0, height - th) for x in (0, width - tw)]


def _shifted(found: Detections, dx: float, dy: float) -> Detections:
    landmarks = None
    if found.landmarks is not None:
        landmarks = found.landmarks + np.array([dx, dy], np.float32)
    return Detections(found.boxes + np.array([dx, dy, dx, dy], np.float32), found.scores, landmarks)


class LocalDetector:
    """Finds faces in process; implements the client's ``veil.Detector`` protocol.

    ``detect`` runs images of equal size as one batch (at most ``max_batch`` per inference),
    so one call over frames of one video costs one inference per ``max_batch`` frames.
    Deterministic: the same images give the same detections, batched or not. ``license``
    (for the record) defaults to the manifest's licence of the model's weights.
    """

    def __init__(
        self,
        *,
        model: FaceModel,
        backend: InferenceBackend,
        max_side: int = DEFAULT_MAX_SIDE,
        max_batch: int = DEFAULT_MAX_BATCH,
        flip: bool = False,
        tiles: int = 1,
        license: str | None = None,
    ) -> None:
        if tiles not in (1, 2):
            raise ValueError(f"tiles {tiles} must be 1 (whole image) or 2 (plus 2x2 tiles at 2x)")
        self._flip = flip
        self._tiles = tiles
        if max_side < 32:
            raise ValueError(f"max_side {max_side} is below 32")
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch} is below 1")
        self._model = model
        self._backend = backend
        self._max_batch = max_batch
        self._info = DetectorInfo(
            model=model.name,
            weights_sha256=backend.weights_sha256,
            backend=backend.name,
            execution_provider=backend.provider,
            max_side=max_side,
            score_threshold=model.score_threshold,
            nms_threshold=model.nms_threshold,
            options=model.options() | {"flip": flip, "tiles": tiles},
            license=weights_license(model.name) if license is None else license,
        )

    @property
    def info(self) -> DetectorInfo:
        return self._info

    @property
    def model(self) -> FaceModel:
        return self._model

    def detect(
        self, images: Sequence[Image], display_sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        """One ``Detections`` per image, boxes in display pixels of its original frame.

        ``images`` are RGB uint8 (H, W, 3), already scaled to ``fit_size(display,
        info.max_side)``; ``display_sizes`` are the original frames' ``(width, height)``.
        """
        if len(images) != len(display_sizes):
            raise ValueError(f"{len(images)} images but {len(display_sizes)} display sizes")
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(
                    f"image {index}: expected RGB uint8 (H, W, 3), got {image.dtype} {image.shape}"
                )
            groups.setdefault(image.shape, []).append(index)
        results: list[Detections | None] = [None] * len(images)
        for shape, indices in groups.items():
            image_size = (shape[1], shape[0])
            for start in range(0, len(indices), self._max_batch):
                chunk = indices[start : start + self._max_batch]
                found = self._run([images[i] for i in chunk], image_size)
                for i, detections in zip(chunk, found, strict=True):
                    dw, dh = display_sizes[i]
                    results[i] = to_display(detections, image_size, (int(dw), int(dh)))
        return [r if r is not None else Detections.empty() for r in results]

    def _run(self, images: list[Image], image_size: tuple[int, int]) -> list[Detections]:
        """The model's detections on ``images``, plus its second opinions when configured:
        the horizontal mirror (profile faces looking one way are found more easily than the
        other) and 2x2 overlapping tiles upscaled 2x (faces under ~16 px). All passes are
        mapped back to image pixels and merged by the model's NMS."""
        passes = self._infer(images, image_size)
        if not self._flip and self._tiles == 1:
            return passes
        width, height = image_size
        merged: list[list[Detections]] = [[d] for d in passes]
        if self._flip:
            mirrored = [np.ascontiguousarray(image[:, ::-1]) for image in images]
            for i, found in enumerate(self._infer(mirrored, image_size)):
                merged[i].append(_unmirror(found, width))
        if self._tiles == 2:
            crops = _tile_boxes(width, height)
            tile_images: list[Image] = []
            where: list[tuple[int, int, int]] = []
            for i, image in enumerate(images):
                for x0, y0, x1, y1 in crops:
                    tile = cv2.resize(
                        image[y0:y1, x0:x1],
                        ((x1 - x0) * 2, (y1 - y0) * 2),
                        interpolation=cv2.INTER_LINEAR,
                    )
                    tile_images.append(np.asarray(tile, np.uint8))  # cv2 types it loosely
                    where.append((i, x0, y0))
            tile_size = ((crops[0][2] - crops[0][0]) * 2, (crops[0][3] - crops[0][1]) * 2)
            for start in range(0, len(tile_images), self._max_batch):
                chunk = tile_images[start : start + self._max_batch]
                found_tiles = self._infer(chunk, tile_size)
                for (i, x0, y0), found in zip(where[start:], found_tiles, strict=False):
                    merged[i].append(_shifted(found.scaled(0.5, 0.5), x0, y0))
        return [merge(parts, self._model.nms_threshold, image_size) for parts in merged]

    def _infer(self, images: list[Image], image_size: tuple[int, int]) -> list[Detections]:
        t0 = time.perf_counter()
        batch = self._model.preprocess(images)
        t1 = time.perf_counter()
        outputs = self._backend.infer(batch)
        t2 = time.perf_counter()
        found = self._model.postprocess(outputs, image_size)
        t3 = time.perf_counter()
        logger.debug(
            "%s batch %s: pre %.1f ms, infer %.1f ms, post %.1f ms",
            self._model.name,
            batch.shape,
            1e3 * (t1 - t0),
            1e3 * (t2 - t1),
            1e3 * (t3 - t2),
        )
        return found

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> LocalDetector:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def onnxruntime_missing(exc: ImportError) -> str:
    """What to do when onnxruntime cannot be imported (``exc``)."""
    return (
        f"onnxruntime is not installed here ({exc}): install veil[local] (CPU) or veil[gpu] "
        "(CUDA), or detect on a veil server with --detector URL"
    )


def build_detector(
    model: str,
    backends: Mapping[str, InferenceBackend],
    *,
    score_threshold: float | None = None,
    nms_threshold: float | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
    max_batch: int = DEFAULT_MAX_BATCH,
    flip: bool = False,
    tiles: int = 1,
) -> LocalDetector | FusedDetector:
    """``model`` on ``backends`` (one per member model, by name): a :class:`LocalDetector`,
    or for a fused model (``"a+b"``) a :class:`FusedDetector` of one per member, each at the
    native threshold of the fused ``score_threshold`` (see :mod:`veil.server.engine._fusion`)."""
    names = members_of(model)
    if len(names) == 1:
        face_model = make_model(model, score_threshold=score_threshold, nms_threshold=nms_threshold)
        return LocalDetector(
            model=face_model,
            backend=backends[model],
            max_side=max_side,
            max_batch=max_batch,
            flip=flip,
            tiles=tiles,
        )
    members = []
    for name, side in map(parse_member, names):
        # a member's own size is at most the detector's (--max-side 480 on yunet@640+yunet
        # runs both at 480, as the record says)
        members.append(
            LocalDetector(
                model=make_model(
                    name,
                    score_threshold=None
                    if score_threshold is None
                    else native_threshold(score_threshold, CALIBRATION[name]),
                    nms_threshold=nms_threshold,
                ),
                backend=backends[name],
                max_side=min(side or max_side, max_side),
                max_batch=max_batch,
                flip=flip,
                tiles=tiles,
            )
        )
    return FusedDetector(
        members,
        score_threshold=0.5 if score_threshold is None else score_threshold,
        max_side=max_side,
        names=names,
    )


def load_detector(
    model: str = "centerface",
    *,
    max_side: int = DEFAULT_MAX_SIDE,
    score_threshold: float | None = None,
    nms_threshold: float | None = None,
    provider: str = "cpu",
    threads: int | None = None,
    repository: Path | None = None,
    flip: bool = False,
    tiles: int = 1,
) -> LocalDetector | FusedDetector:
    """``model`` in process with onnxruntime (see :func:`build_detector`).

    ``model`` is a model of the manifest (``"centerface"``, ``"retinaface_mnet025"``, ...) or
    a fused one (``"centerface+yunet"``); ``None`` thresholds take the defaults.
    ``provider`` is ``"cpu"``, ``"cuda"`` or ``"tensorrt"`` (an error if the session does not
    get it); ``threads`` is onnxruntime's intra-op count (``None``: all cores). ``flip`` adds
    a mirrored pass, ``tiles=2`` a pass over 2x2 tiles upscaled 2x (see
    :meth:`LocalDetector._run`). The weights come from ``repository`` (default:
    ``$VEIL_MODEL_DIR`` or the user cache, see :mod:`veil.server.engine.weights`) and must match the
    manifest's sha256.
    """
    try:
        from ._onnxruntime import ExecutionProvider, OnnxRuntimeBackend, OnnxRuntimeConfig
    except ImportError as exc:
        raise DetectorError(onnxruntime_missing(exc)) from exc

    backends: dict[str, InferenceBackend] = {}
    try:
        for name in member_models(model):
            face_model = make_model(name)
            path = model_path(name, repository)
            backend = OnnxRuntimeBackend(
                path,
                input_name=face_model.input_name,
                output_names=face_model.output_names,
                config=OnnxRuntimeConfig(provider=ExecutionProvider(provider), threads=threads),
            )
            backends[name] = backend
            expected = weights_sha256(name)
            if backend.weights_sha256 != expected:
                raise WeightsError(
                    f"{path} has sha256 {backend.weights_sha256}, the manifest pins {expected}: "
                    "run `veil models fetch` to rebuild it"
                )
        return build_detector(
            model,
            backends,
            score_threshold=score_threshold,
            nms_threshold=nms_threshold,
            max_side=max_side,
            flip=flip,
            tiles=tiles,
        )
    except BaseException:
        for opened in backends.values():
            opened.close()
        raise
