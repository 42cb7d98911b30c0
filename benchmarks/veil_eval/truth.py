"""Ground truth: the faces of a GT clip (``face-clip-gt/1``) and which of them count.

A GT instance counts when it is at least :data:`MIN_VISIBLE` inside the frame, not ``ignore``,
and at least 10 px tall (the smallest bucket); buckets are by face height (the quad's side
length, so a rolled face is not counted taller than it is).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.core import Box

GT_FORMAT = "face-clip-gt/1"
#: Face height buckets in pixels: [lo, hi). The last is open.
BUCKETS: tuple[tuple[int, int | None], ...] = ((10, 20), (20, 40), (40, 80), (80, None))
#: Smallest share of a face inside the frame for it to count (DESIGN's quality bars).
MIN_VISIBLE = 0.6
#: Faces at least this tall are the ones the leak-rate targets (and hole counts) are about.
TARGET_HEIGHT = 20
#: GT boxes are grown by this factor (about the centre) before collateral is measured: masking
#: the hair or neck around a face is not collateral.
COLLATERAL_GROWTH = 1.5


def bucket_name(lo: int, hi: int | None) -> str:
    return f"{lo}+" if hi is None else f"{lo}-{hi}"


def bucket_of(height: float) -> str | None:
    for lo, hi in BUCKETS:
        if height >= lo and (hi is None or height < hi):
            return bucket_name(lo, hi)
    return None


@dataclass(frozen=True, kw_only=True)
class GtFace:
    """One face in one frame of a GT clip (``face-clip-gt/1``), boxes in display pixels."""

    id: int
    box: Box
    box_full: Box
    height: float
    visible: float
    ignore: bool
    pose: int = 0
    #: Not heavily blurred or heavily occluded in the source photo (WIDER's blur and
    #: occlusion flags below 2); faces without those flags are clear.
    clear: bool = True

    @property
    def counts(self) -> bool:
        """Whether this instance counts for leak rates."""
        return not self.ignore and self.visible >= MIN_VISIBLE and self.height >= BUCKETS[0][0]

    @property
    def surroundings(self) -> Box:
        """``box_full`` grown :data:`COLLATERAL_GROWTH` times about its centre: masking
        anywhere in it is not collateral."""
        box, factor = self.box_full, COLLATERAL_GROWTH
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        hw, hh = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
        return cx - hw, cy - hh, cx + hw, cy + hh


def _face_height(face: dict[str, Any]) -> float:
    quad = face.get("quad")
    if quad:
        (x0, y0), (x3, y3) = quad[0], quad[3]
        return math.hypot(x3 - x0, y3 - y0)
    b = face["bbox_full"]
    return float(b[3] - b[1])


@dataclass(frozen=True, kw_only=True)
class GtClip:
    name: str
    video: Path
    width: int
    height: int
    frames: list[list[GtFace]]

    @classmethod
    def load(cls, path: Path) -> GtClip:
        doc = json.loads(path.read_text())
        if doc.get("format") != GT_FORMAT:
            raise ValueError(f"{path}: not a {GT_FORMAT} file")
        frames = []
        for i, entry in enumerate(doc["frames"]):
            if entry["i"] != i:
                raise ValueError(f"{path}: frame {i} is listed as {entry['i']}")
            frames.append(
                [
                    GtFace(
                        id=int(f["id"]),
                        box=tuple(map(float, f["bbox"])),  # type: ignore[arg-type]
                        box_full=tuple(map(float, f["bbox_full"])),  # type: ignore[arg-type]
                        height=_face_height(f),
                        visible=float(f.get("visible", 1.0)),
                        ignore=bool(f.get("ignore", False)),
                        pose=int(f.get("pose", 0) or 0),
                        clear=max(int(f.get("blur") or 0), int(f.get("occlusion") or 0)) < 2,
                    )
                    for f in entry["faces"]
                ]
            )
        return cls(
            name=path.stem,
            video=path.with_name(doc.get("video") or path.stem + ".mp4"),
            width=int(doc["width"]),
            height=int(doc["height"]),
            frames=frames,
        )


def find_clips(paths: Iterable[Path]) -> list[Path]:
    """The GT JSON files among ``paths`` (files or directories), sorted, videos beside them."""
    found: set[Path] = set()
    for path in paths:
        candidates = sorted(path.glob("*.json")) if path.is_dir() else [path.with_suffix(".json")]
        for candidate in candidates:
            try:
                with candidate.open() as fh:
                    head = fh.read(200)
            except OSError:
                continue
            if GT_FORMAT in head and candidate.with_suffix(".mp4").exists():
                found.add(candidate)
    return sorted(found)
