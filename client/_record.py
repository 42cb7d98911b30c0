"""The detection record: what was masked in every frame and why (JSON, schema in protos/)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from ._errors import OutputError, RecordError
from ._tracker import FrameMasks, Mask, Origin, TrackerConfig

SCHEMA = "veil.record/1"


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


def _encode(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def write_json_atomic(path: Path, document: dict[str, Any]) -> bytes:
    """Write ``document`` as compact JSON under a temp name, then rename; returns the bytes."""
    data = _encode(document)
    tmp = path.with_name(f".{path.name}.veil-partial-{os.getpid()}")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    return data


#: Most entries each residual-risk list keeps (the counts are always complete).
RISK_LIST_LIMIT = 50


def residual_risk(
    frames: list[FrameMasks],
    policy: dict[int, str],
    near_misses: dict[int, tuple[int, float]],
) -> dict[str, Any]:
    """Where a reviewer should look, derived from the run's evidence (deterministic).

    * ``near_threshold``: frames with detections that scored under the threshold for starting a
      track and continued none (a face the detector half-saw, or a false alarm).
    * ``bridged_gaps``: runs of frames where a track is masked by interpolation only: the
      detector lost the face there and the tracker bridged it.
    * ``unconfirmed_tracks``: tracks detected in at most two frames: the detector disagrees
      with itself from frame to frame there (a face it barely sees, or a false alarm).
    * ``estimate``: the frames to review (union of the above and policy frames) and a level.
    """
    gaps: list[dict[str, int]] = []
    open_gap: dict[int, int] = {}
    detected: dict[int, list[int]] = {}
    for frame in frames:
        present = set()
        for mask in frame.masks:
            if mask.origin is Origin.INTERPOLATED:
                present.add(mask.track)
                open_gap.setdefault(mask.track, frame.index)
            elif mask.origin is Origin.DETECTED:
                detected.setdefault(mask.track, []).append(frame.index)
        for track in sorted(set(open_gap) - present):
            gaps.append({"track": track, "first": open_gap.pop(track), "last": frame.index - 1})
    for track, first in sorted(open_gap.items()):
        gaps.append({"track": track, "first": first, "last": frames[-1].index})
    gaps.sort(key=lambda g: (g["first"], g["track"]))
    unconfirmed: list[dict[str, Any]] = [
        {"track": t, "frames": idx} for t, idx in sorted(detected.items()) if len(idx) <= 2
    ]
    near = [
        {"frame": i, "candidates": n, "best_score": best}
        for i, (n, best) in sorted(near_misses.items())
    ]
    review = set(near_misses) | set(policy)
    for gap in gaps:
        review.update(range(gap["first"], gap["last"] + 1))
    for entry in unconfirmed:
        review.update(entry["frames"])
    share = len(review) / len(frames) if frames else 0.0
    level = "high" if share > 0.2 or policy else "medium" if share > 0.02 else "low"
    worst = sorted(near, key=lambda e: (-e["best_score"], e["frame"]))[:RISK_LIST_LIMIT]
    return {
        "near_threshold": {
            "frames": len(near),
            "candidates": sum(e["candidates"] for e in near),
            "worst": sorted(worst, key=lambda e: e["frame"]),
        },
        "bridged_gaps": {
            "count": len(gaps),
            "frames": sum(g["last"] - g["first"] + 1 for g in gaps),
            "longest": max((g["last"] - g["first"] + 1 for g in gaps), default=0),
            "list": gaps[:RISK_LIST_LIMIT],
        },
        "unconfirmed_tracks": {"count": len(unconfirmed), "list": unconfirmed[:RISK_LIST_LIMIT]},
        "estimate": {
            "review_frames": len(review),
            "review_share": round(share, 4),
            "level": level,
            "basis": "frames with near-threshold candidates, bridged gaps, unconfirmed tracks "
            "or policy masks; the preset's measured leak rate is in docs/quality.md",
        },
    }


@dataclass(kw_only=True)
class Record:
    """A detection record in memory. ``frames`` holds every frame, in presentation order."""

    veil_version: str
    input: dict[str, Any]
    detector: dict[str, Any]
    tracker: TrackerConfig
    frames: list[FrameMasks]
    policy: dict[int, str] = field(default_factory=dict)
    edits: list[dict[str, Any]] = field(default_factory=list)
    #: Where a reviewer should look (see :func:`residual_risk`); None in older records.
    residual_risk: dict[str, Any] | None = None
    #: sha256 of the file this record was read from or last written to.
    file_sha256: str | None = None

    def summary(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        tracks = set()
        for frame in self.frames:
            for mask in frame.masks:
                counts[mask.origin.value] = counts.get(mask.origin.value, 0) + 1
                tracks.add(mask.track)
        return {
            "frames": len(self.frames),
            "frames_with_masks": sum(1 for f in self.frames if f.masks),
            "frames_masked_by_policy": len(self.policy),
            "tracks": len(tracks - {0}),
            "masks_by_origin": dict(sorted(counts.items())),
        }

    def to_json(self) -> dict[str, Any]:
        frames = []
        for frame in self.frames:
            entry: dict[str, Any] = {
                "index": frame.index,
                "pts": frame.pts,
                "masks": [m.to_json() for m in frame.masks],
            }
            if frame.index in self.policy:
                entry["policy"] = self.policy[frame.index]
            if frame.cut:
                entry["cut"] = True
            frames.append(entry)
        return {
            "schema": SCHEMA,
            "veil_version": self.veil_version,
            "input": self.input,
            "detector": self.detector,
            "tracker": self.tracker.to_json(),
            "summary": self.summary(),
            "frames": frames,
            "edits": self.edits,
        } | ({} if self.residual_risk is None else {"residual_risk": self.residual_risk})

    def canonical_bytes(self) -> bytes:
        return _encode(self.to_json())

    def sha256(self) -> str:
        """The sha256 of the file this record came from, else of its canonical JSON."""
        return self.file_sha256 or hashlib.sha256(self.canonical_bytes()).hexdigest()

    def write(self, path: Path) -> str:
        """Write atomically; returns the sha256 of the bytes written."""
        self.file_sha256 = hashlib.sha256(write_json_atomic(path, self.to_json())).hexdigest()
        return self.file_sha256

    @classmethod
    def from_json(cls, document: Any, source: str = "record") -> Record:
        if isinstance(document, dict) and document.get("schema") not in (None, SCHEMA):
            raise RecordError(
                f"{source}: record schema {document.get('schema')!r} is not supported "
                f"(this veil reads {SCHEMA})"
            )
        validate(document, "record", source)
        frames, policy = [], {}
        for expected, entry in enumerate(document["frames"]):
            if entry["index"] != expected:
                raise RecordError(
                    f"{source}: frames must be listed in order from 0; "
                    f"found index {entry['index']} at position {expected}"
                )
            masks = sorted(Mask.from_json(m) for m in entry["masks"])
            frames.append(FrameMasks(entry["index"], entry["pts"], masks, entry.get("cut", False)))
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
        )

    @classmethod
    def load(cls, path: Path) -> Record:
        try:
            raw = path.read_bytes()
            text = raw.decode("utf-8")
        except FileNotFoundError as exc:
            raise RecordError(f"{path}: no such record file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise RecordError(f"{path}: cannot read the record ({exc})") from exc
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{path}: not JSON ({exc})") from exc
        record = cls.from_json(document, str(path))
        record.file_sha256 = hashlib.sha256(raw).hexdigest()
        return record
