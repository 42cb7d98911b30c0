"""The evaluation harness behind ``veil eval``: leaks, holes and collateral against ground truth.

Two ways to score, on the same definitions:

* **By record** (:func:`score_record`): a GT face instance is *masked* when the union of the
  record's masks' covered areas covers at least :data:`COVER_MIN` of its GT box (``bbox``,
  clipped to the frame). A mask's covered area is the renderer's own geometry
  (``_render.Geometry``: the box grown by the style margin; for an ellipse, the ellipse
  circumscribing the grown box), opacity 1 only, so the feather band never counts.
* **By pixels** (:func:`score_video`): a GT face instance is *masked* in an output video when
  the output's GT-box region has lost the input's structure at the scale of eyes, nose and
  mouth (:func:`structure_retained` below :data:`STRUCTURE_MAX`). This scores any tool's output
  (``deface`` included) without trusting what it says it did.

Why :data:`COVER_MIN` = 0.8: WIDER boxes are loose (hair, ears, part of the neck), dlib boxes
tight (brows to chin). A mask that leaves 20 % of a loose box uncovered leaves a strip of
hair or background, never both eyes; leaving more than that starts to uncover an eye or the
mouth on tight boxes. The default margin (0.2 per side) makes a detection of the face cover a
tight box completely, so on dlib clips the threshold is not what decides.

A GT instance counts when it is at least :data:`MIN_VISIBLE` inside the frame, not ``ignore``,
and at least 10 px tall (the smallest bucket); buckets are by face height (the quad's side
length, so a rolled face is not counted taller than it is).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt

from veil.core import Box
from veil.mask import Geometry, Shape, Style

logger = logging.getLogger(__name__)


GT_FORMAT = "face-clip-gt/1"
#: Face height buckets in pixels: [lo, hi). The last is open.
BUCKETS: tuple[tuple[int, int | None], ...] = ((10, 20), (20, 40), (40, 80), (80, None))
#: Smallest share of a face inside the frame for it to count (DESIGN's quality bars).
MIN_VISIBLE = 0.6
#: Smallest covered share of a GT box for the face to count as masked (see module docstring).
COVER_MIN = 0.8
#: Largest share of band-pass structure an output may keep for a face to count as masked.
STRUCTURE_MAX = 0.4
#: GT boxes are grown by this factor (about the centre) before collateral is measured: masking
#: the hair or neck around a face is not collateral.
COLLATERAL_GROWTH = 1.5
#: Faces at least this tall are the ones the leak-rate targets (and hole counts) are about.
TARGET_HEIGHT = 20


def bucket_name(lo: int, hi: int | None) -> str:
    return f"{lo}+" if hi is None else f"{lo}-{hi}"


def bucket_of(height: float) -> str | None:
    for lo, hi in BUCKETS:
        if height >= lo and (hi is None or height < hi):
            return bucket_name(lo, hi)
    return None


# --------------------------------------------------------------------------------------------
# Ground truth


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


# --------------------------------------------------------------------------------------------
# Coverage by a mask set (the renderer's geometry)


def _pixel_grid(box: Box, width: int, height: int) -> tuple[npt.NDArray[np.float64], ...] | None:
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    if x1 <= x0 or y1 <= y0:
        return None
    xs = np.arange(x0, x1, dtype=np.float64) + 0.5
    ys = np.arange(y0, y1, dtype=np.float64) + 0.5
    # only pixel centres inside the (fractional) box
    xs = xs[(xs >= box[0]) & (xs <= box[2])]
    ys = ys[(ys >= box[1]) & (ys <= box[3])]
    if not len(xs) or not len(ys):
        return None
    return xs, ys


def covered_share(
    box: Box, masks: Sequence[Box], style: Style, frame_size: tuple[int, int]
) -> float:
    """The share of ``box`` (clipped to the frame) inside the union of the masks' covered areas."""
    grid = _pixel_grid(box, *frame_size)
    if grid is None:
        return 1.0
    xs, ys = grid
    covered = np.zeros((len(ys), len(xs)), bool)
    for mask in masks:
        geometry = Geometry.of(mask, style)
        ex = (
            0.0
            if style.shape is Shape.BOX
            else (math.sqrt(2) - 1) * (geometry.x1 - geometry.x0) / 2
        )
        ey = (
            0.0
            if style.shape is Shape.BOX
            else (math.sqrt(2) - 1) * (geometry.y1 - geometry.y0) / 2
        )
        if (
            geometry.x1 + ex < box[0]
            or geometry.x0 - ex > box[2]
            or geometry.y1 + ey < box[1]
            or geometry.y0 - ey > box[3]
        ):
            continue
        covered |= geometry.alpha(style.shape, xs, ys) >= 0.999
        if covered.all():
            break
    return float(covered.mean())


