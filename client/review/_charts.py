"""The review report's pictures drawn as inline SVG (fragments in ``templates/charts.html``):
the timeline of faces, risk, flags and tracks per frame; a track's detection scores; the
masks over a flagged frame. Also the colours of mask origins and flag reasons, which the
review workstation's timeline uses too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from veil.core import POLICY_TRACK, Mask, Origin

from ._flags import LOW_SCORE, Flag, Reason
from ._templates import Fragments, Markup, join
from ._tracks import TrackView

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
    Reason.POLICY: "#dc2626",
    Reason.RESIDUAL_RISK: "#be123c",
    Reason.DISAGREEMENT: "#db2777",
    Reason.TRACK_ENDS: "#9333ea",
    Reason.LOW_CONFIDENCE: "#ea580c",
    Reason.DARK_FRAMES: "#4b5563",
    Reason.BLURRED_FRAMES: "#64748b",
    Reason.BRIDGED_GAP: "#f59e0b",
}

_svg = Fragments("charts.html")


class Timeline:
    """The timeline chart, drawn top to bottom: value series (faces, risk), the flagged
    frames, one lane per track, then the frame and time axis."""

    LEFT, WIDTH, LANE = 92, 1000, 20

    def __init__(self, n: int) -> None:
        self.n = max(n, 1)
        self.parts: list[Markup] = []
        self.y = 8

    def x(self, frame: float) -> float:
        return self.LEFT + frame / self.n * (self.WIDTH - self.LEFT - 12)

    def _label(self, text: str, y: float, *, size: int = 11, weight: int = 500) -> None:
        self.parts.append(
            _svg("label", x=self.LEFT - 10, y=f"{y:.1f}", size=size, weight=weight, text=text)
        )

    def _lane(self, y: int, height: int) -> None:
        self.parts.append(
            _svg("lane", x=self.LEFT, y=y, width=self.WIDTH - self.LEFT - 12, height=height)
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
        """``values`` (one per frame, or per bin of frames) as a filled step line."""
        y0, y1 = self.y, self.y + height
        self._label(name, y0 + height / 2 + 4)
        self._lane(y0, height)
        for level in (0.5, 1.0):
            yy = y1 - level * height
            self.parts.append(
                _svg(
                    "gridline",
                    x1=self.LEFT,
                    x2=self.WIDTH - 12,
                    y=f"{yy:.1f}",
                    text_x=self.WIDTH - 8,
                    text_y=f"{yy + 4:.1f}",
                    value=fmt.format(top * level),
                )
            )
        points = [f"{self.x(0):.1f},{y1}"]
        for i, v in enumerate(values):
            yy = y1 - (v / top if top else 0) * height
            points.append(f"{self.x(i):.1f},{yy:.1f} {self.x(i + 1):.1f},{yy:.1f}")
        points.append(f"{self.x(len(values)):.1f},{y1}")
        self.parts.append(_svg("series", points=" ".join(points), colour=colour, name=name))
        self.y = y1 + 8

    def flags(self, flags: Sequence[Flag]) -> None:
        """Every flagged run, the most pressing drawn last (on top)."""
        height = 14
        self._label("flagged", self.y + 11)
        self._lane(self.y, height)
        for flag in sorted(flags, key=lambda f: -f.rank):
            x0, x1 = self.x(flag.first), self.x(flag.last + 1)
            self.parts.append(
                _svg(
                    "flag",
                    x=f"{x0:.1f}",
                    y=self.y,
                    width=f"{max(x1 - x0, 2):.1f}",
                    height=height,
                    colour=FLAG_COLOURS[flag.reason],
                    reason=flag.reason,
                    first=flag.first,
                    last=flag.last,
                    detail=flag.detail,
                )
            )
        self.y += height + 10

    def track(self, view: TrackView) -> None:
        """One track's lane: its frames coloured by origin, hatched when suppressed."""
        y, h = self.y, self.LANE - 6
        name = f"track {view.track}" if view.track != POLICY_TRACK else "policy"
        self._label(name, y + h - 3, weight=600)
        self._lane(y, h)
        runs: list[tuple[int, int, str]] = []
        for frame in sorted(view.shown):
            origin = "suppressed" if view.suppressed else view.shown[frame].origin.value
            if runs and runs[-1][2] == origin and runs[-1][1] == frame - 1:
                runs[-1] = (runs[-1][0], frame, origin)
            else:
                runs.append((frame, frame, origin))
        for first, last, origin in runs:
            x0, x1 = self.x(first), self.x(last + 1)
            self.parts.append(
                _svg(
                    "run",
                    x=f"{x0:.1f}",
                    y=y,
                    width=f"{max(x1 - x0, 1.5):.1f}",
                    height=h,
                    fill="url(#hatch)" if origin == "suppressed" else COLOURS[origin],
                    track=view.track,
                    origin=origin,
                    first=first,
                    last=last,
                )
            )
        if view.suppressed:
            x = f"{self.x(min(view.shown)) + 4:.1f}"
            self.parts.append(_svg("suppressed", x=x, y=y + h - 3, edit=view.suppressed["id"]))
        self.y += self.LANE

    def axis(self, rate: float | None) -> None:
        """Frame numbers (and seconds, when the frame rate is known) under the lanes."""
        y = self.y + 2
        self.parts.append(_svg("axis", x1=self.LEFT, x2=self.WIDTH - 12, y=y))
        step = _nice_step(self.n / 8)
        ticks = list(range(0, self.n + 1, step))
        for f in ticks:
            when = f" · {f / rate:.1f}s" if rate else ""
            anchor = (
                "start" if f == 0 else "end" if f == ticks[-1] and f > self.n * 0.95 else "middle"
            )
            self.parts.append(
                _svg(
                    "tick",
                    x=f"{self.x(f):.1f}",
                    y=y,
                    tick_y=y + 4,
                    text_y=y + 16,
                    anchor=anchor,
                    label=f"{f}{when}",
                )
            )
        self._label("frame · time", y + 16, size=10)
        self.y = y + 24

    def svg(self) -> Markup:
        return _svg("timeline", width=self.WIDTH, height=self.y, parts=join(self.parts))


