"""Several face detectors on the same frames, fused into one set of detections.

A fused model is named by its members joined with ``+`` (``"centerface+yunet"``). Each member
runs on the same image; its scores are first put on one shared scale, then the boxes of all
members are clustered (a face two members found is one face) and fused, each fused face
keeping which members found it (``Detections.sources``, bit k for the k-th member).

A member may run at a smaller scale than the detector's ``max_side``: ``yunet@640+yunet``
runs YuNet on the image scaled to fit 640 px and on the full-size image (coarse scales find
large faces in noise that fine scales lose, fine scales find small faces; docs/quality.md).

The shared scale: every model has a calibrated threshold (:data:`CALIBRATION`, measured on the
WIDER stills, docs/quality.md) at which it is as trustworthy as the others at theirs. A
member's score is mapped piecewise-linearly so that its calibrated threshold becomes
:data:`REFERENCE` (0.5), 0 stays 0 and 1 stays 1. A fused ``score_threshold`` of 0.5 thus
runs every member at its calibrated threshold; 0.25 at half of it, and so on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol, cast

import cv2
import numpy as np
import numpy.typing as npt

from veil.core import Detections, DetectorInfo, Image, fit_size, iou_matrix

__all__ = [
    "CALIBRATION",
    "FUSION_IOU",
    "REFERENCE",
    "FusedDetector",
    "fused_score",
    "member_models",
    "members_of",
    "native_threshold",
    "parse_member",
]

REFERENCE = 0.5
"""The fused score a member's calibrated threshold maps to."""

CALIBRATION: dict[str, float] = {
    # Matched on false positives per WIDER still at 640 px (benchmarks/bench_detectors.py,
    # docs/quality.md): centerface 0.4 -> 0.38 a still, yunet 0.65 -> 0.40, scrfd 0.45 -> 0.29.
    "centerface": 0.4,
    "retinaface_mnet025": 0.5,
    "yunet": 0.65,
    "scrfd": 0.45,
}
"""Each model's native score taken as equally trustworthy (see the module docstring)."""

FUSION_IOU = 0.4
"""Boxes of different members overlapping at least this much are one face."""


def parse_member(spec: str) -> tuple[str, int | None]:
    """A member's model and its own detection size: ``"yunet@640"`` -> ``("yunet", 640)``,
    ``"yunet"`` -> ``("yunet", None)`` (the detector's ``max_side``)."""
    name, at, side = spec.partition("@")
    if not at:
        return name, None
    if not side.isdigit() or not 32 <= int(side) <= 8192:
        raise ValueError(f"member {spec!r}: the size after @ must be 32..8192 pixels")
    return name, int(side)


def members_of(model: str) -> list[str]:
    """The members of a fused model name, as written (one name for a plain model)."""
    names = model.split("+")
    if len(names) == 1:
        if "@" in model:
            raise ValueError(f"model {model!r}: a size after @ is for fused members; use max_side")
        return names
    models = [parse_member(name)[0] for name in names]
    if any(m not in CALIBRATION for m in models) or len(set(names)) != len(names):
        raise ValueError(
            f"fused model {model!r}: members must be distinct, calibrated models "
            f"({', '.join(sorted(CALIBRATION))}), each optionally @SIZE"
        )
    return names


def member_models(model: str) -> list[str]:
    """The distinct models a (fused) model name runs, in order: one backend each."""
    return list(dict.fromkeys(parse_member(name)[0] for name in members_of(model)))


def fused_score(native: float, calibration: float) -> float:
    """A member's native score on the shared scale."""
    if native <= calibration:
        return native * REFERENCE / calibration
    return REFERENCE + (native - calibration) * (1 - REFERENCE) / (1 - calibration)


def native_threshold(fused: float, calibration: float) -> float:
    """The member's native threshold that maps to ``fused`` (the inverse of fused_score)."""
    if fused <= REFERENCE:
        return fused * calibration / REFERENCE
    return calibration + (fused - REFERENCE) * (1 - calibration) / (1 - REFERENCE)


class _Member(Protocol):
    @property
    def info(self) -> DetectorInfo: ...

    def detect(
        self, images: Sequence[Image], display_sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]: ...

    def close(self) -> None: ...


