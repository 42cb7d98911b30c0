"""Reviewer edits: add a manual track, suppress a false positive, grow a track; the edit log;
deterministic re-render; ``veil diff``. Detections come from a scripted detector, so the test
knows exactly where every track is."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import av
import numpy as np
import pytest
from mediagen import make_clip

import veil
from veil import DetectionConfig, Detections, DetectorInfo, RecordError
from veil.cli import main
from veil.core import Origin
from veil.job._edits import Applied, Keyframe, add_edits
from veil.job._replay import final_frames

FAST = DetectionConfig.from_preset("fast", detector={"stride": 1})  # every frame detected

Script = Callable[[int], Sequence[tuple[tuple[float, float, float, float], float]]]


class ScriptedDetector:
    """Returns, for frame ``i``, the boxes ``script(i)`` says (display pixels, scores)."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self._next = 0
        self.info = DetectorInfo(
            model="scripted",
            weights_sha256="0" * 64,
            backend="test",
            execution_provider="cpu",
            max_side=320,
            score_threshold=0.5,
            nms_threshold=0.4,
        )

    def detect(
        self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
    ) -> list[Detections]:
        out = []
        for _ in images:
            found = self._script(self._next)
            self._next += 1
            boxes = np.array([b for b, _ in found], np.float32).reshape(-1, 4)
            out.append(Detections(boxes, np.array([s for _, s in found], np.float32)))
        return out

    def close(self) -> None:
        pass


FALSE_POSITIVE = (20.0, 20.0, 80.0, 90.0)  # track 1: detected in every frame
FACE = (200.0, 40.0, 260.0, 110.0)  # track 2: detected in every frame, to be grown
KEYFRAMES = {5: (120.0, 140.0, 170.0, 200.0), 15: (140.0, 140.0, 190.0, 200.0)}  # manual track


def two_tracks(_: int) -> list[tuple[tuple[float, float, float, float], float]]:
    return [(FALSE_POSITIVE, 0.9), (FACE, 0.95)]


def rgb_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24").astype(np.int16) for f in container.decode(video=0)]


def region_change(a: np.ndarray, b: np.ndarray, box: tuple[float, float, float, float]) -> float:
    x0, y0, x1, y1 = (round(v) for v in box)
    return float(np.abs(a[y0:y1, x0:x1] - b[y0:y1, x0:x1]).mean())


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("edits")
    src = make_clip(tmp / "in.mp4", frames=24)
    record = tmp / "in.veil.json"
    veil.detect(src, record, config=FAST, detector=ScriptedDetector(two_tracks))
    before = tmp / "before.veil.json"
    before.write_bytes(record.read_bytes())
    adds = [f"--add-box={f}:{','.join(map(str, b))}" for f, b in KEYFRAMES.items()]
    who = ["--who", "R. Viewer", "--why"]
    assert main(["edit", str(record), *adds, *who, "badge photo the detector missed"]) == 0
    assert main(["edit", str(record), "--suppress", "1", *who, "poster, not a person"]) == 0
    assert main(["edit", str(record), "--grow", "2:0.3", *who, "hairline left visible"]) == 0
    return {"src": src, "record": record, "before": before, "tmp": tmp}


def test_the_edit_log_keeps_every_edit_with_who_when_and_why(edited: dict[str, Path]) -> None:
    record = veil.Record.load(edited["record"])
    assert [(e["id"], e["action"], e["track"]) for e in record.edits] == [
        (1, "add_boxes", 3),
        (2, "suppress", 1),
        (3, "grow", 2),
    ]
    assert all(
        e["who"] == "R. Viewer" and e["when"].endswith("Z") and e["why"] for e in record.edits
    )
    assert record.edits[0]["keyframes"] == [
        {"frame": f, "box": list(b)} for f, b in KEYFRAMES.items()
    ]
    # each edit names the record it was made on: a chain back to the detector's record
    assert record.edits[0]["base_sha256"] == veil.Record.load(edited["before"]).sha256()
    assert record.edits[1]["base_sha256"] != record.edits[0]["base_sha256"]
    # the detector's frames are history: untouched by the edits
    before = veil.Record.load(edited["before"])
    assert [f.masks for f in record.frames] == [f.masks for f in before.frames]


