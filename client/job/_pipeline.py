"""The job: decode -> detect -> track + smooth -> record -> render -> encode -> mux.

Four stages overlap, each in its own thread(s), joined by bounded queues:

* decode: a thread demuxes and decodes the input (PyAV releases the GIL), a few items ahead;
* detect: a worker scales the frames due for detection to the model's input and runs the
  detector on them in batches (onnxruntime releases the GIL), a bounded number of batches
  ahead of rendering;
* render: a small pool draws the masks (OpenCV and numpy release the GIL);
* encode + mux: the calling thread, in frame order (the encoder runs its own threads).

Every decision about what is given to the encoder and what is muxed when depends on frame
and packet counts only, never on timing, so the output is a pure function of the input, the
masks and the settings. Memory is bounded by those counts, not by the video's length.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar, cast

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter
from tqdm import tqdm

from veil import __version__
from veil.core import (
    Box,
    ConfigError,
    Detections,
    Detector,
    DetectorLost,
    FrameMasks,
    Image,
    Mask,
    Origin,
    RecordError,
    Upright,
    display_size,
    fit_size,
    iou_matrix,
    is_dark,
    merge,
    whole_frame,
)
from veil.mask import Style, render_frame, single_threaded_opencv
from veil.media import DecodedFrame, EncoderSettings, Input, Output, VideoInfo, probe, sha256_file
from veil.track import (
    Associator,
    BlurWatch,
    CameraMotion,
    CutDetector,
    Luma,
    Smoother,
    TrackerConfig,
    centred_on,
    follow,
    luma,
)

from ._edits import Replay
from ._provenance import Signer
from ._record import FrameLog, Record, RiskTally, validate, write_json_atomic

logger = logging.getLogger(__name__)

#: Detection batches allowed in flight ahead of rendering (bounds memory and latency).
_IN_FLIGHT = 2
#: Decoded items (frames and packets) the decode thread may run ahead of the job.
_DECODE_AHEAD = 8
#: With a detection stride, the frames between two key frames are interpolated only when
#: every face of one pairs with a face of the other at this IoU or more (else detected).
STRIDE_AGREE_IOU = 0.5
#: A second look (``TrackerConfig.recheck``) spans this many times the face's size, enlarged
#: until the face is ``RECHECK_FACE`` px, the window at most ``RECHECK_MAX_SIDE`` px (and the
#: model's input size); a face the frame's own pass sees at ``RECHECK_FACE`` px or more, or a
#: window no closer than that pass, is not looked at again.
RECHECK_WINDOW = 3
RECHECK_FACE = 64
RECHECK_MAX_SIDE = 256

Progress = Callable[[int, int | None], None]
T = TypeVar("T")


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def render_workers() -> int:
    """Threads that draw masks: enough to keep up with the encoder, never more than 4."""
    return max(1, min(4, available_cores() // 2))


class _Ahead:
    """Runs an iterator in a thread, at most ``depth`` items ahead of the consumer.

    Items come out in the iterator's order; an exception in the thread is raised in the
    consumer at the point it happened (never a silently dead thread and a consumer waiting
    forever). ``close`` stops the thread and waits for it, so whatever the iterator reads
    (a container) can be closed safely afterwards.
    """

    _DONE = object()

    def __init__(self, items: Iterable[T], *, depth: int, name: str) -> None:
        self._items = items
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put((item, None)):
                    return
        except BaseException as exc:
            self._put((None, exc))
            return
        self._put((self._DONE, None))

    def __iter__(self) -> Iterator[Any]:
        while True:
            item, exc = self._queue.get()
            if exc is not None:
                raise exc
            if item is self._DONE:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class _Detecting:
    """Frames in, frames with final masks out: detector + associator + smoother.

    With ``stride`` n > 1 the detector sees frame 0, n, 2n, ... (the key frames) and the
    last frame. The frames between two key frames are detected too unless the two agree
    (:func:`_agree`: the same faces, each moved less than ``STRIDE_AGREE_IOU`` allows, no
    cut between): only then are they left to the smoother's interpolation, exactly as
    ``veil render`` re-derives it from the record (whose detector block states the stride and
    the rule). A batch holds every frame from just after the previous batch up to its last
    key frame: if the detector fails on it, all of those frames, detected or not, are masked
    whole by policy.
    """

    def __init__(
        self,
        detector: Detector,
        tracker: TrackerConfig,
        batch_size: int,
        stride: int = 1,
        sample_aspect: Fraction = Fraction(1),
        frame_size: tuple[int, int] | None = None,
    ) -> None:
        if stride < 1:
            raise ValueError(f"detection stride {stride} is below 1")
        self._detector = detector
        self._sample_aspect = sample_aspect
        self._associator = Associator(tracker, detector.info.members, frame_size)
        self._follow_span = tracker.follow_span
        self._recheck = tracker.recheck
        self._closer_scaler = VideoReformatter()  # the calling thread's (``_look_closer``)
        self._smoother = Smoother(tracker)
        # frames assigned, waiting ``lead_in`` frames for their tentative tracks' confirmation
        # (only weak detections start tentative tracks) and for the tracks starting after
        # them to be followed back (``_follow_back``)
        self._release_delay = (
            tracker.lead_in if tracker.new_track_score or tracker.follow_span else 0
        )
        self._assigned: deque[tuple[int, int | None, list[Mask], bool, tuple[float, float]]]
        self._assigned = deque()
        self._batch_size = batch_size
        self._stride = stride
        self._batch: list[DecodedFrame] = []
        self._due = 0  # frames of self._batch due for detection
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="veil-detect")
        self._in_flight: deque[tuple[list[DecodedFrame], Future[list[Detections | None]]]]
        self._in_flight = deque()
        self._held: dict[int, DecodedFrame] = {}
        # The detect worker's own state (one worker: batches run in order).
        self._scaler = VideoReformatter()
        # the previous batch's last key frame: its detections and the camera's position
        self._last_key: tuple[Detections | None, tuple[float, float]] | None = None
        self.frames_detected = 0
        self._shots = CutDetector()
        self._camera = CameraMotion()
        self._cuts: set[int] = set()  # frames held that start a new shot
        # per frame held: the camera's motion since the frame before, and its position
        self._motion: dict[int, tuple[tuple[float, float], tuple[float, float]]] = {}
        self._offset = (0.0, 0.0)
        self.policy: dict[int, str] = {}
        # runs of frames dark or flat, and blurred (residual risk): [first, last] per run
        self._dark: list[list[int]] = []
        self._blurred: list[list[int]] = []
        self._blur = BlurWatch()

    @property
    def near_misses(self) -> dict[int, tuple[int, float]]:
        """Frames with weak detections of tracks never confirmed (residual risk)."""
        return self._associator.near_misses

    def dark_frames(self) -> Iterator[int]:
        """The dark or flat frames' indices, in increasing order (residual risk)."""
        for first, last in self._dark:
            yield from range(first, last + 1)

    def blurred_frames(self) -> Iterator[int]:
        """The frames blurred against their shot, in increasing order (residual risk)."""
        for first, last in self._blurred:
            yield from range(first, last + 1)

    def push(self, item: DecodedFrame) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
        self._held[item.index] = item
        cut = self._shots.is_cut(item.frame)
        if cut:
            self._cuts.add(item.index)
        motion = self._camera.measure(item.frame, cut=cut)
        for hard, runs in (
            (is_dark(self._camera.thumbnail), self._dark),
            (self._blur.blurred(self._camera.thumbnail, cut=cut), self._blurred),
        ):
            if not hard:
                continue
            if runs and runs[-1][1] == item.index - 1:
                runs[-1][1] = item.index
            else:
                runs.append([item.index, item.index])
        self._offset = (self._offset[0] + motion[0], self._offset[1] + motion[1])
        self._motion[item.index] = (motion, self._offset)
        self._batch.append(item)
        if item.index % self._stride == 0:
            self._due += 1
            if self._due >= self._batch_size:
                self._submit(last=False)
        while len(self._in_flight) > _IN_FLIGHT:
            yield from self._resolve()

    def flush(self) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
        self._submit(last=True)
        while self._in_flight:
            yield from self._resolve()
        yield from self._release(None)
        for masks in self._smoother.flush():
            yield self._held.pop(masks.index), masks
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, *, last: bool) -> None:
        if not self._batch:
            return
        batch, self._batch, self._due = self._batch, [], 0
        # The last frame is always detected: no face may enter in a video's final frames
        # unseen (lead-out covers faces leaving, nothing covers faces arriving).
        keys = [
            item.index % self._stride == 0 or (last and k == len(batch) - 1)
            for k, item in enumerate(batch)
        ]
        cuts = [item.index in self._cuts for item in batch]
        offsets = [self._motion[item.index][1] for item in batch]
        frames = [item.frame for item in batch]
        future = self._pool.submit(self._detect, frames, keys, cuts, offsets)
        self._in_flight.append((batch, future))

    def _detect(
        self,
        frames: list[av.VideoFrame],
        keys: list[bool],
        cuts: list[bool],
        offsets: list[tuple[float, float]],
    ) -> list[Detections | None]:
        """In the worker: detect the key frames, then the frames between two that disagree
        once the camera's motion between them is taken out (``offsets``: the camera's
        position at each frame).

        Returns one entry per frame, None where the frame was not detected.
        """
        found: list[Detections | None] = [None] * len(frames)
        key_at = [k for k, key in enumerate(keys) if key]
        for k, detections in zip(key_at, self._run([frames[k] for k in key_at]), strict=True):
            found[k] = detections
        between: list[int] = []
        previous, start = self._last_key, 0
        self._last_key = None  # unknown until this batch succeeds (a failure: detect all)
        for k in key_at:
            gap = range(start, k)
            current = found[k], offsets[k]
            if gap and (
                previous is None
                or any(cuts[start : k + 1])
                or not _agree(previous[0], current[0], _minus(current[1], previous[1]))
            ):
                between.extend(gap)
            previous, start = current, k + 1
        for k, detections in zip(between, self._run([frames[k] for k in between]), strict=True):
            found[k] = detections
        self.frames_detected += len(key_at) + len(between)
        self._last_key = previous
        return found

    def _run(self, frames: list[av.VideoFrame]) -> list[Detections]:
        """Scale each frame to the model's input size, then detect (in the worker)."""
        if not frames:
            return []
        max_side = self._detector.info.max_side
        images: list[Image] = []
        sizes: list[tuple[int, int]] = []
        for frame in frames:
            # Detected as displayed: non-square pixels made square (``display_size``).
            display = display_size(frame.width, frame.height, self._sample_aspect)
            w, h = fit_size(*display, max_side)
            scaled = self._scaler.reformat(frame, w, h, "rgb24", interpolation=Interpolation.AREA)
            images.append(cast(Image, scaled.to_ndarray()))
            sizes.append(display)
        found = self._detector.detect(images, sizes)
        if len(found) != len(frames):
            raise RuntimeError(f"detector returned {len(found)} results for {len(frames)} frames")
        # Boxes back to stored pixels, where the masks are drawn.
        return [
            d if (f.width, f.height) == s else d.scaled(f.width / s[0], f.height / s[1])
            for d, f, s in zip(found, frames, sizes, strict=True)
        ]

    def _resolve(self) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
        batch, future = self._in_flight.popleft()
        try:
            results = future.result()
        except DetectorLost:
            raise  # the job stops and writes nothing (fail closed, no whole-video policy mask)
        except Exception as exc:
            logger.error(
                "detection failed for frames %d-%d: %s", batch[0].index, batch[-1].index, exc
            )
            results = [None] * len(batch)
            for item in batch:
                self.policy[item.index] = f"detector error: {exc}"
        for item, detections in zip(batch, results, strict=True):
            motion, offset = self._motion.pop(item.index)
            if item.index in self.policy:
                masks = [whole_frame(item.frame.width, item.frame.height)]
            elif detections is not None:
                if self._recheck:
                    detections = self._look_closer(item, detections, offset)
                masks = self._associator.assign(item.index, detections, offset)
                if self._follow_span:
                    masks += self._follow(item, masks, offset)
            else:
                masks = []  # not detected (stride): the smoother derives its coverage
            cut = item.index in self._cuts
            self._cuts.discard(item.index)
            self._assigned.append((item.index, item.frame.pts, masks, cut, motion))
            if self._follow_span and detections is not None:
                self._follow_back()
            yield from self._release(item.index - self._release_delay)

    def _look_closer(
        self, item: DecodedFrame, detections: Detections, offset: tuple[float, float]
    ) -> Detections:
        """``detections`` of ``item``'s frame, with what a second look finds where a
        confirmed track was and no detection is (``TrackerConfig.recheck``): a window of
        :data:`RECHECK_WINDOW` times the face's size around its predicted box, enlarged so
        the face is :data:`RECHECK_FACE` px, detected on its own. The full frame reaches the
        model shrunk (a 1080p frame to a third at 640 px): a face half behind another, or
        small, is lost there and found again at its own scale. Only faces whose centre lies
        on the prediction (grown by half) are kept; the union is merged by the model's NMS."""
        regions = self._associator.unmatched(item.index, detections, offset)
        if not regions:
            return detections
        frame = item.frame
        width, height = display_size(frame.width, frame.height, self._sample_aspect)
        sx, sy = width / frame.width, height / frame.height  # stored -> display pixels
        picture = self._closer_scaler.reformat(frame, width, height, "rgb24").to_ndarray()
        max_side = self._detector.info.max_side
        frame_scale = fit_size(width, height, max_side)[0] / width  # the frame pass's
        images: list[Image] = []
        windows: list[tuple[int, int, int, int]] = []
        looked: list[Box] = []
        for box in regions:
            side = max((box[2] - box[0]) * sx, (box[3] - box[1]) * sy)
            cx, cy = (box[0] + box[2]) / 2 * sx, (box[1] + box[3]) / 2 * sy
            half = side * RECHECK_WINDOW / 2
            x0, y0 = max(0, round(cx - half)), max(0, round(cy - half))
            x1, y1 = min(width, round(cx + half)), min(height, round(cy + half))
            if min(x1 - x0, y1 - y0) < 8:
                continue
            span = max(x1 - x0, y1 - y0)
            scale = min(max(1.0, RECHECK_FACE / side), max_side / span, RECHECK_MAX_SIDE / span)
            if side * frame_scale >= RECHECK_FACE or scale <= frame_scale:
                continue  # the frame's own pass sees it as large, or larger
            # the enlarged window is a picture of its own size (even sides, as every
            # detector takes them, hybrid mode's server too)
            size = fit_size(round((x1 - x0) * scale), round((y1 - y0) * scale), max_side)
            images.append(cast(Image, cv2.resize(picture[y0:y1, x0:x1], size)))
            windows.append((x0, y0, x1, y1))
            looked.append(box)
        if not images:
            return detections
        sizes = [(image.shape[1], image.shape[0]) for image in images]
        parts = [detections]
        for found, (w, h), (x0, y0, x1, y1), box in zip(
            self._detector.detect(images, sizes), sizes, windows, looked, strict=True
        ):
            # window pixels -> display pixels of the frame -> stored pixels
            found = (
                found.scaled((x1 - x0) / w, (y1 - y0) / h).shifted(x0, y0).scaled(1 / sx, 1 / sy)
            )
            parts.append(found[centred_on(found, box)])
        return merge(parts, self._detector.info.nms_threshold, (frame.width, frame.height))

    def _follow(
        self, item: DecodedFrame, masks: list[Mask], offset: tuple[float, float]
    ) -> list[Mask]:
        """Masks of the tracks the detector lost in ``item``'s frame, followed there from
        their latest sighting by the texture inside the box (``_follow``)."""
        lost = self._associator.lost(item.index, {m.track for m in masks}, offset)
        if not lost:
            return []
        current = luma(item.frame)
        lumas: dict[int, Luma] = {}
        found = []
        for track, frame, box, shift in lost:
            if frame not in lumas:
                if frame not in self._held:
                    continue  # already rendered (a tracker with almost no look-ahead)
                lumas[frame] = luma(self._held[frame].frame)
            moved = follow(lumas[frame], current, box, shift)
            if moved is not None:
                found.append(self._associator.followed(item.index, track, moved, offset))
        return found

    def _follow_back(self) -> None:
        """Offline: the tracks the frame assigned last starts with a strong detection,
        followed back through the frames not yet released (up to ``lead_in``), to where the
        face was before the detector found it; the boxes found join those frames' masks.
        Never across a cut."""
        started = set(self._associator.started)
        entries = reversed(self._assigned)
        later = next(entries)
        boxes = {m.track: m for m in later[2] if m.track in started}
        if not boxes:
            return
        first, later_luma = later[0], luma(self._held[later[0]].frame)
        for earlier in entries:
            index, _, masks, _, _ = earlier
            if not boxes or first - index > self._follow_span or later[3]:
                break
            current = luma(self._held[index].frame)
            motion = later[4]  # the camera's, from ``earlier`` to ``later``
            found = {}
            for track, mask in boxes.items():
                moved = follow(later_luma, current, mask.box, (-motion[0], -motion[1]))
                if moved is not None:
                    found[track] = Mask(
                        track=track, origin=Origin.FOLLOWED, box=moved, score=mask.score
                    )
            masks.extend(found.values())
            boxes, later, later_luma = found, earlier, current

    def _release(self, upto: int | None) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
        """Hand the frames assigned up to ``upto`` (None: all) to the smoother, their
        tentative tracks' masks dropped (``Associator.release``)."""
        while self._assigned and (upto is None or self._assigned[0][0] <= upto):
            index, pts, masks, cut, motion = self._assigned.popleft()
            masks = self._associator.release(index, masks)
            for final in self._smoother.push(index, pts, masks, cut, motion):
                yield self._held.pop(final.index), final


