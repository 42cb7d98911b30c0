"""Recall on labelled stills (WIDER, dlib), by face height and by pose.

A still's face is found when the detections' covered areas, as the renderer would draw them,
cover :data:`~veil_eval.coverage.COVER_MIN` of its box: the same judge as a clip's record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from veil import Detector, Style, fit_size
from veil.core import Box

from .coverage import COVER_MIN, covered_share
from .score import rounded
from .truth import TARGET_HEIGHT, bucket_of


@dataclass(kw_only=True)
class StillsScore:
    """Recall of the detector on labelled stills, by face height and by WIDER pose flag."""

    found: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    images: int = 0
    seconds: float = 0.0

    def count(self, key: str, hit: bool) -> None:
        self.total[key] = self.total.get(key, 0) + 1
        self.found[key] = self.found.get(key, 0) + int(hit)

    def recall(self, key: str) -> float | None:
        n = self.total.get(key, 0)
        return None if n == 0 else self.found[key] / n

    def to_json(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "seconds": round(self.seconds, 2),
            "recall": {
                k: {
                    "found": self.found[k],
                    "total": self.total[k],
                    "recall": rounded(self.recall(k)),
                }
                for k in sorted(self.total)
            },
        }


def _still_faces(ann: Path) -> Iterator[tuple[Path, list[tuple[Box, bool, int]]]]:
    doc = json.loads(ann.read_text())
    for image in doc["images"]:
        faces = []
        for f in image["faces"]:
            box = (float(f["x"]), float(f["y"]), float(f["x"] + f["w"]), float(f["y"] + f["h"]))
            ignore = bool(f.get("invalid") or f.get("ignore"))
            faces.append((box, ignore, int(f.get("pose", 0) or 0)))
        yield ann.parent / image["file"], faces


def score_stills(
    detector: Detector,
    annotations: Sequence[Path],
    *,
    style: Style | None = None,
    limit: int | None = None,
) -> StillsScore:
    """Run ``detector`` on labelled stills; a face is found when the detections' covered
    areas (``style``, as rendered) cover :data:`COVER_MIN` of its box."""
    style = style or Style()
    score = StillsScore()
    max_side = detector.info.max_side
    for ann in annotations:
        for n, (path, faces) in enumerate(_still_faces(ann)):
            if limit is not None and n >= limit:
                break
            bgr = cv2.imread(str(path))
            if bgr is None:
                continue
            h, w = bgr.shape[:2]
            rgb = np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            sw, sh = fit_size(w, h, max_side)
            image = frame.reformat(sw, sh, "rgb24", interpolation="AREA").to_ndarray()
            t0 = time.perf_counter()
            (found,) = detector.detect([image], [(w, h)])
            score.seconds += time.perf_counter() - t0
            score.images += 1
            boxes = [tuple(map(float, b)) for b in found.boxes]
            for box, ignore, pose in faces:
                height = box[3] - box[1]
                bucket = bucket_of(height)
                if ignore or bucket is None:
                    continue
                hit = covered_share(box, boxes, style, (w, h)) >= COVER_MIN  # type: ignore[arg-type]
                score.count(f"{ann.parent.name}/height {bucket}", hit)
                if height >= TARGET_HEIGHT:
                    score.count(
                        f"{ann.parent.name}/pose {'profile' if pose else 'typical'} >=20px", hit
                    )
    return score
