"""Where a job writes (issue 14, items 4 and 5): no file it writes is one it reads or another
it writes; a file that exists is replaced only with ``--overwrite``/``-y`` (``overwrite=True``);
a run asked to overwrite that fails leaves nothing stale under its names; partial files of a
killed job are swept by the next job writing the same output.

Pinned bugs, all exit 0 before: ``veil anonymize a.mp4 -o a.mp4`` (also ``./a.mp4``, the input
given through a symlink, a hard link) overwrote the source; ``--record a.mp4`` or ``--manifest
a.mp4`` replaced the footage with JSON; ``--manifest b.mp4 -o b.mp4`` replaced the masked video;
``--record b.mp4 -o b.mp4`` lost the record; existing outputs were replaced silently. A failed
run (exit 3, "nothing was written") left an old, unmasked OUT in place for a script to ship,
and SIGKILL left ``.OUT.veil-partial-PID`` files that nothing swept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mediagen import make_clip
from recordgen import _document

import veil
from veil import ConfigError, OutputExists
from veil.media._atomic import partial_path, sweep_partials

#: The CLI in a fresh interpreter (the folder it runs in is the test's).
_MAIN = "import sys\nfrom veil.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def veil_cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _MAIN, *args],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=300,
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The run's one line on stderr (an error says what, and nothing else is printed)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every name in ``folder`` and what it holds (a link: where it points)."""
    return {
        p.name: os.readlink(p) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
    }


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "a.mp4", frames=8)


@pytest.fixture
def folder(tmp_path: Path, clip: Path) -> Path:
    """``a.mp4`` (a clip), ``link.mp4`` (a symlink to it), ``hard.mp4`` (a hard link to it),
    ``rec.json`` (a record of another video)."""
    (tmp_path / "a.mp4").write_bytes(clip.read_bytes())
    (tmp_path / "link.mp4").symlink_to("a.mp4")
    os.link(tmp_path / "a.mp4", tmp_path / "hard.mp4")
    (tmp_path / "rec.json").write_text(json.dumps(_document()))
    return tmp_path


SAME_FILE = [
    pytest.param("anonymize a.mp4 -o a.mp4", "a.mp4: the output", id="output-is-input"),
    pytest.param("anonymize a.mp4 -o ./a.mp4", "a.mp4: the output", id="dot-slash"),
    pytest.param("anonymize link.mp4 -o a.mp4", "a.mp4: the output", id="input-through-symlink"),
    pytest.param("anonymize a.mp4 -o hard.mp4", "hard.mp4: the output", id="hard-link"),
    pytest.param(
        "anonymize a.mp4 -o b.mp4 --record a.mp4", "a.mp4: the record", id="record-is-input"
    ),
    pytest.param(
        "anonymize a.mp4 -o b.mp4 --manifest ./a.mp4", "a.mp4: the manifest", id="manifest-is-input"
    ),
    pytest.param(
        "anonymize a.mp4 -o b.mp4 --manifest b.mp4",
        "b.mp4: the manifest would be the same file as the output",
        id="manifest-is-output",
    ),
    pytest.param(
        "anonymize a.mp4 -o b.mp4 --record b.mp4",
        "b.mp4: the record would be the same file as the output",
        id="record-is-output",
    ),
    pytest.param(
        "anonymize a.mp4 -o b.mp4 --record r.json --manifest r.json",
        "r.json: the record would be the same file as the manifest",
        id="record-is-manifest",
    ),
    pytest.param(
        "anonymize a.mp4 -o b.mp4 --remote grpc://127.0.0.1:1 --record link.mp4",
        "link.mp4: the record would be the same file as the input (a.mp4)",
        id="remote-record-is-input",
    ),
    pytest.param("detect a.mp4 -o link.mp4", "link.mp4: the record", id="detect"),
    pytest.param("render a.mp4 rec.json -o hard.mp4", "hard.mp4: the output", id="render"),
    pytest.param(
        "render a.mp4 rec.json -o ./rec.json",
        "rec.json: the output would be the same file as the record",
        id="render-over-its-record",
    ),
    pytest.param(
        "render a.mp4 rec.json -o b.mp4 --manifest rec.json",
        "rec.json: the manifest would be the same file as the record",
        id="render-manifest-over-its-record",
    ),
    pytest.param("review a.mp4 rec.json -o a.mp4", "a.mp4: the report", id="review"),
]