def _minus(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return (a[0] - b[0], a[1] - b[1])


def _agree(a: Detections | None, b: Detections | None, camera: tuple[float, float]) -> bool:
    """Two key frames' detections agree: interpolating between them is safe.

    ``a``'s boxes are first moved by ``camera`` (the camera's motion from ``a``'s frame to
    ``b``'s), as the smoother carries them. A face of one frame and a face of the other are
    taken for the same face when their centres lie within the larger one's size. They agree
    when every such pair's best overlap is at least ``STRIDE_AGREE_IOU``: the face itself
    moved or scaled little, so the interpolated box follows it. A face with no such
    counterpart appeared or vanished (or the detector missed it in one of the two): the
    smoother's lead-in, lead-out and gap bridging cover the frames between, as they cover a
    missed frame at stride 1.
    """
    assert a is not None and b is not None  # key frames are always detected
    if not len(a) or not len(b):
        return True
    boxes_a = a.boxes + np.array([camera[0], camera[1], camera[0], camera[1]], np.float32)
    boxes_b = b.boxes
    ca, cb = (boxes_a[:, :2] + boxes_a[:, 2:]) / 2, (boxes_b[:, :2] + boxes_b[:, 2:]) / 2
    sa = np.max(boxes_a[:, 2:] - boxes_a[:, :2], axis=1)
    sb = np.max(boxes_b[:, 2:] - boxes_b[:, :2], axis=1)
    offset = ca[:, None, :] - cb[None, :, :]
    same = np.hypot(offset[..., 0], offset[..., 1]) <= np.maximum(sa[:, None], sb[None, :])
    overlap = np.where(same, iou_matrix(boxes_a, boxes_b), -1.0)
    rows, cols = same.any(axis=1), same.any(axis=0)
    return bool(
        (overlap.max(axis=1)[rows] >= STRIDE_AGREE_IOU).all()
        and (overlap.max(axis=0)[cols] >= STRIDE_AGREE_IOU).all()
    )


class _FromRecord:
    """Frames in, frames with the record's masks out: reviewer edits applied, derived masks
    re-derived (union). The mask arithmetic is ``Replay``'s, shared with review and diff."""

    def __init__(self, record: Record) -> None:
        self._frames = record.frames
        self._replay = Replay(record)
        self._held: dict[int, DecodedFrame] = {}
        self.policy = dict(record.policy)

    def push(self, item: DecodedFrame) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
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

    def flush(self) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
        yield from self._pair(self._replay.flush())

    def _pair(self, finals: Iterator[FrameMasks]) -> Iterator[tuple[DecodedFrame, FrameMasks]]:
        for final in finals:
            yield self._held.pop(final.index), final

    def close(self) -> None:
        """Nothing to stop: replaying a record needs no helper thread."""


class _Rendering:
    """Masks drawn by a pool of threads, frames handed to the encoder in frame order.

    A frame is encoded once ``depth`` later frames have been submitted (or at ``flush``):
    a count, never a timing, decides it.
    """

    def __init__(self, out: Output, style: Style, pix_fmt: str, workers: int) -> None:
        self._out = out
        self._style = style
        self._pix_fmt = pix_fmt
        self._depth = 2 * workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="veil-render")
        self._pending: deque[Future[av.VideoFrame]] = deque()

    def push(self, frame: av.VideoFrame, boxes: list[Box]) -> None:
        self._pending.append(
            self._pool.submit(render_frame, frame, boxes, self._style, pix_fmt=self._pix_fmt)
        )
        while len(self._pending) > self._depth:
            self._out.encode(self._pending.popleft().result())

    def flush(self) -> None:
        while self._pending:
            self._out.encode(self._pending.popleft().result())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True, kw_only=True)
