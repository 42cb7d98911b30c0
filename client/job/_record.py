"""The detection record: what was masked in every frame and why (JSON, schema in protos/)."""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import os
import tempfile
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, overload

import jsonschema

from veil.core import CARRIED, Box, FrameMasks, Mask, Origin, OutputError, RecordError, iou
from veil.media import partial_path
from veil.track import TrackerConfig

SCHEMA = "veil.record/1"

#: The largest record file read. A detection run writes about 100 bytes a frame and face
#: (an hour of a ten-face crowd at 30 fps: 90 MB); larger is refused before it is read.
MAX_RECORD_BYTES = 1 << 30
#: The deepest nesting of arrays and objects a record may hold (a record needs 7 levels).
MAX_RECORD_DEPTH = 64
#: How far a coordinate (box corner, landmark, camera motion) may lie from the frame's
#: origin, in frame sizes (the longer side): a face partly outside the frame reaches a little
#: beyond it; ten frame sizes off is no face of this video.
BOX_REACH = 10
#: The frame side assumed when a record does not say its video's size (FFmpeg's limit).
_FALLBACK_SIDE = 1 << 16


@cache
def load_schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped in ``veil.v1`` (``record`` or ``manifest``)."""
    text = resources.files("veil.v1").joinpath(f"{name}.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate(document: Any, name: str, source: str) -> None:
    """Check ``document`` against a shipped schema; the error names the first bad place."""
    validator = jsonschema.Draft202012Validator(load_schema(name))
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise RecordError(f"{source}: not a valid {name} at {where}: {error.message}")


def _check_tree(document: Any, source: str) -> None:
    """Refuse nesting deeper than :data:`MAX_RECORD_DEPTH` and any number that is not finite
    (NaN, Infinity, or a literal too large for a float), wherever it is."""
    if not isinstance(document, dict | list):
        return
    containers, isfinite = (dict, list), math.isfinite  # (a tuple: faster than a union)
    stack: list[tuple[Any, int]] = [(document, 0)]
    while stack:  # depth first, no paths kept: one record can hold millions of values
        node, depth = stack.pop()
        if depth >= MAX_RECORD_DEPTH:
            where = _place(document, _path_to(document, node))
            raise RecordError(f"{source}: nested deeper than {MAX_RECORD_DEPTH} levels at {where}")
        for value in node.values() if isinstance(node, dict) else node:
            if isinstance(value, containers):
                stack.append((value, depth + 1))
            elif isinstance(value, float) and not isfinite(value):
                items = node.items() if isinstance(node, dict) else enumerate(node)
                key = next(k for k, v in items if v is value)
                where = _place(document, (*_path_to(document, node), key))
                raise RecordError(f"{source}: {where}: {value} is not a finite number")


def _path_to(document: Any, target: Any) -> tuple[Any, ...]:
    """The keys that lead from ``document`` to the container ``target`` (found by identity)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(document, ())]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if len(path) < MAX_RECORD_DEPTH:
            for key, value in node.items() if isinstance(node, dict) else enumerate(node):
                if isinstance(value, dict | list):
                    stack.append((value, (*path, key)))
    return ()


def _place(document: Any, path: tuple[Any, ...]) -> str:
    """Where ``path`` is, for people: the frame index and track of a mask, and the path."""
    where = "/".join(str(p) for p in path) or "(top level)"
    try:
        if path[0] == "frames" and len(path) >= 2:
            frame = document["frames"][path[1]]
            if len(path) >= 4 and path[2] == "masks":
                track = frame["masks"][path[3]]["track"]
                return f"frame {frame['index']}, track {track} ({where})"
            return f"frame {frame['index']} ({where})"
    except (LookupError, TypeError):
        pass
    return where


