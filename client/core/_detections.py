"""The one typed container for face detections."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
SourceArray = npt.NDArray[np.uint32]
IntArray = npt.NDArray[np.intp]


@dataclass(frozen=True)
class Detections:
    """Faces found in one frame.

    ``boxes`` is an (N, 4) float32 array of ``x0, y0, x1, y1`` in *display pixels of the
    original frame* (never model-input pixels), ``scores`` is (N,) in 0..1 and ``landmarks``,
    when the model gives them, is (N, 5, 2) in the same pixel space (eyes, nose, mouth corners).
    ``sources``, from a fused detector, is (N,) uint32: bit k set when its k-th member found
    that face (``DetectorInfo.options["members"]`` names them). Shapes are checked once, here.
    """

    boxes: FloatArray
    scores: FloatArray
    landmarks: FloatArray | None = None
    sources: SourceArray | None = None

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        if self.landmarks is not None:
            landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(-1, 5, 2)
            if len(landmarks) != len(boxes):
                raise ValueError(f"{len(boxes)} boxes but {len(landmarks)} landmark sets")
            object.__setattr__(self, "landmarks", landmarks)
        if self.sources is not None:
            sources = np.asarray(self.sources, dtype=np.uint32).reshape(-1)
            if len(sources) != len(boxes):
                raise ValueError(f"{len(boxes)} boxes but {len(sources)} sources")
            object.__setattr__(self, "sources", sources)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.boxes)

    def __getitem__(self, keep: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Detections:
        """Boolean or index selection, as ``detections[detections.scores > 0.5]``."""
        return Detections(
            self.boxes[keep],
            self.scores[keep],
            None if self.landmarks is None else self.landmarks[keep],
            None if self.sources is None else self.sources[keep],
        )

    def scaled(self, sx: float, sy: float) -> Detections:
        """The same detections with x multiplied by ``sx`` and y by ``sy``."""
        factor = np.array([sx, sy, sx, sy], np.float32)
        landmarks = None
        if self.landmarks is not None:
            landmarks = self.landmarks * np.array([sx, sy], np.float32)
        return Detections(self.boxes * factor, self.scores, landmarks, self.sources)

    def shifted(self, dx: float, dy: float) -> Detections:
        """The same detections moved by ``dx``, ``dy`` (from a crop's pixels to its frame's)."""
        landmarks = None
        if self.landmarks is not None:
            landmarks = self.landmarks + np.array([dx, dy], np.float32)
        boxes = self.boxes + np.array([dx, dy, dx, dy], np.float32)
        return Detections(boxes, self.scores, landmarks, self.sources)


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> IntArray:
    """Greedy non-maximum suppression; the indices kept, by descending score.

    A box is dropped when its IoU with a kept, higher-scored box is above ``iou_threshold``.
    Ties keep the lower index (stable sort), so the result is fully deterministic.

    Vectorised numpy rather than ``cv2.dnn.NMSBoxes``: the same result on every OpenCV version
    (its NMS has changed across major versions and takes integer-ish ``x, y, w, h`` boxes), no
    OpenCV in a Triton-only decoder, and fast enough: one vector pass per kept face.
    """
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = (boxes[:, k].astype(np.float64) for k in range(4))
    areas = np.maximum(x1 - x0, 0.0) * np.maximum(y1 - y0, 0.0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest])
        h = np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest])
        inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def merge(parts: list[Detections], nms_threshold: float, image_size: tuple[int, int]) -> Detections:
    """The union of several passes' detections on one image of ``image_size`` (width,
    height): boxes clipped to it, duplicates removed by :func:`nms`, by score. Sources and
    landmarks are kept when every non-empty part has them."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty()
    boxes = np.concatenate([p.boxes for p in parts])
    width, height = image_size
    boxes = np.clip(boxes, 0.0, np.array([width, height, width, height], np.float32))
    scores = np.concatenate([p.scores for p in parts])
    keep = nms(boxes, scores, nms_threshold)
    landmarks = sources = None
    if all(p.landmarks is not None for p in parts):
        landmarks = np.concatenate([p.landmarks for p in parts])[keep]  # type: ignore[misc]
    if all(p.sources is not None for p in parts):
        sources = np.concatenate([p.sources for p in parts])[keep]  # type: ignore[misc]
    return Detections(boxes[keep], scores[keep], landmarks, sources)
