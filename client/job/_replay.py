"""A record's final masks, frame by frame: reviewer edits applied, derived masks re-derived.

The one place that turns a record into what is drawn, so ``veil render``, ``veil review`` and
``veil diff`` agree on what an edited record masks. :class:`RecordMasks` is the render job's
mask source: the record's masks paired with the input's decoded frames.
"""

from __future__ import annotations

from collections.abc import Iterator

from veil.core import EVIDENCE, FrameMasks, RecordError
from veil.media import DecodedFrame
from veil.track import Smoother

from ._edits import Applied
from ._record import Record
from ._source import Pair


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


class RecordMasks:
    """Frames in, frames with the record's final masks out (``veil render``). Each decoded
    frame must be the one the record lists at its index (same pts), else ``RecordError``."""

    def __init__(self, record: Record) -> None:
        self._frames = record.frames
        self._replay = Replay(record)
        self._held: dict[int, DecodedFrame] = {}

    def push(self, item: DecodedFrame) -> Iterator[Pair]:
        if item.index >= len(self._frames):
            raise RecordError(f"the record lists {len(self._frames)} frames but the input has more")
        listed = self._frames[item.index]
        if listed.pts != item.frame.pts:
            raise RecordError(
                f"frame {item.index}: the record says pts {listed.pts}, the input has "
                f"{item.frame.pts}"
            )
        self._held[item.index] = item
        yield from self._pair(self._replay.push(item.index))

    def flush(self) -> Iterator[Pair]:
        yield from self._pair(self._replay.flush())

    def _pair(self, finals: Iterator[FrameMasks]) -> Iterator[Pair]:
        for final in finals:
            yield self._held.pop(final.index), final

    def close(self) -> None:
        """Nothing to stop: replaying a record needs no helper thread."""
