"""The review report: one self-contained HTML page about one record and its input.

Pictures first: a timeline of faces per frame and of every track (inline SVG), the tracks with
thumbnails, the frames that deserve a look, then the edit log, parameters and hashes.
Thumbnails are inline JPEG data URIs cut from the frames *as the output renders them*
(masks drawn, reviewer edits applied), unless the report is made ``unmasked`` for
authorised reviewers, which the page then says in red at the top. No script, no external
resource (a Content-Security-Policy forbids any), so the file can be archived and mailed.
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from veil import __version__
from veil.core import (
    CARRIED,
    POLICY_TRACK,
    Box,
    FrameMasks,
    Mask,
    Origin,
    OutputError,
    RecordError,
    iou,
)
from veil.job import AGREE_IOU, Applied, Record, action_text, final_frames, ranges
from veil.mask import Style, render_frame
from veil.media import DecodedFrame, Input, partial_path, probe, sha256_file

#: Detections under this score are flagged as low confidence.
LOW_SCORE = 0.7
#: Two tracks' detections overlapping this much in one frame: the detector disagrees with itself.
OVERLAP_IOU = 0.3
#: A track's box moving this little overlap between consecutive detections: a jump.
JUMP_IOU = 0.1
#: Residual-risk values at or above this are flagged (when the record carries them).
HIGH_RISK = 0.5
#: Flagged runs shown with a picture (all of them are on the timeline).
MAX_FLAG_CARDS = 24

#: Which of a track's masks in one frame stands for it (lowest first).
_SHOWN_RANK = {
    Origin.DETECTED: 0,
    Origin.MANUAL: 0,
    Origin.POLICY: 0,
    Origin.FOLLOWED: 1,
    Origin.INTERPOLATED: 2,
    Origin.EXTRAPOLATED: 2,
}
COLOURS = {
    "detected": "#2563eb",
    "interpolated": "#f59e0b",
    "extrapolated": "#93c5fd",
    "followed": "#0d9488",
    "manual": "#7c3aed",
    "policy": "#dc2626",
    "suppressed": "#9ca3af",
}
FLAG_COLOURS = {
    "policy": "#dc2626",
    "residual risk": "#be123c",
    "detector disagreement": "#db2777",
    "track ends mid-frame": "#9333ea",
    "low confidence": "#ea580c",
    "dark frames": "#4b5563",
    "blurred frames": "#64748b",
    "bridged gap": "#f59e0b",
}
#: A track detected this often, whose last detection lies this far (a share of its size)
#: inside the frame, ends mid-frame: the face went behind something, or the detector lost it.
ENDS_AFTER = 3
ENDS_INSIDE = 0.5
_FLAG_ORDER = list(FLAG_COLOURS)
#: Nothing but inline styles and data: images; the browser refuses anything else.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class Flag:
    """A run of frames that deserves a look, for one reason (and one track, when it has one)."""

    reason: str
    first: int
    last: int
    track: int | None
    detail: str

    @property
    def rank(self) -> int:
        return _FLAG_ORDER.index(self.reason)


def frame_runs(frames: Iterable[int], join: int = 1) -> list[tuple[int, int]]:
    """``frames`` as runs (first, last); frames up to ``join`` apart run on (a detection
    stride of n leaves n - 1 frames undetected between detections)."""
    out: list[tuple[int, int]] = []
    for i in sorted(set(frames)):
        if out and i <= out[-1][1] + join:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def residual_risk(record: Record, document: dict[str, Any]) -> dict[str, Any] | None:
    """The record's optional ``residual_risk`` block, however this veil's Record holds it."""
    block = document.get("residual_risk") or getattr(record, "residual_risk", None)
    if block is None:
        return None
    if hasattr(block, "to_json"):
        block = block.to_json()
    return block if isinstance(block, dict) else {"value": block}


def near_threshold(block: dict[str, Any] | None) -> dict[int, float]:
    """Frames with near-threshold candidates (``near_threshold.worst``) -> best score."""
    near = (block or {}).get("near_threshold")
    if not isinstance(near, dict):
        return {}
    return {
        int(e["frame"]): float(e.get("best_score", 0.0))
        for e in near.get("worst", [])
        if isinstance(e, dict) and isinstance(e.get("frame"), int)
    }


def risk_series(block: dict[str, Any] | None, frames: int) -> dict[int, float]:
    """Per-frame risk values found in a residual-risk block, if it has any.

    Accepts a list of numbers (one per frame) or a list of objects with a frame index
    (``frame`` or ``index``) and a number (``risk``, ``value``, ``p`` or the only number).
    """
    if not block:
        return {}
    for value in block.values():
        if not isinstance(value, list) or not value:
            continue
        if all(isinstance(v, int | float) for v in value) and len(value) == frames:
            return {i: float(v) for i, v in enumerate(value)}
        if all(isinstance(v, dict) for v in value):
            series: dict[int, float] = {}
            for entry in value:
                index = entry.get("frame", entry.get("index"))
                numbers = {
                    k: v
                    for k, v in entry.items()
                    if k not in ("frame", "index", "track") and isinstance(v, int | float)
                }
                number = next(
                    (numbers[k] for k in ("risk", "value", "p", "probability") if k in numbers),
                    next(iter(numbers.values())) if len(numbers) == 1 else None,
                )
                if isinstance(index, int) and number is not None:
                    series[index] = max(series.get(index, 0.0), float(number))
            if series:
                return series
    return {}


def _frame_size(record: Record) -> tuple[int, int]:
    """The frame's stored size as the record's input block says (0, 0 when it does not)."""
    video = record.input.get("video", {})
    return int(video.get("width") or 0), int(video.get("height") or 0)


def find_flags(
    record: Record,
    finals: Sequence[FrameMasks],
    applied: Applied,
    risk: dict[int, float],
    block: dict[str, Any] | None = None,
) -> list[Flag]:
    """Frames that deserve a look: policy, residual risk, detector disagreement, tracks that
    end inside the picture, low confidence, dark frames, gaps the tracker bridged where the
    detector lost a face (not those between two detections that agree: the stride's, or a
    one-frame miss). Consecutive frames for one reason form one flag."""
    flags: list[Flag] = []
    stride = int(record.detector.get("stride", 1))
    for first, last in frame_runs(record.policy):
        flags.append(Flag("policy", first, last, None, record.policy[first]))
    for first, last in frame_runs(i for i, r in risk.items() if r >= HIGH_RISK):
        peak = max(risk[i] for i in range(first, last + 1) if i in risk)
        flags.append(Flag("residual risk", first, last, None, f"estimated risk up to {peak:.2f}"))
    near = near_threshold(block)
    for first, last in frame_runs(near, stride):
        best = max(near[i] for i in range(first, last + 1) if i in near)
        flags.append(
            Flag(
                "residual risk",
                first,
                last,
                None,
                f"detections under the track threshold (best score {best:.2f}) continued no "
                "track: a face the detector half-saw, or a false alarm",
            )
        )

    for key, reason, detail in (
        ("dark_frames", "dark frames",
         "a dark or flat picture: every detector measured lost faces in such frames"),
        ("blurred_frames", "blurred frames",
         "the picture lost the detail its shot had (a whip pan, a focus hunt): faces blur "
         "past the detector there"),
    ):  # fmt: skip
        runs = (block or {}).get(key)
        for run in runs.get("list", []) if isinstance(runs, dict) else []:
            flags.append(Flag(reason, int(run["first"]), int(run["last"]), None, detail))

    detected: dict[int, list[tuple[int, Mask]]] = {}
    overlap: dict[tuple[int, int], list[int]] = {}
    low: dict[int, list[tuple[int, float]]] = {}
    for frame in record.frames:
        masks = [
            m
            for m in frame.masks
            if m.origin is Origin.DETECTED and m.track not in applied.suppressed
        ]
        for m in masks:
            detected.setdefault(m.track, []).append((frame.index, m))
            if m.score < LOW_SCORE:
                low.setdefault(m.track, []).append((frame.index, m.score))
        for i, a in enumerate(masks):
            for b in masks[i + 1 :]:
                if a.track != b.track and iou(a.box, b.box) >= OVERLAP_IOU:
                    overlap.setdefault((a.track, b.track), []).append(frame.index)
    for (ta, tb), frames in overlap.items():
        for first, last in frame_runs(frames):
            flags.append(
                Flag(
                    "detector disagreement",
                    first,
                    last,
                    ta,
                    f"tracks {ta} and {tb} overlap: one face detected twice, or two faces merged",
                )
            )
    for track, points in detected.items():
        for (f0, m0), (f1, m1) in itertools.pairwise(points):
            if f1 == f0 + 1 and iou(m0.box, m1.box) < JUMP_IOU:
                flags.append(
                    Flag(
                        "detector disagreement",
                        f0,
                        f1,
                        track,
                        f"track {track}'s box jumps between frames {f0} and {f1}",
                    )
                )
        if len(points) <= 2:
            flags.append(
                Flag(
                    "detector disagreement",
                    points[0][0],
                    points[-1][0],
                    track,
                    f"track {track} is detected in only {len(points)} frame(s): "
                    "a false positive, or a face the detector barely sees",
                )
            )
    for track, scores in low.items():
        for first, last in frame_runs((i for i, _ in scores), stride):
            worst = min(s for i, s in scores if first <= i <= last)
            flags.append(
                Flag(
                    "low confidence",
                    first,
                    last,
                    track,
                    f"track {track} detected with score down to {worst:.2f}",
                )
            )
    width, height = _frame_size(record)
    cuts = {f.index for f in record.frames if f.cut}
    ends = {track: points[-1] for track, points in detected.items() if len(points) >= ENDS_AFTER}
    for track, (index, mask) in ends.items():
        x0, y0, x1, y1 = mask.box
        inside = ENDS_INSIDE * max(x1 - x0, y1 - y0)
        if width and (x0 < inside or y0 < inside or x1 > width - inside or y1 > height - inside):
            continue  # left through the frame's edge
        lead_out = record.tracker.lead_out
        if index + lead_out >= len(record.frames) - 1 or cuts & set(
            range(index + 1, index + lead_out + 2)
        ):
            continue  # the video or the shot ends
        flags.append(
            Flag(
                "track ends mid-frame",
                index,
                min(index + lead_out + 1, len(record.frames) - 1),
                track,
                f"track {track} is last detected in frame {index}, inside the picture: the "
                "face went behind something, turned away, or the detector lost it",
            )
        )
    bridged: dict[int, list[int]] = {}
    for frame in finals:
        seen = {m.track for m in frame.masks if m.origin is Origin.DETECTED}
        for m in frame.masks:
            if m.origin in CARRIED and m.track not in seen:
                bridged.setdefault(m.track, []).append(frame.index)
    for track, frames in bridged.items():
        sightings = dict(detected.get(track, []))
        for first, last in frame_runs(frames):
            n = last - first + 1
            before, after = sightings.get(first - 1), sightings.get(last + 1)
            if n < stride or (
                n == 1 and before and after and iou(before.box, after.box) >= AGREE_IOU
            ):
                continue  # between two detections that agree: nothing was lost there
            flags.append(
                Flag(
                    "bridged gap",
                    first,
                    last,
                    track,
                    f"track {track} not detected for {n} frame{'s' * (n > 1)}; the tracker "
                    "interpolated its box",
                )
            )
    return sorted(flags, key=lambda f: (f.first, f.rank, f.track or 0))


# -- pictures --------------------------------------------------------------------------------


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
    if len(frames) <= n:
        return list(frames)
    return (
        [frames[round(k * (len(frames) - 1) / (n - 1))] for k in range(n)] if n > 1 else [frames[0]]
    )


@dataclass
class _Track:
    track: int
    frames: dict[int, Mask] = field(default_factory=dict)  # final masks by frame
    suppressed: dict[str, Any] | None = None
    raw: dict[int, Mask] = field(default_factory=dict)  # listed masks (for suppressed tracks)

    @property
    def shown(self) -> dict[int, Mask]:
        return self.raw if self.suppressed else self.frames


# -- the page --------------------------------------------------------------------------------

_CSS = """
:root{--ink:#111827;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc;--card:#fff}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1240px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:22px;margin:0 0 2px}h2{font-size:17px;margin:30px 0 10px}
h3{font-size:14px;margin:0}
.sub{color:var(--muted);font-size:13px}
.mono,code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.banner{padding:10px 14px;border-radius:8px;margin:14px 0;font-weight:600}
.banner.danger{background:#fee2e2;color:#991b1b;border:1px solid #fca5a5}
.banner.safe{background:#ecfdf5;color:#065f46;border:1px solid #a7f3d0;font-weight:500}
.tiles{display:grid;grid-template-columns:repeat(6,1fr);gap:12px;margin:16px 0}
.tile{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.tile .n{font-size:26px;font-weight:650;line-height:1.1}
.tile .l{color:var(--muted);font-size:12px;margin-top:2px}
.tile.warn .n{color:#c2410c}.tile.bad .n{color:#b91c1c}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.legend{display:flex;flex-wrap:wrap;gap:6px 16px;margin-top:8px;font-size:12px;color:#374151}
.legend span{display:inline-flex;align-items:center;gap:6px}
.sw{width:12px;height:12px;border-radius:3px;display:inline-block}
.tracks{display:grid;grid-template-columns:1fr;gap:12px}
.trk{display:grid;grid-template-columns:210px 1fr;gap:16px;align-items:center}
.trk.sup{background:repeating-linear-gradient(135deg,#fff,#fff 10px,#f3f4f6 10px,#f3f4f6 20px)}
.thumbs{display:flex;gap:8px;flex-wrap:wrap}
figure{margin:0;text-align:center}
figure img{height:104px;border-radius:6px;display:block;background:#e5e7eb}
figcaption{font-size:11px;color:var(--muted);margin-top:2px}
.chip{display:inline-block;padding:1px 8px;border-radius:999px;font-size:11px;font-weight:600;
 color:#fff;white-space:nowrap}
.facts{font-size:12px;color:#374151;margin-top:6px}
.facts div{margin:1px 0}
.flags{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:12px}
.flag .pic{position:relative;line-height:0;margin-bottom:8px}
.flag .pic img{width:100%;border-radius:6px}
.flag .pic svg{position:absolute;inset:0;width:100%;height:100%}
.flag .what{font-size:12px;color:#374151;margin-top:4px}
table{border-collapse:collapse;width:100%;font-size:12px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:600}
tr.sup td{background:#fef2f2}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:12px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;margin:0;font-size:12px}
dt{color:var(--muted)}dd{margin:0;word-break:break-all}
.empty{color:var(--muted);font-style:italic}
footer{margin-top:36px;color:var(--muted);font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt_time(frame: int, pts: int | None, time_base: str | None) -> str:
    if pts is None or not time_base:
        return f"frame {frame}"
    num, den = (int(x) for x in time_base.split("/"))
    seconds = pts * num / den
    return f"{int(seconds // 60)}:{seconds % 60:05.2f}"


class _Timeline:
    """The timeline chart: faces per frame, risk, flags, and one lane per track."""

    LEFT, WIDTH, LANE = 92, 1000, 20

    def __init__(self, n: int) -> None:
        self.n = max(n, 1)
        self.parts: list[str] = []
        self.y = 8

    def x(self, frame: float) -> float:
        return self.LEFT + frame / self.n * (self.WIDTH - self.LEFT - 12)

    def label(self, text: str, y: float, *, size: int = 11, weight: int = 500) -> None:
        self.parts.append(
            f'<text x="{self.LEFT - 10}" y="{y:.1f}" text-anchor="end" font-size="{size}" '
            f'font-weight="{weight}" fill="#374151">{_e(text)}</text>'
        )

    def series(
        self,
        name: str,
        values: Sequence[float],
        top: float,
        colour: str,
        height: int,
        fmt: str = "{:.0f}",
    ) -> None:
        y0, y1 = self.y, self.y + height
        self.label(name, y0 + height / 2 + 4)
        self.parts.append(
            f'<rect x="{self.LEFT}" y="{y0}" width="{self.WIDTH - self.LEFT - 12}" '
            f'height="{height}" fill="#f9fafb"/>'
        )
        for level in (0.5, 1.0):
            yy = y1 - level * height
            self.parts.append(
                f'<line x1="{self.LEFT}" x2="{self.WIDTH - 12}" y1="{yy:.1f}" y2="{yy:.1f}" '
                f'stroke="#e5e7eb" stroke-dasharray="3 3"/>'
                f'<text x="{self.WIDTH - 8}" y="{yy + 4:.1f}" font-size="9" fill="#9ca3af">'
                f"{_e(fmt.format(top * level))}</text>"
            )
        points = [f"{self.x(0):.1f},{y1}"]
        for i, v in enumerate(values):
            yy = y1 - (v / top if top else 0) * height
            points.append(f"{self.x(i):.1f},{yy:.1f} {self.x(i + 1):.1f},{yy:.1f}")
        points.append(f"{self.x(len(values)):.1f},{y1}")
        self.parts.append(
            f'<polygon points="{" ".join(points)}" fill="{colour}" fill-opacity="0.28" '
            f'stroke="{colour}" stroke-width="1.2"><title>{_e(name)}</title></polygon>'
        )
        self.y = y1 + 8

    def flags(self, flags: Sequence[Flag]) -> None:
        height = 14
        self.label("flagged", self.y + 11)
        self.parts.append(
            f'<rect x="{self.LEFT}" y="{self.y}" width="{self.WIDTH - self.LEFT - 12}" '
            f'height="{height}" fill="#f9fafb"/>'
        )
        for flag in sorted(flags, key=lambda f: -f.rank):
            x0, x1 = self.x(flag.first), self.x(flag.last + 1)
            self.parts.append(
                f'<rect x="{x0:.1f}" y="{self.y}" width="{max(x1 - x0, 2):.1f}" height="{height}" '
                f'fill="{FLAG_COLOURS[flag.reason]}"><title>{_e(flag.reason)}, frames '
                f"{flag.first}-{flag.last}: {_e(flag.detail)}</title></rect>"
            )
        self.y += height + 10

    def track(self, info: _Track) -> None:
        y, h = self.y, self.LANE - 6
        name = f"track {info.track}" if info.track != POLICY_TRACK else "policy"
        self.label(name, y + h - 3, weight=600)
        self.parts.append(
            f'<rect x="{self.LEFT}" y="{y}" width="{self.WIDTH - self.LEFT - 12}" height="{h}" '
            f'fill="#f9fafb"/>'
        )
        runs: list[tuple[int, int, str]] = []
        for frame in sorted(info.shown):
            origin = "suppressed" if info.suppressed else info.shown[frame].origin.value
            if runs and runs[-1][2] == origin and runs[-1][1] == frame - 1:
                runs[-1] = (runs[-1][0], frame, origin)
            else:
                runs.append((frame, frame, origin))
        for first, last, origin in runs:
            x0, x1 = self.x(first), self.x(last + 1)
            fill = "url(#hatch)" if origin == "suppressed" else COLOURS[origin]
            self.parts.append(
                f'<rect x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1.5):.1f}" height="{h}" '
                f'rx="2" fill="{fill}"><title>track {info.track}: {origin}, frames '
                f"{first}-{last}</title></rect>"
            )
        if info.suppressed:
            self.parts.append(
                f'<text x="{self.x(min(info.shown)) + 4:.1f}" y="{y + h - 3}" font-size="10" '
                f'font-weight="700" fill="#374151">SUPPRESSED by edit #{info.suppressed["id"]}'
                f"</text>"
            )
        self.y += self.LANE

    def axis(self, rate: float | None) -> None:
        y = self.y + 2
        self.parts.append(
            f'<line x1="{self.LEFT}" x2="{self.WIDTH - 12}" y1="{y}" y2="{y}" stroke="#9ca3af"/>'
        )
        step = _nice_step(self.n / 8)
        ticks = list(range(0, self.n + 1, step))
        for f in ticks:
            x = self.x(f)
            when = f" · {f / rate:.1f}s" if rate else ""
            anchor = (
                "start" if f == 0 else "end" if f == ticks[-1] and f > self.n * 0.95 else "middle"
            )
            self.parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + 4}" stroke="#9ca3af"/>'
                f'<text x="{x:.1f}" y="{y + 16}" font-size="10" text-anchor="{anchor}" '
                f'fill="#6b7280">{f}{when}</text>'
            )
        self.label("frame · time", y + 16, size=10)
        self.y = y + 24

    def svg(self) -> str:
        defs = (
            '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
            'patternTransform="rotate(45)"><rect width="6" height="6" fill="#e5e7eb"/>'
            '<line x1="0" y1="0" x2="0" y2="6" stroke="#9ca3af" stroke-width="3"/></pattern></defs>'
        )
        return (
            f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.WIDTH} '
            f'{self.y}" width="100%" role="img" aria-label="timeline of faces per frame">'
            f"{defs}{''.join(self.parts)}</svg>"
        )


def _nice_step(raw: float) -> int:
    if raw <= 1:
        return 1
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return int(m * power)
    return int(10 * power)


def _binned(values: Sequence[float], bins: int = 1000) -> list[float]:
    if len(values) <= bins:
        return list(values)
    size = len(values) / bins
    return [
        max(values[int(k * size) : max(int((k + 1) * size), int(k * size) + 1)])
        for k in range(bins)
    ]


def _score_sparkline(info: _Track, n: int) -> str:
    w, h = 200, 30
    points = [
        f"{i / max(n, 1) * w:.1f},{h - m.score * (h - 4) - 2:.1f}"
        for i, m in sorted(info.shown.items())
        if m.origin in (Origin.DETECTED, Origin.MANUAL)
    ]
    if not points:
        return ""
    return (
        f'<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="score">'
        f'<rect width="{w}" height="{h}" fill="#f9fafb"/>'
        f'<line x1="0" x2="{w}" y1="{h - LOW_SCORE * (h - 4) - 2:.1f}" '
        f'y2="{h - LOW_SCORE * (h - 4) - 2:.1f}" stroke="#fdba74" stroke-dasharray="2 2"/>'
        f'<polyline points="{" ".join(points)}" fill="none" stroke="#2563eb" stroke-width="1.3"/>'
        f"<title>detection score over the video (dashed: {LOW_SCORE})</title></svg>"
    )


def _overlay(masks: Iterable[Mask], width: int, height: int) -> str:
    rects = "".join(
        f'<rect x="{m.box[0]:.1f}" y="{m.box[1]:.1f}" width="{m.box[2] - m.box[0]:.1f}" '
        f'height="{m.box[3] - m.box[1]:.1f}" fill="none" stroke="{COLOURS[m.origin.value]}" '
        f'stroke-width="{max(width, height) / 220:.1f}"><title>track {m.track}, {m.origin.value}, '
        f"score {m.score:.2f}</title></rect>"
        for m in masks
        if m.track != POLICY_TRACK
    )
    return (
        f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none" '
        f'xmlns="http://www.w3.org/2000/svg">{rects}</svg>'
    )


def _dl(items: Iterable[tuple[str, Any]]) -> str:
    return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in items) + "</dl>"


def _risk_section(block: dict[str, Any], charted: bool) -> str:
    """The record's residual-risk block: the estimate first, then each part's counts."""
    estimate = block.get("estimate") if isinstance(block.get("estimate"), dict) else None
    head = ""
    if estimate:
        level = str(estimate.get("level", "?"))
        colour = {"low": "#059669", "medium": "#d97706", "high": "#b91c1c"}.get(level, "#4b5563")
        share = estimate.get("review_share")
        share_text = f" ({share:.1%} of frames)" if isinstance(share, int | float) else ""
        head = (
            f"<p>{_chip(f'residual risk: {level}', colour)} <b>"
            f"{_e(estimate.get('review_frames', '?'))} frames to review</b>{_e(share_text)}</p>"
            f'<p class="sub">{_e(estimate.get("basis", ""))}</p>'
        )
    facts: list[tuple[str, Any]] = []
    for key, value in block.items():
        if key == "estimate":
            continue
        if isinstance(value, dict):
            counts = ", ".join(
                f"{k.replace('_', ' ')} {v}" for k, v in value.items() if isinstance(v, int | float)
            )
            facts.append((key.replace("_", " "), counts or json.dumps(value)[:300]))
        elif not isinstance(value, list):
            facts.append((key.replace("_", " "), value))
    note = ""
    if charted or "near_threshold" in block:
        note = (
            "<p class='sub'>Per-frame values are charted on the timeline; the frames they point "
            "at are flagged below.</p>"
        )
    return f'<h2>Residual risk</h2><div class="card">{head}{_dl(facts)}{note}</div>'


def _chip(text: str, colour: str) -> str:
    return f'<span class="chip" style="background:{colour}">{_e(text)}</span>'


def _track_card(
    info: _Track,
    applied: Applied,
    crops: dict[tuple[int, int], str],
    record: Record,
    time_base: str | None,
    n: int,
) -> str:
    shown = sorted(info.shown)
    origins: dict[str, int] = {}
    for m in info.shown.values():
        origins[m.origin.value] = origins.get(m.origin.value, 0) + 1
    scores = [m.score for m in info.shown.values() if m.origin is Origin.DETECTED]
    span = ranges(shown) if len(shown) < 12 else f"{shown[0]}-{shown[-1]}"
    facts = [f"frames {span}", ", ".join(f"{v} {k}" for k, v in sorted(origins.items()))]
    if scores:
        facts.append(f"score {min(scores):.2f}-{max(scores):.2f}")
    chips = []
    if info.suppressed:
        chips.append(_chip(f"SUPPRESSED · edit #{info.suppressed['id']}", "#4b5563"))
    if info.track in applied.added:
        chips.append(_chip(f"manual · edit #{applied.added[info.track]['id']}", COLOURS["manual"]))
    if info.track in applied.growth:
        chips.append(_chip(f"grown +{applied.growth[info.track]:.0%}", "#0f766e"))
    if scores and min(scores) < LOW_SCORE:
        chips.append(_chip("low confidence", FLAG_COLOURS["low confidence"]))
    note = ""
    if info.suppressed:
        note = (
            f'<div class="facts"><b>Not masked in the output.</b> '
            f"{_e(info.suppressed['who'])}: “{_e(info.suppressed['why'])}”</div>"
        )
    thumbs = "".join(
        f'<figure><img class="thumb" alt="track {info.track}, frame {i}" '
        f'src="{crops[(info.track, i)]}"><figcaption>#{i} · '
        f"{_e(_fmt_time(i, record.frames[i].pts, time_base))}</figcaption></figure>"
        for i in sorted(i for t, i in crops if t == info.track)
    )
    facts_html = "".join(f"<div>{_e(x)}</div>" for x in facts)
    return (
        f'<div class="card trk{" sup" if info.suppressed else ""}" id="track-{info.track}"><div>'
        f'<h3>Track {info.track}</h3><div style="margin:4px 0">{" ".join(chips)}</div>'
        f'<div class="facts">{facts_html}</div>{note}'
        f'<div style="margin-top:6px">{_score_sparkline(info, n)}</div></div>'
        f'<div class="thumbs">{thumbs or "<span class=empty>no frames</span>"}</div></div>'
    )


def _flag_card(
    flag: Flag,
    picture: str | None,
    finals: Sequence[FrameMasks],
    record: Record,
    time_base: str | None,
    width: int,
    height: int,
) -> str:
    span = f"frame {flag.first}" if flag.first == flag.last else f"frames {flag.first}-{flag.last}"
    pic = ""
    if picture:
        overlay = _overlay(finals[flag.first].masks, width, height)
        pic = f'<div class="pic"><img alt="frame {flag.first}" src="{picture}">{overlay}</div>'
    when = _fmt_time(flag.first, record.frames[flag.first].pts, time_base)
    return (
        f'<div class="card flag">{pic}{_chip(flag.reason, FLAG_COLOURS[flag.reason])} '
        f'<b>{_e(span)}</b> <span class="sub">{_e(when)}</span>'
        f'<div class="what">{_e(flag.detail)}</div></div>'
    )


def _edit_row(edit: dict[str, Any]) -> str:
    what = _e(action_text(edit))
    return (
        f'<tr class="{"sup" if edit["action"] == "suppress" else ""}"><td>#{edit["id"]}</td>'
        f'<td>{what}</td><td>{_e(edit["who"])}</td><td class="mono">{_e(edit["when"])}</td>'
        f'<td>{_e(edit["why"])}</td><td class="mono">{_e(edit["base_sha256"][:12])}…</td></tr>'
    )


@dataclass(frozen=True, kw_only=True)
class Report:
    html: str
    flags: list[Flag]
    thumbnails: int


def build_report(
    input_path: Path,
    record: Record,
    *,
    document: dict[str, Any] | None = None,
    unmasked: bool = False,
    style: Style | None = None,
    thumbnails: int = 6,
) -> Report:
    """The report's HTML for ``record`` and its input (decodes the input once)."""
    style = style or Style()
    document = document or {}
    input_sha = sha256_file(input_path)
    if record.input.get("sha256") != input_sha:
        raise RecordError(
            f"the record was made for {record.input.get('name')!r}, not for {input_path.name} "
            f"(sha256 {input_sha[:12]}…)"
        )
    applied = Applied.of(record)
    finals = final_frames(record)
    n = len(finals)
    risk_block = residual_risk(record, document)
    risk = risk_series(risk_block, n)
    flags = find_flags(record, finals, applied, risk, risk_block)

    tracks: dict[int, _Track] = {}
    for frame in finals:
        for m in frame.masks:
            if m.track != POLICY_TRACK:
                shown = tracks.setdefault(m.track, _Track(m.track)).frames
                # a detection stands for its track (not the blend that steadies it), then
                # what the pixels followed, then what the tracker derived
                if (
                    frame.index not in shown
                    or _SHOWN_RANK[m.origin] < _SHOWN_RANK[shown[frame.index].origin]
                ):
                    shown[frame.index] = m
    for track, edit in applied.suppressed.items():
        info = tracks.setdefault(track, _Track(track))
        info.suppressed = edit
        for frame in record.frames:
            for m in frame.masks:
                if m.track == track:
                    info.raw[frame.index] = m
        for index, masks in applied.manual.items():
            for m in masks:
                if m.track == track:
                    info.raw[index] = m
    order = sorted(
        tracks.values(), key=lambda t: (bool(t.suppressed), min(t.shown, default=0), t.track)
    )

    # Which frames to decode, and what to cut from them.
    wanted: dict[int, list[tuple[str, Any]]] = {}
    for info in order:
        evidence = [
            i for i, m in sorted(info.shown.items()) if m.origin in (Origin.DETECTED, Origin.MANUAL)
        ] or sorted(info.shown)
        for index in _pick(evidence, thumbnails):
            wanted.setdefault(index, []).append(("track", info.track))
    shown_flags = sorted(
        sorted(flags, key=lambda f: (f.rank, f.first))[:MAX_FLAG_CARDS],
        key=lambda f: (f.first, f.rank),
    )
    for k, flag in enumerate(shown_flags):
        wanted.setdefault(flag.first, []).append(("flag", k))

    crops: dict[tuple[int, int], str] = {}  # (track, frame) -> data URI
    pictures: dict[int, str] = {}  # flag number -> data URI
    info_v = probe(input_path, drop=[s["index"] for s in record.input.get("dropped_streams", [])])
    with Input(input_path, info_v) as source:
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
                drawn = render_frame(item.frame, [m.box for m in masks], style, pix_fmt="yuv420p")
                picture = np.asarray(drawn.to_ndarray(format="rgb24"), np.uint8)
            for kind, key in jobs:
                if kind == "track":
                    box = tracks[key].shown[item.index].box
                    crops[(key, item.index)] = _jpeg(_crop(picture, box), height=208)
                else:
                    pictures[key] = _jpeg(picture, width=min(560, picture.shape[1]))
    if count != n:
        raise RecordError(f"the record lists {n} frames, the input has {count}")

    video = record.input.get("video", {})
    width, height = (
        int(video.get("width") or info_v.width),
        int(video.get("height") or info_v.height),
    )
    time_base = video.get("time_base")
    rate = None
    if video.get("average_rate"):
        num, _, den = str(video["average_rate"]).partition("/")
        rate = float(num) / float(den or 1)

    # -- timeline
    timeline = _Timeline(n)
    faces = [sum(1 for m in f.masks if m.track != POLICY_TRACK) for f in finals]
    top = max(2, max(faces, default=0))
    timeline.series("faces", _binned([float(v) for v in faces]), float(top), "#2563eb", 54)
    if risk:
        values = [risk.get(i, 0.0) for i in range(n)]
        timeline.series("residual risk", _binned(values), 1.0, "#be123c", 34, "{:.1f}")
    near = near_threshold(risk_block)
    if near:
        values = [near.get(i, 0.0) for i in range(n)]
        timeline.series("near misses", _binned(values), 1.0, "#be123c", 34, "{:.1f}")
    timeline.flags(flags)
    for info in order:
        timeline.track(info)
    timeline.axis(rate)
    legend = "".join(
        f'<span><i class="sw" style="background:{c}"></i>{_e(k)}</span>'
        for k, c in COLOURS.items()
        if k != "suppressed"
    )
    legend += (
        '<span><i class="sw" style="background:repeating-linear-gradient(45deg,#9ca3af,'
        '#9ca3af 2px,#e5e7eb 2px,#e5e7eb 4px)"></i>suppressed by a reviewer</span>'
    )
    legend += "".join(
        f'<span><i class="sw" style="background:{c};border-radius:0"></i>flag: {_e(k)}</span>'
        for k, c in FLAG_COLOURS.items()
    )

    # -- tiles
    summary = record.summary()
    with_faces = sum(1 for v in faces if v)
    suppressed_n = len(applied.suppressed)
    live_tracks = len([t for t in tracks.values() if not t.suppressed])
    flagged_frames = len({i for f in flags for i in range(f.first, f.last + 1)})
    duration = f" · {n / rate:.1f} s" if rate else ""
    tiles = [
        ("", f"{n}", f"frames{duration}"),
        (
            "",
            f"{live_tracks}",
            ("face track" if live_tracks == 1 else "face tracks")
            + " masked"
            + (f" · {suppressed_n} suppressed" if suppressed_n else ""),
        ),
        ("", f"{with_faces / max(n, 1):.0%}", f"of frames have a face ({with_faces})"),
        (
            "warn" if flagged_frames else "",
            f"{flagged_frames}",
            f"frames flagged ({len(flags)} run{'s' * (len(flags) != 1)})",
        ),
        (
            "bad" if record.policy else "",
            f"{summary['frames_masked_by_policy']}",
            "frames masked whole by policy",
        ),
        ("warn" if record.edits else "", f"{len(record.edits)}", "reviewer edits"),
    ]
    tiles_html = "".join(
        f'<div class="tile {cls}"><div class="n">{_e(num)}</div>'
        f'<div class="l">{_e(label)}</div></div>'
        for cls, num, label in tiles
    )

    # -- tracks
    cards = [_track_card(info, applied, crops, record, time_base, n) for info in order]
    tracks_html = "".join(cards) or '<p class="empty">No faces were found or added.</p>'

    # -- flags
    flag_cards = [
        _flag_card(flag, pictures.get(k), finals, record, time_base, width, height)
        for k, flag in enumerate(shown_flags)
    ]
    more = len(flags) - len(shown_flags)
    flags_html = (
        f'<div class="flags">{"".join(flag_cards)}</div>'
        + (
            f'<p class="sub">and {more} more flagged runs, all on the timeline above.</p>'
            if more > 0
            else ""
        )
        if flags
        else '<p class="empty">Nothing flagged: every face was detected with confidence in '
        "every frame.</p>"
    )

    # -- edits
    if record.edits:
        rows = "".join(_edit_row(e) for e in record.edits)
        edits_html = (
            '<div class="card"><table><tr><th>#</th><th>edit</th><th>who</th><th>when (UTC)</th>'
            f"<th>why</th><th>made on record</th></tr>{rows}</table></div>"
        )
    else:
        edits_html = (
            '<p class="empty">No reviewer edits: the output masks what the detector and tracker '
            "found.</p>"
        )

    # -- residual risk
    risk_html = "" if risk_block is None else _risk_section(risk_block, bool(risk))

    # -- parameters and hashes
    streams = "".join(
        f"<tr><td>#{s['index']}</td><td>{_e(s['type'])}</td><td>{_e(s['codec'])}</td>"
        f"<td>{s['packets']}</td><td class='mono'>{_e(s['payload_sha256'])}</td></tr>"
        for s in record.input.get("streams", [])
    )
    inp = record.input
    input_facts = [
        ("name", inp.get("name")),
        ("size", f"{inp.get('size', 0):,} bytes"),
        ("sha256", inp.get("sha256")),
        ("container", inp.get("container")),
        (
            "video",
            f"{width} x {height}, {video.get('codec', '')}, "
            f"{video.get('average_rate', '')} fps, time base {time_base}",
        ),
    ]
    record_facts = [
        ("sha256", record.sha256()),
        ("veil version", record.veil_version),
        ("frames", n),
        ("masks by origin", json.dumps(summary["masks_by_origin"])),
        ("edits", len(record.edits)),
    ]
    detector_facts = sorted(
        (k, json.dumps(v) if isinstance(v, dict | list) else v) for k, v in record.detector.items()
    )
    shown_as = "UNMASKED (authorised reviewers only)" if unmasked else "as the output renders them"
    thumb_facts = [("shown", shown_as), ("style", json.dumps(style.to_json()))]
    params = (
        '<div class="cols">'
        f'<div class="card"><h3>Input</h3>{_dl(input_facts)}'
        '<table style="margin-top:8px"><tr><th>stream</th><th>type</th><th>codec</th>'
        f"<th>packets</th><th>payload sha256</th></tr>{streams}</table></div>"
        f'<div class="card"><h3>Record</h3>{_dl(record_facts)}'
        f'<h3 style="margin-top:12px">Detector</h3>{_dl(detector_facts)}'
        f'<h3 style="margin-top:12px">Tracker</h3>{_dl(record.tracker.to_json().items())}'
        f'<h3 style="margin-top:12px">Thumbnails</h3>{_dl(thumb_facts)}</div>'
        "</div>"
    )

    banner = (
        '<div class="banner danger">UNMASKED THUMBNAILS — faces are visible. For authorised '
        "reviewers only; do not share or archive outside the secure review area.</div>"
        if unmasked
        else '<div class="banner safe">Thumbnails show the frames as the output renders them: '
        "masks drawn, reviewer edits applied.</div>"
    )
    title = f"veil review · {inp.get('name', input_path.name)}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="veil {_e(__version__)}">
<title>{_e(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{_e(title)}</h1>
<div class="sub">record <span class="mono">{_e(record.sha256()[:16])}…</span> · input
<span class="mono">{_e(str(inp.get("sha256", ""))[:16])}…</span> ·
{_e(record.detector.get("model"))} {_e(record.detector.get("preset", ""))} ·
veil {_e(record.veil_version)}</div>
{banner}
<div class="tiles">{tiles_html}</div>
<h2>Timeline</h2>
<div class="card">{timeline.svg()}<div class="legend">{legend}</div></div>
<h2>Tracks</h2>
<div class="tracks">{tracks_html}</div>
<h2>Frames flagged for attention</h2>
{flags_html}
<h2>Reviewer edits</h2>
{edits_html}
{risk_html}
<h2>Parameters and hashes</h2>
{params}
<footer>Made by veil {_e(__version__)} from the record and its input; nothing here is loaded
from outside this file.</footer>
</main></body></html>
"""
    return Report(html=page, flags=flags, thumbnails=len(crops))


def write_report(
    input_path: Path | str,
    record_path: Path | str,
    output: Path | str,
    *,
    unmasked: bool = False,
    style: Style | None = None,
    thumbnails: int = 6,
) -> Report:
    """Write the review report for ``record_path`` to ``output`` (atomically)."""
    record_path = Path(record_path)
    record = Record.load(record_path)
    try:
        document = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        document = {}
    report = build_report(
        Path(input_path),
        record,
        document=document,
        unmasked=unmasked,
        style=style,
        thumbnails=thumbnails,
    )
    _write_text_atomic(Path(output), report.html)
    return report


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = partial_path(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc


__all__ = ["Flag", "Report", "build_report", "find_flags", "write_report"]
