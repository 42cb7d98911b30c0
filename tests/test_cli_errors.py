"""Every error path of the real command line gives its documented exit code (README: 2 bad
usage or config, 5 output error, 6 detector error) and one readable line that names the
problem, never a traceback, and leaves nothing under the output's name (issue 13).

Pinned bugs: a missing or unwritable output folder, a 240-byte output name (the partial
file's name overflowed NAME_MAX), ``--encoder-preset warp``, ``--codec png``, ``veil serve``
on a taken gRPC or metrics port and an on-prem run without onnxruntime all ended in a
traceback (exit 1); ``--crf 99`` was accepted and recorded; ``veil serve`` said nothing at
the default log level.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mediagen import make_clip

from veil import DetectorSettings

ROOT = Path(__file__).resolve().parents[1]
#: The CLI in a fresh interpreter; ``sys.modules['onnxruntime'] = None`` when NO_ORT is set
#: makes ``import onnxruntime`` fail as it does where the package is not installed.
_MAIN = (
    "import os, sys\n"
    "if os.environ.get('NO_ORT'): sys.modules['onnxruntime'] = None\n"
    "from veil.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


#: Root writes into a 0555 folder; without CAP_DAC_OVERRIDE it obeys permissions as a user does.
_AS_USER = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
root = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def veil(*args: str, no_onnxruntime: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_ORT": "1" if no_onnxruntime else ""}
    return subprocess.run(
        [*(_AS_USER if root else []), sys.executable, "-c", _MAIN, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("veil: error: ")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "in.mp4", frames=8)


def _missing_folder(tmp: Path) -> Path:
    return tmp / "no-such-folder" / "out.mp4"


def _folder_is_a_file(tmp: Path) -> Path:
    (tmp / "notes.txt").write_text("a file, not a folder\n")
    return tmp / "notes.txt" / "out.mp4"


def _read_only_folder(tmp: Path) -> Path:
    folder = tmp / "locked"
    folder.mkdir(mode=0o555)
    return folder / "out.mp4"


def _proc(tmp: Path) -> Path:
    return Path("/proc/veil-out.mp4")  # a folder that takes no new files, even as root


def _name_over_name_max(tmp: Path) -> Path:
    return tmp / ("a" * 300 + ".mp4")


def _record_name_over_name_max(tmp: Path) -> Path:
    return tmp / ("a" * 246 + ".mp4")  # 250 bytes fit; OUT.manifest.json (264) does not


BAD_OUTPUTS = [
    pytest.param(_missing_folder, "no-such-folder does not exist", id="missing-folder"),
    pytest.param(_folder_is_a_file, "notes.txt is not a folder", id="folder-is-a-file"),
    pytest.param(_read_only_folder, "no permission to create files in", id="read-only-folder"),
    pytest.param(
        _proc,
        "the folder /proc does not take new files",
        id="unwritable-folder",
        marks=pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc"),
    ),
    pytest.param(_name_over_name_max, "the file name is 304 bytes, longer than", id="long-name"),
    pytest.param(
        _record_name_over_name_max,
        "the file name is 264 bytes, longer than the 255 this filesystem allows (the "
        "manifest: give --manifest F)",
        id="long-derived-name",
    ),
]


@pytest.mark.parametrize(("make", "message"), BAD_OUTPUTS)
def test_an_output_that_cannot_be_written_is_exit_5_before_any_work(
    clip: Path, tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    out = make(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = veil("anonymize", "-q", str(clip), "-o", str(out), "--preset", "fast")
    assert result.returncode == 5, result.stderr
    assert error_lines(result.stderr) == [result.stderr.strip()]  # one line, nothing else
    assert message in result.stderr
    assert sorted(tmp_path.rglob("*")) == before  # no output, no record, no partial file


@pytest.mark.parametrize(
    ("suffix", "options", "message"),
    [
        (".mp4", ["--encoder-preset", "warp"], "encoder preset 'warp' is not a preset name"),
        (".mp4", ["--codec", "libx264", "--encoder-preset", "p4"], "not one of libx264's"),
        (".mp4", ["--codec", "png"], "png takes no YUV pixel format"),
        (".mp4", ["--codec", "aac"], "codec 'aac' is an audio encoder, not a video encoder"),
        (".mp4", ["--codec", "warp9"], "codec 'warp9' is not an encoder in this FFmpeg build"),
        (".webm", ["--codec", "libx264"], "codec libx264 cannot go in a .webm file"),
        (".mkv", ["--codec", "png"], "codec png cannot go in a .mkv file"),
        (".mp4", ["--crf", "99"], "crf 99 is out of range for libx264: 0..51"),
        (".mp4", ["--crf", "-1"], "crf -1 is out of range for libx264: 0..51"),
        (".mp4", ["--codec", "libx265", "--crf", "52"], "out of range for libx265: 0..51"),
        (".webm", ["--crf", "51"], "crf 51 is out of range for libvpx-vp9: 0..50"),
        (".mp4", ["--encoder-threads", "0"], "encoder threads 0 must be 1..64"),
    ],
    ids=[
        "preset-warp",
        "nvenc-preset-for-x264",
        "codec-png",
        "audio-codec",
        "unknown-codec",
        "x264-in-webm",
        "png-in-mkv",
        "crf-99",
        "crf-negative",
        "crf-x265",
        "crf-vp9",
        "threads-auto",
    ],
)
@pytest.mark.parametrize("command", ["anonymize", "render"])
def test_encoder_options_are_checked_at_parse_time(
    clip: Path, tmp_path: Path, suffix: str, options: list[str], message: str, command: str
) -> None:
    out = tmp_path / f"out{suffix}"
    record = tmp_path / "in.veil.json"  # render: checked before the record is read
    where = [str(clip), str(record)] if command == "render" else [str(clip)]
    result = veil(command, "-q", *where, "-o", str(out), *options)
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert message in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ("[50, 20, 10, 70]", "frame 2, track 5: box [50, 20, 10, 70] has its corners swapped"),
        ("[NaN, 20, 50, 70]", "frame 2, track 5 (frames/2/masks/0/box/0): nan is not a finite"),
        ("[10, 20, 1e308, 70]", "frame 2, track 5: box [10, 20, 1e+308, 70] lies beyond 3200"),
    ],
    ids=["swapped", "nan", "1e308"],
)
def test_a_record_box_that_cannot_be_drawn_is_exit_4(
    clip: Path, tmp_path: Path, box: str, message: str
) -> None:
    """Regression (issue 14): a swapped box rendered no mask (exit 0); NaN or 1e308 crashed
    the render with a traceback."""
    from recordgen import _document

    record = tmp_path / "in.veil.json"
    record.write_text(json.dumps(_document()).replace("[10.0, 20.0, 50.0, 70.0]", box))
    result = veil("render", "-q", str(clip), str(record), "-o", str(tmp_path / "out.mp4"))
    assert result.returncode == 4, result.stderr
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert f"{record}: {message}" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.veil.json"]


def test_an_unknown_container_is_exit_5(clip: Path, tmp_path: Path) -> None:
    result = veil("anonymize", "-q", str(clip), "-o", str(tmp_path / "out.xyz"))
    assert result.returncode == 5, result.stderr
    assert "no container format for the extension '.xyz'" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.weights
def test_a_240_byte_output_name_is_written(clip: Path, tmp_path: Path) -> None:
    """The partial file's name (``.NAME.veil-partial-PID.mp4``) overflowed NAME_MAX; a name
    the filesystem allows is now written, by way of a hashed partial name."""
    out = tmp_path / ("a" * 236 + ".mp4")
    result = veil("anonymize", "-q", str(clip), "-o", str(out), "--preset", "fast")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [out.name, out.name + ".manifest.json", out.name + ".veil.json"]


@pytest.mark.parametrize(
    "command",
    [
        ["anonymize", "-q", "{clip}", "-o", "{tmp}/out.mp4"],
        ["detect", "-q", "{clip}", "-o", "{tmp}/out.veil.json"],
        ["serve", "--listen", "127.0.0.1:0"],
    ],
    ids=["anonymize", "detect", "serve"],
)
def test_no_onnxruntime_is_exit_6_and_says_what_to_install(
    clip: Path, tmp_path: Path, command: list[str]
) -> None:
    args = [a.format(clip=clip, tmp=tmp_path) for a in command]
    result = veil(*args, no_onnxruntime=True)
    assert result.returncode == 6, result.stderr
    (line,) = error_lines(result.stderr)
    assert "onnxruntime is not installed here" in line and "veil[local]" in line
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--listen", "127.0.0.1:{port}"], "cannot listen on 127.0.0.1:{port}: the port is in use"),
        (
            ["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:{port}"],
            "cannot listen on 127.0.0.1:{port}: the port is in use (--metrics)",
        ),
        (
            ["--listen", "192.0.2.1:50051", "--insecure"],  # TEST-NET-1: not this machine's
            "cannot listen on 192.0.2.1:50051: the address is not one of this machine's",
        ),
    ],
    ids=["grpc-port-taken", "metrics-port-taken", "foreign-address"],
)
def test_serve_on_a_taken_port_is_exit_2(taken_port: int, flags: list[str], message: str) -> None:
    result = veil("serve", *(f.format(port=taken_port) for f in flags))
    assert result.returncode == 2, result.stderr
    assert error_lines(result.stderr) == [result.stderr.strip()]
    assert message.format(port=taken_port) in result.stderr


@pytest.mark.weights
def test_serve_says_where_it_listens_and_when_it_serves() -> None:
    """At the default log level: the address, the metrics URL and the turn to SERVING."""
    process = subprocess.Popen(
        [sys.executable, "-c", _MAIN, "serve", "--listen", "127.0.0.1:0", "--threads", "1",
         "--metrics", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    stderr = process.stderr
    assert stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stderr], daemon=True).start()
    seen: list[str] = []
    try:
        while not any("health SERVING" in line for line in seen):
            try:
                seen.append(lines.get(timeout=120))
            except queue.Empty:
                pytest.fail(f"veil serve did not say SERVING: {''.join(seen)}")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    listening = next(line for line in seen if "listening on" in line)
    assert "listening on 127.0.0.1:" in listening and "(plaintext)" in listening
    assert "metrics on http://127.0.0.1:" in listening
    assert f"health SERVING: {DetectorSettings().model} on 127.0.0.1:" in seen[-1]
    assert process.returncode == 0, "".join(seen)
