"""The record loader refuses what cannot be drawn (issue 14, item 3).

Pinned bugs: a box with swapped corners rendered nothing (exit 0); NaN, inf or 1e308 crashed
the render with "cannot convert float NaN to integer"; a deeply nested JSON file raised
RecursionError. Each is now a RecordError (exit 4) naming the frame and track. Boxes partly
outside the frame, or empty, are kept; oversized files are refused unread.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from recordgen import _document

import veil.job._record
from veil import RecordError
from veil.job._record import Record


def _load(tmp_path: Path, text: str) -> Record:
    path = tmp_path / "rec.json"
    path.write_text(text)
    return Record.load(path)


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ("[50, 20, 10, 70]", "corners swapped"),
        ("[10, 70, 50, 20]", "corners swapped"),
        ("[NaN, 20, 50, 70]", "not a finite number"),
        ("[10, 20, Infinity, 70]", "not a finite number"),
        ("[-Infinity, 20, 50, 70]", "not a finite number"),
        ("[10, 20, 1e400, 70]", "not a finite number"),  # overflows a float: inf
        ("[10, 20, 1e308, 70]", "lies beyond 3200 pixels"),
        ("[10, 20, 3201, 70]", "lies beyond 3200 pixels"),  # 10 frame sizes of 320
        ("[-3201, 20, 50, 70]", "lies beyond 3200 pixels"),
        ("[10, 20, 50, " + "9" * 400 + "]", "lies beyond 3200 pixels"),  # a 400-digit int
    ],
    ids=[
        "swapped-x",
        "swapped-y",
        "nan",
        "inf",
        "minus-inf",
        "1e400",
        "1e308",
        "just-past-reach",
        "negative-past-reach",
        "huge-int",
    ],
)
def test_a_box_that_cannot_be_drawn_is_refused_naming_frame_and_track(
    tmp_path: Path, box: str, message: str
) -> None:
    text = json.dumps(_document()).replace("[10.0, 20.0, 50.0, 70.0]", box)
    assert box in text
    with pytest.raises(RecordError, match=message) as caught:
        _load(tmp_path, text)
    assert "frame 2, track 5" in str(caught.value)
    assert str(tmp_path / "rec.json") in str(caught.value)


@pytest.mark.parametrize(
    "box",
    [(-40.0, -30.0, 20.0, 25.0), (300.0, 200.0, 360.0, 260.0), (10.0, 20.0, 10.0, 20.0)],
    ids=["past-top-left", "past-bottom-right", "empty"],
)
def test_boxes_partly_outside_the_frame_or_empty_are_kept(
    tmp_path: Path, box: tuple[float, ...]
) -> None:
    record = _load(tmp_path, json.dumps(_document(box)))
    assert record.frames[2].masks[0].box == box


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"motion": [1e9, 0.0]}, "frame 2: camera motion"),
        ({"masks": [{"track": 5, "origin": "detected", "box": [1, 2, 3, 4], "score": math.nan}]},
         r"frame 2, track 5 \(frames/2/masks/0/score\): nan is not a finite number"),
        ({"masks": [{"track": 5, "origin": "detected", "box": [1, 2, 3, 4], "score": 0.5,
                     "landmarks": [[1.0, 2.0], [1e9, 2.0]]}]},
         r"frame 2, track 5: landmark \[1000000000.0, 2.0\] lies beyond"),
    ],
    ids=["motion", "score-nan", "landmark"],
)  # fmt: skip
def test_other_coordinates_and_numbers_are_checked_too(
    change: dict[str, Any], message: str
) -> None:
    document = _document()
    document["frames"][2].update(change)
    with pytest.raises(RecordError, match=message):
        Record.from_json(document, "rec")


@pytest.mark.parametrize(
    ("box", "message"),
    [([50, 20, 10, 70], "corners swapped"), ([0, 0, 1e308, 9], "lies beyond 3200 pixels")],
    ids=["swapped", "1e308"],
)
def test_a_manual_box_in_the_edit_log_is_checked(box: list[float], message: str) -> None:
    document = _document()
    document["edits"] = [
        {
            "id": 1,
            "action": "add_boxes",
            "track": 9,
            "keyframes": [{"frame": 1, "box": box}],
            "who": "a",
            "when": "2025-01-01T00:00:00Z",
            "why": "b",
            "base_sha256": "ef" * 32,
        }
    ]
    with pytest.raises(RecordError, match=f"rec: edit #1, track 9, frame 1: .*{message}"):
        Record.from_json(document, "rec")


def test_a_deeply_nested_file_is_refused_without_recursion_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="nested deeper than 64 levels"):
        _load(tmp_path, "[" * 100_000 + "]" * 100_000)
    document = _document()  # deep, but within what json itself parses
    nest: Any = 1
    for _ in range(70):
        nest = [nest]
    document["detector"]["options"] = nest
    with pytest.raises(RecordError, match="nested deeper than 64 levels at detector/options/0"):
        Record.from_json(document, "rec")


def test_a_record_file_over_the_size_limit_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = json.dumps(_document())
    monkeypatch.setattr(veil.job._record, "MAX_RECORD_BYTES", len(text) - 1)
    with pytest.raises(RecordError, match=r"larger than [\d,]+ bytes"):
        _load(tmp_path, text)
    monkeypatch.setattr(veil.job._record, "MAX_RECORD_BYTES", len(text))
    assert len(_load(tmp_path, text).frames) == 3
