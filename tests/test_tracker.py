"""Tracking and smoothing: ids stay stable, gaps are bridged, the tracker only adds."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter
from hypothesis import given, settings
from hypothesis import strategies as st

import veil
from veil import DetectionConfig, Detections, Mask, Origin, TrackerConfig
from veil.core import FrameMasks
from veil.job._replay import RecordMasks as _FromRecord
from veil.media import DecodedFrame
from veil.track._associator import FOLLOW_LIMIT, Associator
from veil.track._camera import CameraMotion, grey_thumbnail
from veil.track._shots import CutDetector
from veil.track._smoother import Smoother

CONFIG = TrackerConfig(max_gap=4, lead_in=3, lead_out=2)


def _detected(track: int, box: tuple[float, float, float, float]) -> Mask:
    return Mask(track=track, origin=Origin.DETECTED, box=box, score=0.9)


def _smooth(
    evidence: dict[int, list[Mask]], frames: int, config: TrackerConfig = CONFIG
) -> list[FrameMasks]:
    smoother = Smoother(config)
    out = []
    for i in range(frames):
        out.extend(smoother.push(i, i, evidence.get(i, [])))
    out.extend(smoother.flush())
    return out


def test_a_one_frame_miss_is_interpolated() -> None:
    evidence = {i: [_detected(1, (10.0 + i, 10, 50 + i, 60))] for i in range(10) if i != 5}
    frames = _smooth(evidence, 10)
    (mask,) = frames[5].masks
    assert mask.origin is Origin.INTERPOLATED
    assert mask.box == (15.0, 10.0, 55.0, 60.0)


def test_gaps_up_to_max_gap_are_bridged_and_longer_ones_are_not() -> None:
    box = (0.0, 0.0, 10.0, 10.0)
    short = {0: [_detected(1, box)], 5: [_detected(1, box)]}  # 4 frames missing
    assert all(f.masks for f in _smooth(short, 6))
    long = {0: [_detected(1, box)], 20: [_detected(1, box)]}
    middle = [f for f in _smooth(long, 21) if not f.masks]
    assert [f.index for f in middle] == list(range(3, 17))  # lead-out 2, lead-in 3


def test_masks_start_before_the_first_detection_and_end_after_the_last() -> None:
    evidence = {i: [_detected(1, (20.0, 20, 40, 40))] for i in range(10, 15)}
    frames = _smooth(evidence, 30)
    masked = [f.index for f in frames if f.masks]
    assert masked == list(range(7, 17))
    lead_in = frames[7].masks[0]
    assert lead_in.origin is Origin.EXTRAPOLATED
    w = lead_in.box[2] - lead_in.box[0]
    assert w > 20  # grown while it is a guess


def test_associator_keeps_ids_through_motion_and_misses() -> None:
    associator = Associator(CONFIG)
    ids = []
    for i in range(12):
        boxes = np.array([[10 + 6 * i, 10, 50 + 6 * i, 60], [200, 100, 240, 150]], np.float32)
        if i == 5:
            boxes = boxes[1:]  # the moving face is missed once
        masks = associator.assign(i, Detections(boxes, np.full(len(boxes), 0.9)))
        ids.append({m.track for m in masks})
    assert set().union(*ids) == {1, 2}


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 39), st.integers(1, 4), st.floats(0, 500), st.floats(0, 500)),
        max_size=60,
    ),
    st.integers(0, 6),
    st.integers(0, 6),
)
def test_the_smoother_never_drops_evidence(
    points: list[tuple[int, int, float, float]], gap: int, lead: int
) -> None:
    evidence: dict[int, list[Mask]] = {}
    for frame, track, x, y in points:
        if any(m.track == track for m in evidence.get(frame, [])):
            continue
        evidence.setdefault(frame, []).append(_detected(track, (x, y, x + 30, y + 30)))
    config = TrackerConfig(max_gap=gap, lead_in=lead, lead_out=lead)
    frames = _smooth(evidence, 40, config)
    assert [f.index for f in frames] == list(range(40))
    for f in frames:
        assert set(evidence.get(f.index, [])) <= set(f.masks)


@pytest.mark.weights
def test_a_detection_removed_from_a_record_is_filled_by_interpolation(
    tmp_path: Path, sample_clip: Path
) -> None:
    record_path = tmp_path / "rec.json"
    config = DetectionConfig.from_preset("fast", detector={"stride": 1})  # every frame
    record = veil.detect(sample_clip, record_path, config=config)
    # A frame whose track was detected just before and just after it.
    target = track = None
    for i in range(1, len(record.frames) - 1):
        before = {m.track for m in record.frames[i - 1].masks if m.origin is Origin.DETECTED}
        after = {m.track for m in record.frames[i + 1].masks if m.origin is Origin.DETECTED}
        here = [m for m in record.frames[i].masks if m.origin is Origin.DETECTED]
        common = [m for m in here if m.track in before & after]
        if common:
            target, track = i, common[0]
            break
    assert target is not None and track is not None
    document = json.loads(record_path.read_text())
    masks = document["frames"][target]["masks"]
    document["frames"][target]["masks"] = [
        m for m in masks if not (m["track"] == track.track and m["origin"] == "detected")
    ]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(document))

    source = _FromRecord(veil.Record.load(edited))
    finals = {}
    with av.open(str(sample_clip)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            finals.update({f.index: f for _, f in source.push(DecodedFrame(i, frame))})
    finals.update({f.index: f for _, f in source.flush()})
    filled = [m for m in finals[target].masks if m.track == track.track]
    assert [m.origin for m in filled] == [Origin.INTERPOLATED]
    # Interpolated between its neighbours, the box lands near the removed detection.
    gap = np.abs(np.subtract(filled[0].box, track.box)).max()
    assert gap < 0.2 * max(track.box[2] - track.box[0], track.box[3] - track.box[1])


def test_lead_in_and_lead_out_stop_at_a_cut_but_interpolation_does_not() -> None:
    box = (20.0, 20.0, 40.0, 40.0)
    smoother = Smoother(CONFIG)
    frames = []
    evidence = {5: [_detected(1, box)], 12: [_detected(2, box)], 15: [_detected(2, box)]}
    for i in range(25):
        frames.extend(smoother.push(i, i, evidence.get(i, []), cut=i in (7, 14)))
    frames.extend(smoother.flush())
    masked = {f.index: [m.track for m in f.masks] for f in frames if f.masks}
    # track 1: lead-in 3 frames (2-4), lead-out 2 frames (6 only: the cut at 7 ends it).
    # track 2: lead-in 3 frames (9-11, after the cut at 7); the cut at 14 lies between its two
    # detections, so 13-14 stay interpolated; lead-out 16-17.
    track_1 = {i: [1] for i in range(2, 7)}
    track_2 = {i: [2] for i in range(9, 18)}
    assert masked == track_1 | track_2
    assert [f.index for f in frames if f.cut] == [7, 14]


def test_the_sample_has_one_cut_where_the_shot_changes(sample_clip: Path) -> None:
    shots = CutDetector()
    with av.open(str(sample_clip)) as container:
        frames = enumerate(container.decode(video=0))
        scaler = VideoReformatter()
        cuts = [i for i, frame in frames if shots.is_cut(grey_thumbnail(frame, scaler))]
    assert cuts == [125]  # samples/README.md: the hard cut at 5.0 s


def _textured(width: int, height: int, dx: int = 0, dy: int = 0) -> av.VideoFrame:
    """A random texture moved by (dx, dy) pixels (as a camera pan shows a still scene)."""
    rng = np.random.default_rng(3)
    scene = rng.integers(0, 255, (height + 200, width + 200), np.uint8)
    scene = np.asarray(cv2.GaussianBlur(scene, (0, 0), 2), np.uint8)
    crop = scene[100 - dy : 100 - dy + height, 100 - dx : 100 - dx + width]
    return av.VideoFrame.from_ndarray(np.stack([crop] * 3, axis=-1), format="rgb24")


def test_camera_motion_is_measured_in_stored_pixels_and_zero_when_still_or_cut() -> None:
    camera, scaler = CameraMotion(), VideoReformatter()

    def measure(dx: int = 0, dy: int = 0, cut: bool = False) -> tuple[float, float]:
        thumbnail = grey_thumbnail(_textured(640, 360, dx, dy), scaler)
        return camera.measure(thumbnail, (640, 360), cut=cut)

    assert measure() == (0.0, 0.0)  # the first frame
    assert measure() == (0.0, 0.0)  # still
    dx, dy = measure(dx=40, dy=-12)
    assert abs(dx - 40) <= 1.5 and abs(dy + 12) <= 1.5, (dx, dy)
    assert measure(dx=80, dy=-12, cut=True) == (0.0, 0.0)


def test_masks_without_evidence_follow_the_camera() -> None:
    # A face detected at frames 0-1 and 10, lost in between while the camera pans 30 px a
    # frame to the right (the whole picture, the face included, moves with it).
    config = TrackerConfig(max_gap=12, lead_in=8, lead_out=8)
    box = (100.0, 100.0, 140.0, 150.0)

    def at(i: int) -> tuple[float, float, float, float]:
        return (box[0] + 30 * i, box[1], box[2] + 30 * i, box[3])

    smoother = Smoother(config)
    frames = []
    for i in range(12):
        evidence = [_detected(1, at(i))] if i in (0, 1, 10) else []
        frames.extend(smoother.push(i, i, evidence, motion=(0.0, 0.0) if i == 0 else (30.0, 0.0)))
    frames.extend(smoother.flush())
    for frame in frames[2:10]:  # interpolated across the gap, each on the face
        (mask,) = frame.masks
        assert mask.origin is Origin.INTERPOLATED
        assert all(abs(a - b) < 1e-6 for a, b in zip(mask.box, at(frame.index), strict=True)), (
            frame.index
        )
    assert frames[5].motion == (30.0, 0.0)
    # Lead-out after frame 10 carries the box with the camera too.
    (mask,) = frames[11].masks
    assert mask.origin is Origin.EXTRAPOLATED
    assert abs((mask.box[0] + mask.box[2]) / 2 - (at(11)[0] + at(11)[2]) / 2) < 1e-6


def test_the_associator_predicts_with_the_camera() -> None:
    # The face moves 60 px (more than its width) between two detections because the camera
    # panned: with the camera's offset it is the same track, without it a new one.
    config = TrackerConfig(max_gap=12, lead_in=8, lead_out=8)
    first = Detections(np.array([[100, 100, 140, 150]], np.float32), np.array([0.9], np.float32))
    later = Detections(np.array([[160, 100, 200, 150]], np.float32), np.array([0.9], np.float32))
    followed = Associator(config)
    (a,) = followed.assign(0, first, (0.0, 0.0))
    (b,) = followed.assign(3, later, (60.0, 0.0))
    assert a.track == b.track
    blind = Associator(config)
    (a,) = blind.assign(0, first)
    (b,) = blind.assign(3, later)
    assert a.track != b.track


def _covers(mask: Mask, face: tuple[float, float, float, float]) -> bool:
    return (
        mask.box[0] <= face[0]
        and mask.box[1] <= face[1]
        and mask.box[2] >= face[2]
        and mask.box[3] >= face[3]
    )


@pytest.mark.parametrize(
    ("xs", "speed"),
    [
        ([100, 104, 98, 103, 91], 0.0),  # a still face seen with jitter, the last step -12 px
        ([100, 103, 106, 109, 112], 3.0),  # a face walking 3 px a frame
    ],
)
def test_lead_out_stays_on_the_face_whatever_the_last_two_sightings_say(
    xs: list[float], speed: float
) -> None:
    """Issue 18: on a 1080p street clip the lead-out, carried at the velocity of the last two
    (jittery) sightings, drifted 11 px a frame off a face that barely moved. The velocity is
    now the median step of the last sightings, and the carried box keeps where the face was
    last seen."""
    config = TrackerConfig(max_gap=2, lead_in=0, lead_out=8)
    evidence = {i: [_detected(1, (x, 100.0, x + 40, 150.0))] for i, x in enumerate(xs)}
    frames = _smooth(evidence, len(xs) + 8, config)
    last = len(xs) - 1
    for frame in frames[last + 1 :]:
        (mask,) = frame.masks
        assert mask.origin is Origin.EXTRAPOLATED
        x = xs[-1] if speed == 0 else xs[-1] + speed * (frame.index - last)
        assert _covers(mask, (x, 100.0, x + 40, 150.0)), (frame.index, mask.box, x)
    # and the box does not balloon: at most the face, its growth and the velocity's reach
    (far,) = frames[-1].masks
    assert far.box[2] - far.box[0] <= 40 * (1 + 8 * config.growth_per_frame) + 8 * 10 + 1e-6


def _weak(box: tuple[float, float, float, float], score: float = 0.25) -> Detections:
    return Detections(np.array([box], np.float32), np.array([score], np.float32))


def test_a_faint_face_seen_again_and_again_is_confirmed_with_its_first_sightings() -> None:
    """Issue 18: under heavy compression or in the dark the detector scores a face below the
    threshold that starts a track, but in the same place frame after frame. A track of weak
    sightings is confirmed by ``confirm_hits`` of them, and once released late enough, its
    first sightings are masked too; a one-off weak detection stays a near miss."""
    config = TrackerConfig(new_track_score=0.4, confirm_hits=3)
    assoc = Associator(config)
    assigned = {
        i: assoc.assign(i, _weak((100.0 + i, 50.0, 140.0 + i, 100.0))) for i in range(0, 6, 2)
    }
    assigned[7] = assoc.assign(7, _weak((400.0, 300.0, 440.0, 350.0)))  # a flicker elsewhere
    released = {i: assoc.release(i, masks) for i, masks in sorted(assigned.items())}
    assert [len(released[i]) for i in (0, 2, 4)] == [1, 1, 1]
    assert {m.track for i in (0, 2, 4) for m in released[i]} == {1}
    assert released[7] == []
    assert assoc.near_misses == {7: (1, 0.25)}


def test_a_weak_track_is_dropped_when_it_never_gets_its_hits() -> None:
    assoc = Associator(TrackerConfig(new_track_score=0.4, confirm_hits=3, max_gap=2))
    first = assoc.assign(0, _weak((100.0, 50.0, 140.0, 100.0)))
    second = assoc.assign(1, _weak((101.0, 50.0, 141.0, 100.0)))
    assert assoc.predict(2) == []  # live, but tentative: never carried
    for i in range(2, 8):
        assoc.assign(i, Detections.empty())  # the track dies after max_gap frames unseen
    assert assoc.release(0, first) == []
    assert assoc.release(1, second) == []
    assert assoc.near_misses == {0: (1, 0.25), 1: (1, 0.25)}


def test_weak_sightings_before_a_strong_one_join_its_track() -> None:
    """Without ``confirm_hits``, a strong sighting confirms the weak ones before it."""
    assoc = Associator(TrackerConfig(new_track_score=0.4))
    weak = assoc.assign(0, _weak((100.0, 50.0, 140.0, 100.0)))
    strong = assoc.assign(2, _weak((102.0, 50.0, 142.0, 100.0), score=0.9))
    assert [m.track for m in assoc.release(0, weak)] == [1]
    assert [m.track for m in assoc.release(2, strong)] == [1]
    assert assoc.near_misses == {}


def test_a_frame_filling_weak_detection_never_starts_a_track() -> None:
    """At a low threshold the detector reports frame-sized "faces" in texture and blur (the
    public WIDER pan: a 0.22 box 0.87 of the frame tall, confirmed, then carried past the
    frame's edges). A weak detection over a third of the frame's shorter side starts no
    track; it still continues a confirmed one (a face coming close)."""
    size = (640, 360)
    huge = (100.0, 20.0, 300.0, 260.0)  # 240 px tall > 0.33 x 360
    assoc = Associator(TrackerConfig(new_track_score=0.4, confirm_hits=2), frame_size=size)
    for i in range(4):
        assert assoc.release(i, assoc.assign(i, _weak(huge))) == []
    assert assoc.near_misses == {i: (1, 0.25) for i in range(4)}
    approaching = Associator(TrackerConfig(new_track_score=0.4), frame_size=size)
    assert len(approaching.release(0, approaching.assign(0, _weak(huge, score=0.9)))) == 1
    assert [m.track for m in approaching.release(1, approaching.assign(1, _weak(huge)))] == [1]


def test_live_a_faint_face_is_masked_from_the_sighting_that_confirms_it() -> None:
    """Live mode cannot wait: it releases each frame at once, so a track of weak sightings is
    masked from its ``confirm_hits``-th sighting on, and predicted only once confirmed."""
    assoc = Associator(TrackerConfig(new_track_score=0.4, confirm_hits=3))
    kept = [
        len(assoc.release(i, assoc.assign(i, _weak((100.0 + i, 50.0, 140.0 + i, 100.0)))))
        for i in range(5)
    ]
    assert kept == [0, 0, 1, 1, 1]
    assert sorted(assoc.near_misses) == [0, 1]
    assert [p.track for p in assoc.predict(5)] == [1]


def test_live_masks_a_faint_face_on_its_own_frame_before_it_is_confirmed() -> None:
    """Live cannot hold a frame until a weak sighting's track is confirmed: the sighting
    masks its own frame at once (a near miss all the same) and is predicted into the frames
    after only once confirmed."""
    from fractions import Fraction

    from veil.live import LiveConfig, Predictor

    tracker = TrackerConfig(new_track_score=0.4, confirm_hits=3)
    live = Predictor(LiveConfig(tracker=tracker), Fraction(25), (), (640, 360))
    box = (100.0, 50.0, 140.0, 100.0)
    assert [m.box for m in live.detected(0, _weak(box), (0.0, 0.0))] == [box]
    assert live.predicted(1, (0.0, 0.0), 0.0) == []
    for i in (2, 4):
        assert len(live.detected(i, _weak(box), (0.0, 0.0))) == 1
    assert [m.track for m in live.predicted(5, (0.0, 0.0), 0.0)] == [1]  # confirmed: carried


def test_one_shrunken_detection_between_steady_ones_is_joined_by_their_blend() -> None:
    """A face seen steadily at frames 0-4 whose frame-2 detection shrank and slipped (motion
    blur, a compression artefact): the blend of frames 1 and 3 joins it, so frame 2 is no
    one-frame hole; without steady_span it would be."""
    face = (100.0, 100.0, 160.0, 170.0)
    shrunk = (112.0, 92.0, 150.0, 140.0)
    evidence = {i: [_detected(1, shrunk if i == 2 else face)] for i in range(5)}
    steady = TrackerConfig(max_gap=4, lead_in=3, lead_out=2, steady_span=2)
    frame = _smooth(evidence, 5, steady)[2]
    assert any(_covers(m, face) for m in frame.masks)
    blend = [m for m in frame.masks if m.origin is Origin.INTERPOLATED]
    assert [m.track for m in blend] == [1] and blend[0].box == pytest.approx(face)
    assert not any(_covers(m, face) for m in _smooth(evidence, 5)[2].masks)
    # agreeing sightings get nothing extra: their blend lies inside each box
    agreeing = {i: [_detected(1, face)] for i in range(5)}
    assert all(len(f.masks) == 1 for f in _smooth(agreeing, 5, steady))


def test_a_blend_outside_the_box_by_less_than_the_rounding_still_adds_its_mask() -> None:
    """Regression (issue 15's rebuild): the steadying check compared the *rounded* blend (a
    Mask rounds its box to 0.01 px) with the detection, so a blend reaching out by 0.005 px
    added nothing where it had before; thorough's record of the 720p bench clip lost three
    interpolated masks and was no longer the same bytes as before the rebuild."""
    face = (100.0, 100.0, 160.0, 170.0)
    wider = (100.0, 100.0, 160.01, 170.0)
    evidence = {0: [_detected(1, face)], 1: [_detected(1, wider)], 2: [_detected(1, face)]}
    evidence |= {3: [_detected(1, face)], 4: [_detected(1, face)]}
    steady = TrackerConfig(max_gap=4, lead_in=3, lead_out=2, steady_span=2)
    frame = _smooth(evidence, 5, steady)[2]
    assert [m.origin for m in frame.masks if m.track == 1].count(Origin.INTERPOLATED) == 1


def test_the_blend_comes_only_from_sightings_within_the_span() -> None:
    face = (100.0, 100.0, 160.0, 170.0)
    shrunk = (112.0, 92.0, 150.0, 140.0)
    evidence = {0: [_detected(1, face)], 3: [_detected(1, shrunk)], 6: [_detected(1, face)]}
    steady = TrackerConfig(max_gap=4, lead_in=3, lead_out=2, steady_span=2)
    assert [m.origin for m in _smooth(evidence, 7, steady)[3].masks] == [Origin.DETECTED]


def test_steadying_is_re_derived_alike_from_the_evidence_it_adds_to() -> None:
    """``veil render`` re-derives masks from a record's evidence: the blends are interpolated
    masks, never evidence, so a second pass over the first pass's evidence gives the same
    frames."""
    rng = np.random.default_rng(3)
    steady = TrackerConfig(max_gap=4, lead_in=3, lead_out=2, steady_span=2)
    evidence: dict[int, list[Mask]] = {}
    for i in range(40):
        if rng.random() < 0.8:
            x, y = 100 + 3 * i + rng.normal(0, 4), 100 + rng.normal(0, 4)
            w = 60 * rng.uniform(0.7, 1.0)
            evidence[i] = [_detected(1, (x, y, x + w, y + w * 1.2))]
    first = _smooth(evidence, 40, steady)
    assert any(
        m.origin is Origin.INTERPOLATED and i in evidence
        for i, f in enumerate(first)
        for m in f.masks
    )
    again = {f.index: [m for m in f.masks if m.origin is Origin.DETECTED] for f in first}
    assert _smooth(again, 40, steady) == first


def _followed(track: int, box: tuple[float, float, float, float]) -> Mask:
    return Mask(track=track, origin=Origin.FOLLOWED, box=box, score=0.9)


def test_a_followed_mask_is_added_beside_what_the_evidence_derives() -> None:
    """Followed boxes are kept as given and never derived from: the interpolation between
    two detections is what it would be without them."""
    a, b = (0.0, 0.0, 10.0, 10.0), (20.0, 0.0, 30.0, 10.0)
    far = (100.0, 100.0, 110.0, 110.0)
    plain = _smooth({0: [_detected(1, a)], 4: [_detected(1, b)]}, 8)
    followed = _smooth(
        {0: [_detected(1, a)], **{i: [_followed(1, far)] for i in (1, 2, 3)}, 4: [_detected(1, b)]},
        8,
    )
    for before, after in zip(plain, followed, strict=True):
        extra = set(after.masks) - set(before.masks)
        assert set(before.masks) <= set(after.masks)
        assert extra == ({_followed(1, far)} if before.index in (1, 2, 3) else set())


def test_a_face_followed_on_key_frames_only_is_masked_on_the_frames_between() -> None:
    """A strided run follows a lost face on its key frames; long past the lead-out, the
    frames between are bridged from the followed boxes around them (they were bare: the face
    showed every other frame). Two detections stay :meth:`_derive`'s to bridge, and a gap
    longer than ``max_gap`` stays open."""

    def box(x: float) -> tuple[float, float, float, float]:
        return (x, 0.0, x + 10.0, 10.0)

    followed = {i: [_followed(1, box(2.0 * i))] for i in (10, 12, 14)}
    followed[0] = [_detected(1, box(0.0))]
    followed[22] = [_followed(1, box(44.0))]  # 7 frames after 14: beyond max_gap 4
    frames = _smooth(followed, 24)
    for index in (11, 13):
        (mask,) = frames[index].masks
        assert mask.origin is Origin.INTERPOLATED
        assert mask.box == box(2.0 * index)  # halfway between the followed boxes
    assert [f.index for f in frames if not f.masks] == [
        *range(3, 10),  # lead-out 2 of the detection, before the first followed box
        *range(15, 22),  # the gap of 7 frames
        23,
    ]
    # a followed box next to a detection bridges too (beside the detection's lead-out);
    # two detections of a followed track are bridged once (as the smoother always did)
    mixed = _smooth({0: [_detected(1, box(0.0))], 2: [_followed(1, box(4.0))]}, 3)
    assert sorted(m.origin.value for m in mixed[1].masks) == ["extrapolated", "interpolated"]
    assert [m.box for m in mixed[1].masks if m.origin is Origin.INTERPOLATED] == [box(2.0)]
    plain = _smooth(
        {0: [_detected(1, box(0.0))], 2: [_detected(1, box(4.0))], 4: [_followed(1, box(8.0))]},
        5,
    )
    assert len(plain[1].masks) == 1


@settings(max_examples=40, deadline=None)
@given(
    seen=st.lists(st.lists(st.booleans(), min_size=3, max_size=3), min_size=5, max_size=30),
    scores=st.lists(st.sampled_from([0.3, 0.9]), min_size=3, max_size=3),
)
def test_following_changes_nothing_in_how_detections_are_tracked(
    seen: list[list[bool]], scores: list[float]
) -> None:
    """Three faces, each detected or missed frame by frame: an associator that follows the
    lost ones (to boxes far off) gives every detection the same track as one that does not."""
    config = TrackerConfig(max_gap=2, new_track_score=0.5, confirm_hits=2, follow_span=6)
    plain, following = Associator(config), Associator(config)
    for index, row in enumerate(seen):
        boxes = [(40.0 * k + index, 10.0, 40.0 * k + index + 20, 30.0) for k in range(3)]
        kept = [k for k in range(3) if row[k]]
        detections = Detections(
            np.array([boxes[k] for k in kept], np.float32).reshape(-1, 4),
            np.array([scores[k] for k in kept], np.float32),
        )
        masks = following.assign(index, detections)
        assert masks == plain.assign(index, detections)
        assert following.release(index, masks) == plain.release(index, masks)
        for track, frame, _, _ in following.lost(index, {m.track for m in masks}, (0.0, 0.0)):
            assert 0 < index - frame <= 3 and track not in {m.track for m in masks}
            following.followed(index, track, (500.0, 500.0, 520.0, 520.0), (0.0, 0.0))


def test_only_confirmed_tracks_are_followed_and_only_within_the_span() -> None:
    config = TrackerConfig(max_gap=2, new_track_score=0.5, confirm_hits=3, follow_span=4)
    assoc = Associator(config)
    strong = Detections(np.array([[0, 0, 20, 20]], np.float32), np.array([0.9], np.float32))
    weak = Detections(np.array([[100, 0, 120, 20]], np.float32), np.array([0.3], np.float32))
    both = Detections(
        np.concatenate([strong.boxes, weak.boxes]), np.concatenate([strong.scores, weak.scores])
    )
    masks = assoc.assign(0, both)
    confirmed = next(m.track for m in masks if m.score > 0.5)
    assert assoc.lost(1, set(), (0.0, 0.0)) == []  # a one-frame miss is the smoother's
    assert [t for t, *_ in assoc.lost(2, set(), (0.0, 0.0))] == [confirmed]  # not the tentative
    followed = []
    for index in range(2, 8):
        lost = assoc.lost(index, set(), (0.0, 0.0))
        if lost:
            followed.append(index)
        for track, _, box, _ in lost:
            assoc.followed(index, track, box, (0.0, 0.0))
    assert followed == [2, 3, 4]  # up to follow_span frames past its detection
    # a frame it could not be followed in: past FOLLOW_REACH frames, it is not followed again
    assoc = Associator(config)
    assoc.assign(0, strong)
    assert assoc.lost(4, set(), (0.0, 0.0)) == []
    assert [t for t, *_ in assoc.lost(3, set(), (0.0, 0.0))] == [1]


def test_at_most_follow_limit_tracks_are_followed_a_frame_those_followed_first() -> None:
    """A crowd's lost faces: the tracks already followed keep their place, then the most
    recently detected; the cost is bounded whatever the crowd."""
    assoc = Associator(TrackerConfig(max_gap=8, follow_span=8))
    row = [[30.0 * k, 0.0, 30.0 * k + 20, 20.0] for k in range(FOLLOW_LIMIT + 4)]
    assoc.assign(0, Detections(np.array(row[:4], np.float32), np.full(4, 0.9, np.float32)))
    assoc.assign(1, Detections(np.array(row[4:], np.float32), np.full(FOLLOW_LIMIT, 0.9)))
    first = assoc.lost(2, set(), (0.0, 0.0))
    # frame 2: only the four lost since frame 0 have been missed for two frames
    assert [t for t, *_ in first] == [1, 2, 3, 4]
    for track, _, box, _ in first:
        assoc.followed(2, track, box, (0.0, 0.0))
    tracks = [t for t, *_ in assoc.lost(3, set(), (0.0, 0.0))]
    assert len(tracks) == FOLLOW_LIMIT
    assert tracks[:4] == [1, 2, 3, 4] and tracks[4:] == list(range(5, FOLLOW_LIMIT + 1))
