"""Reviewer edits to a detection record, how they change what is masked, and record diffs.

A record's ``frames`` are what the detector and tracker found; they are never rewritten.
Reviewers append edits to the record's ``edits`` log instead (who, when, why, and the record
file they were made on), and every render replays the whole log, in order, on top of the
frames. The edits:

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

Each entry is an :class:`Edit` while veil makes or applies it; the log keeps the entries as
written (the record's bytes, hence its sha256, never change under a reader). ``_replay`` turns
a record and its log into final per-frame masks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from veil.core import POLICY_TRACK, Box, Mask, Origin, RecordError

from ._documents import JsonObject, validate
from ._record import Record, box_problem, coordinate_reach

#: The most a single ``grow`` edit may grow a mask (a share of its width and height).
MAX_GROW = 2.0


@dataclass(frozen=True, kw_only=True)
class Keyframe:
    frame: int
    box: Box


class Action(StrEnum):
    """What an edit does (the log's ``action``)."""

    ADD_BOXES = "add_boxes"
    SUPPRESS = "suppress"
    GROW = "grow"
    TRIM = "trim"
    REVIEWED = "reviewed"


@dataclass(frozen=True, kw_only=True)
class Edit:
    """One entry of a record's edit log: what it does (``action`` and the fields that action
    takes: ``track``, ``keyframes``, ``factor``, ``first``/``last``), who decided it, when
    (:func:`now`), why, and the sha256 of the record file it was made on (``base_sha256``).
    ``id`` numbers the log's entries from 1, in order."""

    id: int
    action: Action
    track: int | None = None  # every action but reviewed
    keyframes: tuple[Keyframe, ...] = ()  # add_boxes
    factor: float | None = None  # grow
    first: int | None = None  # trim, reviewed
    last: int | None = None
    who: str
    when: str
    why: str
    base_sha256: str

    @classmethod
    def from_json(cls, entry: Mapping[str, Any], where: str = "edit") -> Edit:
        try:
            action = Action(entry["action"])
        except ValueError:  # the schema admits no other action
            raise RecordError(f"{where}: unknown action {entry['action']!r}") from None
        keyframes = tuple(
            Keyframe(frame=k["frame"], box=cast(Box, tuple(k["box"])))
            for k in entry.get("keyframes", ())
        )
        return cls(
            id=entry["id"],
            action=action,
            track=entry.get("track"),
            keyframes=keyframes,
            factor=entry.get("factor"),
            first=entry.get("first"),
            last=entry.get("last"),
            who=entry["who"],
            when=entry["when"],
            why=entry["why"],
            base_sha256=entry["base_sha256"],
        )

    def to_json(self) -> JsonObject:
        entry: JsonObject = {"id": self.id, "action": self.action.value}
        if self.track is not None:
            entry["track"] = self.track
        if self.action is Action.ADD_BOXES:
            entry["keyframes"] = [{"frame": k.frame, "box": list(k.box)} for k in self.keyframes]
        if self.factor is not None:
            entry["factor"] = self.factor
        if self.first is not None:
            entry["first"], entry["last"] = self.first, self.last
        return entry | {
            "who": self.who,
            "when": self.when,
            "why": self.why,
            "base_sha256": self.base_sha256,
        }


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
    suppressed: dict[int, JsonObject] = field(default_factory=dict)  # track -> its edit
    growth: dict[int, float] = field(default_factory=dict)  # track -> total factor
    added: dict[int, JsonObject] = field(default_factory=dict)  # new track -> edit
    trimmed: dict[int, tuple[int, int]] = field(default_factory=dict)  # track -> kept frames
    reviewed: list[JsonObject] = field(default_factory=list)  # the reviewed edits

    @classmethod
    def of(cls, record: Record) -> Applied:
        """Check and apply ``record.edits``; a bad log is a ``RecordError`` naming the edit.
        The tables keep each edit's log entry (as the record holds it), for people to read."""
        applied = cls()
        frames = len(record.frames)
        detected = {m.track for f in record.frames for m in f.masks} - {POLICY_TRACK}
        for position, entry in enumerate(record.edits, start=1):
            where = f"edit #{position}"
            if entry.get("id") != position:
                raise RecordError(
                    f"{where}: edits must be numbered 1, 2, 3, ... in log order "
                    f"(found id {entry.get('id')!r}); the log is appended to, never rewritten"
                )
            edit = Edit.from_json(entry, where)
            if edit.action is Action.REVIEWED:
                if not 0 <= cast(int, edit.first) <= cast(int, edit.last) < frames:
                    raise RecordError(
                        f"{where}: frames {edit.first}-{edit.last} are not a range of "
                        f"the record's {frames} frames"
                    )
                applied.reviewed.append(entry)
                continue
            track = edit.track
            if track is None:  # the schema requires one
                raise RecordError(f"{where}: a {edit.action} edit names no track")
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
            if edit.action is Action.ADD_BOXES:
                applied._add_boxes(entry, edit, track, known, frames, where)
            elif track not in known:
                raise RecordError(f"{where}: the record has no track {track}")
            elif edit.action is Action.SUPPRESS:
                applied.suppressed[track] = entry
            elif edit.action is Action.TRIM:
                applied._trim(track, cast(int, edit.first), cast(int, edit.last), frames, where)
            else:
                factor = float(cast(float, edit.factor))
                if not 0 < factor <= MAX_GROW:
                    raise RecordError(f"{where}: grow factor {factor} must be in (0, {MAX_GROW}]")
                applied.growth[track] = (1 + applied.growth.get(track, 0.0)) * (1 + factor) - 1
        return applied

    def _add_boxes(
        self,
        entry: JsonObject,
        edit: Edit,
        track: int,
        known: set[int],
        frames: int,
        where: str,
    ) -> None:
        keyframes = [Keyframe(frame=k.frame, box=_check_box(k.box, where)) for k in edit.keyframes]
        indices = [k.frame for k in keyframes]
        if len(set(indices)) != len(indices):
            raise RecordError(f"{where}: two keyframes for the same frame")
        if max(indices) >= frames:
            raise RecordError(
                f"{where}: frame {max(indices)} is past the end (the record has {frames})"
            )
        if track not in known:
            self.added[track] = entry
        if track in self.trimmed:
            raise RecordError(
                f"{where}: track {track} was trimmed; boxes for it outside its frames "
                "would be trimmed too: add them as a new track"
            )
        for index, box in interpolate(keyframes):
            mask = Mask(track=track, origin=Origin.MANUAL, box=box, score=1.0)
            self.manual.setdefault(index, []).append(mask)

    def _trim(self, track: int, first: int, last: int, frames: int, where: str) -> None:
        if not 0 <= first <= last < frames:
            raise RecordError(
                f"{where}: frames {first}-{last} are not a range of the record's {frames} frames"
            )
        kept = self.trimmed.get(track, (0, frames - 1))
        if first > kept[1] or last < kept[0]:
            raise RecordError(
                f"{where}: frames {first}-{last} lie outside track {track}'s frames "
                f"{kept[0]}-{kept[1]} as trimmed before: a trim to nothing is a "
                "suppression (say so with one)"
            )
        self.trimmed[track] = (max(first, kept[0]), min(last, kept[1]))

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
) -> list[JsonObject]:
    """Append edits to ``record`` (in memory), check the whole log, return the new entries.

    All ``add_boxes`` keyframes form one track: ``track`` if given (an existing track gets
    more evidence), else a new one. Each edit names the record file it was made on
    (``base_sha256``), so the log is a chain back to the detector's record.
    """
    if not who.strip() or not why.strip():
        raise RecordError("an edit needs --who and --why (the log says who decided what, and why)")
    if not (add_boxes or suppress or grow or trim or reviewed):
        raise RecordError("no edit given (--add-box, --suppress, --grow, --trim or --reviewed)")
    made: list[Edit] = []
    stamp, base = when or now(), record.sha256()

    def append(action: Action, **fields: Any) -> None:
        number = len(record.edits) + len(made) + 1
        made.append(
            Edit(id=number, action=action, who=who, when=stamp, why=why, base_sha256=base, **fields)
        )

    if add_boxes:
        keyframes = sorted(add_boxes, key=lambda k: k.frame)
        reach = coordinate_reach(record.input)
        for k in keyframes:
            problem = box_problem(k.box, reach)
            if problem is not None:
                raise RecordError(f"--add-box frame {k.frame}: box {list(k.box)} {problem}")
        new_track = _next_track(record) if track is None else track
        append(Action.ADD_BOXES, track=new_track, keyframes=tuple(keyframes))
    for t in suppress:
        append(Action.SUPPRESS, track=t)
    for t, factor in grow:
        append(Action.GROW, track=t, factor=factor)
    for t, first, last in trim:
        append(Action.TRIM, track=t, first=first, last=last)
    for first, last in reviewed:
        append(Action.REVIEWED, first=first, last=last)
    entries = [edit.to_json() for edit in made]
    candidate = replace(record, edits=record.edits + entries)
    validate(candidate.to_json(), "record", "the edited record")
    Applied.of(candidate)  # the whole log must still apply
    record.edits.extend(entries)
    return entries


def describe(edit: Mapping[str, Any]) -> str:
    """One line for people: ``#2 suppress track 3 (alice, 2025-01-01T10:00:00Z): reason``.
    Takes a log entry as a record or manifest holds it (whatever veil wrote it)."""
    return f"#{edit['id']} {action_text(edit)} ({edit['who']}, {edit['when']}): {edit['why']}"


def action_text(edit: Mapping[str, Any]) -> str:
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
