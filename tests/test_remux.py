"""What the output container does to the streams veil copies and to their timestamps
(issue 14, items 6-11 and 13). Each input is made here with PyAV; the detector is a fixed
stub (no weights): these tests are about muxing, not faces.

"Bit for bit" under a container's required bitstream filter: an MPEG-TS carries AAC with an
ADTS header on every packet, MP4/MOV/Matroska carry the bare AAC frame (FFmpeg's muxers apply
``aac_adtstoasc``), and the MPEG-TS muxer adds the header to bare frames. The AAC frames stay
the input's bytes; the manifest names the filter per stream and the payload hash after it,
and ``veil verify`` checks the frames (``aac_frames_sha256``) and that hash.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from mediagen import _picture, _write_tone, frame_times, make_clip, packets

from veil import OutputError
from veil.core._detections import Detections
from veil.core._detector import DetectorInfo
from veil.job import detect_job as run_job
from veil.job import manifest_path
from veil.job._verify import verify
from veil.live import LiveConfig, run_live

WRAP_S = Fraction(2**33, 90000)  # MPEG-TS timestamps wrap after 2^33 ticks of 90 kHz


class _Stub:
    """Finds one fixed face in every frame, instantly."""

    info = DetectorInfo(
        model="stub",
        weights_sha256="0" * 64,
        backend="test",
        execution_provider="cpu",
        max_side=160,
        score_threshold=0.5,
        nms_threshold=0.4,
    )

    def detect(self, images: Sequence[Any], sizes: Sequence[tuple[int, int]]) -> list[Detections]:
        return [
            Detections(np.array([[10, 10, 50, 60]], np.float32), np.array([0.9], np.float32))
            for _ in images
        ]

    def close(self) -> None:
        pass


def _anonymize(src: Path, dst: Path) -> dict[str, Any]:
    """Runs the job; returns its manifest (as written next to ``dst``)."""
    run_job(src, detector=_Stub(), output=dst)
    return json.loads(manifest_path(dst).read_text())  # type: ignore[no-any-return]


def _seconds(path: Path) -> list[Fraction]:
    time_base, pts = frame_times(path)
    return [p * time_base for p in pts]


def _audio(path: Path) -> list[tuple[Fraction, bytes]]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return [(p.pts * p.time_base, bytes(p)) for p in container.demux(stream) if p.size]


# -- inputs ---------------------------------------------------------------------------------


def _clip(
    path: Path,
    *,
    start: Fraction = Fraction(0),
    frames: int = 25,
    options: dict[str, str] | None = None,
    codec_options: dict[str, str] | None = None,
    audio: str | None = "aac",
    timecode: str | None = None,
) -> Path:
    """25 fps 160x120 H.264 (B-frames) whose first frame is at ``start`` seconds, and a tone
    from the same time (AAC, or PCM)."""
    with av.open(str(path), "w", options=options or {}) as out:
        video = out.add_stream("libx264", rate=25, options=codec_options or {})
        video.width, video.height, video.pix_fmt = 160, 120, "yuv420p"
        if timecode:
            video.metadata["timecode"] = timecode
        sound = None
        if audio is not None:
            sound = out.add_stream("aac" if audio == "aac" else "pcm_s16le", rate=48000)
            sound.layout, sound.format = "stereo", "fltp" if audio == "aac" else "s16"
        first = round(start * 25)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_picture(i, 160, 120), format="rgb24")
            frame = frame.reformat(format="yuv420p")
            frame.pts, frame.time_base = first + i, Fraction(1, 25)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None and audio == "aac":
            for k in range(frames * 48000 // 25 // 1024):
                samples = np.full((2, 1024), 0.1 * np.sin(k), np.float32)
                chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
                chunk.sample_rate = 48000
                chunk.pts, chunk.time_base = round(start * 48000) + k * 1024, Fraction(1, 48000)
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
        elif sound is not None:
            _write_tone(out, sound, frames / 25, 440)
    return path


def _with_edit_list(source: Path, target: Path, skip: Fraction) -> Path:
    """``source`` remuxed into MP4 with every packet ``skip`` seconds earlier: the muxer
    writes an edit list that starts the file ``skip`` into its media, as ``ffmpeg -ss SKIP
    -i X -c copy`` does; the frames before it are in the file but not shown."""
    with av.open(str(source)) as src, av.open(str(target), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.size:
                shift = round(skip / packet.time_base)
                packet.pts -= shift
                packet.dts -= shift
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    return target


# -- item 6: a stream the output would shorten ----------------------------------------------


def test_bug_alac_into_mp4_lost_its_last_packet(tmp_path: Path) -> None:
    """MKV with ALAC to .mp4: 24 packets in, 23 readable out (the last one, of no duration
    in Matroska, fell outside the MP4 edit list), exit 0. Now: exit 5 naming the stream,
    nothing written; .mkv keeps every packet."""
    src = make_clip(tmp_path / "in.mkv", audio="alac", frames=50)
    assert len(packets(src, "audio")) == 24
    with pytest.raises(OutputError, match=r"stream #1 \(audio, alac\) would lose packets: 23 of"):
        _anonymize(src, tmp_path / "out.mp4")
    assert OutputError.exit_code == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mkv"]  # no output, no record
    _anonymize(src, tmp_path / "out.mkv")
    assert packets(tmp_path / "out.mkv", "audio") == packets(src, "audio")


# -- item 7: a bitstream filter the container requires --------------------------------------


@pytest.mark.parametrize(
    ("source", "target", "bsf"),
    [(".ts", ".mp4", "aac_adtstoasc"), (".ts", ".mkv", "aac_adtstoasc"), (".mp4", ".ts", "adts")],
)
def test_bug_adts_aac_failed_verify(tmp_path: Path, source: str, target: str, bsf: str) -> None:
    """MPEG-TS (ADTS AAC) to .mp4/.mkv: the muxer's aac_adtstoasc rewrote every packet and
    ``veil verify`` of an untouched run failed. Now the manifest names the filter and the
    payload hash after it, and verify checks the AAC frames and that hash."""
    src = make_clip(tmp_path / f"in{source}", audio="aac", frames=25)
    dst = tmp_path / f"out{target}"
    manifest = _anonymize(src, dst)
    (pair,) = manifest["copied_streams"]
    assert pair["bitstream_filter"] == bsf
    before, after = packets(src, "audio"), packets(dst, "audio")
    assert len(after) == len(before)
    header = 7 if bsf == "aac_adtstoasc" else -7
    for (_, _, a), (_, _, b) in zip(before, after, strict=True):
        assert (a[7:] == b) if header > 0 else (a == b[7:])  # the same AAC frame
    result = verify(dst, manifest_path(dst), input=src)
    assert result.ok, [c for c in result.failed]
    audio = next(c for c in result.checks if c.name.startswith("audio"))
    assert bsf in audio.detail
    # A manifest that does not name the filter claims the packets unchanged: verify fails.
    del manifest["copied_streams"][0]["bitstream_filter"]
    manifest_path(dst).write_text(json.dumps(manifest))
    assert not verify(dst, manifest_path(dst)).ok


# -- item 8: timestamps before zero ---------------------------------------------------------


def test_bug_ts_near_the_wrap_was_shifted(tmp_path: Path) -> None:
    """An MPEG-TS that starts 1.398 s before its 2^33 wrap (FFmpeg reads its timestamps as
    negative): .ts output moved every stream 1.398 s later. Now the timestamps are kept."""
    src = _clip(tmp_path / "in.ts", start=WRAP_S - Fraction(1398, 1000))
    assert _seconds(src)[0] < 0
    dst = tmp_path / "out.ts"
    manifest = _anonymize(src, dst)
    assert _seconds(dst) == _seconds(src)
    assert _audio(dst) == _audio(src)
    assert "timestamp_shift" not in manifest["output"]


def test_bug_mp4_to_ts_was_moved_by_the_encoders_delay(tmp_path: Path) -> None:
    """MP4 to .ts: the first B-frame's dts (before zero) moved every stream 0.08 s later."""
    src = make_clip(tmp_path / "in.mp4", frames=20)
    dst = tmp_path / "out.ts"
    _anonymize(src, dst)
    assert _seconds(dst) == _seconds(src)
    assert [t for t, _ in _audio(dst)] == [t for t, _ in _audio(src)]


