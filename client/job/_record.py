"""The detection record file: what was masked in every frame and why (JSON, schema in
``veil.v1``), written in one stream, read back only after every check has passed.

A record read from a file is refused whole (``RecordError``) when it is too large, nested too
deep, not valid against its schema, or holds a box or coordinate no frame of its video can
have: what ``veil render`` draws is exactly what the record says, or nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from veil.core import FrameMasks, RecordError
from veil.media import write_atomic
from veil.track import TrackerConfig

from ._documents import JsonObject, dumps, validate
from ._framelog import FrameCounts, FrameLog, frame_entry, frame_from_entry

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


def coordinate_reach(input_identity: JsonObject) -> float:
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


def _check_frame(entry: JsonObject, reach: float, source: str) -> None:
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


def _check_edits(edits: list[JsonObject], reach: float, source: str) -> None:
    """Every manual box in the edit log can be drawn (see :func:`box_problem`)."""
    for position, edit in enumerate(edits, start=1):
        for keyframe in edit.get("keyframes", ()):
            problem = box_problem(keyframe["box"], reach)
            if problem is not None:
                raise RecordError(
                    f"{source}: edit #{position}, track {edit.get('track')}, frame "
                    f"{keyframe['frame']}: box {keyframe['box']} {problem}"
                )


@dataclass(kw_only=True)
class Record:
    """A detection record. ``frames`` holds every frame, in presentation order: a list, or a
    :class:`FrameLog` on disk (what a detection run makes); only sequence operations are used.

    The header blocks (``input``, ``detector``) and the logs (``edits``, ``approvals``) are
    the JSON objects the file holds, kept as read, so a record edited and written again
    changes nothing but what was appended; veil builds them typed (``InputIdentity``,
    ``DetectorBlock``, ``Edit``) and reads them back through those classes.
    """

    veil_version: str
    input: JsonObject
    detector: JsonObject
    tracker: TrackerConfig
    frames: Sequence[FrameMasks]
    policy: dict[int, str] = field(default_factory=dict)
    edits: list[JsonObject] = field(default_factory=list)
    #: Where a reviewer should look (see :func:`residual_risk`); None in older records.
    residual_risk: JsonObject | None = None
    #: Sign-offs (``veil review --serve``): who approved the video rendered from this record
    #: (without its approvals), when, and the output's sha256. Appended, never rewritten.
    approvals: list[JsonObject] = field(default_factory=list)
    #: sha256 of the file this record was read from or last written to.
    file_sha256: str | None = None

    def summary(self) -> JsonObject:
        """Counts over the frames (a :class:`FrameLog` keeps them: its file is not read)."""
        frames = self.frames
        counts = frames.counts if isinstance(frames, FrameLog) else FrameCounts(frames)
        return {
            "frames": counts.frames,
            "frames_with_masks": counts.with_masks,
            "frames_masked_by_policy": len(self.policy),
            "tracks": len(counts.tracks - {0}),
            "masks_by_origin": dict(sorted(counts.by_origin.items())),
        }

    def _head(self) -> JsonObject:
        return {
            "schema": SCHEMA,
            "veil_version": self.veil_version,
            "input": self.input,
            "detector": self.detector,
            "tracker": self.tracker.to_json(),
            "summary": self.summary(),
        }

    def _tail(self) -> JsonObject:
        risk = {} if self.residual_risk is None else {"residual_risk": self.residual_risk}
        approvals = {"approvals": self.approvals} if self.approvals else {}
        return {"edits": self.edits} | risk | approvals

    def _entries(self) -> Iterator[bytes]:
        """Each frame's entry, encoded."""
        if isinstance(self.frames, FrameLog) and not self.policy:
            return self.frames.lines()  # a log's line is the entry of a frame without policy
        return (dumps(frame_entry(f, self.policy.get(f.index))) for f in self.frames)

    def to_json(self) -> JsonObject:
        """The whole document in memory (small records; :meth:`write` streams)."""
        frames = [frame_entry(f, self.policy.get(f.index)) for f in self.frames]
        return self._head() | {"frames": frames} | self._tail()

    def _chunks(self) -> Iterator[bytes]:
        """The canonical bytes (``to_json`` as compact JSON and a newline) in pieces: the head,
        one piece per frame, the tail; never the whole document at once."""
        yield dumps(self._head())[:-1] + b',"frames":['
        for k, entry in enumerate(self._entries()):
            yield b"," + entry if k else entry
        yield b"]," + dumps(self._tail())[1:] + b"\n"

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
        self.file_sha256 = write_atomic(path, self._chunks())
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
            frame = frame_from_entry(entry)
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
