"""The job: decode -> detect -> track + smooth -> record -> render -> encode -> mux.

Detection runs in a worker thread, a bounded number of batches ahead of rendering; every
decision about what is muxed when depends on frame counts only, never on timing, so the
output is a pure function of the input, the masks and the settings.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from tqdm import tqdm

from . import __version__
from ._detections import Detections
from ._detector import Detector, Upright, fit_size
from ._errors import RecordError
from ._media import DecodedFrame, EncoderSettings, Input, Output, probe, sha256_file
from ._record import Record, validate, write_json_atomic
from ._render import render_frame
from ._style import Style
from ._tracker import POLICY_TRACK, Associator, FrameMasks, Mask, Origin, Smoother, TrackerConfig

logger = logging.getLogger(__name__)

#: Detection batches allowed in flight ahead of rendering (bounds memory and latency).
_IN_FLIGHT = 2

Progress = Callable[[int, int | None], None]


def _policy_mask(frame: av.VideoFrame) -> Mask:
    return Mask(
        track=POLICY_TRACK,
        origin=Origin.POLICY,
        box=(0.0, 0.0, float(frame.width), float(frame.height)),
        score=1.0,
    )


class _Detecting:
    """Frames in, frames with final masks out: detector + associator + smoother."""

    def __init__(self, detector: Detector, tracker: TrackerConfig, batch_size: int) -> None:
        self._detector = detector
        self._associator = Associator(tracker)
        self._smoother = Smoother(tracker)
        self._batch_size = batch_size
        self._batch: list[DecodedFrame] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="veil-detect")
        self._in_flight: deque[tuple[list[DecodedFrame], Future[list[Detections]]]] = deque()
        self._held: dict[int, DecodedFrame] = {}
        self.policy: dict[int, str] = {}

    def push(self, item: DecodedFrame) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
        self._held[item.index] = item
        self._batch.append(item)
        if len(self._batch) >= self._batch_size:
            self._submit()
        while len(self._in_flight) > _IN_FLIGHT:
            yield from self._resolve()

    def flush(self) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
        self._submit()
        while self._in_flight:
            yield from self._resolve()
        for masks in self._smoother.flush():
            yield self._held.pop(masks.index), masks
        self._pool.shutdown()

    def _submit(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        max_side = self._detector.info.max_side
        images, sizes = [], []
        for item in batch:
            frame = item.frame
            w, h = fit_size(frame.width, frame.height, max_side)
            images.append(frame.reformat(w, h, "rgb24", interpolation="AREA").to_ndarray())
            sizes.append((frame.width, frame.height))
        self._in_flight.append((batch, self._pool.submit(self._detector.detect, images, sizes)))

    def _resolve(self) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
        batch, future = self._in_flight.popleft()
        try:
            results = future.result()
            if len(results) != len(batch):
                raise RuntimeError(f"detector returned {len(results)} results for {len(batch)} frames")
        except Exception as exc:  # noqa: BLE001 - fail closed: the frames are masked whole
            logger.error("detection failed for frames %d-%d: %s", batch[0].index, batch[-1].index, exc)
            results = [None] * len(batch)  # type: ignore[list-item]
            for item in batch:
                self.policy[item.index] = f"detector error: {exc}"
        for item, detections in zip(batch, results, strict=True):
            if detections is None:
                masks = [_policy_mask(item.frame)]
            else:
                masks = self._associator.assign(item.index, detections)
            for final in self._smoother.push(item.index, item.frame.pts, masks):
                yield self._held.pop(final.index), final


class _FromRecord:
    """Frames in, frames with the record's masks out, derived masks re-derived (union)."""

    def __init__(self, record: Record) -> None:
        self._frames = record.frames
        self._smoother = Smoother(record.tracker)
        self._held: dict[int, DecodedFrame] = {}
        self.policy = dict(record.policy)

    def push(self, item: DecodedFrame) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
        if item.index >= len(self._frames):
            raise RecordError(
                f"the record lists {len(self._frames)} frames but the input has more"
            )
        listed = self._frames[item.index]
        if listed.pts != item.frame.pts:
            raise RecordError(
                f"frame {item.index}: the record says pts {listed.pts}, the input has "
                f"{item.frame.pts}"
            )
        self._held[item.index] = item
        evidence = [m for m in listed.masks if m.origin in (Origin.DETECTED, Origin.MANUAL, Origin.POLICY)]
        yield from self._union(self._smoother.push(item.index, item.frame.pts, evidence))

    def flush(self) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
        yield from self._union(self._smoother.flush())

    def _union(self, finals: Iterator[FrameMasks]) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
        for final in finals:
            listed = self._frames[final.index].masks
            masks = sorted(set(listed) | set(final.masks))
            yield self._held.pop(final.index), FrameMasks(final.index, final.pts, masks)