class JobResult:
    record: Record
    record_sha256: str | None
    manifest: dict[str, Any] | None


def _input_identity(path: Path, source: Input, sha256: str) -> dict[str, Any]:
    return {
        "name": path.name,
        "size": path.stat().st_size,
        "sha256": sha256,
        "container": source.container.format.name,
        "video": source.info.to_json(),
        "streams": [d.to_json() for d in source.digests.values()],
        **({"dropped_streams": source.dropped_json()} if source.dropped else {}),
    }


def _manifest(
    *,
    input_sha256: str,
    source: Input,
    record: Record,
    record_sha256: str,
    style: Style,
    out: Output,
    output: Path,
    signer: Signer | None,
) -> dict[str, Any]:
    # What ``out`` found when it read the file back before committing it: the copied
    # streams (with any framing change the container required) and their digests.
    copied = out.copied_streams
    manifest = {
        "schema": "veil.manifest/1",
        "veil_version": __version__,
        "input_sha256": input_sha256,
        "input_streams": [d.to_json() for d in source.digests.values()],
        "copied_streams": copied,
        **({"dropped_streams": source.dropped_json()} if source.dropped else {}),
        "record_sha256": record_sha256,
        "detector": record.detector,
        "tracker": record.tracker.to_json(),
        "edits": record.edits,
        "style": style.to_json(),
        "weak_style_settings": style.weak_settings,
        "encoder": out.settings_json(),
        "output": {
            "name": output.name,
            "size": output.stat().st_size,
            "sha256": sha256_file(output),
            "streams": out.written_streams,
        }
        | out.timing_json(),
    }
    if signer is not None:
        manifest = signer.sign(manifest)
    validate(manifest, "manifest", str(output))
    return manifest