class FusedDetector:
    """Runs ``members`` on every image and fuses their detections; a ``veil.Detector``.

    ``score_threshold`` is on the shared scale (the members must have been made to run at
    :func:`native_threshold` of it). Deterministic: members run in order, clusters are formed
    in a fixed order (fused score, then member, then the member's own order).
    """

    def __init__(
        self,
        members: Sequence[_Member],
        *,
        score_threshold: float,
        max_side: int,
        names: Sequence[str] | None = None,
    ) -> None:
        if len(members) < 2:
            raise ValueError("a fused detector needs at least two members")
        self._members = list(members)
        self._max_side = max_side
        self._calibration = [CALIBRATION[m.info.model] for m in self._members]
        infos = [m.info for m in self._members]
        if names is None:
            names = [i.model for i in infos]
        if any(i.max_side > max_side for i in infos) or len(names) != len(infos):
            raise ValueError(f"each member needs a name and a size <= max_side {max_side}")
        identity = "".join(f"{i.model}:{i.weights_sha256}\n" for i in infos)
        licenses = {i.license for i in infos}
        self._info = DetectorInfo(
            model="+".join(names),
            weights_sha256=hashlib.sha256(identity.encode()).hexdigest(),
            backend="+".join(sorted({i.backend for i in infos})),
            execution_provider="+".join(sorted({i.execution_provider for i in infos})),
            max_side=max_side,
            score_threshold=score_threshold,
            nms_threshold=FUSION_IOU,
            license=licenses.pop()
            if len(licenses) == 1
            else "; ".join(f"{i.model}: {i.license or 'unknown'}" for i in infos),
            options={
                "fusion": "score-weighted box fusion of every member's detections",
                "reference_score": REFERENCE,
                "members": [
                    {
                        "name": name,
                        "model": i.model,
                        "max_side": i.max_side,
                        "weights_sha256": i.weights_sha256,
                        "license": i.license,
                        "calibration": c,
                        "score_threshold": i.score_threshold,
                        "nms_threshold": i.nms_threshold,
                        "options": dict(i.options),
                    }
                    for name, i, c in zip(names, infos, self._calibration, strict=True)
                ],
            },
        )

    @property
    def info(self) -> DetectorInfo:
        return self._info

    def detect(
        self, images: Sequence[Image], display_sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        found = [
            m.detect(_scaled(images, display_sizes, m.info.max_side), display_sizes)
            if m.info.max_side < self._max_side
            else m.detect(images, display_sizes)
            for m in self._members
        ]
        return [fuse([f[i] for f in found], self._calibration) for i in range(len(images))]

    def close(self) -> None:
        for member in self._members:
            member.close()

    def __enter__(self) -> FusedDetector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _scaled(
    images: Sequence[Image], display_sizes: Sequence[tuple[int, int]], max_side: int
) -> list[Image]:
    """``images`` (each at ``fit_size`` of its display size and the detector's ``max_side``)
    made to fit a member's smaller ``max_side`` (area interpolation, as frames are scaled)."""
    out = []
    for image, (width, height) in zip(images, display_sizes, strict=True):
        size = fit_size(width, height, max_side)
        if (image.shape[1], image.shape[0]) == size:
            out.append(image)
        else:
            out.append(cast(Image, cv2.resize(image, size, interpolation=cv2.INTER_AREA)))
    return out


def fuse(parts: Sequence[Detections], calibration: Sequence[float]) -> Detections:
    """One frame's detections from every member (in member order), fused.

    Scores go on the shared scale; the highest-scoring box not yet taken leads a cluster of
    every untaken box overlapping it by :data:`FUSION_IOU`; the cluster becomes one face: the
    score-weighted mean box, the best score, the leader's landmarks, and every member that
    had a box in it.
    """
    boxes: list[npt.NDArray[np.float32]] = []
    scores: list[npt.NDArray[np.float32]] = []
    sources: list[npt.NDArray[np.uint32]] = []
    landmarks: list[npt.NDArray[np.float32]] = []
    with_marks = all(p.landmarks is not None for p in parts)
    for k, (part, c) in enumerate(zip(parts, calibration, strict=True)):
        if not len(part):
            continue
        boxes.append(part.boxes)
        scores.append(np.array([fused_score(float(s), c) for s in part.scores], np.float32))
        sources.append(np.full(len(part), 1 << k, np.uint32))
        if with_marks:
            landmarks.append(part.landmarks)  # type: ignore[arg-type]  # with_marks: not None
    if not boxes:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), sources=np.zeros(0, np.uint32)
        )
    b, s, src = np.concatenate(boxes), np.concatenate(scores), np.concatenate(sources)
    marks = np.concatenate(landmarks) if with_marks else None
    order = np.argsort(-s, kind="stable")
    overlap = iou_matrix(b.astype(np.float64), b.astype(np.float64))
    taken = np.zeros(len(b), bool)
    out_boxes, out_scores, out_sources, out_marks = [], [], [], []
    for lead in order:
        if taken[lead]:
            continue
        # the lead is always its own cluster's: a box of no area (a face beyond the frame's
        # edge, clipped) overlaps nothing, itself included, and fused to an empty cluster (a
        # [0, 0, 0, 0] box found by no member, which the record schema rightly refused)
        members = order[~taken[order] & ((overlap[lead, order] >= FUSION_IOU) | (order == lead))]
        taken[members] = True
        weights = s[members] / max(float(s[members].sum()), 1e-9)
        out_boxes.append((b[members] * weights[:, None]).sum(axis=0))
        out_scores.append(s[lead])
        out_sources.append(np.bitwise_or.reduce(src[members]))
        if marks is not None:
            out_marks.append(marks[lead])
    return Detections(
        np.array(out_boxes, np.float32),
        np.array(out_scores, np.float32),
        None if marks is None else np.array(out_marks, np.float32),
        np.array(out_sources, np.uint32),
    )
