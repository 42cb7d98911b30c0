"""A :class:`Score`: leaks, holes, runs and collateral of one clip, however it was judged.

Both judges (by record, :mod:`.coverage`; by pixels, :mod:`.pixels`) decide per GT instance
whether it was masked; :func:`tally` turns those outcomes into the same statistics: leak rates
by face height, single-frame holes (a face leaked in one frame and masked in the frames
before and after), the longest run of leaked frames of one face, and collateral.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .truth import BUCKETS, TARGET_HEIGHT, GtClip, bucket_name, bucket_of


@dataclass(kw_only=True)
class Score:
    """Leak and collateral statistics of one clip (or several, summed)."""

    instances: dict[str, int] = field(default_factory=lambda: {bucket_name(*b): 0 for b in BUCKETS})
    leaked: dict[str, int] = field(default_factory=lambda: {bucket_name(*b): 0 for b in BUCKETS})
    holes: int = 0
    longest_run: int = 0
    collateral_sum: float = 0.0
    frames: int = 0
    unjudged: int = 0  # pixel scoring: instances with no structure to lose
    seconds: float | None = None
    #: Faces >= TARGET_HEIGHT that are clear in the source (GtFace.clear), and those leaked.
    clear_instances: int = 0
    clear_leaked: int = 0

    def add(self, other: Score) -> None:
        for k in self.instances:
            self.instances[k] += other.instances[k]
            self.leaked[k] += other.leaked[k]
        self.holes += other.holes
        self.longest_run = max(self.longest_run, other.longest_run)
        self.collateral_sum += other.collateral_sum
        self.frames += other.frames
        self.unjudged += other.unjudged
        self.clear_instances += other.clear_instances
        self.clear_leaked += other.clear_leaked
        if other.seconds is not None:
            self.seconds = (self.seconds or 0.0) + other.seconds

    def leak_rate(self, min_height: int = TARGET_HEIGHT) -> float | None:
        keys = [bucket_name(lo, hi) for lo, hi in BUCKETS if lo >= min_height]
        n = sum(self.instances[k] for k in keys)
        return None if n == 0 else sum(self.leaked[k] for k in keys) / n

    def clear_leak_rate(self) -> float | None:
        """Leak rate of faces >= 20 px that are neither heavily blurred nor heavily occluded
        in the source photo: the faces a person could recognise in the source."""
        return None if self.clear_instances == 0 else self.clear_leaked / self.clear_instances

    def bucket_rate(self, key: str) -> float | None:
        n = self.instances[key]
        return None if n == 0 else self.leaked[key] / n

    @property
    def collateral(self) -> float:
        return self.collateral_sum / self.frames if self.frames else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "leak_rate_20px": rounded(self.leak_rate()),
            "leak_rate_10px": rounded(self.leak_rate(10)),
            "leak_rate_20px_clear": rounded(self.clear_leak_rate()),
            "by_height": {
                k: {
                    "instances": self.instances[k],
                    "leaked": self.leaked[k],
                    "rate": rounded(self.bucket_rate(k)),
                }
                for k in self.instances
            },
            "single_frame_holes": self.holes,
            "longest_leak_run": self.longest_run,
            "collateral": round(self.collateral, 5),
            "frames": self.frames,
            "unjudged": self.unjudged,
            "seconds": None if self.seconds is None else round(self.seconds, 2),
        }


def rounded(value: float | None, digits: int = 4) -> float | None:
    """A rate as the JSON reports keep it (``None``: nothing to rate)."""
    return None if value is None else round(value, digits)


def tally(clip: GtClip, masked: dict[tuple[int, int], bool], collateral: list[float]) -> Score:
    """A :class:`Score` from per-(frame, face id) outcomes of the instances that count."""
    score = Score(frames=len(clip.frames), collateral_sum=float(sum(collateral)))
    runs: dict[int, int] = {}
    for i, faces in enumerate(clip.frames):
        for face in faces:
            key = (i, face.id)
            if key not in masked:
                continue
            bucket = bucket_of(face.height)
            assert bucket is not None
            score.instances[bucket] += 1
            leaked = not masked[key]
            if leaked:
                score.leaked[bucket] += 1
            if face.height < TARGET_HEIGHT:
                continue
            if face.clear:
                score.clear_instances += 1
                score.clear_leaked += leaked
            run = runs.get(face.id, 0) + 1 if leaked and (i - 1, face.id) in masked else int(leaked)
            runs[face.id] = run if leaked else 0
            score.longest_run = max(score.longest_run, runs[face.id])
            if (
                leaked
                and masked.get((i - 1, face.id)) is True
                and masked.get((i + 1, face.id)) is True
            ):
                score.holes += 1
    return score
