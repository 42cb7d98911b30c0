"""On-prem pipeline guarantees on clips the tests make: audio bit for bit, exact timing,
containers, determinism, atomic output. The detector is the real in-process one."""

from __future__ import annotations

import itertools
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest
from mediagen import frame_times, make_clip, packets

import veil
from veil import DetectionConfig, OutputError

pytestmark = pytest.mark.weights  # the fetched detector weights (make models)

FAST = DetectionConfig.from_preset("fast")


def _anonymize(src: Path, dst: Path, **kwargs: object) -> veil.Record:
    return veil.anonymize(src, dst, config=FAST, **kwargs).record  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("audio", "suffix"),
    [("aac", ".mp4"), ("opus", ".mkv"), ("pcm", ".mov"), ("ac3", ".mkv"), ("mp3", ".avi")],
)
def test_audio_packets_are_copied_bit_for_bit(tmp_path: Path, audio: str, suffix: str) -> None:
    src = make_clip(tmp_path / f"in{suffix}", audio=audio)
    dst = tmp_path / f"out{suffix}"
    _anonymize(src, dst)
    before, after = packets(src, "audio"), packets(dst, "audio")
    assert len(after) == len(before)
    assert [p[2] for p in after] == [p[2] for p in before]  # payload bytes
    assert [p[0] for p in after] == [p[0] for p in before]  # timestamps


@pytest.mark.parametrize(
    ("rate", "vfr", "suffix"),
    [
        (Fraction(25), False, ".mp4"),
        (Fraction(30000, 1001), False, ".mp4"),
        (Fraction(30000, 1001), False, ".mkv"),
        (Fraction(30), True, ".mp4"),
        (Fraction(30), True, ".mkv"),
    ],
)
def test_frame_count_pts_and_time_base_are_kept(
    tmp_path: Path, rate: Fraction, vfr: bool, suffix: str
) -> None:
    src = make_clip(tmp_path / f"in{suffix}", rate=rate, vfr=vfr, frames=40)
    dst = tmp_path / f"out{suffix}"
    record = _anonymize(src, dst)
    (tb_in, pts_in), (tb_out, pts_out) = frame_times(src), frame_times(dst)
    assert len(pts_out) == len(pts_in) == 40 == len(record.frames)
    assert tb_out == tb_in
    assert pts_out == pts_in
    assert [f.pts for f in record.frames] == pts_in
    if vfr:
        assert len({b - a for a, b in itertools.pairwise(pts_in)}) > 1


def test_webm_gets_vp9_and_keeps_opus(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.webm", audio="opus", codec="libvpx-vp9", frames=12)
    dst = tmp_path / "out.webm"
    _anonymize(src, dst)
    with av.open(str(dst)) as out:
        assert out.streams.video[0].codec_context.name == "vp9"
    assert [p[2] for p in packets(dst, "audio")] == [p[2] for p in packets(src, "audio")]
    assert frame_times(dst) == frame_times(src)


def test_rotation_metadata_is_kept(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", rotation=90, frames=8)
    dst = tmp_path / "out.mp4"
    _anonymize(src, dst)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        rotation_in = next(a.decode(video=0)).rotation
        rotation_out = next(b.decode(video=0)).rotation
    assert rotation_in != 0
    assert rotation_out == rotation_in


def test_a_stream_the_container_cannot_hold_is_an_error(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mkv", audio="pcm", frames=8)
    dst = tmp_path / "out.webm"
    with pytest.raises(OutputError, match=r"stream #1 \(audio, pcm_s16le\)"):
        _anonymize(src, dst)
    assert list(tmp_path.iterdir()) == [src]  # no output, no partial file, no record


def test_record_and_manifest_describe_the_job(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=10)
    dst = tmp_path / "out.mp4"
    result = veil.anonymize(src, dst, config=FAST)
    record = veil.Record.load(veil.default_record_path(dst))
    assert record.input["sha256"] == veil.media.sha256_file(src)
    audio = next(s for s in record.input["streams"] if s["type"] == "audio")
    assert audio["packets"] == len(packets(src, "audio"))
    assert record.detector["model"] == "yunet"
    assert record.detector["preset"] == "fast"
    assert len(record.detector["weights_sha256"]) == 64
    manifest = result.manifest
    assert manifest is not None
    assert manifest["record_sha256"] == record.file_sha256
    assert manifest["output"]["sha256"] == veil.media.sha256_file(dst)
    out_audio = next(s for s in manifest["output"]["streams"] if s["type"] == "audio")
    assert out_audio["payload_sha256"] == audio["payload_sha256"]


def _render_in_subprocess(src: Path, record: Path, dst: Path) -> bytes:
    subprocess.run(
        [sys.executable, "-m", "veil.cli", "render", "-q", str(src), str(record), "-o", str(dst)],
        check=True,
    )
    return dst.read_bytes()


def test_renders_are_byte_identical_across_processes(tmp_path: Path) -> None:
    src = make_clip(tmp_path / "in.mp4", frames=20)
    record = tmp_path / "rec.json"
    veil.detect(src, record, config=FAST)
    first = _render_in_subprocess(src, record, tmp_path / "a.mp4")
    second = _render_in_subprocess(src, record, tmp_path / "b.mp4")
    assert first == second


def test_anonymize_equals_render_of_its_record(tmp_path: Path, sample_clip: Path) -> None:
    dst = tmp_path / "anon.mp4"
    result = veil.anonymize(sample_clip, dst, config=FAST)
    assert result.record.summary()["tracks"] >= 1  # the sample has a real face
    again = tmp_path / "render.mp4"
    veil.render(sample_clip, veil.default_record_path(dst), again)
    assert again.read_bytes() == dst.read_bytes()


def test_render_refuses_a_record_made_for_another_input(tmp_path: Path) -> None:
    a = make_clip(tmp_path / "a.mp4", frames=6)
    b = make_clip(tmp_path / "b.mp4", frames=7)
    veil.detect(a, tmp_path / "a.json", config=FAST)
    with pytest.raises(veil.RecordError, match=r"made for 'a.mp4'.*not for b.mp4"):
        veil.render(b, tmp_path / "a.json", tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(
    ("name", "suffix"),
    [
        ("short_hamilton_clip.mp4", ".mp4"),
        ("Megamind.avi", ".mkv"),
        ("elon-musk-smoke.gif", ".mp4"),
    ],
)
def test_real_videos_keep_audio_and_frame_count(
    tmp_path: Path, shared_data: Path, name: str, suffix: str
) -> None:
    src = shared_data / "videos" / name
    dst = tmp_path / f"out{suffix}"
    record = _anonymize(src, dst)
    with av.open(str(src)) as container:
        has_audio = bool(container.streams.audio)
    if has_audio:
        before, after = packets(src, "audio"), packets(dst, "audio")
        assert [p[2] for p in after] == [p[2] for p in before]
    (_, pts_in), (_, pts_out) = frame_times(src), frame_times(dst)
    assert len(pts_out) == len(pts_in) == len(record.frames)
