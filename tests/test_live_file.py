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
