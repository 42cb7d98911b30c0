"""The two jobs: detect (decode -> detect -> track + smooth -> record, optionally render ->
encode -> mux) and render (decode -> the record's masks -> render -> encode -> mux).

Both are one loop over a :class:`~veil.job._source.MaskSource` and sinks. The stages overlap,
each in its own thread(s), joined by bounded queues:

* decode: a thread demuxes and decodes the input (PyAV releases the GIL), a few items ahead;
* detect (detection runs): a worker scales the frames due for detection to the model's input
  and runs the detector on them in batches (onnxruntime releases the GIL), a bounded number
  of batches ahead of rendering;
* render: a small pool draws the masks (OpenCV and numpy release the GIL);
* encode + mux: one writer thread, every call in the order the job made it (the encoder
  runs its own threads), so the calling thread goes on tracking meanwhile.

Every decision about what is given to the encoder and what is muxed when depends on frame
and packet counts only, never on timing, so the output is a pure function of the input, the
masks and the settings. Memory is bounded by those counts, not by the video's length. The
files a job writes (record, output, manifest) appear all or none.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from veil import __version__
from veil.core import ConfigError, Detector, FrameMasks, RecordError, Upright
from veil.mask import single_threaded_opencv
from veil.media import DecodedFrame, Input, VideoInfo, probe, sha256_file
from veil.track import TrackerConfig

from ._detecting import DetectedMasks
from ._documents import JsonObject
from ._header import DetectorBlock, InputIdentity, PresetChoice
from ._record import Record
from ._replay import RecordMasks
from ._sinks import RecordSink, VideoOptions, VideoSink
from ._source import MaskSource, Pair
from ._stride import STRIDE_AGREE_IOU
from ._threads import Ahead

logger = logging.getLogger(__name__)

#: Decoded items (frames and packets) the decode thread may run ahead of the job.
_DECODE_AHEAD = 8


class FrameSink(Protocol):
    """Takes each frame with its final masks, in frame order (the record, the video)."""

    def add(self, item: DecodedFrame, final: FrameMasks) -> None: ...


@dataclass(frozen=True, kw_only=True)
class JobResult:
    """What a job made: the record (a detection run's, or the one rendered), the sha256 of
    the record file written (None: none was), and the manifest as written (None: no video)."""

    record: Record
    record_sha256: str | None
    manifest: JsonObject | None


def detect_job(
    input_path: Path,
    *,
    detector: Detector,
    tracker: TrackerConfig | None = None,
    batch_size: int = 4,
    stride: int = 1,
    preset: PresetChoice | None = None,
    drop_streams: Collection[int] = (),
    record_path: Path | None = None,
    output: Path | None = None,
    video: VideoOptions | None = None,
    progress: bool = False,
) -> JobResult:
    """Find, track and record every face of ``input_path``; render ``output`` too if given.

    ``stride`` n runs the detector on every n-th frame (and the last) and lets the tracker
    cover the frames between; the record's detector block says so, and names the ``preset``
    the settings came from and the ones changed from it.
    ``drop_streams`` names the input's other picture streams, left out of the output; any
    other picture stream refuses the job. Writes ``record_path``, ``output`` and its manifest
    (``video``: style, encoder, signer, manifest path) atomically, all or nothing.
    """
    tracker = tracker or TrackerConfig()
    single_threaded_opencv()
    info = probe(input_path, drop=drop_streams)
    input_sha256 = sha256_file(input_path)
    if stride > 1 and min(tracker.lead_in, tracker.max_gap) < stride - 1:
        raise ConfigError(
            f"detection stride {stride} leaves {stride - 1} frames between detections; "
            f"the tracker's lead_in ({tracker.lead_in}) and max_gap ({tracker.max_gap}) "
            "must both cover them"
        )
    masks = DetectedMasks(
        Upright(detector, info.rotation),
        tracker,
        batch_size=batch_size,
        stride=stride,
        sample_aspect=info.sample_aspect_ratio,
        frame_size=(info.width, info.height),
    )
    with Input(input_path, info) as source:
        sink = None if output is None else VideoSink(output, source, video or VideoOptions())
        records: RecordSink | None = None
        try:
            records = RecordSink(stride)
            sinks: list[FrameSink] = [records] if sink is None else [records, sink]
            count = _run(source, masks, sinks, sink, total=info.frames, progress=progress)
            strided = stride > 1
            block = DetectorBlock(
                info=detector.info,
                preset=preset,
                stride=stride,
                stride_agree_iou=STRIDE_AGREE_IOU if strided else None,
                frames_detected=masks.stride.frames_detected if strided else None,
            )
            record = Record(
                veil_version=__version__,
                input=InputIdentity.of(input_path, source, input_sha256).to_json(),
                detector=block.to_json(),
                tracker=tracker,
                frames=records.frames,
                policy=masks.policy,
                residual_risk=records.residual_risk(masks),
            )
            record_sha256, manifest = _commit(record, record_path, sink, source, input_sha256)
        except BaseException:
            if records is not None:
                records.discard()
            raise
        finally:
            masks.close()
            if sink is not None:
                sink.close()
    logger.info("%s: %d frames, %s", input_path.name, count, record.summary())
    return JobResult(record=record, record_sha256=record_sha256, manifest=manifest)


def render_job(
    input_path: Path,
    record: Record,
    output: Path,
    *,
    video: VideoOptions | None = None,
    progress: bool = False,
) -> JobResult:
    """Mask ``input_path`` as ``record`` says (reviewer edits applied) into ``output``, and
    write its manifest (``video``: style, encoder, signer, manifest path), all or nothing.

    The input must be the file the record was made for (sha256), with the same picture
    stream masked and the same ones dropped, frame for frame (pts), else ``RecordError``.
    """
    single_threaded_opencv()
    identity = InputIdentity.from_json(record.input)
    input_sha256 = _check_record_input(input_path, identity)
    info = _probe_for_record(input_path, identity)
    masks = RecordMasks(record)
    with Input(input_path, info) as source:
        sink = VideoSink(output, source, video or VideoOptions())
        try:
            count = _run(source, masks, [sink], sink, total=info.frames, progress=progress)
            if count != len(record.frames):
                raise RecordError(
                    f"the record lists {len(record.frames)} frames, the input has {count}"
                )
            _, manifest = _commit(record, None, sink, source, input_sha256)
        finally:
            masks.close()
            sink.close()
    logger.info("%s: %d frames, %s", input_path.name, count, record.summary())
    return JobResult(record=record, record_sha256=None, manifest=manifest)


def _run(
    source: Input,
    masks: MaskSource,
    sinks: Sequence[FrameSink],
    video: VideoSink | None,
    *,
    total: int | None,
    progress: bool,
) -> int:
    """Decode ``source`` (a thread ahead), give each frame to ``masks`` and each frame with
    its final masks to ``sinks``, in frame order, and the other streams' packets to
    ``video``; returns the number of frames. The demuxer is done when this returns: the
    input's stream digests are final."""
    count = 0
    decoding: Ahead | None = None
    try:
        decoding = Ahead(source.demux(), depth=_DECODE_AHEAD, name="veil-decode")
        bar = tqdm(
            total=total or None, unit="frame", disable=not progress, dynamic_ncols=True, leave=False
        )
        with bar:

            def emit(pairs: Iterator[Pair]) -> None:
                nonlocal count
                for item, final in pairs:
                    count += 1
                    for sink in sinks:
                        sink.add(item, final)
                    bar.update(1)

            for item in decoding:
                if isinstance(item, DecodedFrame):
                    emit(masks.push(item))
                elif video is not None:
                    video.copy(item)
            emit(masks.flush())
            if video is not None:
                video.flush()
    finally:
        if decoding is not None:
            decoding.close()  # stopped before the containers it reads are closed
    return count


def _commit(
    record: Record,
    record_path: Path | None,
    video: VideoSink | None,
    source: Input,
    input_sha256: str,
) -> tuple[str | None, JsonObject | None]:
    """Write the record, then commit the output and write its manifest; a failure removes
    what was written. Returns the record file's sha256 and the manifest (None: not made)."""
    record_sha256 = None
    manifest = None
    written: list[Path] = []
    try:
        if record_path is not None:
            record_sha256 = record.write(record_path)
            written.append(record_path)
        if video is not None:
            video.commit()
            written.append(video.path)
            manifest = video.write_manifest(
                source=source,
                record=record,
                record_sha256=record_sha256 or record.sha256(),
                input_sha256=input_sha256,
            )
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return record_sha256, manifest


def _check_record_input(path: Path, identity: InputIdentity) -> str:
    """The input's sha256, when it is the input the record was made for (else ``RecordError``)."""
    if not path.is_file():
        probe(path)  # names the problem (no such file, not a regular file)
    sha256 = sha256_file(path)
    if identity.sha256 != sha256:
        raise RecordError(
            f"the record was made for {identity.name!r} (sha256 {identity.sha256[:12]}…), "
            f"not for {path.name} (sha256 {sha256[:12]}…)"
        )
    return sha256


def _probe_for_record(path: Path, identity: InputIdentity) -> VideoInfo:
    """The input as the record saw it: the same picture stream masked, the same ones dropped."""
    try:
        info = probe(path, drop=identity.dropped_indices)
    except ConfigError as exc:
        raise RecordError(f"the record's dropped_streams do not fit {path.name}: {exc}") from exc
    recorded = identity.video.get("index", info.index)
    if recorded != info.index:
        raise RecordError(
            f"the record masks picture stream #{recorded}, but veil masks #{info.index} of "
            f"{path.name} (its main video): make the record again with veil detect"
        )
    return info