def test_render_applies_edits_deterministically(edited: dict[str, Path]) -> None:
    src, tmp = edited["src"], edited["tmp"]
    out_a, out_b, plain = tmp / "a.mp4", tmp / "b.mp4", tmp / "plain.mp4"
    veil.render(src, edited["record"], out_a)
    veil.render(src, edited["record"], out_b)
    veil.render(src, edited["before"], plain)
    assert out_a.read_bytes() == out_b.read_bytes()

    source, output, unedited = rgb_frames(src), rgb_frames(out_a), rgb_frames(plain)
    assert len(output) == len(source) == 24
    # the manual box is masked in every frame it spans, at its interpolated place
    for index in range(5, 16):
        t = (index - 5) / 10
        box = tuple(a + (b - a) * t for a, b in zip(KEYFRAMES[5], KEYFRAMES[15], strict=True))
        assert region_change(output[index], source[index], box) > 20, index
    # the suppressed track is not masked in any frame (it was, before the edit)
    for index in range(24):
        assert region_change(output[index], source[index], FALSE_POSITIVE) < 8, index
        assert region_change(unedited[index], source[index], FALSE_POSITIVE) > 20, index
    # the grown track's mask reaches a strip left of where the ungrown mask ended
    strip = (176.0, 60.0, 181.0, 90.0)
    for index in (0, 12, 23):
        assert region_change(output[index], source[index], strip) > 20, index
        assert region_change(unedited[index], source[index], strip) < 8, index


def test_final_masks_follow_the_edits(edited: dict[str, Path]) -> None:
    finals = final_frames(veil.Record.load(edited["record"]))
    for frame in finals:
        tracks = {m.track for m in frame.masks}
        assert 1 not in tracks
        grown = next(m for m in frame.masks if m.track == 2)
        assert grown.box == pytest.approx((191.0, 29.5, 269.0, 120.5))
        assert (3 in tracks) == (
            5 - FAST.tracker.lead_in <= frame.index <= 15 + FAST.tracker.lead_out
        )


def test_diff_names_what_changed(
    edited: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["diff", str(edited["before"]), str(edited["before"])]) == 0
    capsys.readouterr()
    assert main(["diff", str(edited["before"]), str(edited["record"])]) == 1
    text = capsys.readouterr().out
    assert "edit added: #2 suppress track 1 (R. Viewer" in text
    assert "track 1: no longer masked in 24 frames [0-23] (suppressed in B)" in text
    assert "track 2: boxes changed in 24 frames" in text
    assert "track 3: newly masked in" in text
    assert "HISTORY REWRITTEN" not in text
    assert main(["diff", "--json", str(edited["record"]), str(edited["before"])]) == 1
    document = json.loads(capsys.readouterr().out)
    assert document["edits"]["rewritten_from"] == 1  # B dropped A's edits


def test_signed_manifest_and_verify_show_the_suppression(
    edited: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tmp = edited["tmp"]
    assert main(["keygen", "-o", str(tmp / "k.pem")]) == 0
    out = tmp / "signed.mp4"
    manifest = veil.render(edited["src"], edited["record"], out, sign_key=tmp / "k.pem")
    assert [e["action"] for e in manifest["edits"]] == ["add_boxes", "suppress", "grow"]
    capsys.readouterr()
    args = ["verify", str(out), str(out) + ".manifest.json", "--record", str(edited["record"])]
    assert main(args) == 0
    assert "SUPPRESSED by reviewer: #2 suppress track 1 (R. Viewer" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.update(id=5), "numbered 1, 2, 3"),
        (lambda e: e.pop("why"), "not a valid record"),
        (lambda e: e.update(action="delete"), "not a valid record"),
        (lambda e: e.update(track=0), "not a valid record"),
        (lambda e: e.update(track=99), "no track 99"),
    ],
)
def test_a_bad_edit_log_is_refused(
    edited: dict[str, Path], tmp_path: Path, change: Callable[[dict], object], message: str
) -> None:
    document = json.loads(edited["record"].read_text())
    change(document["edits"][1])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(document))
    with pytest.raises(RecordError, match=message):
        Applied.of(veil.Record.load(bad))


