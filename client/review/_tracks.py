"""Per-track summaries of a record after its edits: what the report draws and cuts thumbnails
from for each track (``TrackView``), and what the review workstation lists (``TrackSummary``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from veil.core import POLICY_TRACK, FrameMasks, Mask, Origin
from veil.job import Applied, Record

from ._flags import frame_runs

#: Which of a track's masks in one frame stands for it (lowest first): a detection (not the
#: blend that steadies it), then what the pixels followed, then what the tracker derived.
_SHOWN_RANK = {
    Origin.DETECTED: 0,
    Origin.MANUAL: 0,
    Origin.POLICY: 0,
    Origin.FOLLOWED: 1,
    Origin.INTERPOLATED: 2,
    Origin.EXTRAPOLATED: 2,
}


@dataclass
class TrackView:
    """One track as the report shows it: its final mask in each frame, or, when a reviewer
    suppressed it, the masks the record lists for it (what would have been masked)."""

    track: int
    frames: dict[int, Mask] = field(default_factory=dict)  # final masks by frame
    suppressed: dict[str, Any] | None = None  # the suppressing edit
    raw: dict[int, Mask] = field(default_factory=dict)  # listed masks (for suppressed tracks)

    @property
    def shown(self) -> dict[int, Mask]:
        return self.raw if self.suppressed else self.frames

    @property
    def evidence(self) -> list[int]:
        """The frames a face was seen in (detected or drawn by a reviewer), in order; all its
        frames when there are none."""
        seen = (Origin.DETECTED, Origin.MANUAL)
        return [i for i, m in sorted(self.shown.items()) if m.origin in seen] or sorted(self.shown)

    @property
    def origins(self) -> dict[str, int]:
        """How many of its frames each origin stands for."""
        counts: dict[str, int] = {}
        for m in self.shown.values():
            counts[m.origin.value] = counts.get(m.origin.value, 0) + 1
        return counts

    @property
    def scores(self) -> list[float]:
        """Its detections' scores."""
        return [m.score for m in self.shown.values() if m.origin is Origin.DETECTED]


def track_views(record: Record, finals: Sequence[FrameMasks], applied: Applied) -> list[TrackView]:
    """Every track but the policy's, masked ones first, each in order of its first frame."""
    tracks: dict[int, TrackView] = {}
    for frame in finals:
        for m in frame.masks:
            if m.track != POLICY_TRACK:
                shown = tracks.setdefault(m.track, TrackView(m.track)).frames
                if (
                    frame.index not in shown
                    or _SHOWN_RANK[m.origin] < _SHOWN_RANK[shown[frame.index].origin]
                ):
                    shown[frame.index] = m
    for track, edit in applied.suppressed.items():
        view = tracks.setdefault(track, TrackView(track))
        view.suppressed = edit
        for frame in record.frames:
            for m in frame.masks:
                if m.track == track:
                    view.raw[frame.index] = m
        for index, masks in applied.manual.items():
            for m in masks:
                if m.track == track:
                    view.raw[index] = m
    return sorted(
        tracks.values(), key=lambda t: (bool(t.suppressed), min(t.shown, default=0), t.track)
    )


@dataclass(frozen=True, kw_only=True)
class TrackSummary:
    """One track as the review workstation lists it (its JSON: ``to_json``)."""

    id: int
    best: float  # its best detection score (3 decimals); 0.0 when never detected
    best_frame: int | None  # where that detection is (its first frame when none is)
    runs: list[tuple[int, int]]  # the frames it is masked in, as runs
    first: int | None
    last: int | None
    suppressed: bool
    manual: bool  # a track a reviewer added

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def track_summaries(
    record: Record, finals: Sequence[FrameMasks], applied: Applied
) -> list[TrackSummary]:
    """Every track masked after the edits, and every suppressed one, by id."""
    frames: dict[int, set[int]] = {}
    for frame in finals:
        for m in frame.masks:
            if m.track != POLICY_TRACK:
                frames.setdefault(m.track, set()).add(frame.index)
    best: dict[int, tuple[float, int]] = {}
    for frame in record.frames:
        for m in frame.masks:
            if m.origin is Origin.DETECTED and (m.track in frames or m.track in applied.suppressed):
                frames.setdefault(m.track, set())
                if m.score > best.get(m.track, (0.0, 0))[0]:
                    best[m.track] = (round(m.score, 3), frame.index)
    out = []
    for track, indices in sorted(frames.items()):
        ordered = sorted(indices)
        first = ordered[0] if ordered else None
        score, where = best.get(track, (0.0, first))
        out.append(
            TrackSummary(
                id=track,
                best=score,
                best_frame=where,
                runs=frame_runs(ordered),
                first=first,
                last=ordered[-1] if ordered else None,
                suppressed=track in applied.suppressed,
                manual=track in applied.added,
            )
        )
    return out