def _grow(box: Box, factor: float) -> Box:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    hw, hh = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
    return cx - hw, cy - hh, cx + hw, cy + hh


_COLLATERAL_STEP = 4  # collateral from records is rasterised on a 4-pixel grid


def collateral_share(
    masks: Sequence[Box], faces: Sequence[GtFace], style: Style, frame_size: tuple[int, int]
) -> float:
    """Share of the frame covered by masks but outside every grown GT box (any GT face)."""
    if not masks:
        return 0.0
    width, height = frame_size
    xs = np.arange(0, width, _COLLATERAL_STEP, dtype=np.float64) + _COLLATERAL_STEP / 2
    ys = np.arange(0, height, _COLLATERAL_STEP, dtype=np.float64) + _COLLATERAL_STEP / 2
    covered = np.zeros((len(ys), len(xs)), bool)
    for mask in masks:
        geometry = Geometry.of(mask, style)
        roi = geometry.roi(width, height, style.shape)
        if roi is None:
            continue
        ix = slice(roi[0] // _COLLATERAL_STEP, -(-roi[2] // _COLLATERAL_STEP))
        iy = slice(roi[1] // _COLLATERAL_STEP, -(-roi[3] // _COLLATERAL_STEP))
        covered[iy, ix] |= geometry.alpha(style.shape, xs[ix], ys[iy]) >= 0.999
    for face in faces:
        g = _grow(face.box_full, COLLATERAL_GROWTH)
        in_x = (xs >= g[0]) & (xs <= g[2])
        in_y = (ys >= g[1]) & (ys <= g[3])
        covered[np.ix_(in_y, in_x)] = False
    return float(covered.mean())


# --------------------------------------------------------------------------------------------
# Masked by pixels


def _band(gray: npt.NDArray[np.float32], sigma: float) -> npt.NDArray[np.float32]:
    """Difference of Gaussians at ``sigma`` and ``2 sigma``: structure at that scale."""
    a = cv2.GaussianBlur(gray, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    b = cv2.GaussianBlur(gray, (0, 0), 2 * sigma, borderType=cv2.BORDER_REFLECT)
    return a - b


def structure_retained(
    before: npt.NDArray[np.uint8], after: npt.NDArray[np.uint8], box: Box
) -> float | None:
    """How much of ``before``'s facial-scale structure inside ``box`` survives in ``after``.

    Both are luma planes of one frame. The region is band-passed (difference of Gaussians at
    sigma = face height / 24 and / 12: the size of eyes, nostrils and lips) and the output is
    regressed on the input: ``cov(out, in) / var(in)``. Measured on the public WIDER clip
    (1,537 instances): re-encoded at x264 crf 28 and otherwise untouched, faces keep 0.69 at
    the least (1st percentile 0.76, median 0.96); fully covered by veil's default blur
    (sigma 1/6 of the box), 0.20 at the most (median 0.04). :data:`STRUCTURE_MAX` = 0.4 sits
    between with margin on both sides. Pixelation into <= 5 blocks and a solid fill are
    uncorrelated with the input (~0). ``None`` when the input has no structure to lose there
    (a flat region says nothing).
    """
    height, width = before.shape
    fh = max(box[3] - box[1], 1.0)
    sigma = max(0.7, fh / 24)
    pad = math.ceil(6 * sigma)
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    px0, py0 = max(0, x0 - pad), max(0, y0 - pad)
    px1, py1 = min(width, x1 + pad), min(height, y1 + pad)
    inner = (slice(y0 - py0, y1 - py0), slice(x0 - px0, x1 - px0))
    a = _band(before[py0:py1, px0:px1].astype(np.float32), sigma)[inner]
    b = _band(after[py0:py1, px0:px1].astype(np.float32), sigma)[inner]
    a = a - a.mean()
    b = b - b.mean()
    var = float((a * a).mean())
    if var < 0.25:  # band-pass std under half a grey level: nothing to recognise
        return None
    return float((a * b).mean()) / var


def _luma(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    return np.asarray(frame.reformat(format="gray").to_ndarray(), dtype=np.uint8)


def _frames(path: Path) -> Iterator[npt.NDArray[np.uint8]]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield _luma(frame)


_BLOCK = 16


def _altered_blocks(
    before: npt.NDArray[np.uint8], after: npt.NDArray[np.uint8]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Per 16x16 block: (has structure, lost it). Fine scale (sigma 1.5 px)."""
    a = _band(before.astype(np.float32), 1.5)
    b = _band(after.astype(np.float32), 1.5)
    h, w = (before.shape[0] // _BLOCK) * _BLOCK, (before.shape[1] // _BLOCK) * _BLOCK

    def blocks(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return x[:h, :w].reshape(h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK).mean(axis=(1, 3))

    var = blocks(a * a)
    cov = blocks(a * b)
    textured = var >= 1.0
    lost = textured & (cov < STRUCTURE_MAX * np.maximum(var, 1e-6))
    return textured, lost


# --------------------------------------------------------------------------------------------
# Scores


@dataclass(kw_only=True)
class Score:
    """Leak and collateral statistics of one clip (or several, summed)."""

    instances: dict[str, int] = field(default_factory=lambda: {bucket_name(*b): 0 for b in BUCKETS})
    leaked: dict[str, int] = field(default_factory=lambda: {bucket_name(*b): 0 for b in BUCKETS})
    holes: int = 0
    longest_run: int = 0
    collateral_sum: float = 0.0
    frames: int = 0
    unjudged: int = 0  # pixel scoring: instances with no structure to lose
    seconds: float | None = None
    #: Faces >= TARGET_HEIGHT that are clear in the source (GtFace.clear), and those leaked.
    clear_instances: int = 0
    clear_leaked: int = 0

    def add(self, other: Score) -> None:
        for k in self.instances:
            self.instances[k] += other.instances[k]
            self.leaked[k] += other.leaked[k]
        self.holes += other.holes
        self.longest_run = max(self.longest_run, other.longest_run)
        self.collateral_sum += other.collateral_sum
        self.frames += other.frames
        self.unjudged += other.unjudged
        self.clear_instances += other.clear_instances
        self.clear_leaked += other.clear_leaked
        if other.seconds is not None:
            self.seconds = (self.seconds or 0.0) + other.seconds

    def leak_rate(self, min_height: int = TARGET_HEIGHT) -> float | None:
        keys = [bucket_name(lo, hi) for lo, hi in BUCKETS if lo >= min_height]
        n = sum(self.instances[k] for k in keys)
        return None if n == 0 else sum(self.leaked[k] for k in keys) / n

    def clear_leak_rate(self) -> float | None:
        """Leak rate of faces >= 20 px that are neither heavily blurred nor heavily occluded
        in the source photo: the faces a person could recognise in the source."""
        return None if self.clear_instances == 0 else self.clear_leaked / self.clear_instances

    def bucket_rate(self, key: str) -> float | None:
        n = self.instances[key]
        return None if n == 0 else self.leaked[key] / n

    @property
    def collateral(self) -> float:
        return self.collateral_sum / self.frames if self.frames else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "leak_rate_20px": _round(self.leak_rate()),
            "leak_rate_10px": _round(self.leak_rate(10)),
            "leak_rate_20px_clear": _round(self.clear_leak_rate()),
            "by_height": {
                k: {
                    "instances": self.instances[k],
                    "leaked": self.leaked[k],
                    "rate": _round(self.bucket_rate(k)),
                }
                for k in self.instances
            },
            "single_frame_holes": self.holes,
            "longest_leak_run": self.longest_run,
            "collateral": round(self.collateral, 5),
            "frames": self.frames,
            "unjudged": self.unjudged,
            "seconds": None if self.seconds is None else round(self.seconds, 2),
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _tally(clip: GtClip, masked: dict[tuple[int, int], bool], collateral: list[float]) -> Score:
    """A :class:`Score` from per-(frame, face id) outcomes of the instances that count."""
    score = Score(frames=len(clip.frames), collateral_sum=float(sum(collateral)))
    runs: dict[int, int] = {}
    for i, faces in enumerate(clip.frames):
        for face in faces:
            key = (i, face.id)
            if key not in masked:
                continue
            bucket = bucket_of(face.height)
            assert bucket is not None
            score.instances[bucket] += 1
            leaked = not masked[key]
            if leaked:
                score.leaked[bucket] += 1
            if face.height < TARGET_HEIGHT:
                continue
            if face.clear:
                score.clear_instances += 1
                score.clear_leaked += leaked
            run = runs.get(face.id, 0) + 1 if leaked and (i - 1, face.id) in masked else int(leaked)
            runs[face.id] = run if leaked else 0
            score.longest_run = max(score.longest_run, runs[face.id])
            if (
                leaked
                and masked.get((i - 1, face.id)) is True
                and masked.get((i + 1, face.id)) is True
            ):
                score.holes += 1
    return score


def score_masks(
    clip: GtClip, frame_masks: Sequence[Sequence[Box]], style: Style | None = None
) -> Score:
    """Score per-frame mask boxes (display pixels) against ``clip``'s ground truth."""
    style = style or Style()
    size = (clip.width, clip.height)
    masked: dict[tuple[int, int], bool] = {}
    collateral = []
    for i, faces in enumerate(clip.frames):
        boxes = list(frame_masks[i]) if i < len(frame_masks) else []
        for face in faces:
            if face.counts:
                masked[(i, face.id)] = covered_share(face.box, boxes, style, size) >= COVER_MIN
        collateral.append(collateral_share(boxes, faces, style, size))
    return _tally(clip, masked, collateral)


def score_record(clip: GtClip, record: Any, style: Style | None = None) -> Score:
    """Score a detection record (``veil.Record``) against ``clip``'s ground truth."""
    if len(record.frames) != len(clip.frames):
        raise ValueError(
            f"{clip.name}: the record has {len(record.frames)} frames, the GT {len(clip.frames)}"
        )
    return score_masks(clip, [[m.box for m in f.masks] for f in record.frames], style)


def score_video(clip: GtClip, output: Path, input: Path | None = None) -> Score:
    """Score an output video by its pixels against the input and ``clip``'s ground truth."""
    masked: dict[tuple[int, int], bool] = {}
    collateral = []
    unjudged = 0
    n = 0
    resized = False
    for i, (before, after) in enumerate(
        zip(_frames(input or clip.video), _frames(output), strict=False)
    ):
        n += 1
        if before.shape != after.shape:
            # deface (imageio-ffmpeg) rescales frames to multiples of 16: scale back
            h, w = before.shape
            after = np.asarray(cv2.resize(after, (w, h), interpolation=cv2.INTER_AREA), np.uint8)
            resized = True
        faces = clip.frames[i] if i < len(clip.frames) else []
        for face in faces:
            if not face.counts:
                continue
            kept = structure_retained(before, after, face.box)
            if kept is None:
                unjudged += 1
                continue
            masked[(i, face.id)] = kept < STRUCTURE_MAX
        _, lost = _altered_blocks(before, after)
        for face in faces:
            g = _grow(face.box_full, COLLATERAL_GROWTH)
            bx0, by0 = max(0, int(g[0] // _BLOCK)), max(0, int(g[1] // _BLOCK))
            bx1, by1 = math.ceil(g[2] / _BLOCK), math.ceil(g[3] / _BLOCK)
            lost[by0:by1, bx0:bx1] = False
        collateral.append(float(lost.mean()))
    if n != len(clip.frames):
        raise ValueError(f"{output}: {n} frames decoded, the GT lists {len(clip.frames)}")
    if resized:
        logger.warning("%s: frame size differs from the input; scaled back to score", output.name)
    score = _tally(clip, masked, collateral)
    score.unjudged = unjudged
    return score


# --------------------------------------------------------------------------------------------
# Stills: recall by size and pose


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
                    "recall": _round(self.recall(k)),
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
    detector: Any,
    annotations: Sequence[Path],
    *,
    style: Style | None = None,
    limit: int | None = None,
) -> StillsScore:
    """Run ``detector`` (a ``veil.Detector``) on labelled stills; a face is found when the
    detections' covered areas (``style``, as rendered) cover :data:`COVER_MIN` of its box."""
    import time

    from veil.core import fit_size

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


# --------------------------------------------------------------------------------------------
# Running veil and deface on clips


@dataclass(kw_only=True)
class ClipResult:
    clip: str
    tool: str  # "veil:<preset>" or "deface"
    by_record: Score | None
    by_pixels: Score | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "clip": self.clip,
            "tool": self.tool,
            "by_record": None if self.by_record is None else self.by_record.to_json(),
            "by_pixels": None if self.by_pixels is None else self.by_pixels.to_json(),
            "error": self.error,
        }


def run_veil(clip: GtClip, preset: str, workdir: Path, *, pixels: bool = True) -> ClipResult:
    """Anonymise ``clip`` with ``preset`` and score the record and (optionally) the pixels."""
    import time

    from ._api import DetectionConfig, anonymize, detect

    config = DetectionConfig.from_preset(preset)
    output = workdir / f"{clip.name}.{preset}.mp4"
    t0 = time.perf_counter()
    if pixels:
        job = anonymize(clip.video, output, config=config, write_record=False, overwrite=True)
        record = job.record
    else:
        record = detect(clip.video, config=config)
    seconds = time.perf_counter() - t0
    by_record = score_record(clip, record)
    by_record.seconds = seconds
    by_pixels = None
    if pixels:
        by_pixels = score_video(clip, output)
        by_pixels.seconds = seconds
        output.unlink(missing_ok=True)
    return ClipResult(
        clip=clip.name, tool=f"veil:{preset}", by_record=by_record, by_pixels=by_pixels
    )


def run_deface_on(clip: GtClip, executable: Path, workdir: Path) -> ClipResult:
    from ._eval_deface import run_deface

    output = workdir / f"{clip.name}.deface.mp4"
    try:
        seconds = run_deface(executable, clip.video, output)
        by_pixels = score_video(clip, output)
    except (RuntimeError, ValueError, OSError) as exc:
        return ClipResult(
            clip=clip.name, tool="deface", by_record=None, by_pixels=None, error=str(exc)
        )
    finally:
        output.unlink(missing_ok=True)
    by_pixels.seconds = seconds
    return ClipResult(clip=clip.name, tool="deface", by_record=None, by_pixels=by_pixels)


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def format_table(results: Sequence[ClipResult]) -> str:
    """The side-by-side table: one row per clip and tool, then an overall row per tool."""
    keys = [bucket_name(*b) for b in BUCKETS]
    head = (
        f"{'clip':<30} {'tool':<15} {'by':<6} {'leak>=20':>8} {'clear':>7} "
        + " ".join(f"{k:>7}" for k in keys)
        + f" {'holes':>5} {'run':>4} {'collat':>7} {'fps':>6}"
    )
    lines = [head, "-" * len(head)]
    totals: dict[tuple[str, str], Score] = {}

    def row(clip: str, tool: str, by: str, s: Score) -> str:
        fps = "-" if not s.seconds else f"{s.frames / s.seconds:6.1f}"
        return (
            f"{clip:<30} {tool:<15} {by:<6} {_pct(s.leak_rate()):>8} "
            f"{_pct(s.clear_leak_rate(), 1):>7} "
            + " ".join(f"{_pct(s.bucket_rate(k), 1):>7}" for k in keys)
            + f" {s.holes:>5} {s.longest_run:>4} {_pct(s.collateral):>7} {fps:>6}"
        )

    for r in results:
        if r.error:
            lines.append(f"{r.clip:<30} {r.tool:<15} error: {r.error}")
            continue
        for by, s in (("record", r.by_record), ("pixels", r.by_pixels)):
            if s is None:
                continue
            lines.append(row(r.clip, r.tool, by, s))
            totals.setdefault((r.tool, by), Score()).add(s)
    lines.append("-" * len(head))
    for (tool, by), s in sorted(totals.items()):
        lines.append(row("OVERALL", tool, by, s))
    return "\n".join(lines)


def format_stills(scores: dict[str, StillsScore]) -> str:
    lines = [f"{'stills recall':<45} " + " ".join(f"{p:>16}" for p in scores)]
    keys = sorted({k for s in scores.values() for k in s.total})
    for key in keys:
        cells = []
        for s in scores.values():
            r = s.recall(key)
            cells.append(
                f"{_pct(r, 1):>7} of {s.total.get(key, 0):>5}" if r is not None else f"{'-':>16}"
            )
        lines.append(f"{key:<45} " + " ".join(cells))
    lines.append(
        f"{'detector seconds per image':<45} "
        + " ".join(f"{(s.seconds / max(s.images, 1)):>16.3f}" for s in scores.values())
    )
    return "\n".join(lines)


def summarise(results: Sequence[ClipResult]) -> dict[str, Any]:
    """Overall scores per tool (record and pixels), as the golden file and docs keep them."""
    totals: dict[str, dict[str, Score]] = {}
    for r in results:
        for by, s in (("by_record", r.by_record), ("by_pixels", r.by_pixels)):
            if s is not None:
                totals.setdefault(r.tool, {}).setdefault(by, Score()).add(s)
    return {tool: {by: s.to_json() for by, s in d.items()} for tool, d in sorted(totals.items())}


def _deface_cached(clip: GtClip, executable: Path, workdir: Path, cache: Path | None) -> ClipResult:
    """deface's result on ``clip``; cached by the clip's sha256 (deface is slow, ~1 s/frame at
    720p on two cores, and its result does not depend on anything veil changes)."""
    from veil.media import sha256_file

    from ._eval_deface import DEFACE_VERSION

    path = None
    if cache is not None:
        name = f"deface-{DEFACE_VERSION}-{_CACHE_FORMAT}-{sha256_file(clip.video)[:16]}.json"
        path = cache / name
        if path.exists():
            doc = json.loads(path.read_text())
            return ClipResult(
                clip=clip.name, tool="deface", by_record=None, by_pixels=_score_from_json(doc)
            )
    result = run_deface_on(clip, executable, workdir)
    if path is not None and result.by_pixels is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_score_to_raw(result.by_pixels)))
    return result


#: Bumped when :class:`Score` gains fields, so that older cached deface scores are redone.
_CACHE_FORMAT = "s2"


def _score_to_raw(s: Score) -> dict[str, Any]:
    return {
        k: getattr(s, k)
        for k in (
            "instances",
            "leaked",
            "holes",
            "longest_run",
            "collateral_sum",
            "frames",
            "unjudged",
            "seconds",
            "clear_instances",
            "clear_leaked",
        )
    }


def _score_from_json(doc: dict[str, Any]) -> Score:
    return Score(**doc)


@dataclass(kw_only=True)
class EvalReport:
    clips: list[ClipResult]
    stills: dict[str, StillsScore]

    def to_json(self) -> dict[str, Any]:
        return {
            "definitions": {
                "cover_min": COVER_MIN,
                "structure_max": STRUCTURE_MAX,
                "min_visible": MIN_VISIBLE,
                "collateral_growth": COLLATERAL_GROWTH,
                "buckets": [bucket_name(*b) for b in BUCKETS],
            },
            "clips": [r.to_json() for r in self.clips],
            "overall": summarise(self.clips),
            "stills": {p: s.to_json() for p, s in self.stills.items()},
        }

    def format(self) -> str:
        parts = [format_table(self.clips)] if self.clips else []
        if self.stills:
            parts.append(format_stills(self.stills))
        return "\n\n".join(parts)


def evaluate(
    clip_paths: Sequence[Path],
    *,
    presets: Sequence[str],
    compare_deface: bool = False,
    pixels: bool = True,
    stills: Sequence[Path] = (),
    stills_limit: int | None = None,
    cache: Path | None = None,
    deface: Path | None = None,
) -> EvalReport:
    """Score veil (each preset) and optionally deface on GT clips, and veil on stills."""
    import tempfile

    from ._api import DetectionConfig, client_passes, open_detector

    clips = [GtClip.load(p) for p in clip_paths]
    results: list[ClipResult] = []
    executable = None
    if compare_deface:
        from ._eval_deface import find_deface

        executable = deface or find_deface()
        if executable is None:
            raise FileNotFoundError("deface is not installed: run `make deface-env`")
    with tempfile.TemporaryDirectory(prefix="veil-eval-") as tmp:
        workdir = Path(tmp)
        for clip in clips:
            for preset in presets:
                results.append(run_veil(clip, preset, workdir, pixels=pixels))
            if executable is not None:
                results.append(_deface_cached(clip, executable, workdir, cache))
    still_scores: dict[str, StillsScore] = {}
    for preset in presets if stills else ():
        settings = DetectionConfig.from_preset(preset).detector
        detector = client_passes(open_detector(settings), settings)
        try:
            still_scores[preset] = score_stills(detector, stills, limit=stills_limit)
        finally:
            detector.close()
    return EvalReport(clips=results, stills=still_scores)
