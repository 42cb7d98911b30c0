"""The input catalogue: pixel formats, sizes, several tracks, subtitles. Each gives a correct
output (masked, streams kept) or a clear error, never a partial file."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from mediagen import add_subtitles, frame_times, make_clip, packets

import veil
from veil import DetectionConfig

pytestmark = pytest.mark.weights  # the fetched detector weights (make models)

FAST = DetectionConfig.from_preset("fast")


@pytest.mark.parametrize(
    ("pix_fmt", "size", "expected"),
    [
        ("yuv420p10le", (320, 240), "yuv420p10le"),  # 10-bit stays 10-bit
        ("yuv444p", (320, 240), "yuv444p"),  # no chroma subsampling added
        ("yuvj420p", (320, 240), "yuvj420p"),  # full range stays full range
        ("yuv422p", (320, 240), "yuv422p"),
        ("yuv444p", (321, 239), "yuv444p"),  # odd sizes cannot be 4:2:0
    ],
)
def test_pixel_formats_and_odd_sizes_follow_the_source(
    tmp_path: Path, pix_fmt: str, size: tuple[int, int], expected: str
) -> None:
    src = make_clip(tmp_path / "in.mkv", pix_fmt=pix_fmt, size=size, frames=8)
    dst = tmp_path / "out.mkv"
    result = veil.anonymize(src, dst, config=FAST)
    with av.open(str(dst)) as out:
        frame = next(out.decode(video=0))
        assert (frame.width, frame.height) == size
        assert frame.format.name == expected
    assert result.manifest is not None
    assert result.manifest["encoder"]["pix_fmt"] == expected
    assert frame_times(dst) == frame_times(src)


def test_a_very_large_frame(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", size=(4096, 2160), frames=3, audio=None)
    dst = tmp_path / "out.mp4"
    veil.anonymize(src, dst, config=FAST)
    assert frame_times(dst) == frame_times(src)


def test_several_audio_tracks_are_all_kept(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", audio="aac", audio_tracks=3, frames=12)
    dst = tmp_path / "out.mkv"
    veil.anonymize(src, dst, config=FAST)
    for nth in range(3):
        assert packets(dst, "audio", nth) == packets(src, "audio", nth)


def test_subtitles_are_copied_or_refused_by_name(tmp_path: Path) -> None:
    src = add_subtitles(make_clip(tmp_path / "a.mkv", frames=30), tmp_path / "in.mkv")
    dst = tmp_path / "out.mkv"
    record = veil.anonymize(src, dst, config=FAST).record
    assert packets(dst, "subtitle") == packets(src, "subtitle")
    assert [s["type"] for s in record.input["streams"]] == ["video", "audio", "subtitle"]
    with pytest.raises(veil.OutputError, match=r"stream #2 \(subtitle, (srt|subrip)\)"):
        veil.anonymize(src, tmp_path / "out.mp4", config=FAST)
    assert not (tmp_path / "out.mp4").exists()


def test_corrupt_packets_mid_stream_are_reported_with_the_frame(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", frames=40)
    bad = tmp_path / "bad.mkv"
    rng = np.random.default_rng(1)
    with av.open(str(src)) as media, av.open(str(bad), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in media.streams}
        n = 0
        for packet in media.demux():
            if not packet.size:
                continue
            target = streams[packet.stream.index]
            if packet.stream.type == "video":
                n += 1
                if n in (15, 16):  # garble two packets' payloads past their headers
                    data = bytearray(bytes(packet))
                    data[10:] = rng.integers(0, 256, len(data) - 10, dtype=np.uint8).tobytes()
                    garbled = av.Packet(bytes(data))
                    garbled.pts, garbled.dts = packet.pts, packet.dts
                    garbled.time_base = packet.time_base
                    packet = garbled
            packet.stream = target
            out.mux(packet)
    dst = tmp_path / "out.mkv"
    with pytest.raises(veil.InputError, match=r"video decoding failed at frame \d+, at [\d.]+ s"):
        veil.anonymize(bad, dst, config=FAST)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mkv", "in.mkv"]


def test_a_data_stream_is_copied_packet_for_packet(tmp_path: Path) -> None:
    """KLV metadata in MPEG-TS (drone and bodycam footage) passes through untouched."""
    src = make_clip(tmp_path / "a.mp4", frames=20)
    ts = tmp_path / "in.ts"
    with av.open(str(src)) as media, av.open(str(ts), "w") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in media.streams}
        klv = out.add_data_stream("klv")
        out.start_encoding()
        n = 0
        for packet in media.demux():
            if not packet.size:
                continue
            if packet.stream.type == "video":
                data = av.Packet(b"KLV" + bytes([n]) * 16)
                data.pts = data.dts = n * 3600
                data.time_base = klv.time_base
                data.stream = klv
                out.mux(data)
                n += 1
            packet.stream = streams[packet.stream.index]
            out.mux(packet)
    dst = tmp_path / "out.ts"
    record = veil.anonymize(ts, dst, config=FAST).record
    assert [s["type"] for s in record.input["streams"]] == ["video", "audio", "data"]
    assert packets(dst, "data") == packets(ts, "data")
    assert len(packets(dst, "data")) == 20
    assert packets(dst, "audio") == packets(ts, "audio")


def test_shuffled_timestamps_come_out_in_order(tmp_path: Path) -> None:
    """AVI has no pts field: with B-frames the decoder hands frames out with shuffled
    timestamps, which no encoder accepts. They are given the input's own timestamps in order."""
    src = tmp_path / "in.avi"
    with av.open(str(src), "w") as out:
        video = out.add_stream("libx264", rate=25)  # B-frames on (x264's default)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        for i in range(30):
            frame = av.VideoFrame.from_ndarray(
                np.full((240, 320, 3), (i * 8) % 256, np.uint8), format="rgb24"
            )
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    tb_in, pts_in = frame_times(src)
    assert pts_in != sorted(pts_in)  # the input really is shuffled
    dst = tmp_path / "out.mkv"
    veil.anonymize(src, dst, config=FAST)
    tb_out, pts_out = frame_times(dst)
    assert [p * tb_out for p in pts_out] == [p * tb_in for p in sorted(pts_in)]


def test_colour_metadata_is_kept_and_container_tags_are_not(tmp_path: Path) -> None:
    """README: colour metadata kept; container-level tags (GPS, device serials) not copied."""
    src = tmp_path / "in.mp4"
    with av.open(str(src), "w") as out:
        out.metadata["location"] = "+52.5200+013.4050/"
        out.metadata["title"] = "patient 0042"
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        ctx = video.codec_context
        ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range = 1, 1, 1, 1
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 30 * i, np.uint8), "rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    dst = tmp_path / "out.mp4"
    veil.anonymize(src, dst, config=FAST)

    def colour(path: Path) -> tuple[int, int, int, int]:
        with av.open(str(path)) as c:
            x = c.streams.video[0].codec_context
            return (x.color_primaries, x.color_trc, x.colorspace, x.color_range)

    with av.open(str(src)) as c:
        assert c.metadata.get("location") == "+52.5200+013.4050/"
    assert colour(src) == (1, 1, 1, 1)
    assert colour(dst) == colour(src)
    with av.open(str(dst)) as c:
        assert "location" not in c.metadata
        assert "title" not in c.metadata