def coordinate_reach(input_identity: dict[str, Any]) -> float:
    """The largest magnitude a coordinate of a record for this input may have (see
    :data:`BOX_REACH`), from the video size its ``input`` block lists."""
    video = input_identity.get("video")
    sides = [video.get(k) for k in ("width", "height")] if isinstance(video, dict) else []
    known = [v for v in sides if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return float(BOX_REACH * (max(known) if known else _FALLBACK_SIDE))


def box_problem(box: Sequence[float], reach: float) -> str | None:
    """Why ``box`` (x0, y0, x1, y1) cannot be masked, or None: a coordinate that is not a
    finite number or lies beyond ``reach`` (see :func:`coordinate_reach`), or swapped corners
    (which would mask nothing)."""
    if not all(isinstance(v, int) or (isinstance(v, float) and math.isfinite(v)) for v in box):
        return "holds a value that is not a finite number"
    if any(abs(v) > reach for v in box):
        return f"lies beyond {reach:g} pixels of the frame's origin ({BOX_REACH} frame sizes)"
    x0, y0, x1, y1 = box
    if x1 < x0 or y1 < y0:
        return "has its corners swapped (needs x0 <= x1 and y0 <= y1)"
    return None


def _check_frame(entry: dict[str, Any], reach: float, source: str) -> None:
    """Every mask of a frame entry can be drawn: boxes whole, ordered and near the frame."""
    where = f"{source}: frame {entry['index']}"
    for mask in entry["masks"]:
        problem = box_problem(mask["box"], reach)
        if problem is not None:
            raise RecordError(f"{where}, track {mask['track']}: box {mask['box']} {problem}")
        for point in mask.get("landmarks") or ():
            if any(abs(v) > reach for v in point):
                raise RecordError(
                    f"{where}, track {mask['track']}: landmark {point} lies beyond {reach:g} "
                    "pixels of the frame's origin"
                )
    if any(abs(v) > reach for v in entry.get("motion", ())):
        raise RecordError(f"{where}: camera motion {entry['motion']} is beyond {reach:g} pixels")


def _check_edits(edits: list[dict[str, Any]], reach: float, source: str) -> None:
    """Every manual box in the edit log can be drawn (see :func:`box_problem`)."""
    for position, edit in enumerate(edits, start=1):
        for keyframe in edit.get("keyframes", ()):
            problem = box_problem(keyframe["box"], reach)
            if problem is not None:
                raise RecordError(
                    f"{source}: edit #{position}, track {edit.get('track')}, frame "
                    f"{keyframe['frame']}: box {keyframe['box']} {problem}"
                )


def _dumps(document: Any) -> bytes:
    """Compact JSON, UTF-8: the encoding of every record and manifest."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _encode(document: dict[str, Any]) -> bytes:
    return _dumps(document) + b"\n"


def _write_atomic(path: Path, chunks: Iterable[bytes]) -> str:
    """Write ``chunks`` under a temp name, fsync, then rename; returns their sha256.

    Nothing is left behind if writing (or producing a chunk) fails: ``path`` is either the
    whole new file or untouched.
    """
    digest = hashlib.sha256()
    tmp = partial_path(path)
    try:
        with tmp.open("wb") as fh:
            for chunk in chunks:
                digest.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def write_json_atomic(path: Path, document: dict[str, Any]) -> bytes:
    """Write ``document`` as compact JSON under a temp name, then rename; returns the bytes."""
    data = _encode(document)
    _write_atomic(path, [data])
    return data


def _frame_entry(frame: FrameMasks, policy: str | None = None) -> dict[str, Any]:
    """One frame as the record lists it (``policy``: why it is masked whole, if it is)."""
    entry: dict[str, Any] = {
        "index": frame.index,
        "pts": frame.pts,
        "masks": [m.to_json() for m in frame.masks],
    }
    if policy is not None:
        entry["policy"] = policy
    if frame.cut:
        entry["cut"] = True
    if frame.motion != (0.0, 0.0):
        entry["motion"] = list(frame.motion)
    return entry


def _frame_from_entry(entry: dict[str, Any]) -> FrameMasks:
    """The frame a record entry lists (its masks in the listed order)."""
    masks = [Mask.from_json(m) for m in entry["masks"]]
    dx, dy = entry.get("motion", (0.0, 0.0))
    return FrameMasks(
        entry["index"], entry["pts"], masks, entry.get("cut", False), (float(dx), float(dy))
    )


class _Counts:
    """What a record's summary counts, frame by frame (its state: the set of track ids)."""

    def __init__(self, frames: Iterable[FrameMasks] = ()) -> None:
        self.frames = self.with_masks = 0
        self.by_origin: dict[str, int] = {}
        self.tracks: set[int] = set()
        for frame in frames:
            self.add(frame)

    def add(self, frame: FrameMasks) -> None:
        self.frames += 1
        self.with_masks += bool(frame.masks)
        for mask in frame.masks:
            self.by_origin[mask.origin.value] = self.by_origin.get(mask.origin.value, 0) + 1
            self.tracks.add(mask.track)


class FrameLog(Sequence[FrameMasks]):
    """Frames kept on disk, not in memory: a record's ``frames`` for videos of any length.

    ``append`` writes the frame's record entry (without ``policy``, which the record holds)
    as one line of compact JSON to an anonymous temporary file and keeps only its offset,
    8 bytes a frame, and the counts a record's summary needs. Reading (by index, or in order,
    which reads ahead in large blocks) parses the entry back. The file goes with ``close`` (or
    the object). One thread at a time may use a log.
    """

    _BLOCK = 1 << 18  # bytes read at once when iterating

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="veil-frames-")  # noqa: SIM115 (closed by close)
        self._offsets = array("q")
        self._end = 0  # bytes written
        self._at_end = True  # the file position is where the next frame goes
        self.counts = _Counts()

    def append(self, frame: FrameMasks) -> None:
        line = _dumps(_frame_entry(frame))
        if not self._at_end:
            self._file.seek(self._end)
            self._at_end = True
        self._file.write(line)
        self._offsets.append(self._end)
        self._end += len(line)
        self.counts.add(frame)

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, index: int) -> FrameMasks: ...
    @overload
    def __getitem__(self, index: slice) -> list[FrameMasks]: ...
    def __getitem__(self, index: int | slice) -> FrameMasks | list[FrameMasks]:
        if isinstance(index, slice):
            return [self[k] for k in range(*index.indices(len(self)))]
        n = len(self._offsets)
        k = index + n if index < 0 else index
        if not 0 <= k < n:
            raise IndexError(f"frame {index} is not in a log of {n} frames")
        start, end = self._span(k)
        return _frame_from_entry(json.loads(self._read(start, end - start)))

    def __iter__(self) -> Iterator[FrameMasks]:
        for line in self.lines():
            yield _frame_from_entry(json.loads(line))

    def lines(self) -> Iterator[bytes]:
        """Each frame's entry as written (compact JSON, no newline), in order."""
        block, at = b"", 0
        k = 0
        while k < len(self._offsets):
            start, end = self._span(k)
            if end > at + len(block):
                block, at = self._read(start, max(end - start, self._BLOCK)), start
            yield block[start - at : end - at]
            k += 1

    def close(self) -> None:
        """Drop the frames (the temporary file has no name: nothing is left on disk)."""
        self._file.close()

    def __enter__(self) -> FrameLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FrameLog: {len(self)} frames{' (closed)' if self._file.closed else ''}>"

    def _span(self, k: int) -> tuple[int, int]:
        end = self._offsets[k + 1] if k + 1 < len(self._offsets) else self._end
        return self._offsets[k], end

    def _read(self, start: int, size: int) -> bytes:
        if self._file.closed:
            raise ValueError("the frame log is closed: its frames are gone")
        self._file.seek(start)  # writes still buffered are flushed first
        self._at_end = False
        return self._file.read(size)


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
    ) -> dict[str, Any]:
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
        unconfirmed: list[dict[str, Any]] = [
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
        hard: dict[str, dict[str, Any]] = {}
        streams = []
        for name, indices in (("dark_frames", dark), ("blurred_frames", blurred)):
            block: dict[str, Any] = {"count": 0, "list": []}
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


def _counted(indices: Iterable[int], block: dict[str, Any]) -> Iterator[int]:
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
) -> dict[str, Any]:
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