@pytest.mark.parametrize("target", [".mkv", ".mp4"])
def test_bug_ts_near_the_wrap_into_a_container_without_negative_time(
    tmp_path: Path, target: str
) -> None:
    """The same input to .mkv was moved to 0 silently (.mp4: every frame hidden before the
    start of its edit list, "no decodable frame"). Matroska holds no timestamp before zero
    and an MP4 timeline starts at zero: every stream is moved by the same amount, and the
    manifest says by how much and why."""
    src = _clip(tmp_path / "in.ts", start=WRAP_S - Fraction(1398, 1000))
    dst = tmp_path / f"out{target}"
    manifest = _anonymize(src, dst)
    shift = Fraction(manifest["output"]["timestamp_shift"]["seconds"])
    assert Fraction(1398, 1000) <= shift < Fraction(1600, 1000)
    assert "same amount" in manifest["output"]["timestamp_shift"]["reason"]
    tick = Fraction(1, 1000)  # Matroska's time base
    got, want = _seconds(dst), _seconds(src)
    assert len(got) == len(want)
    assert all(abs(g - shift - w) <= tick for g, w in zip(got, want, strict=True))
    assert [p for _, p in _audio(dst)] == [p[7:] for _, p in _audio(src)]  # ADTS stripped


# -- item 9: an MP4 edit list that skips frames ---------------------------------------------


