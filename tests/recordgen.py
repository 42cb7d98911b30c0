"""Records made in the tests: ``_document``, a schema-valid record document to spoil (the
loader's tests in tests/test_record_load.py, the CLI's and the outputs' tests)."""

from __future__ import annotations

from typing import Any

from veil.core import FrameMasks
from veil.job._record import Record
from veil.track._config import TrackerConfig


def _document(box: Any = (10.0, 20.0, 50.0, 70.0), **entry: Any) -> dict[str, Any]:
    """A schema-valid record of a 320x240 video, three frames; frame 2 lists track 5 at ``box``."""
    record = Record(
        veil_version="0.0-test",
        input={
            "name": "in.mp4",
            "size": 1,
            "sha256": "ab" * 32,
            "container": "mp4",
            "video": {"width": 320, "height": 240},
            "streams": [],
        },
        detector={
            "model": "fixed",
            "weights_sha256": "cd" * 32,
            "backend": "test",
            "execution_provider": "cpu",
            "max_side": 640,
            "score_threshold": 0.5,
            "nms_threshold": 0.3,
        },
        tracker=TrackerConfig(),
        frames=[FrameMasks(i, 512 * i, []) for i in range(3)],
    )
    document = record.to_json()
    mask = {"track": 5, "origin": "detected", "box": list(box), "score": 0.9}
    document["frames"][2].update({"masks": [mask], **entry})
    return document
