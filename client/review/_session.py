"""The review workstation's session (``veil review IN REC --serve``): one reviewer on one
input, its record and the output rendered from it. What the page shows (``state``, frames,
masks, thumbnails) and what the reviewer does (edit, re-render, sign off); ``_server`` serves
it over HTTP.

Every correction goes through the record's edit functions (``veil.job.add_edits``: who,
when, why, appended to the log, never rewriting it) and the record is written atomically
after each, unless another editor changed the file meanwhile; a re-render is ``veil render``
of the edited record; the sign-off is ``_approval.sign_off``. Only the given input, record
and output are read: no path comes from a request.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from http import HTTPStatus
from pathlib import Path
from typing import Any

import cv2
import numpy as np

import veil
from veil.core import FrameMasks, Origin, RecordError, VeilError
from veil.job import (
    Applied,
    Keyframe,
    Record,
    Signer,
    action_text,
    add_edits,
    final_frames,
    manifest_path,
)
from veil.mask import Style, by_track, render_frame
from veil.media import Frames, sha256_file

from ._approval import sign_off
from ._charts import FLAG_COLOURS
from ._flags import find_flags
from ._risk import near_threshold, risk_block, risk_series
from ._tracks import TrackSummary, track_summaries

#: Suppressing a track detected at this score or above is a decision to make twice: the app
#: warns, and the request must say it was confirmed, with a reason of some substance.
CONFIDENT = 0.5
MIN_REASON = 10


def _jpeg(rgb: np.ndarray) -> bytes:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return bytes(data)


class Problem(Exception):
    """A request the app refuses, with its HTTP status and a message for the reviewer."""

    def __init__(self, status: HTTPStatus, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


@dataclass
class ReviewSession:
    """One reviewer's session on one input, its record and the output rendered from it."""

    input: Path
    record_path: Path
    output: Path
    sign_key: Path | None = None
    style: Style = field(default_factory=Style)

    def __post_init__(self) -> None:
        self.token = secrets.token_urlsafe(24)
        self.lock = threading.Lock()
        self.record = Record.load(self.record_path)
        input_sha = sha256_file(self.input)
        if self.record.input.get("sha256") != input_sha:
            raise RecordError(
                f"the record was made for {self.record.input.get('name')!r}, not for "
                f"{self.input.name} (sha256 {input_sha[:12]}…)"
            )
        self._signer = None if self.sign_key is None else Signer.load(self.sign_key)
        dropped = [s["index"] for s in self.record.input.get("dropped_streams", [])]
        self._source = Frames(self.input, [f.pts for f in self.record.frames], dropped)
        self._rendered: Frames | None = None
        self._refresh()

    def close(self) -> None:
        with self.lock:  # after the request being answered
            self._source.close()
            if self._rendered is not None:
                self._rendered.close()

    def _refresh(self) -> None:
        """Recompute what the record masks after its edits (after each change)."""
        self._applied = Applied.of(self.record)
        self._finals: list[FrameMasks] = final_frames(self.record)

    # -- reading ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        record = self.record
        n = len(record.frames)
        block = risk_block(record, {})
        flags = find_flags(record, self._finals, self._applied, risk_series(block, n), block)
        done = [(e["first"], e["last"]) for e in self._applied.reviewed]
        video = record.input.get("video", {})
        rate = Fraction(str(video.get("average_rate") or "25"))
        manifest = self._manifest()
        return {
            "input": self.input.name,
            "record": self.record_path.name,
            "output": self.output.name,
            "frames": n,
            "width": int(video.get("width") or 0),
            "height": int(video.get("height") or 0),
            "fps": float(rate) if rate else 25.0,
            "cuts": [f.index for f in record.frames if f.cut],
            "policy": sorted(record.policy),
            "near": {str(k): v for k, v in near_threshold(block).items()},
            "tracks": [t.to_json() for t in self._tracks()],
            "flags": [
                {
                    "reason": f.reason,
                    "colour": FLAG_COLOURS[f.reason],
                    "first": f.first,
                    "last": f.last,
                    "track": f.track,
                    "detail": f.detail,
                    "reviewed": any(a <= f.first and f.last <= b for a, b in done),
                }
                for f in sorted(flags, key=lambda f: (f.rank, f.first))
            ],
            "edits": [
                {"id": e["id"], "what": action_text(e)} | {k: e[k] for k in ("who", "when", "why")}
                for e in record.edits
            ],
            "approvals": record.approvals,
            "rendered": manifest,
            "current": manifest is not None and manifest["record_sha256"] == record.sha256(),
            "can_sign": self._signer is not None,
            "confident": CONFIDENT,
        }

    def _manifest(self) -> dict[str, Any] | None:
        path = manifest_path(self.output)
        if not (self.output.is_file() and path.is_file()):
            return None
        with contextlib.suppress(OSError, ValueError):
            manifest: dict[str, Any] = json.loads(path.read_text())
            return manifest
        return None

    def _tracks(self) -> list[TrackSummary]:
        return track_summaries(self.record, self._finals, self._applied)

    def masks(self, index: int) -> list[dict[str, Any]]:
        if not 0 <= index < len(self._finals):
            raise Problem(HTTPStatus.NOT_FOUND, f"no frame {index}")
        return [
            {"track": m.track, "origin": str(m.origin), "box": list(m.box), "score": m.score}
            for m in self._finals[index].masks
        ]

    def picture(self, index: int, view: str) -> bytes:
        if view == "output":
            if self._rendered is None:
                if not self.output.is_file():
                    raise Problem(HTTPStatus.NOT_FOUND, "not rendered yet")
                self._rendered = Frames(self.output)
            frames = self._rendered
        elif view in ("original", "masked"):
            frames = self._source
        else:
            raise Problem(HTTPStatus.BAD_REQUEST, f"view {view!r}: original, masked or output")
        try:
            frame = frames.get(index)
        except KeyError:
            raise Problem(HTTPStatus.NOT_FOUND, f"no frame {index}") from None
        if view == "masked":
            groups = by_track(self._finals[index].masks)
            frame = render_frame(frame, groups, self.style, pix_fmt="yuv420p")
        return _jpeg(np.asarray(frame.to_ndarray(format="rgb24"), np.uint8))

    def thumbnail(self, track: int) -> bytes:
        info = next((t for t in self._tracks() if t.id == track), None)
        if info is None:
            raise Problem(HTTPStatus.NOT_FOUND, f"no track {track}")
        index = info.best_frame
        if index is None:
            raise Problem(HTTPStatus.NOT_FOUND, f"track {track} has no frame to show")
        box = next(
            (m.box for m in self.record.frames[index].masks if m.track == track),
            next((m.box for m in self._finals[index].masks if m.track == track), None),
        )
        try:
            rgb = np.asarray(self._source.get(index).to_ndarray(format="rgb24"), np.uint8)
        except KeyError:
            raise Problem(HTTPStatus.NOT_FOUND, f"no frame {index}") from None
        if box is None:
            return _jpeg(rgb)
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = box
        pad = 0.5 * max(x1 - x0, y1 - y0)
        crop = rgb[
            max(0, int(y0 - pad)) : min(h, int(y1 + pad)) + 1,
            max(0, int(x0 - pad)) : min(w, int(x1 + pad)) + 1,
        ]
        if crop.size == 0:  # a manual box off the picture
            crop = rgb
        return _jpeg(cv2.resize(crop, (96, max(1, round(96 * crop.shape[0] / crop.shape[1])))))

    # -- changing ---------------------------------------------------------------------------

    def edit(self, body: dict[str, Any]) -> dict[str, Any]:
        """One reviewer action, appended to the record's edit log; the record is written."""
        who, why, action = str(body.get("who", "")), str(body.get("why", "")), body.get("action")
        try:
            if action == "add_boxes":
                keyframes = [
                    Keyframe(frame=int(k["frame"]), box=_box(k["box"])) for k in body["keyframes"]
                ]
                track = body.get("track")
                add_edits(
                    self.record, who=who, why=why, add_boxes=keyframes,
                    track=None if track is None else int(track),
                )  # fmt: skip
            elif action == "suppress":
                track = int(body["track"])
                best = next((t.best for t in self._tracks() if t.id == track), 0.0)
                self._confirmed(body, why, best, f"suppressing track {track}")
                add_edits(self.record, who=who, why=why, suppress=[track])
            elif action == "trim":
                track, first, last = int(body["track"]), int(body["first"]), int(body["last"])
                cut = max(
                    (m.score for f in self.record.frames if not first <= f.index <= last
                     for m in f.masks if m.track == track and m.origin is Origin.DETECTED),
                    default=0.0,
                )  # fmt: skip
                self._confirmed(body, why, cut, f"trimming track {track} to {first}-{last}")
                add_edits(self.record, who=who, why=why, trim=[(track, first, last)])
            elif action == "grow":
                add_edits(
                    self.record, who=who, why=why,
                    grow=[(int(body["track"]), float(body["factor"]))],
                )  # fmt: skip
            elif action == "reviewed":
                add_edits(
                    self.record, who=who, why=why,
                    reviewed=[(int(body["first"]), int(body["last"]))],
                )  # fmt: skip
            else:
                raise Problem(HTTPStatus.BAD_REQUEST, f"unknown action {action!r}")
        except VeilError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise Problem(
                HTTPStatus.BAD_REQUEST, f"{action}: a field is missing or wrong ({exc})"
            ) from exc
        self._write()
        return self.record.edits[-1]

    def _confirmed(self, body: dict[str, Any], why: str, score: float, what: str) -> None:
        """Unmasking a confident detection (suppressing its track, trimming it away) is asked
        twice, and needs a reason of some substance."""
        if score < CONFIDENT:
            return
        if not body.get("confirm"):
            raise Problem(
                HTTPStatus.CONFLICT,
                f"{what} unmasks a detection scored {score:.2f}: most likely a real face. "
                "Confirm, with the reason it is not a face.",
                warning=True,
            )
        if len(why.strip()) < MIN_REASON:
            raise Problem(
                HTTPStatus.BAD_REQUEST,
                f"unmasking a confident detection needs a reason of at least {MIN_REASON} "
                "characters",
            )

    def _write(self) -> None:
        """Write the edited record, unless the file changed under us (another editor)."""
        on_disk = sha256_file(self.record_path)
        if on_disk != self.record.file_sha256:
            self.record = Record.load(self.record_path)
            self._refresh()
            raise Problem(
                HTTPStatus.CONFLICT,
                f"{self.record_path.name} was changed by someone else since it was read: it is "
                "read again, make the change again",
            )
        self.record.write(self.record_path)
        self._refresh()

    def render(self) -> dict[str, Any]:
        """``veil render`` of the record as it is now, to the session's output."""
        if self._rendered is not None:
            self._rendered.close()
            self._rendered = None
        manifest = veil.render(
            self.input, self.record_path, self.output, style=self.style,
            sign_key=self.sign_key, overwrite=True,
        )  # fmt: skip
        return manifest

    def sign_off(self, body: dict[str, Any]) -> dict[str, Any]:
        if self._signer is None:
            raise Problem(
                HTTPStatus.CONFLICT, "sign-off binds the approval with a signed manifest: "
                "start the app with --sign-key KEY"
            )  # fmt: skip
        approval = sign_off(
            self.input, self.record_path, self.output, manifest_path(self.output), self._signer,
            who=str(body.get("who", "")), statement=str(body.get("statement", "")),
        )  # fmt: skip
        self.record = Record.load(self.record_path)
        self._refresh()
        return approval


def _box(value: Any) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in value)
    return x0, y0, x1, y1