def manifest_path(output: Path) -> Path:
    return output.with_name(output.name + ".manifest.json")


def _check_record_input(path: Path, record: Record) -> str:
    """The input's sha256, when it is the input the record was made for (else ``RecordError``)."""
    if not path.is_file():
        probe(path)  # names the problem (no such file, not a regular file)
    sha256 = sha256_file(path)
    if record.input.get("sha256") != sha256:
        raise RecordError(
            f"the record was made for {record.input.get('name')!r} "
            f"(sha256 {str(record.input.get('sha256'))[:12]}…), not for {path.name} "
            f"(sha256 {sha256[:12]}…)"
        )
    return sha256


def _probe_for_record(path: Path, record: Record) -> VideoInfo:
    """The input as the record saw it: the same picture stream masked, the same ones dropped."""
    dropped = [int(s["index"]) for s in record.input.get("dropped_streams", [])]
    try:
        info = probe(path, drop=dropped)
    except ConfigError as exc:
        raise RecordError(f"the record's dropped_streams do not fit {path.name}: {exc}") from exc
    recorded = record.input.get("video", {}).get("index", info.index)
    if recorded != info.index:
        raise RecordError(
            f"the record masks picture stream #{recorded}, but veil masks #{info.index} of "
            f"{path.name} (its main video): make the record again with veil detect"
        )
    return info