@dataclass(frozen=True, kw_only=True)
class JobResult:
    record: Record
    record_sha256: str | None
    manifest: dict[str, Any] | None


def _input_identity(path: Path, source: Input) -> dict[str, Any]:
    return {
        "name": path.name,
        "size": path.stat().st_size,
        "sha256": sha256_file(path),
        "container": source.container.format.name,
        "video": source.info.to_json(),
        "streams": [d.to_json() for d in source.digests.values()],
    }


def _output_streams(path: Path) -> list[dict[str, Any]]:
    with Input(path, probe(path)) as written:
        for _ in written.demux():
            pass
        return [d.to_json() for d in written.digests.values()]


def _manifest(
    *, input_sha256: str, record_sha256: str, style: Style, encoder: EncoderSettings, output: Path
) -> dict[str, Any]:
    manifest = {
        "schema": "veil.manifest/1",
        "veil_version": __version__,
        "input_sha256": input_sha256,
        "record_sha256": record_sha256,
        "style": style.to_json(),
        "weak_style_settings": style.weak_settings,
        "encoder": encoder.to_json(output),
        "output": {
            "name": output.name,
            "size": output.stat().st_size,
            "sha256": sha256_file(output),
            "streams": _output_streams(output),
        },
    }
    validate(manifest, "manifest", str(output))
    return manifest


def manifest_path(output: Path) -> Path:
    return output.with_name(output.name + ".manifest.json")


def run_job(
    input_path: Path,
    *,
    detector: Detector | None = None,
    detector_json: dict[str, Any] | None = None,
    tracker: TrackerConfig | None = None,
    batch_size: int = 4,
    record: Record | None = None,
    record_path: Path | None = None,
    output: Path | None = None,
    style: Style | None = None,
    encoder: EncoderSettings | None = None,
    progress: bool = False,
) -> JobResult:
    """Run one job. Either ``detector`` (detect, optionally render) or ``record`` (render).

    Writes ``output`` (and its manifest) and ``record_path`` atomically, all or nothing.
    """
    if (detector is None) == (record is None):
        raise ValueError("give exactly one of detector and record")
    style = style or Style()
    encoder = encoder or EncoderSettings()
    info = probe(input_path)
    input_sha256 = sha256_file(input_path)
    if record is not None and record.input.get("sha256") != input_sha256:
        raise RecordError(
            f"the record was made for {record.input.get('name')!r} "
            f"(sha256 {str(record.input.get('sha256'))[:12]}…), not for {input_path.name} "
            f"(sha256 {input_sha256[:12]}…)"
        )
    masks_source: _Detecting | _FromRecord
    if detector is not None:
        tracker = tracker or TrackerConfig()
        masks_source = _Detecting(Upright(detector, info.rotation), tracker, batch_size)
    else:
        assert record is not None
        masks_source = _FromRecord(record)
    frames: list[FrameMasks] = []
    total = info.frames or None
    with Input(input_path, info) as source:
        out = Output(output, source, encoder) if output is not None else None
        try:
            bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True, leave=False)
            with bar:

                def emit(pairs: Iterator[tuple[DecodedFrame, FrameMasks]]) -> None:
                    for item, final in pairs:
                        frames.append(final)
                        if out is not None:
                            boxes = [m.box for m in final.masks]
                            out.encode(render_frame(item.frame, boxes, style, pix_fmt=encoder.pix_fmt))
                        bar.update(1)

                for item in source.demux():
                    if isinstance(item, DecodedFrame):
                        emit(masks_source.push(item))
                    elif out is not None:
                        out.copy(item)
                emit(masks_source.flush())
            if record is None:
                assert detector is not None and tracker is not None
                record = Record(
                    veil_version=__version__,
                    input=_input_identity(input_path, source),
                    detector=detector_json or detector.info.to_json(),
                    tracker=tracker,
                    frames=frames,
                    policy=masks_source.policy,
                )
            elif len(frames) != len(record.frames):
                raise RecordError(
                    f"the record lists {len(record.frames)} frames, the input has {len(frames)}"
                )
            record_sha256 = None
            if record_path is not None:
                record_sha256 = record.write(record_path)
            manifest = None
            if out is not None:
                assert output is not None
                out.commit()
                manifest = _manifest(
                    input_sha256=input_sha256,
                    record_sha256=record_sha256 or record.sha256(),
                    style=style,
                    encoder=encoder,
                    output=output,
                )
                write_json_atomic(manifest_path(output), manifest)
        finally:
            if out is not None:
                out.__exit__(None)
    logger.info("%s: %d frames, %s", input_path.name, len(frames), record.summary())
    return JobResult(record=record, record_sha256=record_sha256, manifest=manifest)