@dataclass(kw_only=True)
class Record:
    """A detection record. ``frames`` holds every frame, in presentation order: a list, or a
    :class:`FrameLog` on disk (what a detection run makes); only sequence operations are used.
    """

    veil_version: str
    input: dict[str, Any]
    detector: dict[str, Any]
    tracker: TrackerConfig
    frames: Sequence[FrameMasks]
    policy: dict[int, str] = field(default_factory=dict)
    edits: list[dict[str, Any]] = field(default_factory=list)
    #: Where a reviewer should look (see :func:`residual_risk`); None in older records.
    residual_risk: dict[str, Any] | None = None
    #: Sign-offs (``veil review --serve``): who approved the video rendered from this record
    #: (without its approvals), when, and the output's sha256. Appended, never rewritten.
    approvals: list[dict[str, Any]] = field(default_factory=list)
    #: sha256 of the file this record was read from or last written to.
    file_sha256: str | None = None

    def summary(self) -> dict[str, Any]:
        """Counts over the frames (a :class:`FrameLog` keeps them: its file is not read)."""
        frames = self.frames
        counts = frames.counts if isinstance(frames, FrameLog) else _Counts(frames)
        return {
            "frames": counts.frames,
            "frames_with_masks": counts.with_masks,
            "frames_masked_by_policy": len(self.policy),
            "tracks": len(counts.tracks - {0}),
            "masks_by_origin": dict(sorted(counts.by_origin.items())),
        }

    def _head(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "veil_version": self.veil_version,
            "input": self.input,
            "detector": self.detector,
            "tracker": self.tracker.to_json(),
            "summary": self.summary(),
        }

    def _tail(self) -> dict[str, Any]:
        risk = {} if self.residual_risk is None else {"residual_risk": self.residual_risk}
        approvals = {"approvals": self.approvals} if self.approvals else {}
        return {"edits": self.edits} | risk | approvals

    def _entries(self) -> Iterator[bytes]:
        """Each frame's entry, encoded."""
        if isinstance(self.frames, FrameLog) and not self.policy:
            return self.frames.lines()  # a log's line is the entry of a frame without policy
        return (_dumps(_frame_entry(f, self.policy.get(f.index))) for f in self.frames)

    def to_json(self) -> dict[str, Any]:
        """The whole document in memory (small records; :meth:`write` streams)."""
        frames = [_frame_entry(f, self.policy.get(f.index)) for f in self.frames]
        return self._head() | {"frames": frames} | self._tail()

    def _chunks(self) -> Iterator[bytes]:
        """The canonical bytes (``to_json`` as compact JSON and a newline) in pieces: the head,
        one piece per frame, the tail; never the whole document at once."""
        yield _dumps(self._head())[:-1] + b',"frames":['
        for k, entry in enumerate(self._entries()):
            yield b"," + entry if k else entry
        yield b"]," + _dumps(self._tail())[1:] + b"\n"

    def canonical_bytes(self) -> bytes:
        return b"".join(self._chunks())

    def sha256(self) -> str:
        """The sha256 of the file this record came from, else of its canonical JSON."""
        if self.file_sha256:
            return self.file_sha256
        digest = hashlib.sha256()
        for chunk in self._chunks():
            digest.update(chunk)
        return digest.hexdigest()

    def rendered_sha256(self) -> str:
        """The sha256 of this record's canonical bytes without its approvals: the record an
        approval approves (a later edit changes it, so the approval no longer holds)."""
        return replace(self, approvals=[], file_sha256=None).sha256()

    def write(self, path: Path) -> str:
        """Write atomically, streaming the frames; returns the sha256 of the bytes written."""
        self.file_sha256 = _write_atomic(path, self._chunks())
        return self.file_sha256

    @classmethod
    def from_json(cls, document: Any, source: str = "record") -> Record:
        if isinstance(document, dict) and document.get("schema") not in (None, SCHEMA):
            raise RecordError(
                f"{source}: record schema {document.get('schema')!r} is not supported "
                f"(this veil reads {SCHEMA})"
            )
        _check_tree(document, source)
        validate(document, "record", source)
        reach = coordinate_reach(document["input"])
        _check_edits(document["edits"], reach, source)
        frames, policy = [], {}
        for expected, entry in enumerate(document["frames"]):
            if entry["index"] != expected:
                raise RecordError(
                    f"{source}: frames must be listed in order from 0; "
                    f"found index {entry['index']} at position {expected}"
                )
            _check_frame(entry, reach, source)
            frame = _frame_from_entry(entry)
            frame.masks.sort()
            frames.append(frame)
            if "policy" in entry:
                policy[entry["index"]] = entry["policy"]
        return cls(
            veil_version=document["veil_version"],
            input=document["input"],
            detector=document["detector"],
            tracker=TrackerConfig(**document["tracker"]),
            frames=frames,
            policy=policy,
            edits=list(document["edits"]),
            residual_risk=document.get("residual_risk"),
            approvals=list(document.get("approvals", [])),
        )

    @classmethod
    def load(cls, path: Path) -> Record:
        too_big = RecordError(
            f"{path}: larger than {MAX_RECORD_BYTES:,} bytes, more than a record of any "
            "video holds; refused unread"
        )
        try:
            if path.stat().st_size > MAX_RECORD_BYTES:
                raise too_big
            with path.open("rb") as fh:
                raw = fh.read(MAX_RECORD_BYTES + 1)  # a pipe or device has no size to stat
            if len(raw) > MAX_RECORD_BYTES:
                raise too_big
            text = raw.decode("utf-8")
        except FileNotFoundError as exc:
            raise RecordError(f"{path}: no such record file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise RecordError(f"{path}: cannot read the record ({exc})") from exc
        try:
            document = json.loads(text)
        except RecursionError:
            raise RecordError(
                f"{path}: nested deeper than {MAX_RECORD_DEPTH} levels; not a record"
            ) from None
        except ValueError as exc:  # JSONDecodeError, or an integer literal too long to convert
            raise RecordError(f"{path}: not JSON ({exc})") from exc
        record = cls.from_json(document, str(path))
        record.file_sha256 = hashlib.sha256(raw).hexdigest()
        return record
