"""Reviewer edits to a detection record, how they change what is masked, and record diffs.

A record's ``frames`` are what the detector and tracker found; they are never rewritten.
Reviewers append edits to the record's ``edits`` log instead (who, when, why, and the record
file they were made on), and every render replays the whole log, in order, on top of the
frames. Three edits exist:

* ``add_boxes``: manual boxes for a track (a new one by default), given as keyframes and
  interpolated linearly between them: a mask in every frame from the first keyframe to the
  last. Manual boxes are evidence, so the tracker's lead-in/lead-out pads them as it pads
  detections.
* ``suppress``: a track the reviewer judged a false positive. Its detections, manual boxes
  and every mask derived from them are dropped. The tracker never removes coverage; this is
  the one way coverage goes, and only as an explicit, logged decision.
* ``grow``: every mask of a track (evidence and derived) grown by a share of its size.
* ``trim``: a track's masks (evidence and derived) kept only from one frame to another: a
  track that ran on past its face (its tracker's lead-out over a wall). Extending a track is
  ``add_boxes`` for it.
* ``reviewed``: frames a person looked at and judged (no track; nothing masked changes): a
  flag of the review is answered, and the log says by whom.

``Replay`` turns a record into final per-frame masks without touching video, so ``render``,
``review`` and ``diff`` all agree on what an edited record masks.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from veil.core import EVIDENCE, POLICY_TRACK, Box, FrameMasks, Mask, Origin, RecordError
from veil.track import Smoother

from ._record import Record, box_problem, coordinate_reach, validate

#: The most a single ``grow`` edit may grow a mask (a share of its width and height).
MAX_GROW = 2.0


@dataclass(frozen=True, kw_only=True)
class Keyframe:
    frame: int
    box: Box


def _check_box(box: Sequence[float], where: str) -> Box:
    if len(box) != 4 or not all(isinstance(v, int | float) for v in box):
        raise RecordError(f"{where}: a box is four numbers x0,y0,x1,y1")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise RecordError(f"{where}: box {list(box)} holds a value that is not a finite number")
    if not (x1 > x0 and y1 > y0):
        raise RecordError(f"{where}: box {list(box)} is empty (needs x1 > x0 and y1 > y0)")
    return (round(x0, 2), round(y0, 2), round(x1, 2), round(y1, 2))


def now() -> str:
    """The edit log's timestamp format: UTC, to the second, RFC 3339."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def interpolate(keyframes: Sequence[Keyframe]) -> Iterator[tuple[int, Box]]:
    """Every frame from the first keyframe to the last, boxes linear between keyframes."""
    points = sorted(keyframes, key=lambda k: k.frame)
    for a, b in itertools.pairwise(points):
        for index in range(a.frame, b.frame):
            t = (index - a.frame) / (b.frame - a.frame)
            yield index, tuple(p + (q - p) * t for p, q in zip(a.box, b.box, strict=True))  # type: ignore[misc]
    yield points[-1].frame, points[-1].box


def grown(box: Box, factor: float) -> Box:
    """``box`` grown about its centre: width and height each by ``factor`` of themselves."""
    gx, gy = (box[2] - box[0]) * factor / 2, (box[3] - box[1]) * factor / 2
    return (box[0] - gx, box[1] - gy, box[2] + gx, box[3] + gy)