@pytest.mark.parametrize(
    "args",
    [
        ["--suppress", "0"],  # the policy track: fail-closed masks are not the reviewer's
        ["--suppress", "1"],  # already suppressed by edit #2
        ["--grow", "2:5"],  # beyond the largest growth
        ["--add-box", "99:1,1,5,5"],  # past the last frame
        ["--add-box", "3:10,10,5,5"],  # empty box
    ],
)
def test_bad_edits_are_refused_and_the_record_is_unchanged(
    edited: dict[str, Path], args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = edited["record"].read_bytes()
    assert main(["edit", str(edited["record"]), *args, "--who", "x", "--why", "y"]) == 4
    assert "veil: error:" in capsys.readouterr().err
    assert edited["record"].read_bytes() == before


def test_a_faint_face_is_masked_from_its_first_sighting(tmp_path: Path) -> None:
    """Issue 18: a face the detector scores below the new-track threshold in every frame (a
    compressed or dark face) is masked in every frame once ``confirm_hits`` weak sightings
    confirm its track, its first frames too (the release delay); off, it is never masked.
    The record renders to the very output the run wrote."""
    src = make_clip(tmp_path / "in.mp4", frames=20)
    config = DetectionConfig(
        detector=veil.DetectorSettings(score_threshold=0.4, track_threshold=0.2, stride=1),
        tracker=veil.TrackerConfig(max_gap=4, lead_in=4, lead_out=0, confirm_hits=3),
    )
    out, again = tmp_path / "out.mp4", tmp_path / "again.mp4"
    veil.anonymize(src, out, config=config, detector=ScriptedDetector(lambda _: [(FACE, 0.25)]))
    record = veil.Record.load(out.with_name("out.mp4.veil.json"))
    assert record.tracker.confirm_hits == 3
    assert all([m.box for m in f.masks if m.origin == "detected"] == [FACE] for f in record.frames)
    veil.render(src, out.with_name("out.mp4.veil.json"), again)
    assert again.read_bytes() == out.read_bytes()
    off = veil.detect(
        src,
        config=DetectionConfig(detector=config.detector, tracker=veil.TrackerConfig()),
        detector=ScriptedDetector(lambda _: [(FACE, 0.25)]),
    )
    assert all(not f.masks for f in off.frames)
    assert len(off.residual_risk["near_threshold"]["worst"]) > 0


def test_trim_keeps_a_track_in_its_frames_and_reviewed_changes_no_mask(
    edited: dict[str, Path],
) -> None:
    """The review workstation's edits: ``trim`` drops a track's masks, evidence and derived,
    outside its frames (rendered too); ``reviewed`` is logged and masks nothing new."""
    record = veil.Record.load(edited["record"])
    before = final_frames(record)
    add_edits(record, who="R. Viewer", why="ran on over the wall", trim=[(2, 4, 9)])
    add_edits(record, who="R. Viewer", why="looked: no face", reviewed=[(0, 23)])
    assert [e["action"] for e in record.edits[-2:]] == ["trim", "reviewed"]
    assert "track" not in record.edits[-1]
    finals = final_frames(record)
    for old, new in zip(before, finals, strict=True):
        kept = {m for m in old.masks if m.track != 2 or 4 <= new.index <= 9}
        assert set(new.masks) == kept, new.index
    trimmed = edited["tmp"] / "trimmed.veil.json"
    record.write(trimmed)
    out = edited["tmp"] / "trimmed.mp4"
    veil.render(edited["src"], trimmed, out)
    source, output = rgb_frames(edited["src"]), rgb_frames(out)
    assert region_change(output[6], source[6], FACE) > 20
    assert region_change(output[12], source[12], FACE) < 8
    with pytest.raises(RecordError, match="not a range"):
        add_edits(record, who="A", why="b", trim=[(2, 9, 4)])
    with pytest.raises(RecordError, match="no track 42"):
        add_edits(record, who="A", why="b", trim=[(42, 0, 3)])


def test_a_box_added_where_its_track_is_detected_replays(edited: dict[str, Path]) -> None:
    """A reviewer's box on a frame where its track is also detected: two sightings of one
    track in one frame (the smoother divided by the zero frames between them)."""
    record = veil.Record.load(edited["record"])
    add_edits(
        record,
        who="R. Viewer",
        why="the detection is a little off",
        add_boxes=[Keyframe(frame=10, box=FACE), Keyframe(frame=12, box=FACE)],
        track=2,
    )
    finals = final_frames(record)
    assert {m.origin for m in finals[11].masks if m.track == 2} >= {Origin.MANUAL}