def test_bug_edit_list_that_skips_frames_was_refused(tmp_path: Path) -> None:
    """``ffmpeg -ss 0.4 -i x.mp4 -c copy e.mp4``: 50 frames in the sample table, the first 10
    before the edit list's start. It was refused ("declares 50 frames but only 40 could be
    decoded"). Now the 40 shown frames are masked, with their timing."""
    src = _with_edit_list(
        make_clip(tmp_path / "x.mp4", frames=50), tmp_path / "e.mp4", Fraction(2, 5)
    )
    with av.open(str(src)) as container:
        assert container.streams.video[0].frames == 50
    dst = tmp_path / "out.mp4"
    result = run_job(src, detector=_Stub(), output=dst)
    assert len(result.record.frames) == 40
    assert _seconds(dst) == _seconds(src)
    assert len(_seconds(dst)) == 40
    assert _audio(dst) == _audio(src)


# -- item 10: AVI, which stores no pts -------------------------------------------------------


def test_bug_avi_frames_came_out_a_frame_late(tmp_path: Path) -> None:
    """AVI (H.264 with B-frames, PCM) to AVI: the output's frames read back one frame later
    than the input's, 40 ms late against the audio. Now they read back at the input's pts."""
    src = _clip(tmp_path / "in.avi", frames=50, audio="pcm")
    dst = tmp_path / "out.avi"
    result = run_job(src, detector=_Stub(), output=dst)
    recorded = [f.pts for f in result.record.frames]
    assert recorded == sorted(frame_times(src)[1])  # the input's, in presentation order
    assert frame_times(dst)[1] == recorded
    assert packets(dst, "audio") == packets(src, "audio")


# -- item 11: a QuickTime timecode track -----------------------------------------------------


@pytest.mark.parametrize("target", [".mov", ".mp4"])
def test_bug_timecode_track_broke_the_job(tmp_path: Path, target: str) -> None:
    """MOV with a tmcd track: to .mov exit 5 "returned 22", to .mp4 a traceback, no stream
    named. Now the timecode is kept as a timecode track (the same sample) and verifies."""
    src = _clip(tmp_path / "in.mov", timecode="01:02:03:04")
    with av.open(str(src)) as container:
        assert [s.type for s in container.streams] == ["video", "audio", "data"]
    dst = tmp_path / f"out{target}"
    manifest = _anonymize(src, dst)
    with av.open(str(dst)) as container:
        (data,) = [s for s in container.streams if s.type == "data"]
        assert data.metadata["timecode"] == "01:02:03:04"
    assert packets(dst, "data") == packets(src, "data")
    assert {"input": 2, "output": 2} in manifest["copied_streams"]
    assert verify(dst, manifest_path(dst), input=src).ok


def test_timecode_track_into_a_container_without_one_is_named(tmp_path: Path) -> None:
    src = _clip(tmp_path / "in.mov", timecode="01:02:03:04")
    with pytest.raises(OutputError, match=r"stream #2 \(data, timecode track, 01:02:03:04\)"):
        _anonymize(src, tmp_path / "out.mkv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mov"]


# -- item 13: live and file outputs share one stream setup ----------------------------------


