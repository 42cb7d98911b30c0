"""The seam between a job and where its masks come from (:class:`MaskSource`): a detection
run's detector and tracker (``_detecting.DetectedMasks``) or a record replayed with its edits
(``_replay.RecordMasks``). The job decodes, the source decides the masks, the sinks write."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from veil.core import FrameMasks
from veil.media import DecodedFrame

#: A decoded frame and its final masks.
Pair = tuple[DecodedFrame, FrameMasks]


class MaskSource(Protocol):
    """Frames in, in decode order (:meth:`push`); each frame back with its final masks, in
    frame order, as soon as they are final (from :meth:`push`, the rest from :meth:`flush`).
    :meth:`close` stops any helper thread; the job calls it however it ends."""

    def push(self, item: DecodedFrame) -> Iterator[Pair]: ...

    def flush(self) -> Iterator[Pair]: ...

    def close(self) -> None: ...
