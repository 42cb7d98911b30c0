"""What the review report says about one record and its input (``Review``), gathered in one
pass over the input: the flags, the tracks, the residual risk, and the pictures cut from the
frames as the output renders them (or unmasked, for authorised reviewers). No HTML here:
``_page`` renders a ``Review``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from veil.core import POLICY_TRACK, Box, FrameMasks, RecordError
from veil.job import Applied, Record, final_frames
from veil.mask import Style, by_track, render_frame
from veil.media import DecodedFrame, Input, VideoInfo, probe, sha256_file

from ._flags import Flag, find_flags
from ._risk import near_threshold, risk_block, risk_series
from ._tracks import TrackView, track_views

#: Flagged runs shown with a picture (all of them are on the timeline).
MAX_FLAG_CARDS = 24


@dataclass(frozen=True, kw_only=True)
class Review:
    """One record and its input, as the report shows them."""

    record: Record
    input_name: str
    finals: list[FrameMasks]  # every frame's masks as the output draws them
    applied: Applied  # the net effect of the edit log
    tracks: list[TrackView]  # in the order shown
    flags: list[Flag]
    carded: list[Flag]  # the flags shown with a picture, by frame
    risk_block: dict[str, Any] | None  # the record's residual-risk block
    risk: dict[int, float]  # per-frame risk values, when the block has them
    near: dict[int, float]  # frames with near-threshold candidates -> best score
    crops: dict[tuple[int, int], str]  # (track, frame) -> JPEG data URI
    pictures: dict[int, str]  # position in ``carded`` -> JPEG data URI
    width: int
    height: int
    time_base: str | None
    rate: float | None  # frames per second, when the record says
    unmasked: bool  # the pictures show faces
    style: Style
    summary: dict[str, Any]  # the record's counts (``Record.summary``)

    @property
    def faces(self) -> list[int]:
        """Faces masked in each frame (the policy's whole-frame masks not counted)."""
        return [sum(1 for m in f.masks if m.track != POLICY_TRACK) for f in self.finals]

    @property
    def flagged_frames(self) -> int:
        return len({i for f in self.flags for i in range(f.first, f.last + 1)})


def gather(
    input_path: Path,
    record: Record,
    *,
    document: dict[str, Any],
    unmasked: bool,
    style: Style,
    thumbnails: int,
) -> Review:
    """The review of ``record`` and its input, up to ``thumbnails`` pictures per track
    (decodes the input once, and checks it is the record's)."""
    input_sha = sha256_file(input_path)
    if record.input.get("sha256") != input_sha:
        raise RecordError(
            f"the record was made for {record.input.get('name')!r}, not for {input_path.name} "
            f"(sha256 {input_sha[:12]}…)"
        )
    applied = Applied.of(record)
    finals = final_frames(record)
    block = risk_block(record, document)
    risk = risk_series(block, len(finals))
    flags = find_flags(record, finals, applied, risk, block)
    tracks = track_views(record, finals, applied)
    carded = sorted(
        sorted(flags, key=lambda f: (f.rank, f.first))[:MAX_FLAG_CARDS],
        key=lambda f: (f.first, f.rank),
    )
    info = probe(input_path, drop=[s["index"] for s in record.input.get("dropped_streams", [])])
    crops, pictures = _cut_pictures(
        input_path, info, record, finals, tracks, carded,
        unmasked=unmasked, style=style, thumbnails=thumbnails,
    )  # fmt: skip
    video = record.input.get("video", {})
    rate = None
    if video.get("average_rate"):
        num, _, den = str(video["average_rate"]).partition("/")
        rate = float(num) / float(den or 1)
    return Review(
        record=record,
        input_name=str(record.input.get("name", input_path.name)),
        finals=finals,
        applied=applied,
        tracks=tracks,
        flags=flags,
        carded=carded,
        risk_block=block,
        risk=risk,
        near=near_threshold(block),
        crops=crops,
        pictures=pictures,
        width=int(video.get("width") or info.width),
        height=int(video.get("height") or info.height),
        time_base=video.get("time_base"),
        rate=rate,
        unmasked=unmasked,
        style=style,
        summary=record.summary(),
    )


def _cut_pictures(
    input_path: Path,
    info: VideoInfo,
    record: Record,
    finals: Sequence[FrameMasks],
    tracks: Sequence[TrackView],
    carded: Sequence[Flag],
    *,
    unmasked: bool,
    style: Style,
    thumbnails: int,
) -> tuple[dict[tuple[int, int], str], dict[int, str]]:
    """Thumbnails of each track's evidence, and a picture of the first frame of each carded
    flag, as JPEG data URIs; every frame's pts is checked against the record's on the way."""
    wanted: dict[int, list[tuple[str, int]]] = {}  # frame -> what to cut from it
    for view in tracks:
        for index in _pick(view.evidence, thumbnails):
            wanted.setdefault(index, []).append(("track", view.track))
    for k, flag in enumerate(carded):
        wanted.setdefault(flag.first, []).append(("flag", k))
    by_id = {view.track: view for view in tracks}
    n = len(finals)
    crops: dict[tuple[int, int], str] = {}
    pictures: dict[int, str] = {}
    with Input(input_path, info) as source:
        count = 0
        for item in source.demux():
            if not isinstance(item, DecodedFrame):
                continue
            count += 1
            if item.index >= n:
                raise RecordError(f"the record lists {n} frames but the input has more")
            if record.frames[item.index].pts != item.frame.pts:
                raise RecordError(
                    f"frame {item.index}: the record says pts {record.frames[item.index].pts}, "
                    f"the input has {item.frame.pts}"
                )
            jobs = wanted.get(item.index)
            if not jobs:
                continue
            masks = finals[item.index].masks
            if unmasked:
                picture = np.asarray(item.frame.to_ndarray(format="rgb24"), np.uint8)
            else:
                drawn = render_frame(item.frame, by_track(masks), style, pix_fmt="yuv420p")
                picture = np.asarray(drawn.to_ndarray(format="rgb24"), np.uint8)
            for kind, key in jobs:
                if kind == "track":
                    box = by_id[key].shown[item.index].box
                    crops[(key, item.index)] = _jpeg(_crop(picture, box), height=208)
                else:
                    pictures[key] = _jpeg(picture, width=min(560, picture.shape[1]))
    if count != n:
        raise RecordError(f"the record lists {n} frames, the input has {count}")
    return crops, pictures


def _jpeg(rgb: npt.NDArray[np.uint8], height: int | None = None, width: int | None = None) -> str:
    h, w = rgb.shape[:2]
    scale = (height / h) if height else (width / w) if width else 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 82]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode()


def _crop(rgb: npt.NDArray[np.uint8], box: Box, context: float = 0.6) -> npt.NDArray[np.uint8]:
    h, w = rgb.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = max(box[2] - box[0], box[3] - box[1]) * (1 + context)
    side = max(side, 24.0)
    x0, x1 = max(0, int(cx - side / 2)), min(w, math.ceil(cx + side / 2))
    y0, y1 = max(0, int(cy - side / 2)), min(h, math.ceil(cy + side / 2))
    if x1 <= x0 or y1 <= y0:
        return rgb[:1, :1]
    return rgb[y0:y1, x0:x1]


def _pick(frames: Sequence[int], n: int) -> list[int]:
    """``n`` of ``frames``, evenly spread, first and last included."""
    if len(frames) <= n:
        return list(frames)
    return (
        [frames[round(k * (len(frames) - 1) / (n - 1))] for k in range(n)] if n > 1 else [frames[0]]
    )
