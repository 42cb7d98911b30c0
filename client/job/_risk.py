"""The residual risk: where a reviewer should look, derived from a run's evidence.

Counted one frame at a time (``RiskTally``), so a detection run tallies its frames as they
come and an hour of video costs a few numbers per track, not a list of every frame.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

from veil.core import CARRIED, Box, FrameMasks, Origin, iou

from ._documents import JsonObject

#: Most entries each residual-risk list keeps (the counts are always complete).
RISK_LIST_LIMIT = 50
#: Two detections of a track either side of a one-frame gap that overlap this much agree: the
#: gap is no place where the detector lost the face (as the adaptive stride judges frames).
AGREE_IOU = 0.5


class RiskTally:
    """:func:`residual_risk` one frame at a time, for records too long to hold.

    Feed every frame in the record's order with ``add``, then ask for ``report``. The state
    is a few numbers per track, a pair of numbers per run of bridged frames and at most
    :data:`RISK_LIST_LIMIT` listed gaps, whatever the number of frames.

    With a detection ``stride`` n, a gap shorter than n lies between two detections of the
    track that agreed (the frames in it were not sent to the detector, by design): it is not
    a place where the detector lost the face, and is not flagged. Nor is one frame missed
    between two detections that agree (:data:`AGREE_IOU`).
    """

    def __init__(self, stride: int = 1) -> None:
        self._stride = stride
        self._frames = 0
        self._last = 0  # index of the latest frame
        self._open_gap: dict[int, int] = {}  # track -> first frame of its gap
        self._gaps = self._gap_frames = 0
        self._longest: int | None = None
        # The earliest gaps by (first, track, order closed): a heap of (-first, -track, -n, last).
        self._earliest: list[tuple[int, int, int, int]] = []
        # Frame indices inside some gap, as disjoint sorted runs [starts[k], ends[k]].
        self._starts = array("q")
        self._ends = array("q")
        self._detected: dict[int, list[int]] = {}  # track -> its first 3 detected frames
        self._seen: dict[int, Box] = {}  # track -> its latest detected box
        self._before: dict[int, Box | None] = {}  # track -> its detected box before its gap

    def add(self, frame: FrameMasks) -> None:
        self._frames += 1
        self._last = frame.index
        present = set()
        # a track detected in this frame is not in a gap, whatever blend steadies its box
        detected = {m.track: m.box for m in frame.masks if m.origin is Origin.DETECTED}
        for mask in frame.masks:
            if mask.origin in CARRIED and mask.track not in detected:
                present.add(mask.track)
                if mask.track not in self._open_gap:
                    self._open_gap[mask.track] = frame.index
                    self._before[mask.track] = self._seen.get(mask.track)
            elif mask.origin is Origin.DETECTED:
                seen = self._detected.setdefault(mask.track, [])
                if len(seen) <= 2:
                    seen.append(frame.index)
        for track in sorted(set(self._open_gap) - present):
            first, before = self._open_gap.pop(track), self._before.pop(track, None)
            after = detected.get(track)
            if (
                first == frame.index - 1
                and before is not None
                and after is not None
                and iou(before, after) >= AGREE_IOU
            ):
                continue  # one frame missed between two detections that agree
            self._close(track, first, frame.index - 1)
        self._seen.update(detected)

    def _close(self, track: int, first: int, last: int) -> None:
        length = last - first + 1
        if length < self._stride:
            return  # bridged by the stride between two agreeing detections
        self._gaps += 1
        self._gap_frames += length
        self._longest = length if self._longest is None else max(self._longest, length)
        heapq.heappush(self._earliest, (-first, -track, -self._gaps, last))
        if len(self._earliest) > RISK_LIST_LIMIT:
            heapq.heappop(self._earliest)  # the latest by (first, track)
        if length > 0:  # merge [first, last] into the runs (touching runs merge too)
            i = bisect_left(self._ends, first - 1)
            j = bisect_right(self._starts, last + 1)
            if i < j:
                first, last = min(first, self._starts[i]), max(last, self._ends[j - 1])
            self._starts[i:j] = array("q", [first])
            self._ends[i:j] = array("q", [last])

    def _in_gap(self, index: int) -> bool:
        k = bisect_right(self._starts, index) - 1
        return k >= 0 and index <= self._ends[k]

    def report(
        self,
        policy: dict[int, str],
        near_misses: dict[int, tuple[int, float]],
        dark: Iterable[int] = (),
        blurred: Iterable[int] = (),
    ) -> JsonObject:
        """The residual-risk block (see :func:`residual_risk`); call it after the last frame.
        ``dark``, ``blurred``: the dark and the blurred frames' indices in increasing order
        (streamed, never held)."""
        for track, first in sorted(self._open_gap.items()):
            self._close(track, first, self._last)
        self._open_gap.clear()
        gaps = [
            {"track": -track, "first": -first, "last": last}
            for first, track, _, last in sorted(self._earliest, reverse=True)
        ]
        unconfirmed: list[JsonObject] = [
            {"track": t, "frames": idx}
            for t, idx in sorted(self._detected.items())
            if len(idx) <= 2
        ]
        near = [
            {"frame": i, "candidates": n, "best_score": best}
            for i, (n, best) in sorted(near_misses.items())
        ]
        outside = set(near_misses) | set(policy)
        for entry in unconfirmed:
            outside.update(entry["frames"])
        # dark and blurred frames, streamed in increasing order: runs of each (the first
        # RISK_LIST_LIMIT listed), a count, and those no other reason puts up for review
        hard: dict[str, JsonObject] = {}
        streams = []
        for name, indices in (("dark_frames", dark), ("blurred_frames", blurred)):
            block: JsonObject = {"count": 0, "list": []}
            hard[name] = block
            streams.append(_counted(indices, block))
        extra = 0
        last = None
        for i in heapq.merge(*streams):
            if i != last:
                extra += i not in outside and not self._in_gap(i)
            last = i
        in_gaps = sum(e - s + 1 for s, e in zip(self._starts, self._ends, strict=True))
        review = in_gaps + sum(1 for i in outside if not self._in_gap(i)) + extra
        share = review / self._frames if self._frames else 0.0
        level = "high" if share > 0.2 or policy else "medium" if share > 0.02 else "low"
        worst = sorted(near, key=lambda e: (-e["best_score"], e["frame"]))[:RISK_LIST_LIMIT]
        return {
            "near_threshold": {
                "frames": len(near),
                "candidates": sum(e["candidates"] for e in near),
                "worst": sorted(worst, key=lambda e: e["frame"]),
            },
            "bridged_gaps": {
                "count": self._gaps,
                "frames": self._gap_frames,
                "longest": self._longest or 0,
                "list": gaps,
            },
            "unconfirmed_tracks": {
                "count": len(unconfirmed),
                "list": unconfirmed[:RISK_LIST_LIMIT],
            },
            **hard,
            "estimate": {
                "review_frames": review,
                "review_share": round(share, 4),
                "level": level,
                "basis": "frames with near-threshold candidates, bridged gaps, unconfirmed "
                "tracks, dark, flat or blurred pictures or policy masks; the preset's measured "
                "leak rate is in docs/quality.md",
            },
        }


def _counted(indices: Iterable[int], block: JsonObject) -> Iterator[int]:
    """``indices`` (increasing) passed through, counted and listed as runs into ``block``."""
    runs: list[dict[str, int]] = block["list"]
    for i in indices:
        block["count"] += 1
        if runs and runs[-1]["last"] == i - 1:
            runs[-1]["last"] = i
        elif len(runs) < RISK_LIST_LIMIT:  # later runs are counted only
            runs.append({"first": i, "last": i})
        yield i


def residual_risk(
    frames: Iterable[FrameMasks],
    policy: dict[int, str],
    near_misses: dict[int, tuple[int, float]],
    stride: int = 1,
    dark: Iterable[int] = (),
    blurred: Iterable[int] = (),
) -> JsonObject:
    """Where a reviewer should look, derived from the run's evidence (deterministic).

    * ``near_threshold``: frames with detections that scored under the threshold for starting a
      track and continued none (a face the detector half-saw, or a false alarm).
    * ``bridged_gaps``: runs of frames where a track is masked by interpolation or following
      only: the detector lost the face there and the tracker bridged it (runs shorter than
      the detection ``stride`` are the stride's own bridges between agreeing detections, not
      listed).
    * ``unconfirmed_tracks``: tracks detected in at most two frames: the detector disagrees
      with itself from frame to frame there (a face it barely sees, or a false alarm).
    * ``dark_frames``: runs of frames ``dark`` lists (dark or flat pictures, where every
      detector measured lost faces; ``veil.core._detector.is_dark``).
    * ``blurred_frames``: runs of frames ``blurred`` lists (frames that lost the fine detail
      their shot had: a whip pan, a focus hunt; ``veil.track._shots.BlurWatch``).
    * ``estimate``: the frames to review (union of the above and policy frames) and a level.

    The lists keep at most :data:`RISK_LIST_LIMIT` entries; the counts are always complete.
    One pass over ``frames`` (see :class:`RiskTally`).
    """
    tally = RiskTally(stride)
    for frame in frames:
        tally.add(frame)
    return tally.report(policy, near_misses, sorted(set(dark)), sorted(set(blurred)))
