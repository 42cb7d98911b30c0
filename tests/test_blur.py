"""Blurred frames (issue 17, flags worth a person's time): a frame that lost the fine detail
its shot had (a whip pan, a focus hunt) is listed in the record's residual risk and flagged
for review; a soft but steady picture is not, and a cut starts the comparison again."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from mediagen import _picture
from test_edits import ScriptedDetector

import veil
from veil import DetectionConfig
from veil.job._edits import Applied
from veil.job._replay import final_frames
from veil.review._flags import find_flags
from veil.review._risk import risk_block, risk_series
from veil.track._shots import BlurWatch

BLURRED = range(12, 17)


def _grey(picture: np.ndarray) -> np.ndarray:
    return np.asarray(cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY), np.uint8)


def test_a_frame_that_lost_its_shot_s_detail_is_blurred() -> None:
    watch = BlurWatch()
    sharp = [_grey(_picture(i, 160, 90)) for i in range(30)]
    seen = [
        watch.blurred(cv2.GaussianBlur(s, (0, 0), 2.0) if i in BLURRED else s)
        for i, s in enumerate(sharp)
    ]
    assert [i for i, b in enumerate(seen) if b] == list(BLURRED)
    # a soft picture all along is no blur: it has no sharper frames to fall from
    soft = BlurWatch()
    assert not any(soft.blurred(cv2.GaussianBlur(s, (0, 0), 2.0)) for s in sharp)
    # after a cut, the new shot is compared with itself
    watch = BlurWatch()
    for s in sharp[:10]:
        watch.blurred(s)
    assert watch.blurred(cv2.GaussianBlur(sharp[10], (0, 0), 2.0))
    assert not watch.blurred(cv2.GaussianBlur(sharp[11], (0, 0), 2.0), cut=True)


def test_blurred_frames_are_in_the_record_and_flagged(tmp_path: Path) -> None:
    clip = tmp_path / "pan.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(25), options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(30):
            picture = _picture(i, 320, 240)
            if i in BLURRED:  # the camera whips round
                picture = cv2.GaussianBlur(picture, (0, 0), 4.0)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        out.mux(stream.encode())
    record_path = tmp_path / "pan.veil.json"

    def face(_: int) -> list[tuple[tuple[float, float, float, float], float]]:
        return [((40.0, 50.0, 110.0, 130.0), 0.95)]

    config = DetectionConfig.from_preset("fast", detector={"stride": 1})
    record = veil.detect(clip, record_path, config=config, detector=ScriptedDetector(face))
    block = json.loads(record_path.read_text())["residual_risk"]
    assert block["blurred_frames"] == {"count": 5, "list": [{"first": 12, "last": 16}]}
    assert block["dark_frames"]["count"] == 0
    finals = final_frames(record)
    risk = risk_block(record, {"residual_risk": block})
    flags = find_flags(record, finals, Applied.of(record), risk_series(risk, len(finals)), risk)
    assert [(f.first, f.last) for f in flags if f.reason == "blurred frames"] == [(12, 16)]
