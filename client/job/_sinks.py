"""Where a job's final frames go: the detection record (each frame to disk as it comes, and
into the residual-risk tally) and the output video (masks drawn by a pool of threads, frames
encoded in frame order, the other streams copied as packets, the file committed with its
manifest). Memory does not grow with the video's length in either."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import av

from veil.core import FrameMasks, available_cores
from veil.mask import Style, by_track, render_frame
from veil.media import DecodedFrame, EncoderSettings, Input, Output

from ._detecting import DetectedMasks
from ._documents import JsonObject, validate, write_json_atomic
from ._framelog import FrameLog
from ._provenance import Manifest, Signer, manifest_path
from ._record import Record
from ._risk import RiskTally
from ._threads import InOrder

T = TypeVar("T")


def render_workers() -> int:
    """Threads that draw masks: enough to keep up with the encoder, never more than 4."""
    return max(1, min(4, available_cores() // 2))


class RecordSink:
    """A detection run's record as it comes: each final frame to a :class:`FrameLog` (the
    record's ``frames``, on disk) and into the residual-risk tally."""

    def __init__(self, stride: int) -> None:
        self.frames = FrameLog()
        self._risk = RiskTally(stride)

    def add(self, item: DecodedFrame, final: FrameMasks) -> None:
        self.frames.append(final)
        self._risk.add(final)

    def residual_risk(self, masks: DetectedMasks) -> JsonObject:
        """The record's residual-risk block, once every frame is in."""
        return self._risk.report(
            masks.policy,
            masks.near_misses,
            masks.scene.dark_frames(),
            masks.scene.blurred_frames(),
        )

    def discard(self) -> None:
        """The job failed: nobody gets its record (the frames go)."""
        self.frames.close()


@dataclass(frozen=True, kw_only=True)
class VideoOptions:
    """How the output video is drawn (``style``), encoded (``encoder``) and vouched for: its
    manifest at ``manifest`` (None: ``OUT.manifest.json``), signed by ``signer`` if given."""

    style: Style = field(default_factory=Style)
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    signer: Signer | None = None
    manifest: Path | None = None


class VideoSink:
    """The output video: each frame's masks drawn by a pool of threads, frames handed to the
    encoder in frame order, the input's other streams copied as packets (:meth:`copy`).

    One writer thread makes every call into the output (encode, copy), in the order the job
    gave them, so the job's own thread goes on tracking while the encoder works. A frame is
    given to the writer once twice as many later frames as there are drawing threads have
    been submitted, and the writer is waited for once it holds more than ``_WRITE_AHEAD``
    calls (or at :meth:`flush`): counts, never timings, decide it, and the calls reach the
    output in the same order whatever the timing. Nothing is under the output's name until
    :meth:`commit`; :meth:`close` removes what was not.
    """

    #: Calls the writer thread may hold beyond the one it is making.
    _WRITE_AHEAD = 4

    def __init__(self, path: Path, source: Input, options: VideoOptions) -> None:
        self.path = path
        self._options = options
        self._out = Output(path, source, options.encoder)
        workers = render_workers()
        self._drawing: InOrder[None, av.VideoFrame] = InOrder(
            workers=workers, depth=2 * workers, name="veil-render"
        )
        self._writing: InOrder[None, None] = InOrder(
            workers=1, depth=self._WRITE_AHEAD, name="veil-write"
        )

    def copy(self, packet: av.Packet) -> None:
        self._write(self._out.copy, packet)

    def add(self, item: DecodedFrame, final: FrameMasks) -> None:
        groups = by_track(final.masks)
        style, pix_fmt = self._options.style, self._out.pix_fmt
        self._drawing.submit(None, render_frame, item.frame, groups, style, pix_fmt=pix_fmt)
        for _, drawn in self._drawing.ready():
            self._write(self._encode, drawn)

    def flush(self) -> None:
        """Every frame drawn, encoded and muxed (the encoder itself not yet flushed)."""
        for _, drawn in self._drawing.drain():
            self._write(self._encode, drawn)
        for _, written in self._writing.drain():
            written.result()

    def _write(self, call: Callable[[T], None], arg: T) -> None:
        self._writing.submit(None, call, arg)
        for _, written in self._writing.ready():
            written.result()

    def _encode(self, drawn: Future[av.VideoFrame]) -> None:
        self._out.encode(drawn.result())

    def commit(self) -> None:
        """Finish the file, read it back, and move it to its name (``Output.commit``)."""
        self._out.commit()

    def write_manifest(
        self, *, source: Input, record: Record, record_sha256: str, input_sha256: str
    ) -> JsonObject:
        """Write the committed output's manifest (signed if a signer was given); returns it
        as written. ``source`` must be demuxed to its end: its digests are then final."""
        manifest = Manifest.of_render(
            input_sha256=input_sha256,
            source=source,
            record=record,
            record_sha256=record_sha256,
            style=self._options.style,
            out=self._out,
        ).to_json()
        if self._options.signer is not None:
            manifest = self._options.signer.sign(manifest)
        validate(manifest, "manifest", str(self.path))
        write_json_atomic(self._options.manifest or manifest_path(self.path), manifest)
        return manifest

    def close(self) -> None:
        """Stop the drawing and writing threads, then drop the output unless it was committed."""
        self._drawing.close()
        self._writing.close()  # its thread is done with the output (``InOrder.close``)
        self._out.__exit__(None)
