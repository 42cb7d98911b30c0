"""Comparing two records (``veil diff``): input, settings, edit logs, and what each masks
in the end, track by track (edits applied, as ``veil render`` draws them)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from veil.core import POLICY_TRACK, Box

from ._documents import JsonObject
from ._edits import Applied, describe
from ._record import Record
from ._replay import final_frames


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


def _flat(prefix: str, value: Any) -> JsonObject:
    if isinstance(value, dict):
        out: JsonObject = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}", v))
        return out
    return {prefix: value}


def _canonical(edit: JsonObject) -> str:
    return json.dumps(edit, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Diff:
    """What changed from record A to record B, as lines for people and a JSON document."""

    lines: list[str]
    document: JsonObject

    @property
    def identical(self) -> bool:
        return not self.lines


def diff(a: Record, b: Record) -> Diff:
    """Compare two records: input, settings, edit logs, and final masks track by track."""
    lines: list[str] = []
    doc: JsonObject = {"settings": {}, "edits": {}, "tracks": {}}
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
