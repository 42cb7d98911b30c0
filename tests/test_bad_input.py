"""Bad input through the real command line: a clear message, a non-zero exit, no output."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from mediagen import make_clip


def _missing(tmp: Path) -> Path:
    return tmp / "nope.mp4"


def _empty(tmp: Path) -> Path:
    path = tmp / "empty.mp4"
    path.write_bytes(b"")
    return path


def _text(tmp: Path) -> Path:
    path = tmp / "notes.mp4"
    path.write_text("this is not a video\n" * 50)
    return path


def _truncated(tmp: Path) -> Path:
    clip = make_clip(tmp / "whole.mp4", frames=30)
    data = clip.read_bytes()
    path = tmp / "truncated.mp4"
    path.write_bytes(data[: len(data) // 2])
    clip.unlink()
    return path


def _audio_only(tmp: Path) -> Path:
    import av

    path = tmp / "speech.m4a"
    clip = make_clip(tmp / "av.mp4", frames=25)
    with av.open(str(clip)) as src, av.open(str(path), "w") as out:
        audio = src.streams.audio[0]
        stream = out.add_stream_from_template(audio)
        for packet in src.demux(audio):
            if packet.size:
                packet.stream = stream
                out.mux(packet)
    clip.unlink()
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_missing, "no such file"),
        (_empty, "the file is empty"),
        (_text, "not a readable video"),
        (_truncated, "not a readable video"),
        (_audio_only, "no video stream"),
    ],
    ids=["missing", "zero-bytes", "not-a-video", "truncated", "audio-only"],
)
@pytest.mark.parametrize("command", ["anonymize", "detect"])
def test_bad_input_is_refused_cleanly(
    tmp_path: Path, make: Callable[[Path], Path], message: str, command: str
) -> None:
    src = make(tmp_path)
    before = set(tmp_path.iterdir())
    out = tmp_path / ("out.mp4" if command == "anonymize" else "out.json")
    result = subprocess.run(
        [sys.executable, "-m", "veil.cli", command, "-q", str(src), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3, result.stderr
    assert message in result.stderr
    assert src.name in result.stderr
    assert "Traceback" not in result.stderr
    assert set(tmp_path.iterdir()) == before  # nothing written, not even a partial file


@pytest.mark.weights
def test_truncated_mid_stream_is_an_error_not_a_short_output(tmp_path: Path) -> None:
    """A faststart MP4 cut short keeps its index: it opens, then runs out of frames."""
    import av

    clip = make_clip(tmp_path / "whole.mp4", frames=60)
    faststart = tmp_path / "fs.mp4"
    with (
        av.open(str(clip)) as src,
        av.open(str(faststart), "w", options={"movflags": "+faststart"}) as out,
    ):
        streams = {s.index: out.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                out.mux(packet)
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    out_path = tmp_path / "out.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "veil.cli", "anonymize", "-q", str(cut), "-o", str(out_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3, result.stderr
    assert "truncated" in result.stderr or "decoding failed" in result.stderr
    assert not out_path.exists()
    assert not list(tmp_path.glob(".*partial*"))