@pytest.mark.parametrize(("command", "message"), SAME_FILE)
def test_two_paths_of_one_file_are_refused_even_with_overwrite(
    folder: Path, command: str, message: str
) -> None:
    before = snapshot(folder)
    result = veil_cli(folder, *command.split(), "--overwrite")
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert message in line and "the same file as the" in line, line
    assert snapshot(folder) == before  # the footage untouched, nothing written


EXISTING = [
    pytest.param("anonymize a.mp4 -o b.mp4", "b.mp4", "the output", id="anonymize-output"),
    pytest.param("anonymize a.mp4 -o b.mp4", "b.mp4.veil.json", "the record", id="record"),
    pytest.param("anonymize a.mp4 -o b.mp4", "b.mp4.manifest.json", "the manifest", id="manifest"),
    pytest.param("detect a.mp4 -o r.json", "r.json", "the record", id="detect"),
    pytest.param("render a.mp4 rec.json -o b.mp4", "b.mp4", "the output", id="render"),
    pytest.param("review a.mp4 rec.json -o b.html", "b.html", "the report", id="review"),
    pytest.param(
        "edit rec.json -o r.json --suppress 5 --who a --why b",
        "r.json",
        "the edited record",
        id="edit",
    ),
]


@pytest.mark.parametrize(("command", "existing", "role"), EXISTING)
def test_an_existing_output_is_replaced_only_with_overwrite(
    folder: Path, command: str, existing: str, role: str
) -> None:
    (folder / existing).write_text("an earlier file\n")
    before = snapshot(folder)
    result = veil_cli(folder, *command.split())
    assert result.returncode == 2, result.stderr
    line = error_line(result)
    assert f"{existing}: {role} exists; give --overwrite (-y) to replace it" in line, line
    assert snapshot(folder) == before


@pytest.mark.parametrize("flag", ["-o r.json", "-o r.json -y", ""], ids=["new", "over", "in-place"])
def test_edit_writes_records_in_place_or_beside(folder: Path, flag: str) -> None:
    if "-y" in flag:
        (folder / "r.json").write_text("{}\n")
    result = veil_cli(folder, "edit", "rec.json", *flag.split(), "--suppress", "5", "--who", "a",
                      "--why", "b")  # fmt: skip
    assert result.returncode == 0, result.stderr
    target = folder / ("r.json" if flag else "rec.json")
    assert json.loads(target.read_text())["edits"][0]["action"] == "suppress"


def test_edit_never_writes_over_a_video(folder: Path) -> None:
    before = snapshot(folder)
    result = veil_cli(folder, "edit", "rec.json", "-o", "a.mp4", "-y", "--suppress", "5",
                      "--who", "a", "--why", "b")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "a.mp4: exists and is not a JSON record" in error_line(result)
    assert snapshot(folder) == before


def test_the_api_refuses_alike(folder: Path) -> None:
    a, b = folder / "a.mp4", folder / "b.mp4"
    with pytest.raises(ConfigError, match="the output would be the same file as the input"):
        veil.anonymize(a, folder / "link.mp4", overwrite=True)
    with pytest.raises(ConfigError, match="the record would be the same file as the input"):
        veil.detect(a, folder / "hard.mp4")
    b.write_bytes(b"old")
    with pytest.raises(OutputExists, match=r"b\.mp4: the output exists") as caught:
        veil.render(a, folder / "rec.json", b)
    assert isinstance(caught.value, FileExistsError)
    with pytest.raises(OutputExists, match=r"r\.json: the record exists"):
        (folder / "r.json").write_text("{}")
        veil.detect(a, folder / "r.json")


# -- item 4: a failed run asked to overwrite leaves nothing stale ---------------------------


def _old_outputs(folder: Path, name: str, companions: tuple[str, ...]) -> list[str]:
    names = [name, *(name + c for c in companions)]
    for n in names:
        (folder / n).write_bytes((folder / "a.mp4").read_bytes())  # an old, unmasked copy
    return names


@pytest.mark.parametrize(
    ("command", "code", "companions"),
    [
        ("anonymize notavideo.mp4 -o b.mp4 -y", 3, (".veil.json", ".manifest.json")),
        ("render a.mp4 rec.json -o b.mp4 --overwrite", 4, (".manifest.json",)),  # another input's
    ],
    ids=["anonymize-bad-input", "render-wrong-record"],
)
def test_a_failed_run_with_overwrite_removes_the_old_outputs(
    folder: Path, command: str, code: int, companions: tuple[str, ...]
) -> None:
    (folder / "notavideo.mp4").write_text("not a video\n")
    names = _old_outputs(folder, "b.mp4", companions)
    result = veil_cli(folder, *command.split())
    assert result.returncode == code, result.stderr
    line = error_line(result)
    assert f"the old {', '.join(names)} were removed" in line, line
    assert not set(names) & set(snapshot(folder))