@dataclass
class Applied:
    """The net effect of a record's edit log, checked edit by edit, in order."""

    manual: dict[int, list[Mask]] = field(default_factory=dict)  # frame -> manual masks
    suppressed: dict[int, dict[str, Any]] = field(default_factory=dict)  # track -> its edit
    growth: dict[int, float] = field(default_factory=dict)  # track -> total factor
    added: dict[int, dict[str, Any]] = field(default_factory=dict)  # new track -> edit
    trimmed: dict[int, tuple[int, int]] = field(default_factory=dict)  # track -> kept frames
    reviewed: list[dict[str, Any]] = field(default_factory=list)  # the reviewed edits

    @classmethod
    def of(cls, record: Record) -> Applied:
        """Check and apply ``record.edits``; a bad log is a ``RecordError`` naming the edit."""
        applied = cls()
        frames = len(record.frames)
        detected = {m.track for f in record.frames for m in f.masks} - {POLICY_TRACK}
        for position, edit in enumerate(record.edits, start=1):
            where = f"edit #{position}"
            if edit.get("id") != position:
                raise RecordError(
                    f"{where}: edits must be numbered 1, 2, 3, ... in log order "
                    f"(found id {edit.get('id')!r}); the log is appended to, never rewritten"
                )
            action = edit["action"]
            if action == "reviewed":
                if not 0 <= edit["first"] <= edit["last"] < frames:
                    raise RecordError(
                        f"{where}: frames {edit['first']}-{edit['last']} are not a range of "
                        f"the record's {frames} frames"
                    )
                applied.reviewed.append(edit)
                continue
            track: int = edit["track"]
            known = detected | set(applied.added)
            if track == POLICY_TRACK:
                raise RecordError(
                    f"{where}: track 0 is the whole-frame policy mask; it cannot be edited"
                )
            if track in applied.suppressed:
                raise RecordError(
                    f"{where}: track {track} was suppressed by edit "
                    f"#{applied.suppressed[track]['id']}"
                )
            if action == "add_boxes":
                keyframes = [
                    Keyframe(frame=k["frame"], box=_check_box(k["box"], where))
                    for k in edit["keyframes"]
                ]
                indices = [k.frame for k in keyframes]
                if len(set(indices)) != len(indices):
                    raise RecordError(f"{where}: two keyframes for the same frame")
                if max(indices) >= frames:
                    raise RecordError(
                        f"{where}: frame {max(indices)} is past the end (the record has {frames})"
                    )
                if track not in known:
                    applied.added[track] = edit
                if track in applied.trimmed:
                    raise RecordError(
                        f"{where}: track {track} was trimmed; boxes for it outside its frames "
                        "would be trimmed too: add them as a new track"
                    )
                for index, box in interpolate(keyframes):
                    mask = Mask(track=track, origin=Origin.MANUAL, box=box, score=1.0)
                    applied.manual.setdefault(index, []).append(mask)
            elif track not in known:
                raise RecordError(f"{where}: the record has no track {track}")
            elif action == "suppress":
                applied.suppressed[track] = edit
            elif action == "trim":
                first, last = edit["first"], edit["last"]
                if not 0 <= first <= last < frames:
                    raise RecordError(
                        f"{where}: frames {first}-{last} are not a range of the record's "
                        f"{frames} frames"
                    )
                kept = applied.trimmed.get(track, (0, frames - 1))
                if first > kept[1] or last < kept[0]:
                    raise RecordError(
                        f"{where}: frames {first}-{last} lie outside track {track}'s frames "
                        f"{kept[0]}-{kept[1]} as trimmed before: a trim to nothing is a "
                        "suppression (say so with one)"
                    )
                applied.trimmed[track] = (max(first, kept[0]), min(last, kept[1]))
            elif action == "grow":
                factor = float(edit["factor"])
                if not 0 < factor <= MAX_GROW:
                    raise RecordError(f"{where}: grow factor {factor} must be in (0, {MAX_GROW}]")
                applied.growth[track] = (1 + applied.growth.get(track, 0.0)) * (1 + factor) - 1
            else:  # the schema admits no other action
                raise RecordError(f"{where}: unknown action {action!r}")
        return applied

    def _dropped(self, track: int, index: int) -> bool:
        """Whether the edits take ``track``'s masks out of frame ``index``."""
        if track in self.suppressed:
            return True
        kept = self.trimmed.get(track)
        return kept is not None and not kept[0] <= index <= kept[1]

    def listed(self, index: int, masks: Iterable[Mask]) -> list[Mask]:
        """A frame's listed masks after the edits: suppressed tracks (and trimmed ones,
        outside their frames) out, manual boxes in."""
        kept = [m for m in masks if not self._dropped(m.track, index)]
        kept += [m for m in self.manual.get(index, []) if not self._dropped(m.track, index)]
        return sorted(kept)

    def finish(self, index: int, masks: Iterable[Mask]) -> list[Mask]:
        """Frame ``index``'s final masks, grown where a ``grow`` edit says."""
        out = set()
        for m in masks:
            if self._dropped(m.track, index):
                continue
            factor = self.growth.get(m.track)
            if factor:
                m = Mask(
                    track=m.track,
                    origin=m.origin,
                    box=grown(m.box, factor),
                    score=m.score,
                    landmarks=m.landmarks,
                )
            out.add(m)
        return sorted(out)