def _phone_clip(
    path: Path,
    *,
    audio: bool,
    pix_fmt: str = "yuv420p",
    colour: tuple[int, int, int, int] = (1, 1, 1, 1),
) -> Path:
    """A phone-like clip: 90 degree display rotation, ``colour`` tags (primaries, transfer,
    matrix, range; BT.709 limited range unless told), 1/600 time base."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 160, 120, pix_fmt
        video.time_base = video.codec_context.time_base = Fraction(1, 600)
        ctx = video.codec_context
        ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = colour
        video.set_display_rotation(90)
        sound = out.add_stream("aac", rate=48000) if audio else None
        if sound is not None:
            sound.layout, sound.format = "stereo", "fltp"
        for i in range(25):
            frame = av.VideoFrame.from_ndarray(_picture(i, 160, 120), format="rgb24")
            frame = frame.reformat(format=pix_fmt)
            frame.pts, frame.time_base = i * 24, Fraction(1, 600)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            _write_tone(out, sound, 1.0, 440)
    return path


def _describe(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        first = next(container.decode(stream))
        ctx = stream.codec_context
        return {
            "rotation": first.rotation,
            "colour": (ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range),
        }


@pytest.mark.parametrize("how", ["file", "live"])
@pytest.mark.parametrize(("target", "audio"), [(".mkv", False), (".ts", True)])
def test_bug_live_output_lost_rotation_colour_and_timing(
    tmp_path: Path, how: str, target: str, audio: bool
) -> None:
    """``veil live IN out.mkv`` of a phone clip came out sideways (rotation and colour tags
    dropped) with its pts moved by up to 64 ms. The file and live outputs now share one
    stream setup; this one test holds both to the same result. (MPEG-TS holds no rotation;
    Matroska moves the timeline when AAC priming is before zero, hence no audio there.)"""
    src = _phone_clip(tmp_path / "in.mp4", audio=audio)
    dst = tmp_path / f"out{target}"
    if how == "file":
        run_job(src, detector=_Stub(), output=dst)
    else:
        summary = run_live(str(src), str(dst), detector=_Stub(), config=LiveConfig(delay_s=0.5))
        assert summary["frames_out"] == 25
    want, got = _describe(src), _describe(dst)
    assert got["colour"] == want["colour"] == (1, 1, 1, 1)
    if target == ".mkv":
        assert got["rotation"] == want["rotation"] != 0
    assert _seconds(dst) == _seconds(src)
    if audio:
        assert [t for t, _ in _audio(dst)] == [t for t, _ in _audio(src)]


@pytest.mark.parametrize("target", [".mkv", ".mp4"])
@pytest.mark.parametrize(
    ("pix_fmt", "colour"),
    [("yuvj420p", (1, 1, 1, 2)), ("yuv420p10le", (9, 16, 9, 1))],
    ids=["bt709-full-range", "bt2020-pq-10bit"],
)
def test_live_sink_and_file_output_carry_the_same_colour_and_rotation(
    tmp_path: Path, pix_fmt: str, colour: tuple[int, int, int, int], target: str
) -> None:
    """Issue 15: the file output and the live sink are one muxer (``_muxer.Muxer``), so a
    rotated clip with full-range or HDR colour tags comes out of both with the source's
    colour range, primaries, transfer, matrix and rotation (a live copy of the stream setup
    once lost them). The live encoder's 8-bit 4:2:0 keeps the tags of a 10-bit source."""
    src = _phone_clip(tmp_path / "in.mp4", audio=False, pix_fmt=pix_fmt, colour=colour)
    file_out, live_out = tmp_path / f"file{target}", tmp_path / f"live{target}"
    run_job(src, detector=_Stub(), output=file_out)
    summary = run_live(str(src), str(live_out), detector=_Stub(), config=LiveConfig(delay_s=0.5))
    assert summary["frames_out"] == 25
    want = _describe(src)
    assert want == {"rotation": want["rotation"], "colour": colour} and want["rotation"] != 0
    assert _describe(file_out) == _describe(live_out) == want


def test_a_live_recording_survives_a_failed_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review of issue 15: with the live sink on the file output's muxer, a failure while
    finishing (a full disk at the trailer, here the final rename) deleted the whole masked
    recording. The live sink keeps its partial file, as it did before; never the final name."""
    src = make_clip(tmp_path / "in.mp4", frames=25, audio=None)
    out = tmp_path / "live.ts"

    def full_disk(self: Any) -> None:
        raise OutputError(f"{out}: cannot write (No space left on device)")

    monkeypatch.setattr("veil.media._sink.LiveSink._publish", full_disk)
    with pytest.raises(OutputError, match="No space left"):
        run_live(str(src), str(out), detector=_Stub(), config=LiveConfig(delay_s=0.5))
    assert not out.exists()
    [kept] = [p for p in tmp_path.iterdir() if p.name.startswith(".live.veil-partial")]
    with av.open(str(kept)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 25


# -- also left out, deliberately -------------------------------------------------------------


def test_chapters_are_left_out_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """MKV chapters were dropped silently. Their titles can name people, so leaving them out
    is the default; the log says so."""
    clip = make_clip(tmp_path / "clip.mkv", frames=10, audio=None)
    src = tmp_path / "in.mkv"
    with av.open(str(clip)) as media, av.open(str(src), "w") as out:
        out.set_chapters(
            [
                {
                    "id": 1,
                    "start": 0,
                    "end": 200,
                    "time_base": Fraction(1, 1000),
                    "metadata": {"title": "Interview: Dr Jane Smith"},
                }
            ]
        )
        stream = out.add_stream_from_template(media.streams.video[0])
        for packet in media.demux():
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    dst = tmp_path / "out.mkv"
    with caplog.at_level("WARNING", logger="veil.media._output"):
        _anonymize(src, dst)
    assert "its 1 chapters are left out of out.mkv" in caplog.text
    with av.open(str(dst)) as container:
        assert container.chapters() == []