def test_the_api_removes_the_old_outputs_of_a_failed_run_too(folder: Path) -> None:
    b = folder / "b.mp4"
    _old_outputs(folder, "b.mp4", (".manifest.json",))
    with pytest.raises(veil.RecordError) as caught:
        veil.render(folder / "a.mp4", folder / "rec.json", b, overwrite=True)
    assert caught.value.__notes__ == [
        f"the old {b}, {b}.manifest.json were removed: a failed run leaves nothing under the "
        "output's name"
    ]
    assert not b.exists() and not (folder / "b.mp4.manifest.json").exists()


# -- item 4: partial files of killed jobs ---------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweep_removes_partials_of_dead_processes_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    long = tmp_path / ("a" * 236 + ".mp4")  # its partial name is hashed (NAME_MAX)
    short = tmp_path / "out.mp4"
    dead = _dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        hashed = partial_path(long).name  # .DIGEST.veil-partial-PID.mp4
        stale = [
            short.with_name(f".out.veil-partial-{dead}.mp4"),
            long.with_name(f"{hashed[: hashed.rindex('-') + 1]}{dead}.mp4"),
        ]
        kept = [
            partial_path(short),  # this process's
            short.with_name(f".out.veil-partial-{live.pid}.mp4"),  # a running job's
            short.with_name(f".out.veil-partial-{dead}.mkv"),  # another output's
            short.with_name(f".out.veil-partial-{dead}x.mp4"),  # not veil's name
            short.with_name(f".outer.veil-partial-{dead}.mp4"),
        ]
        assert ".veil-partial-" in stale[1].name and "aaaa" not in stale[1].name
        for path in stale + kept:
            path.write_bytes(b"partial")
        with caplog.at_level(logging.WARNING, logger="veil"):
            assert sweep_partials(short) == [stale[0]]
            assert sweep_partials(long) == [stale[1]]
        assert sorted(tmp_path.iterdir()) == sorted(kept)
        assert f"left by process {dead}, which no longer runs" in caplog.text
    finally:
        live.kill()
        live.wait()


def _veil_popen(folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _MAIN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=folder,
    )


def _wait_for_partial(proc: subprocess.Popen[str], folder: Path) -> Path:
    """The job's partial output once it holds bytes: the job is under way. (Before it
    starts, the writability check creates and removes an empty partial: a signal sent then
    stops a job that has not begun, which leaves the old outputs, as it should.)"""
    deadline = time.monotonic() + 120
    while not (found := [p for p in folder.glob(".out.veil-partial-*.mp4") if _size(p)]):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return found[0]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.mark.weights
def test_a_killed_jobs_partial_is_swept_and_a_stopped_overwrite_leaves_nothing(
    tmp_path: Path,
) -> None:
    long = make_clip(tmp_path / "long.mp4", size=(640, 360), frames=400)
    make_clip(tmp_path / "short.mp4", frames=8)
    # SIGKILL mid-job: nothing can clean up, the partial file stays.
    proc = _veil_popen(tmp_path, "anonymize", str(long), "-o", "out.mp4", "--preset", "fast")
    partial = _wait_for_partial(proc, tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert partial.exists()
    # The next job writing out.mp4 sweeps it, and says so.
    result = veil_cli(tmp_path, "anonymize", "short.mp4", "-o", "out.mp4", "--preset", "fast")
    assert result.returncode == 0, result.stderr
    assert f"{partial.name}: removed a partial file left by process {proc.pid}" in result.stderr
    outputs = ["out.mp4", "out.mp4.veil.json", "out.mp4.manifest.json"]
    assert sorted(snapshot(tmp_path)) == sorted(["long.mp4", *outputs, "short.mp4"])
    # SIGTERM while overwriting: the old outputs go too (they described another run).
    proc = _veil_popen(tmp_path, "anonymize", "long.mp4", "-o", "out.mp4", "-y", "--preset", "fast")
    _wait_for_partial(proc, tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert (
        f"veil: interrupted; no output was written; the old {', '.join(outputs)} were removed"
        in stderr
    )
    assert sorted(snapshot(tmp_path)) == ["long.mp4", "short.mp4"]