class Replay:
    """A record's final masks, frame by frame: edits applied, derived masks re-derived.

    Feed frame indices in order with ``push``; frames come back (from ``push`` or ``flush``)
    once the smoother has seen enough frames ahead. The final set of a frame is the union of
    its listed masks and the masks re-derived from evidence, after the edits.
    """

    def __init__(self, record: Record) -> None:
        self._frames = record.frames
        self._edits = Applied.of(record)
        self._smoother = Smoother(record.tracker)

    @property
    def edits(self) -> Applied:
        return self._edits

    def push(self, index: int) -> Iterator[FrameMasks]:
        listed = self._frames[index]
        masks = self._edits.listed(index, listed.masks)
        evidence = [m for m in masks if m.origin in EVIDENCE]
        yield from self._union(
            self._smoother.push(index, listed.pts, evidence, listed.cut, listed.motion)
        )

    def flush(self) -> Iterator[FrameMasks]:
        yield from self._union(self._smoother.flush())

    def _union(self, finals: Iterator[FrameMasks]) -> Iterator[FrameMasks]:
        for final in finals:
            listed = self._edits.listed(final.index, self._frames[final.index].masks)
            masks = self._edits.finish(final.index, set(listed) | set(final.masks))
            yield FrameMasks(final.index, final.pts, masks, final.cut, final.motion)


def final_frames(record: Record) -> list[FrameMasks]:
    """Every frame's final masks, as ``veil render`` of this record draws them."""
    replay = Replay(record)
    out: list[FrameMasks] = []
    for index in range(len(record.frames)):
        out.extend(replay.push(index))
    out.extend(replay.flush())
    return out


# -- making edits ---------------------------------------------------------------------------


def parse_box_spec(spec: str) -> list[Keyframe]:
    """``FRAME:x0,y0,x1,y1`` (one keyframe) or ``FIRST-LAST:x0,y0,x1,y1`` (the same box at
    both ends, so every frame between is covered)."""
    try:
        frames, coords = spec.split(":", 1)
        first, _, last = frames.partition("-")
        box = _check_box([float(v) for v in coords.split(",")], spec)
        ends = sorted({int(first), int(last or first)})
    except ValueError as exc:
        raise RecordError(
            f"--add-box {spec!r}: expected FRAME:x0,y0,x1,y1 or FIRST-LAST:x0,y0,x1,y1 ({exc})"
        ) from exc
    if ends[0] < 0:
        raise RecordError(f"--add-box {spec!r}: frames are numbered from 0")
    return [Keyframe(frame=f, box=box) for f in ends]


def parse_grow_spec(spec: str) -> tuple[int, float]:
    """``TRACK:FACTOR``, e.g. ``3:0.3`` grows track 3's masks by 30 %."""
    try:
        track, factor = spec.split(":", 1)
        return int(track), float(factor)
    except ValueError as exc:
        raise RecordError(f"--grow {spec!r}: expected TRACK:FACTOR, e.g. 3:0.3") from exc


def _next_track(record: Record) -> int:
    used = {m.track for f in record.frames for m in f.masks}
    used |= {e["track"] for e in record.edits if "track" in e}
    return max(used | {POLICY_TRACK}) + 1


