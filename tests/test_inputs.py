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
