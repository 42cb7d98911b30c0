"""What gets masked: one ``Mask`` per masked area, and the final mask set of each frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ._geometry import Box, Offset


def _r(value: float, digits: int = 2) -> float:
    return round(float(value), digits)


#: The track id of masks that cover a whole frame by policy (detection failed for it).
POLICY_TRACK = 0


class Origin(StrEnum):
    DETECTED = "detected"
    INTERPOLATED = "interpolated"
    EXTRAPOLATED = "extrapolated"
    #: carried by the texture inside it into a frame where the detector lost it
    #: (``veil.track._follow``)
    FOLLOWED = "followed"
    MANUAL = "manual"
    POLICY = "policy"


#: Origins that are evidence; the others are derived from evidence by the ``Smoother``.
#: Followed masks are neither: found in the pixels, they are kept as listed and added to
#: what the smoother derives, never used to derive.
EVIDENCE = frozenset({Origin.DETECTED, Origin.MANUAL, Origin.POLICY})


#: Origins of a track carried through frames where the detector lost it: a bridged gap (its
#: frames are where a leak is likeliest: residual risk, review flags).
CARRIED = frozenset({Origin.INTERPOLATED, Origin.FOLLOWED})


@dataclass(frozen=True, kw_only=True, order=True)
class Mask:
    """One masked area of one frame, as the record lists it. Box in display pixels."""

    track: int
    origin: Origin
    box: Box
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = field(default=None, compare=False)
    #: The members of a fused detector that found this face (detected masks only).
    found_by: tuple[str, ...] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", Origin(self.origin))
        object.__setattr__(self, "box", tuple(_r(v) for v in self.box))
        object.__setattr__(self, "score", _r(self.score, 4))
        if self.landmarks is not None:
            object.__setattr__(self, "landmarks", tuple((_r(x), _r(y)) for x, y in self.landmarks))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "track": self.track,
            "origin": self.origin.value,
            "box": list(self.box),
            "score": self.score,
        }
        if self.landmarks is not None:
            data["landmarks"] = [list(p) for p in self.landmarks]
        if self.found_by is not None:
            data["by"] = list(self.found_by)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mask:
        landmarks = data.get("landmarks")
        found_by = data.get("by")
        return cls(
            track=int(data["track"]),
            origin=Origin(data["origin"]),
            box=tuple(data["box"]),  # type: ignore[arg-type]
            score=float(data["score"]),
            landmarks=None if landmarks is None else tuple(tuple(p) for p in landmarks),  # type: ignore[misc]
            found_by=None if found_by is None else tuple(str(name) for name in found_by),
        )


def whole_frame(width: int, height: int) -> Mask:
    """The mask that covers a whole frame by policy (detection failed or is not trusted)."""
    return Mask(
        track=POLICY_TRACK,
        origin=Origin.POLICY,
        box=(0.0, 0.0, float(width), float(height)),
        score=1.0,
    )


@dataclass
class FrameMasks:
    """The final mask set of one frame."""

    index: int
    pts: int | None
    masks: list[Mask]
    #: this frame starts a new shot (a hard cut lies between it and the frame before)
    cut: bool = False
    #: the camera's translation since the frame before, in stored pixels (what a still
    #: background moved by); (0, 0) when unmeasured or unreliable
    motion: Offset = (0.0, 0.0)