def add_edits(
    record: Record,
    *,
    who: str,
    why: str,
    add_boxes: Sequence[Keyframe] = (),
    track: int | None = None,
    suppress: Sequence[int] = (),
    grow: Sequence[tuple[int, float]] = (),
    trim: Sequence[tuple[int, int, int]] = (),
    reviewed: Sequence[tuple[int, int]] = (),
    when: str | None = None,
) -> list[dict[str, Any]]:
    """Append edits to ``record`` (in memory), check the whole log, return the new entries.

    All ``add_boxes`` keyframes form one track: ``track`` if given (an existing track gets
    more evidence), else a new one. Each edit names the record file it was made on
    (``base_sha256``), so the log is a chain back to the detector's record.
    """
    if not who.strip() or not why.strip():
        raise RecordError("an edit needs --who and --why (the log says who decided what, and why)")
    if not (add_boxes or suppress or grow or trim or reviewed):
        raise RecordError("no edit given (--add-box, --suppress, --grow, --trim or --reviewed)")
    common = {"who": who, "when": when or now(), "why": why, "base_sha256": record.sha256()}
    entries: list[dict[str, Any]] = []

    def append(fields: dict[str, Any]) -> None:
        entries.append({"id": len(record.edits) + len(entries) + 1, **fields, **common})

    if add_boxes:
        keyframes = sorted(add_boxes, key=lambda k: k.frame)
        reach = coordinate_reach(record.input)
        for k in keyframes:
            problem = box_problem(k.box, reach)
            if problem is not None:
                raise RecordError(f"--add-box frame {k.frame}: box {list(k.box)} {problem}")
        append(
            {
                "action": "add_boxes",
                "track": _next_track(record) if track is None else track,
                "keyframes": [{"frame": k.frame, "box": list(k.box)} for k in keyframes],
            }
        )
    for t in suppress:
        append({"action": "suppress", "track": t})
    for t, factor in grow:
        append({"action": "grow", "track": t, "factor": factor})
    for t, first, last in trim:
        append({"action": "trim", "track": t, "first": first, "last": last})
    for first, last in reviewed:
        append({"action": "reviewed", "first": first, "last": last})
    candidate = replace(record, edits=record.edits + entries)
    validate(candidate.to_json(), "record", "the edited record")
    Applied.of(candidate)  # the whole log must still apply
    record.edits.extend(entries)
    return entries


def describe(edit: dict[str, Any]) -> str:
    """One line for people: ``#2 suppress track 3 (alice, 2025-01-01T10:00:00Z): reason``."""
    return f"#{edit['id']} {action_text(edit)} ({edit['who']}, {edit['when']}): {edit['why']}"


def action_text(edit: dict[str, Any]) -> str:
    """What an edit does, in a few words: ``suppress track 3``, ``trim track 2 to frames
    4-90``, ``frames 10-20 reviewed``."""
    what = f"{edit['action'].replace('_', ' ')} track {edit.get('track')}"
    if edit["action"] == "add_boxes":
        frames = [k["frame"] for k in edit["keyframes"]]
        what = f"manual boxes for track {edit['track']}, frames {min(frames)}-{max(frames)}"
    elif edit["action"] == "grow":
        what += f" by {edit['factor']:g}"
    elif edit["action"] == "trim":
        what += f" to frames {edit['first']}-{edit['last']}"
    elif edit["action"] == "reviewed":
        what = f"frames {edit['first']}-{edit['last']} reviewed"
    return what


# -- diff -----------------------------------------------------------------------------------