def run_job(
    input_path: Path,
    *,
    detector: Detector | None = None,
    detector_json: dict[str, Any] | None = None,
    tracker: TrackerConfig | None = None,
    batch_size: int = 4,
    stride: int = 1,
    record: Record | None = None,
    record_path: Path | None = None,
    output: Path | None = None,
    style: Style | None = None,
    encoder: EncoderSettings | None = None,
    progress: bool = False,
    signer: Signer | None = None,
    manifest_out: Path | None = None,
    drop_streams: Collection[int] = (),
) -> JobResult:
    """Run one job. Either ``detector`` (detect, optionally render) or ``record`` (render).

    ``stride`` n runs the detector on every n-th frame (and the last) and lets the tracker
    cover the frames between; the record's detector block says so (``"stride"``).
    ``drop_streams`` names the input's other picture streams, left out of the output (a
    render takes them from the record); any other picture stream refuses the job.
    Writes ``output`` (and its manifest, signed by ``signer`` if given, at ``manifest_out``
    or ``OUT.manifest.json``) and ``record_path`` atomically, all or nothing.
    """
    if (detector is None) == (record is None):
        raise ValueError("give exactly one of detector and record")
    style = style or Style()
    encoder = encoder or EncoderSettings()
    single_threaded_opencv()
    if record is None:
        info = probe(input_path, drop=drop_streams)
        input_sha256 = sha256_file(input_path)
    else:
        input_sha256 = _check_record_input(input_path, record)
        info = _probe_for_record(input_path, record)
    masks_source: _Detecting | _FromRecord
    if detector is not None:
        tracker = tracker or TrackerConfig()
        if stride > 1 and min(tracker.lead_in, tracker.max_gap) < stride - 1:
            raise ConfigError(
                f"detection stride {stride} leaves {stride - 1} frames between detections; "
                f"the tracker's lead_in ({tracker.lead_in}) and max_gap ({tracker.max_gap}) "
                "must both cover them"
            )
        masks_source = _Detecting(
            Upright(detector, info.rotation),
            tracker,
            batch_size,
            stride,
            sample_aspect=info.sample_aspect_ratio,
            frame_size=(info.width, info.height),
        )
    else:
        assert record is not None
        masks_source = _FromRecord(record)
    # When detecting, each final frame goes to disk (the record's frames) and into the
    # residual-risk tally as it comes: memory does not grow with the video's length.
    frames: FrameLog | None = None
    risk = RiskTally(stride)
    count = 0
    total = info.frames or None
    with Input(input_path, info) as source:
        out = Output(output, source, encoder) if output is not None else None
        decoding: _Ahead | None = None
        rendering: _Rendering | None = None
        try:
            if record is None:
                frames = FrameLog()
            decoding = _Ahead(source.demux(), depth=_DECODE_AHEAD, name="veil-decode")
            if out is not None:
                rendering = _Rendering(out, style, out.pix_fmt, render_workers())
            bar = tqdm(
                total=total, unit="frame", disable=not progress, dynamic_ncols=True, leave=False
            )
            with bar:

                def emit(pairs: Iterator[tuple[DecodedFrame, FrameMasks]]) -> None:
                    nonlocal count
                    for item, final in pairs:
                        count += 1
                        if frames is not None:
                            frames.append(final)
                            risk.add(final)
                        if rendering is not None:
                            rendering.push(item.frame, [m.box for m in final.masks])
                        bar.update(1)

                for item in decoding:
                    if isinstance(item, DecodedFrame):
                        emit(masks_source.push(item))
                    elif out is not None:
                        out.copy(item)
                emit(masks_source.flush())
                if rendering is not None:
                    rendering.flush()
            decoding.close()  # the demuxer is done: its stream digests are final
            if record is None:
                assert detector is not None and tracker is not None and frames is not None
                detecting = masks_source
                assert isinstance(detecting, _Detecting)
                detector_block = dict(detector_json or detector.info.to_json())
                detector_block["stride"] = stride
                if stride > 1:
                    detector_block["stride_agree_iou"] = STRIDE_AGREE_IOU
                    detector_block["frames_detected"] = detecting.frames_detected
                record = Record(
                    veil_version=__version__,
                    input=_input_identity(input_path, source, input_sha256),
                    detector=detector_block,
                    tracker=tracker,
                    frames=frames,
                    policy=masks_source.policy,
                    residual_risk=risk.report(
                        masks_source.policy,
                        detecting.near_misses,
                        detecting.dark_frames(),
                        detecting.blurred_frames(),
                    ),
                )
            elif count != len(record.frames):
                raise RecordError(
                    f"the record lists {len(record.frames)} frames, the input has {count}"
                )
            record_sha256 = None
            manifest = None
            written: list[Path] = []  # all or nothing: undone if a later write fails
            try:
                if record_path is not None:
                    record_sha256 = record.write(record_path)
                    written.append(record_path)
                if out is not None:
                    assert output is not None
                    out.commit()
                    written.append(output)
                    manifest = _manifest(
                        input_sha256=input_sha256,
                        source=source,
                        record=record,
                        record_sha256=record_sha256 or record.sha256(),
                        style=style,
                        out=out,
                        output=output,
                        signer=signer,
                    )
                    write_json_atomic(manifest_out or manifest_path(output), manifest)
            except BaseException:
                for path in written:
                    path.unlink(missing_ok=True)
                raise
        except BaseException:
            if frames is not None:
                frames.close()  # the job failed: nobody gets its record
            raise
        finally:
            # Stop every helper thread before the containers they use are closed.
            if decoding is not None:
                decoding.close()
            if rendering is not None:
                rendering.close()
            masks_source.close()
            if out is not None:
                out.__exit__(None)
    logger.info("%s: %d frames, %s", input_path.name, count, record.summary())
    return JobResult(record=record, record_sha256=record_sha256, manifest=manifest)
