"""``veil live`` from a file source to a file sink, in process, with stand-in detectors
(issue 4): the file is played at its native rate and nothing goes out unmasked, a hard cut is
masked whole until a detection after it is back (issue 18), and ``--on-outage stop`` finishes
the output, then fails.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from live_detectors import _Dying, _Fixed
from live_loopback import packets, read_record

from veil import Detections, DetectorError
from veil.live import LiveConfig, run_live

pytestmark = pytest.mark.timeout(600)


def test_file_source_plays_at_native_rate_to_a_file(tmp_path: Path) -> None:
    """A file source is played at its rate; a file sink is finalised; nothing unmasked."""
    from mediagen import make_clip

    clip = make_clip(tmp_path / "in.mp4", size=(320, 240), frames=50)  # 2 s at 25 fps
    out, record = tmp_path / "out.ts", tmp_path / "out.jsonl"
    started = time.monotonic()
    summary = run_live(
        str(clip), str(out), detector=_Fixed(), record=record, config=LiveConfig(delay_s=0.5)
    )
    took = time.monotonic() - started
    assert took >= 1.8, f"a 2 s file took {took:.2f} s: not played at its native rate"
    assert summary["frames_in"] == 50
    assert summary["frames_out"] + sum(summary["frames_dropped"].values()) == 50
    lines = read_record(record)
    assert lines[0]["schema"] == "veil.live-record/1"
    assert "summary" in lines[-1]
    frames = [line for line in lines if "mode" in line]
    # every frame has a mask: the fixed box, its prediction, or the whole frame
    assert all(line["masks"] for line in frames)
    with av.open(str(out)) as c:
        assert c.streams.audio, "audio was not passed through"
        assert sum(1 for _ in c.decode(video=0)) == summary["frames_out"]
    src = [p for k, _, _, p in packets(clip) if k == "audio"]
    got = [p for k, _, _, p in packets(out) if k == "audio"]
    assert len(got) == len(src)


class _SlowOnTheDark(_Fixed):
    """The fixed box at once, but ``seconds`` late for the first dark image it is given."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self._seconds = seconds
        self.dark_seen = 0

    def detect(self, images: Sequence[Any], sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        if any(float(np.mean(image)) < 100 for image in images):
            self.dark_seen += 1
            if self.dark_seen == 1:
                time.sleep(self._seconds)
        return super().detect(images, sizes)


def _clip_with_a_cut(path: Path, *, frames: int, cut: int) -> Path:
    """320x240 at 25 fps: a bright textured shot, then from frame ``cut`` a dark other one."""
    rng = np.random.default_rng(3)
    shots = [
        rng.integers(150, 255, (240, 320, 3), np.uint8),
        rng.integers(0, 60, (240, 320, 3), np.uint8),
    ]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(shots[i >= cut], format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_a_hard_cut_is_masked_whole_until_a_detection_after_it_is_back(tmp_path: Path) -> None:
    """Issue 18: live leaks followed hard cuts, before the first detection after the cut had
    completed (the old shot's tracks say nothing of the new one's faces). Here the detection
    of the new shot's first frame takes 0.6 s, three times the delay."""
    cut = 25
    clip = _clip_with_a_cut(tmp_path / "cut.mp4", frames=60, cut=cut)
    record = tmp_path / "out.jsonl"
    detector = _SlowOnTheDark(0.6)
    run_live(
        str(clip),
        str(tmp_path / "out.ts"),
        detector=detector,
        record=record,
        config=LiveConfig(delay_s=0.2),
    )
    frames = {line["frame"]: line for line in read_record(record) if "mode" in line}
    assert set(frames) == set(range(60))
    reason = f"cut at frame {cut}, not detected since"
    cut_masked = sorted(i for i, line in frames.items() if line.get("policy") == reason)
    assert cut_masked[:3] == [cut, cut + 1, cut + 2], cut_masked
    assert cut_masked == list(range(cut, cut_masked[-1] + 1))  # until the detection was back
    whole = [{"track": 0, "origin": "policy", "box": [0.0, 0.0, 320.0, 240.0], "score": 1.0}]
    assert all(frames[i]["masks"] == whole for i in cut_masked)
    assert any(line["mode"] == "detected" for i, line in frames.items() if i > cut_masked[-1])


def test_on_outage_stop_finishes_output_then_fails(tmp_path: Path) -> None:
    from mediagen import make_clip

    from veil.live import OutagePolicy

    clip = make_clip(tmp_path / "in.mp4", size=(320, 240), frames=75)  # 3 s
    out, record = tmp_path / "out.ts", tmp_path / "out.jsonl"
    dying = _Dying(_Fixed(), after_s=1.0, how="raise")
    with pytest.raises(DetectorError, match="on-outage stop"):
        run_live(
            str(clip),
            str(out),
            detector=dying,
            record=record,
            config=LiveConfig(delay_s=0.2, on_outage=OutagePolicy.STOP),
        )
    lines = read_record(record)
    summary = lines[-1]["summary"]
    assert summary["ended"].startswith("stopped: detector unavailable")
    assert summary["frames_out"] < 75, "it did not stop"
    assert lines[-2].get("mode") == "policy"
    with av.open(str(out)) as c:  # finished, playable, every frame it sent
        assert sum(1 for _ in c.decode(video=0)) == summary["frames_out"]


class _RedUntilBlind(_Fixed):
    """Finds the red square in its first ``seen`` images, then nothing (a detector gone
    blind: motion blur, a turned head)."""

    def __init__(self, seen: int) -> None:
        super().__init__()
        self._left = seen

    def detect(self, images: Sequence[Any], sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        found = []
        for image, (width, height) in zip(images, sizes, strict=True):
            red = (image[..., 0] > 180) & (image[..., 1] < 80) & (image[..., 2] < 80)
            ys, xs = np.nonzero(red)
            if self._left <= 0 or not len(xs):
                found.append(Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
                continue
            self._left -= 1
            sx, sy = width / image.shape[1], height / image.shape[0]
            box = [xs.min() * sx, ys.min() * sy, (xs.max() + 1) * sx, (ys.max() + 1) * sy]
            found.append(Detections(np.array([box], np.float32), np.array([0.9], np.float32)))
        return found


PAN = 24  # px a frame: faster than a face's own speed cap (0.25 x 40 px)


def _panning_clip(path: Path, frames: int) -> tuple[Path, list[tuple[int, int, int, int]]]:
    """640x360 at 25 fps: the camera pans right over a textured wall at :data:`PAN` px a
    frame; a 40 px red square (the face) is painted on the grey wall. Returns the square's box in
    each frame."""
    rng = np.random.default_rng(5)
    grey = cv2.resize(rng.integers(0, 200, (90, 400), np.uint8), (2400, 360))
    wall = np.repeat(grey[..., None], 3, axis=2)  # grey: nothing red but the face
    wall[160:200, 1200:1240] = (255, 0, 0)
    boxes = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"crf": "18"}
        for i in range(frames):
            left = 700 + PAN * i
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(wall[:, left : left + 640]), "rgb24"
            )
            frame.pts = i
            out.mux(stream.encode(frame))
            boxes.append((1200 - left, 160, 1240 - left, 200))
        out.mux(stream.encode(None))
    return path, boxes


def test_predictions_follow_the_camera_when_the_detector_goes_blind(tmp_path: Path) -> None:
    """Issue 18, item 5: live predictions move by the offline motion model, the camera's
    motion measured on each frame's arrival plus the face's own velocity. The camera pans
    24 px a frame; the detector sees the face in its first 6 frames, then nothing: every
    frame masked from predictions is centred on the face, and the record has the camera's
    motion. (Carried at the face's own speed alone, capped at 10 px a frame, the box fell
    14 px a frame behind and covered the face only by growing: live mode before.)"""
    clip, truth = _panning_clip(tmp_path / "pan.mp4", frames=20)
    record = tmp_path / "out.jsonl"
    run_live(
        str(clip),
        str(tmp_path / "out.ts"),
        detector=_RedUntilBlind(seen=6),
        record=record,
        config=LiveConfig(delay_s=0.5),
    )
    frames = {line["frame"]: line for line in read_record(record) if "mode" in line}
    assert set(frames) == set(range(20))
    motions = [frames[i].get("motion", [0.0, 0.0]) for i in range(1, 20)]
    assert all(abs(dx + PAN) <= 1.5 and abs(dy) <= 1.5 for dx, dy in motions), motions
    predicted = [i for i, line in frames.items() if line["mode"] != "policy" and i >= 8]
    assert len(predicted) >= 8, frames
    for i in predicted:
        x0, y0, x1, y1 = truth[i]
        covering = [
            b for b in (m["box"] for m in frames[i]["masks"])
            if b[0] <= x0 and b[1] <= y0 and b[2] >= x1 and b[3] >= y1
        ]  # fmt: skip
        assert covering, f"frame {i}: face at {truth[i]}, masks {frames[i]['masks']}"
        # centred on the face: carried by the camera, not merely grown over it
        cx, cy = (covering[0][0] + covering[0][2]) / 2, (covering[0][1] + covering[0][3]) / 2
        assert abs(cx - (x0 + x1) / 2) <= 3 and abs(cy - (y0 + y1) / 2) <= 3, (i, covering)
