"""Issue 14.1: every picture stream is masked or left out, never copied unmasked.

veil masks the main video (not cover art, not a one-frame thumbnail track: the longest real
video stream). Any other picture stream refuses the job before any work (exit 3, one line
naming each stream) unless the user drops it with ``--drop-stream N``; the record and the
manifest list what was dropped, ``veil render`` drops the same, ``veil verify`` never calls
it copied. Inputs are made here with PyAV (a second camera angle in MKV, an MP4 cover
``attached_pic``, a one-frame MJPEG track in MKV, a thumbnail track placed first).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from mediagen import make_clip, packets

import veil
from veil.cli import main
from veil.core._detections import Detections
from veil.core._detector import DetectorInfo
from veil.job._verify import verify

FRAMES = 20


class OneFace:
    """Finds one face, in the middle of whatever frame it is given (no weights needed)."""

    info = DetectorInfo(
        model="one-face",
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
        return [
            Detections(np.array([[w * 0.3, h * 0.3, w * 0.6, h * 0.7]]), np.array([0.9]))
            for w, h in sizes
        ]

    def close(self) -> None:
        pass


def _face_picture(width: int, height: int, shade: int) -> np.ndarray:
    """A picture with structure (a face stand-in), RGB."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack(
        [(x * 7 + shade) % 256, (y * 5 + shade) % 256, ((x // 4 + y // 4) % 2) * 200], axis=-1
    ).astype(np.uint8)


def _interleaved(dst: Path, sources: list[tuple[Path, str | None]]) -> Path:
    """Streams of several files in one container, packets interleaved by time."""
    with av.open(str(dst), "w") as out:
        opened = [av.open(str(src)) for src, _ in sources]
        try:
            chosen = [
                [s for s in media.streams if kind is None or s.type == kind]
                for media, (_, kind) in zip(opened, sources, strict=True)
            ]
            targets = [
                {s.index: out.add_stream_from_template(s) for s in streams} for streams in chosen
            ]
            pending = []
            for k, (media, streams) in enumerate(zip(opened, chosen, strict=True)):
                for packet in media.demux(*streams):
                    if packet.size:
                        at = (packet.dts if packet.dts is not None else packet.pts) or 0
                        pending.append((float(at * packet.time_base), k, packet))
            for _, k, packet in sorted(pending, key=lambda p: (p[0], p[1])):
                packet.stream = targets[k][packet.stream.index]
                out.mux(packet)
        finally:
            for media in opened:
                media.close()
    return dst


def second_camera(tmp: Path) -> tuple[Path, int, str]:
    """A second camera angle: two full-length H.264 streams (and audio) in one MKV."""
    a = make_clip(tmp / "a.mp4", frames=FRAMES, size=(320, 240))
    b = make_clip(tmp / "b.mp4", frames=FRAMES, size=(160, 120), audio=None)
    return _interleaved(tmp / "two.mkv", [(a, None), (b, "video")]), 2, "h264 160x120, video"


def _cover(dst: Path, clip: Path) -> Path:
    """``clip`` (video and audio) plus a JPEG cover: an ``attached_pic`` stream in MP4."""
    with av.open(str(clip)) as media, av.open(str(dst), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in media.streams}
        cover = out.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 96, 64, "yuvj420p"
        cover.time_base = Fraction(1, 90000)
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(_face_picture(96, 64, 40), format="rgb24")
        picture = picture.reformat(format="yuvj420p")
        picture.pts = 0
        for packet in [*cover.encode(picture), *cover.encode(None)]:
            out.mux(packet)
        for packet in media.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return dst


def cover_art(tmp: Path) -> tuple[Path, int, str]:
    """An MP4 with a cover picture (``attached_pic``), as phones and editors write them."""
    clip = make_clip(tmp / "clip.mp4", frames=FRAMES)
    return _cover(tmp / "cover.mp4", clip), 2, "mjpeg 96x64, attached picture"


def _one_frame(dst: Path, codec: str, size: tuple[int, int], pix_fmt: str) -> Path:
    with av.open(str(dst), "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = *size, pix_fmt
        frame = av.VideoFrame.from_ndarray(_face_picture(*size, 90), format="rgb24")
        frame = frame.reformat(format=pix_fmt)
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return dst


def mkv_still(tmp: Path) -> tuple[Path, int, str]:
    """An MKV with a one-frame MJPEG track after the clip (how MKV cover art can come out)."""
    clip = make_clip(tmp / "clip.mkv", frames=FRAMES)
    still = _one_frame(tmp / "still.mkv", "mjpeg", (96, 64), "yuvj420p")
    src = _interleaved(tmp / "still_after.mkv", [(clip, None), (still, "video")])
    return src, 2, "mjpeg 96x64, video, 1 frame"


def thumbnail_first(tmp: Path) -> tuple[Path, int, str]:
    """A one-frame thumbnail track placed before the real clip (players may pick either)."""
    thumb = _one_frame(tmp / "thumb.mkv", "libx264", (160, 120), "yuv420p")
    clip = make_clip(tmp / "clip.mkv", frames=FRAMES)
    src = _interleaved(tmp / "thumb_first.mkv", [(thumb, "video"), (clip, None)])
    return src, 0, "h264 160x120, video, 1 frame"


INPUTS = [second_camera, cover_art, mkv_still, thumbnail_first]


def _video_streams(path: Path) -> list[tuple[str, int, int]]:
    with av.open(str(path)) as media:
        return [
            (s.codec_context.name, s.codec_context.width, s.codec_context.height)
            for s in media.streams.video
        ]


@pytest.mark.parametrize("make", INPUTS, ids=lambda f: f.__name__)
def test_bug_other_picture_streams_were_copied_unmasked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable[[Path], Any]
) -> None:
    """Was: only the first video stream was masked, every other one copied as packets (and
    a thumbnail placed first was 'the video'). Now: refused before any work, each other
    picture stream named with the flag that leaves it out."""
    src, extra, described = make(tmp_path)
    dst = tmp_path / "out.mkv"
    code = main(["anonymize", "-q", str(src), "-o", str(dst)])
    err = capsys.readouterr().err
    assert code == 3, err
    assert err.count("\n") == 1, err
    assert f"#{extra} ({described}" in err
    assert f"--drop-stream {extra}" in err
    assert not dst.exists() and not list(tmp_path.glob("out.mkv*"))
    with pytest.raises(veil.InputError, match=f"--drop-stream {extra}"):
        veil.detect(src, detector=OneFace())


@pytest.mark.parametrize("make", INPUTS, ids=lambda f: f.__name__)
def test_dropped_streams_are_left_out_recorded_and_rendered_the_same(
    tmp_path: Path, make: Callable[[Path], Any]
) -> None:
    src, extra, _ = make(tmp_path)
    with av.open(str(src)) as media:
        main_index = next(s.index for s in media.streams.video if s.index != extra)
        main_stream = media.streams[main_index]
        size = (main_stream.codec_context.width, main_stream.codec_context.height)
        extra_packets = sum(1 for p in media.demux(media.streams[extra]) if p.size)
    dst = tmp_path / "out.mkv"
    result = veil.anonymize(src, dst, detector=OneFace(), drop_streams=[extra])
    record = result.record
    # The main video is masked, whole (every frame), and is the output's only picture.
    assert record.input["video"]["index"] == main_index
    assert record.summary()["frames"] == FRAMES
    assert _video_streams(dst) == [("h264", *size)]
    assert [p[2] for p in packets(dst, "audio")] == [p[2] for p in packets(src, "audio")]
    # The record and the manifest say what was left out, with its packets' identity.
    (dropped,) = record.input["dropped_streams"]
    digest = next(s for s in record.input["streams"] if s["index"] == extra)
    assert dropped["index"] == extra and dropped["reason"] == "--drop-stream"
    assert dropped["packets"] == extra_packets == digest["packets"]
    assert dropped["payload_sha256"] == digest["payload_sha256"]
    assert dropped["attached_picture"] is (make is cover_art)
    manifest = result.manifest
    assert manifest is not None
    assert manifest["dropped_streams"] == record.input["dropped_streams"]
    assert extra not in [pair["input"] for pair in manifest["copied_streams"]]
    # verify: the dropped stream is reported as dropped, never as copied.
    report = verify(dst, dst.with_name("out.mkv.manifest.json"), input=src)
    assert report.ok, [c for c in report.checks if c.ok is False]
    about = [c for c in report.checks if f"#{extra} " in c.name and "input" in c.name]
    assert len(about) == 1 and about[0].ok is None and "DROPPED" in about[0].detail
    assert not any("copied unchanged" in c.detail for c in about)
    # render of the record drops the same stream (taken from the record).
    again = tmp_path / "again.mkv"
    rendered = veil.render(src, dst.with_name("out.mkv.veil.json"), again)
    assert _video_streams(again) == [("h264", *size)]
    assert rendered["dropped_streams"] == manifest["dropped_streams"]
    assert rendered["copied_streams"] == manifest["copied_streams"]


@pytest.mark.weights  # a real server (its detector loads the fetched weights)
def test_cloud_mode_refuses_and_drops_the_same_way(
    veil_server: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from veil.remote import ChannelOptions, RemoteError, RetryPolicy, run_remote_job
    from veil.wire import job_start

    src, extra, described = second_camera(tmp_path)
    url = f"grpc://127.0.0.1:{veil_server().port}"
    dst = tmp_path / "out.mkv"
    code = main(["anonymize", "-q", str(src), "-o", str(dst), "--remote", url])
    err = capsys.readouterr().err
    assert code == 3 and f"#{extra} ({described}" in err and f"--drop-stream {extra}" in err
    assert not dst.exists()
    # The server refuses too, whatever the client checked.
    config = veil.DetectionConfig()
    start = job_start(
        input_name=src.name,
        input_size=src.stat().st_size,
        output_name="out.mkv",
        write_record=True,
        preset="balanced",
        detector=config.detector,
        tracker=config.tracker,
        style=veil.Style(),
        encoder=veil.EncoderSettings(),
    )
    options = ChannelOptions(retry=RetryPolicy(attempts=1))
    with pytest.raises(RemoteError, match=f"INVALID_ARGUMENT: .*--drop-stream {extra}"):
        run_remote_job(url, src, output=dst, record=None, start=start, options=options)
    assert not dst.exists()
    # With the flag, the job runs on the server and leaves the stream out; the record says so.
    code = main(["anonymize", "-q", str(src), "-o", str(dst), "--remote", url,
                 "--drop-stream", str(extra)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    record = json.loads(dst.with_name("out.mkv.veil.json").read_text())
    assert [s["index"] for s in record["input"]["dropped_streams"]] == [extra]
    assert _video_streams(dst) == [("h264", 320, 240)]


def test_live_refuses_a_source_with_another_picture_stream(tmp_path: Path) -> None:
    """``veil live`` copies every other stream of its source: a second picture is refused."""
    from veil.live import run_live

    src, extra, described = second_camera(tmp_path)
    dst = tmp_path / "out.mkv"
    with pytest.raises(veil.InputError, match=rf"#{extra} \({described}"):
        run_live(str(src), str(dst), detector=OneFace())
    assert not dst.exists()


def test_the_main_video_is_the_long_one_not_the_thumbnail(tmp_path: Path) -> None:
    src, thumb, _ = thumbnail_first(tmp_path)
    assert thumb == 0
    record = veil.detect(src, detector=OneFace(), drop_streams=[0])
    assert record.input["video"]["index"] == 1
    assert record.summary()["frames"] == FRAMES


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("0", "--drop-stream 0: stream #0 (h264 320x240, video, 20 frames) is the video veil "
         "masks; it cannot be left out"),
        ("1", "--drop-stream 1: stream #1 is audio (aac), not a picture stream"),
        ("7", "--drop-stream 7: two.mkv has no stream #7 (its streams are #0 to #2)"),
    ],
)  # fmt: skip
def test_dropping_the_main_video_or_a_non_picture_stream_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], drop: str, message: str
) -> None:
    src, _, _ = second_camera(tmp_path)
    dst = tmp_path / "out.mkv"
    code = main(["anonymize", "-q", str(src), "-o", str(dst), "--drop-stream", "2",
                 "--drop-stream", drop])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.count("\n") == 1
    assert not dst.exists()


def test_render_refuses_a_record_that_masked_another_stream(tmp_path: Path) -> None:
    """A record from before this fix masked the thumbnail (stream #0) of such a file."""
    src, _, _ = thumbnail_first(tmp_path)
    veil.detect(src, tmp_path / "rec.json", detector=OneFace(), drop_streams=[0])
    document = json.loads((tmp_path / "rec.json").read_text())
    document["input"]["video"]["index"] = 0
    document["input"].pop("dropped_streams")
    (tmp_path / "old.json").write_text(json.dumps(document))
    with pytest.raises(veil.InputError, match="--drop-stream 0"):
        veil.render(src, tmp_path / "old.json", tmp_path / "out.mkv")
    document["input"]["dropped_streams"] = [
        {**s, "width": 0, "height": 0, "attached_picture": False, "reason": "--drop-stream"}
        for s in document["input"]["streams"]
        if s["index"] == 0
    ]
    (tmp_path / "old.json").write_text(json.dumps(document))
    with pytest.raises(veil.RecordError, match="the record masks picture stream #0, but veil"):
        veil.render(src, tmp_path / "old.json", tmp_path / "out.mkv")
    assert not (tmp_path / "out.mkv").exists()


def test_verify_fails_a_manifest_that_copied_a_picture_stream(tmp_path: Path) -> None:
    """An output made before this fix: its manifest maps a video stream as copied."""
    src, extra, _ = second_camera(tmp_path)
    dst = tmp_path / "out.mkv"
    veil.anonymize(src, dst, detector=OneFace(), drop_streams=[extra])
    path = dst.with_name("out.mkv.manifest.json")
    manifest = json.loads(path.read_text())
    manifest.pop("dropped_streams")
    manifest["copied_streams"].append({"input": extra, "output": 0})
    path.write_text(json.dumps(manifest))
    report = verify(dst, path)
    failed = [c for c in report.checks if c.ok is False]
    assert any("a picture stream copied as packets" in c.detail for c in failed), failed


def test_a_size_change_mid_stream_is_an_input_error_naming_the_frame(tmp_path: Path) -> None:
    """Issue 14.12. Was: exit 5, "writing failed" (an output error), no frame named. The
    size is a property of the input: exit 3, the frame and both sizes, nothing written."""
    src = tmp_path / "grows.ts"
    with av.open(str(src), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        out.start_encoding()
        start = 0
        for width, height in ((160, 120), (320, 240)):  # a broadcast changing resolution
            encoder = av.CodecContext.create("libx264", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.time_base = Fraction(1, 25)
            for i in [*range(10), None]:
                frame = None
                if i is not None:
                    frame = av.VideoFrame.from_ndarray(_face_picture(width, height, i * 9))
                    frame = frame.reformat(format="yuv420p")
                    frame.pts = i
                for packet in encoder.encode(frame):
                    packet.pts += start
                    packet.dts = None if packet.dts is None else packet.dts + start
                    packet.stream = stream
                    out.mux(packet)
            start += 10
    dst = tmp_path / "out.mp4"
    with pytest.raises(veil.InputError) as caught:
        veil.anonymize(src, dst, detector=OneFace())
    assert caught.value.exit_code == 3
    assert "frame 10 changes size from 160x120 to 320x240; veil needs a constant frame size" in (
        str(caught.value)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grows.ts"]
