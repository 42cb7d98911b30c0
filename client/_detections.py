"""The one typed container for face detections."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
SourceArray = npt.NDArray[np.uint32]


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