def _nice_step(raw: float) -> int:
    if raw <= 1:
        return 1
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return int(m * power)
    return int(10 * power)


def binned(values: Sequence[float], bins: int = 1000) -> list[float]:
    """``values`` reduced to at most ``bins`` (each bin's maximum: a peak is never lost)."""
    if len(values) <= bins:
        return list(values)
    size = len(values) / bins
    return [
        max(values[int(k * size) : max(int((k + 1) * size), int(k * size) + 1)])
        for k in range(bins)
    ]


def sparkline(view: TrackView, n: int) -> Markup:
    """A track's detection scores across the ``n`` frames, with the low-confidence line."""
    w, h = 200, 30
    points = [
        f"{i / max(n, 1) * w:.1f},{h - m.score * (h - 4) - 2:.1f}"
        for i, m in sorted(view.shown.items())
        if m.origin in (Origin.DETECTED, Origin.MANUAL)
    ]
    if not points:
        return Markup()
    return _svg("sparkline", width=w, height=h, low_y=f"{h - LOW_SCORE * (h - 4) - 2:.1f}",
        points=" ".join(points), low=LOW_SCORE,
    )  # fmt: skip


def overlay(masks: Iterable[Mask], width: int, height: int) -> Markup:
    """The face masks drawn as outlines over a frame ``width`` x ``height``."""
    stroke = f"{max(width, height) / 220:.1f}"
    boxes = join(
        _svg(
            "overlay_box",
            x=f"{m.box[0]:.1f}",
            y=f"{m.box[1]:.1f}",
            width=f"{m.box[2] - m.box[0]:.1f}",
            height=f"{m.box[3] - m.box[1]:.1f}",
            colour=COLOURS[m.origin.value],
            stroke=stroke,
            track=m.track,
            origin=m.origin.value,
            score=f"{m.score:.2f}",
        )
        for m in masks
        if m.track != POLICY_TRACK
    )
    return _svg("overlay", width=width, height=height, boxes=boxes)
