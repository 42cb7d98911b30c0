"""Frames that deserve a reviewer's look, and why: the flags of the review report and of the
review workstation. Read from the record alone; their colours and cards are the report's
(``_charts``, ``_page``) and the app's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from veil.core import CARRIED, FrameMasks, Mask, Origin, iou
from veil.job import AGREE_IOU, Applied, Record

from ._risk import near_threshold

#: Detections under this score are flagged as low confidence.
LOW_SCORE = 0.7
#: Two tracks' detections overlapping this much in one frame: the detector disagrees with itself.
OVERLAP_IOU = 0.3
#: A track's box moving this little overlap between consecutive detections: a jump.
JUMP_IOU = 0.1
#: Residual-risk values at or above this are flagged (when the record carries them).
HIGH_RISK = 0.5
#: A track detected this often, whose last detection lies this far (a share of its size)
#: inside the frame, ends mid-frame: the face went behind something, or the detector lost it.
ENDS_AFTER = 3
ENDS_INSIDE = 0.5


class Reason(StrEnum):
    """Why frames are flagged, most pressing first (the order flags are ranked in). The
    values are the words the report and the app show (and compare equal to them)."""

    POLICY = "policy"
    RESIDUAL_RISK = "residual risk"
    DISAGREEMENT = "detector disagreement"
    TRACK_ENDS = "track ends mid-frame"
    LOW_CONFIDENCE = "low confidence"
    DARK_FRAMES = "dark frames"
    BLURRED_FRAMES = "blurred frames"
    BRIDGED_GAP = "bridged gap"


_RANKS = {reason: rank for rank, reason in enumerate(Reason)}


@dataclass(frozen=True)
class Flag:
    """A run of frames that deserves a look, for one reason (and one track, when it has one)."""

    reason: Reason
    first: int
    last: int
    track: int | None
    detail: str

    @property
    def rank(self) -> int:
        return _RANKS[self.reason]


def frame_runs(frames: Iterable[int], join: int = 1) -> list[tuple[int, int]]:
    """``frames`` as runs (first, last); frames up to ``join`` apart run on (a detection
    stride of n leaves n - 1 frames undetected between detections)."""
    out: list[tuple[int, int]] = []
    for i in sorted(set(frames)):
        if out and i <= out[-1][1] + join:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def _frame_size(record: Record) -> tuple[int, int]:
    """The frame's stored size as the record's input block says (0, 0 when it does not)."""
    video = record.input.get("video", {})
    return int(video.get("width") or 0), int(video.get("height") or 0)


def find_flags(
    record: Record,
    finals: Sequence[FrameMasks],
    applied: Applied,
    risk: dict[int, float],
    block: dict[str, Any] | None = None,
) -> list[Flag]:
    """Frames that deserve a look: policy, residual risk, detector disagreement, tracks that
    end inside the picture, low confidence, dark frames, gaps the tracker bridged where the
    detector lost a face (not those between two detections that agree: the stride's, or a
    one-frame miss). Consecutive frames for one reason form one flag."""
    flags: list[Flag] = []
    stride = int(record.detector.get("stride", 1))
    for first, last in frame_runs(record.policy):
        flags.append(Flag(Reason.POLICY, first, last, None, record.policy[first]))
    for first, last in frame_runs(i for i, r in risk.items() if r >= HIGH_RISK):
        peak = max(risk[i] for i in range(first, last + 1) if i in risk)
        flags.append(
            Flag(Reason.RESIDUAL_RISK, first, last, None, f"estimated risk up to {peak:.2f}")
        )
    near = near_threshold(block)
    for first, last in frame_runs(near, stride):
        best = max(near[i] for i in range(first, last + 1) if i in near)
        flags.append(
            Flag(
                Reason.RESIDUAL_RISK,
                first,
                last,
                None,
                f"detections under the track threshold (best score {best:.2f}) continued no "
                "track: a face the detector half-saw, or a false alarm",
            )
        )

    for key, reason, detail in (
        ("dark_frames", Reason.DARK_FRAMES,
         "a dark or flat picture: every detector measured lost faces in such frames"),
        ("blurred_frames", Reason.BLURRED_FRAMES,
         "the picture lost the detail its shot had (a whip pan, a focus hunt): faces blur "
         "past the detector there"),
    ):  # fmt: skip
        runs = (block or {}).get(key)
        for run in runs.get("list", []) if isinstance(runs, dict) else []:
            flags.append(Flag(reason, int(run["first"]), int(run["last"]), None, detail))

    detected: dict[int, list[tuple[int, Mask]]] = {}
    overlap: dict[tuple[int, int], list[int]] = {}
    low: dict[int, list[tuple[int, float]]] = {}
    for frame in record.frames:
        masks = [
            m
            for m in frame.masks
            if m.origin is Origin.DETECTED and m.track not in applied.suppressed
        ]
        for m in masks:
            detected.setdefault(m.track, []).append((frame.index, m))
            if m.score < LOW_SCORE:
                low.setdefault(m.track, []).append((frame.index, m.score))
        for i, a in enumerate(masks):
            for b in masks[i + 1 :]:
                if a.track != b.track and iou(a.box, b.box) >= OVERLAP_IOU:
                    overlap.setdefault((a.track, b.track), []).append(frame.index)
    for (ta, tb), frames in overlap.items():
        for first, last in frame_runs(frames):
            flags.append(
                Flag(
                    Reason.DISAGREEMENT,
                    first,
                    last,
                    ta,
                    f"tracks {ta} and {tb} overlap: one face detected twice, or two faces merged",
                )
            )
    for track, points in detected.items():
        for (f0, m0), (f1, m1) in itertools.pairwise(points):
            if f1 == f0 + 1 and iou(m0.box, m1.box) < JUMP_IOU:
                flags.append(
                    Flag(
                        Reason.DISAGREEMENT,
                        f0,
                        f1,
                        track,
                        f"track {track}'s box jumps between frames {f0} and {f1}",
                    )
                )
        if len(points) <= 2:
            flags.append(
                Flag(
                    Reason.DISAGREEMENT,
                    points[0][0],
                    points[-1][0],
                    track,
                    f"track {track} is detected in only {len(points)} frame(s): "
                    "a false positive, or a face the detector barely sees",
                )
            )
    for track, scores in low.items():
        for first, last in frame_runs((i for i, _ in scores), stride):
            worst = min(s for i, s in scores if first <= i <= last)
            flags.append(
                Flag(
                    Reason.LOW_CONFIDENCE,
                    first,
                    last,
                    track,
                    f"track {track} detected with score down to {worst:.2f}",
                )
            )
    width, height = _frame_size(record)
    cuts = {f.index for f in record.frames if f.cut}
    ends = {track: points[-1] for track, points in detected.items() if len(points) >= ENDS_AFTER}
    for track, (index, mask) in ends.items():
        x0, y0, x1, y1 = mask.box
        inside = ENDS_INSIDE * max(x1 - x0, y1 - y0)
        if width and (x0 < inside or y0 < inside or x1 > width - inside or y1 > height - inside):
            continue  # left through the frame's edge
        lead_out = record.tracker.lead_out
        if index + lead_out >= len(record.frames) - 1 or cuts & set(
            range(index + 1, index + lead_out + 2)
        ):
            continue  # the video or the shot ends
        flags.append(
            Flag(
                Reason.TRACK_ENDS,
                index,
                min(index + lead_out + 1, len(record.frames) - 1),
                track,
                f"track {track} is last detected in frame {index}, inside the picture: the "
                "face went behind something, turned away, or the detector lost it",
            )
        )
    bridged: dict[int, list[int]] = {}
    for frame in finals:
        seen = {m.track for m in frame.masks if m.origin is Origin.DETECTED}
        for m in frame.masks:
            if m.origin in CARRIED and m.track not in seen:
                bridged.setdefault(m.track, []).append(frame.index)
    for track, frames in bridged.items():
        sightings = dict(detected.get(track, []))
        for first, last in frame_runs(frames):
            n = last - first + 1
            before, after = sightings.get(first - 1), sightings.get(last + 1)
            if n < stride or (
                n == 1 and before and after and iou(before.box, after.box) >= AGREE_IOU
            ):
                continue  # between two detections that agree: nothing was lost there
            flags.append(
                Flag(
                    Reason.BRIDGED_GAP,
                    first,
                    last,
                    track,
                    f"track {track} not detected for {n} frame{'s' * (n > 1)}; the tracker "
                    "interpolated its box",
                )
            )
    return sorted(flags, key=lambda f: (f.first, f.rank, f.track or 0))
