"""A record's frames: each frame's entry as the record lists it, and the log that keeps a
detection run's frames on disk, so a record of any length costs 8 bytes a frame of memory."""

from __future__ import annotations

import json
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import overload

from veil.core import FrameMasks, Mask

from ._documents import JsonObject, dumps


def frame_entry(frame: FrameMasks, policy: str | None = None) -> JsonObject:
    """One frame as the record lists it (``policy``: why it is masked whole, if it is)."""
    entry: JsonObject = {
        "index": frame.index,
        "pts": frame.pts,
        "masks": [m.to_json() for m in frame.masks],
    }
    if policy is not None:
        entry["policy"] = policy
    if frame.cut:
        entry["cut"] = True
    if frame.motion != (0.0, 0.0):
        entry["motion"] = list(frame.motion)
    return entry


def frame_from_entry(entry: JsonObject) -> FrameMasks:
    """The frame a record entry lists (its masks in the listed order)."""
    masks = [Mask.from_json(m) for m in entry["masks"]]
    dx, dy = entry.get("motion", (0.0, 0.0))
    return FrameMasks(
        entry["index"], entry["pts"], masks, entry.get("cut", False), (float(dx), float(dy))
    )


class FrameCounts:
    """What a record's summary counts, frame by frame (its state: the set of track ids)."""

    def __init__(self, frames: Iterable[FrameMasks] = ()) -> None:
        self.frames = self.with_masks = 0
        self.by_origin: dict[str, int] = {}
        self.tracks: set[int] = set()
        for frame in frames:
            self.add(frame)

    def add(self, frame: FrameMasks) -> None:
        self.frames += 1
        self.with_masks += bool(frame.masks)
        for mask in frame.masks:
            self.by_origin[mask.origin.value] = self.by_origin.get(mask.origin.value, 0) + 1
            self.tracks.add(mask.track)


class FrameLog(Sequence[FrameMasks]):
    """Frames kept on disk, not in memory: a record's ``frames`` for videos of any length.

    ``append`` writes the frame's record entry (without ``policy``, which the record holds)
    as one line of compact JSON to an anonymous temporary file and keeps only its offset,
    8 bytes a frame, and the counts a record's summary needs. Reading (by index, or in order,
    which reads ahead in large blocks) parses the entry back. The file goes with ``close`` (or
    the object). One thread at a time may use a log.
    """

    _BLOCK = 1 << 18  # bytes read at once when iterating

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="veil-frames-")  # noqa: SIM115 (closed by close)
        self._offsets = array("q")
        self._end = 0  # bytes written
        self._at_end = True  # the file position is where the next frame goes
        self.counts = FrameCounts()

    def append(self, frame: FrameMasks) -> None:
        line = dumps(frame_entry(frame))
        if not self._at_end:
            self._file.seek(self._end)
            self._at_end = True
        self._file.write(line)
        self._offsets.append(self._end)
        self._end += len(line)
        self.counts.add(frame)

    def __len__(self) -> int:
        return len(self._offsets)

    @overload
    def __getitem__(self, index: int) -> FrameMasks: ...
    @overload
    def __getitem__(self, index: slice) -> list[FrameMasks]: ...
    def __getitem__(self, index: int | slice) -> FrameMasks | list[FrameMasks]:
        if isinstance(index, slice):
            return [self[k] for k in range(*index.indices(len(self)))]
        n = len(self._offsets)
        k = index + n if index < 0 else index
        if not 0 <= k < n:
            raise IndexError(f"frame {index} is not in a log of {n} frames")
        start, end = self._span(k)
        return frame_from_entry(json.loads(self._read(start, end - start)))

    def __iter__(self) -> Iterator[FrameMasks]:
        for line in self.lines():
            yield frame_from_entry(json.loads(line))

    def lines(self) -> Iterator[bytes]:
        """Each frame's entry as written (compact JSON, no newline), in order."""
        block, at = b"", 0
        k = 0
        while k < len(self._offsets):
            start, end = self._span(k)
            if end > at + len(block):
                block, at = self._read(start, max(end - start, self._BLOCK)), start
            yield block[start - at : end - at]
            k += 1

    def close(self) -> None:
        """Drop the frames (the temporary file has no name: nothing is left on disk)."""
        self._file.close()

    def __enter__(self) -> FrameLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FrameLog: {len(self)} frames{' (closed)' if self._file.closed else ''}>"

    def _span(self, k: int) -> tuple[int, int]:
        end = self._offsets[k + 1] if k + 1 < len(self._offsets) else self._end
        return self._offsets[k], end

    def _read(self, start: int, size: int) -> bytes:
        if self._file.closed:
            raise ValueError("the frame log is closed: its frames are gone")
        self._file.seek(start)  # writes still buffered are flushed first
        self._at_end = False
        return self._file.read(size)