def ranges(indices: Iterable[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` -> ``1-3, 7, 9-10``."""
    out: list[str] = []
    items = sorted(set(indices))
    start = prev = None
    for i in [*items, None]:
        if start is not None and (i is None or i != prev + 1):  # type: ignore[operator]
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = None
        if i is not None and start is None:
            start = i
        prev = i
    return ", ".join(out) or "none"


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}", v))
        return out
    return {prefix: value}


def _canonical(edit: dict[str, Any]) -> str:
    return json.dumps(edit, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Diff:
    """What changed from record A to record B, as lines for people and a JSON document."""

    lines: list[str]
    document: dict[str, Any]

    @property
    def identical(self) -> bool:
        return not self.lines


def diff(a: Record, b: Record) -> Diff:
    """Compare two records: input, settings, edit logs, and final masks track by track."""
    lines: list[str] = []
    doc: dict[str, Any] = {"settings": {}, "edits": {}, "tracks": {}}
    if a.input.get("sha256") != b.input.get("sha256"):
        lines.append(
            f"input: A is for {a.input.get('name')} (sha256 {a.input.get('sha256', '')[:12]}…), "
            f"B for {b.input.get('name')} (sha256 {b.input.get('sha256', '')[:12]}…)"
        )
        doc["input"] = {"a": a.input.get("sha256"), "b": b.input.get("sha256")}
    fa = _flat("detector", a.detector) | _flat("tracker", a.tracker.to_json())
    fb = _flat("detector", b.detector) | _flat("tracker", b.tracker.to_json())
    fa["veil_version"], fb["veil_version"] = a.veil_version, b.veil_version
    for key in sorted(fa.keys() | fb.keys()):
        if fa.get(key) != fb.get(key):
            lines.append(f"{key}: {fa.get(key)!r} -> {fb.get(key)!r}")
            doc["settings"][key] = {"a": fa.get(key), "b": fb.get(key)}

    common = 0
    for ea, eb in zip(a.edits, b.edits, strict=False):
        if _canonical(ea) != _canonical(eb):
            break
        common += 1
    if common < len(a.edits):
        lines.append(
            f"edits: HISTORY REWRITTEN: A's edit log is not a prefix of B's "
            f"(they part at edit #{common + 1}); edits are appended, never changed"
        )
        doc["edits"]["rewritten_from"] = common + 1
        doc["edits"]["only_in_a"] = a.edits[common:]
    for edit in b.edits[common:]:
        lines.append(f"edit added: {describe(edit)}")
    doc["edits"]["only_in_b"] = b.edits[common:]

    raw_changed = [
        i
        for i, (x, y) in enumerate(zip(a.frames, b.frames, strict=False))
        if x.masks != y.masks or x.pts != y.pts
    ]
    if len(a.frames) != len(b.frames):
        lines.append(f"frames: A lists {len(a.frames)}, B lists {len(b.frames)}")
    if raw_changed:
        lines.append(
            f"detections: the listed masks differ in {len(raw_changed)} frames "
            f"({ranges(raw_changed)[:120]})"
        )
    doc["frames_with_different_listed_masks"] = raw_changed

    per_track: dict[str, dict[int, dict[int, Box]]] = {}
    for name, record in (("a", a), ("b", b)):
        tracks: dict[int, dict[int, Box]] = {}
        for frame in final_frames(record):
            for m in frame.masks:
                tracks.setdefault(m.track, {})[frame.index] = m.box
        per_track[name] = tracks
    suppressed_b = Applied.of(b).suppressed
    for track in sorted(per_track["a"].keys() | per_track["b"].keys()):
        ta, tb = per_track["a"].get(track, {}), per_track["b"].get(track, {})
        gone = sorted(ta.keys() - tb.keys())
        new = sorted(tb.keys() - ta.keys())
        moved = sorted(i for i in ta.keys() & tb.keys() if ta[i] != tb[i])
        if not (gone or new or moved):
            continue
        label = "policy (whole frame)" if track == POLICY_TRACK else f"track {track}"
        parts = []
        if gone:
            why = " (suppressed in B)" if track in suppressed_b else ""
            parts.append(f"no longer masked in {len(gone)} frames [{ranges(gone)}]{why}")
        if new:
            parts.append(f"newly masked in {len(new)} frames [{ranges(new)}]")
        if moved:
            parts.append(f"boxes changed in {len(moved)} frames")
        lines.append(f"{label}: " + "; ".join(parts))
        doc["tracks"][str(track)] = {"unmasked": gone, "masked": new, "boxes_changed": moved}
    return Diff(lines=lines, document=doc | {"identical": not lines})
