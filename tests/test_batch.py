"""Archives (issue 16): many files in one command, on this machine and on a real Dask
distributed cluster (a scheduler and two worker processes on loopback, started here).

Every output is checked the way a user would: ``veil verify`` against its input, once; no
partial file left; the batch report lists every file with how it ended.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from dask_cluster import Cluster
from mediagen import cut

from veil import ConfigError
from veil.batch._batch import Item, core_sets, plan
from veil.job._verify import verify

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "astronaut.mp4"
_MAIN = "import sys\nfrom veil.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def veil(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _MAIN, *args], capture_output=True, text=True, timeout=timeout
    )


def clips(folder: Path, names: list[str], frames: int = 40) -> list[Path]:
    """Short cuts of the bundled sample (faces in every frame) under ``folder``."""
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        paths.append(cut(SAMPLE, path, frames))
    return paths


def report(outdir: Path) -> dict[str, dict[str, object]]:
    document = json.loads((outdir / "veil-batch.json").read_text())
    outcomes = {str(Path(o["output"]).relative_to(outdir)): o for o in document["outcomes"]}
    assert len(outcomes) == document["files"] == len(document["outcomes"])
    return outcomes


def verified(source: Path, output: Path) -> bool:
    item = Item(source, output)
    return verify(output, item.manifest, input=source, record=item.record).ok


def start(*args: str) -> subprocess.Popen[str]:
    """``veil ARGS`` as a process of its own (to stop, kill or wait for)."""
    return subprocess.Popen(
        [sys.executable, "-c", _MAIN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def first_file_done(out: Path, timeout: float = 120) -> None:
    """Wait until a file of the batch writing to ``out`` has its manifest (is complete)."""
    deadline = time.monotonic() + timeout
    while not list(out.glob("*.manifest.json")) and time.monotonic() < deadline:
        time.sleep(0.05)


def partials(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".veil-partial-" in p.name]


# --------------------------------------------------------------------------------------------
# Planning: no media needed


def test_plan_mirrors_folders_and_filters(tmp_path: Path) -> None:
    for name in (
        "a.mp4",
        "sub/b.MOV",
        "sub/deep/c.mkv",
        "notes.txt",
        ".hidden/d.mp4",
        "sub/.e.mp4",
    ):
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(b"")
    (tmp_path / "one.webm").write_bytes(b"")
    out = tmp_path / "in" / "out"  # inside an input folder: never read as input
    (out / "old.mp4").parent.mkdir()
    (out / "old.mp4").write_bytes(b"")
    items = plan([tmp_path / "in", tmp_path / "one.webm"], out)
    assert [str(i.output.relative_to(out)) for i in items] == [
        "a.mp4",
        "one.webm",
        "sub/b.MOV",
        "sub/deep/c.mkv",
    ]
    assert items[2].input == tmp_path / "in" / "sub" / "b.MOV"
    assert items[0].record.name == "a.mp4.veil.json"
    assert items[0].manifest.name == "a.mp4.manifest.json"
    only = plan([tmp_path / "in"], out, include=["*.txt", "sub/*"], exclude=["*.mkv"])
    assert [str(i.output.relative_to(out)) for i in only] == ["notes.txt", "sub/b.MOV"]


def test_plan_refuses_clashes_missing_inputs_and_the_input_as_output(tmp_path: Path) -> None:
    for name in ("x/a.mp4", "y/a.mp4", "y/b.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ConfigError, match=r"two inputs would be written to one output.*a\.mp4"):
        plan([tmp_path / "x", tmp_path / "y"], tmp_path / "out")
    with pytest.raises(ConfigError, match="no such file or folder"):
        plan([tmp_path / "x", tmp_path / "nope"], tmp_path / "out")
    with pytest.raises(ConfigError, match="would be the input itself"):
        plan([tmp_path / "y"], tmp_path / "y")
    with pytest.raises(ConfigError, match="no video files"):
        plan([tmp_path / "x"], tmp_path / "out", exclude=["*.mp4"])


def test_plan_takes_named_files_whatever_their_extension_and_refuses_case_clashes(
    tmp_path: Path,
) -> None:
    for name in ("a.ogv", "x/A.mp4", "y/a.mp4", "sub/b.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    items = plan([tmp_path / "a.ogv", tmp_path / "sub" / ".." / "sub" / "b.mp4"], tmp_path / "o")
    assert [i.output.name for i in items] == ["a.ogv", "b.mp4"]
    assert items[1].input == tmp_path / "sub" / "b.mp4"
    with pytest.raises(ConfigError, match="two inputs would be written to one output"):
        plan([tmp_path / "x", tmp_path / "y"], tmp_path / "o")  # A.mp4, a.mp4: one file on APFS


def test_core_sets_share_the_cores_without_overlap() -> None:
    assert core_sets(1, [0, 1]) == [[0, 1]]
    assert core_sets(2, [0, 1]) == [[0], [1]]
    assert core_sets(3, [0, 1, 2, 3, 4, 5, 6, 7]) == [[0, 1], [2, 3, 4], [5, 6, 7]]
    assert core_sets(3, [4, 5]) == [[4], [5], [4]]


def test_the_cli_refuses_a_clash_before_anything_runs(tmp_path: Path) -> None:
    for name in ("x/a.mp4", "y/a.mp4"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    result = veil(
        "anonymize", str(tmp_path / "x"), str(tmp_path / "y"), "-o", str(tmp_path / "out")
    )
    assert result.returncode == 2, result.stderr
    assert "two inputs would be written to one output" in result.stderr
    assert not (tmp_path / "out").exists()
    result = veil("anonymize", str(tmp_path / "x"), "-o", str(tmp_path / "o"), "--record", "r.json")
    assert result.returncode == 2 and "drop --record" in result.stderr


# --------------------------------------------------------------------------------------------
# On this machine


@pytest.mark.weights
def test_a_batch_with_a_bad_file_in_the_middle(tmp_path: Path) -> None:
    sources = clips(tmp_path / "in", ["a.mp4", "c/d.mp4"])
    (tmp_path / "in" / "b.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    result = veil(
        "anonymize", str(tmp_path / "in"), "-o", f"{out}/", "--jobs", "2", "--preset", "fast"
    )
    assert result.returncode == 8, result.stderr
    outcomes = report(out)
    assert {k: o["status"] for k, o in outcomes.items()} == {
        "a.mp4": "ok",
        "b.mp4": "failed",
        "c/d.mp4": "ok",
    }
    assert outcomes["b.mp4"]["exit_code"] == 3
    assert "not a readable video file" in str(outcomes["b.mp4"]["reason"])
    assert "b.mp4 [exit 3]" in result.stdout and "3 files: 2 ok, 1 failed" in result.stdout
    for source, name in zip(sources, ["a.mp4", "c/d.mp4"], strict=True):
        assert verified(source, out / name)
        assert outcomes[name]["frames"] == 40
        # the per-file options reached each file's run
        record = json.loads((out / f"{name}.veil.json").read_text())
        assert record["detector"]["preset"] == "fast"
    assert not (out / "b.mp4").exists() and not partials(out)


@pytest.mark.weights
def test_a_batch_never_replaces_files_it_did_not_make_from_that_input(tmp_path: Path) -> None:
    """Day 2's a.mp4 into the folder that holds day 1's a.mp4: day 1's outputs are not
    another run of day 2's input, so they stay, and the file fails saying why; a folder
    where a file's subfolder should be fails that file alone."""
    clips(tmp_path / "day1", ["a.mp4"])
    clips(tmp_path / "day2", ["a.mp4", "b.mp4", "sub/c.mp4"], frames=30)
    out = tmp_path / "out"
    assert veil("anonymize", str(tmp_path / "day1"), "-o", f"{out}/").returncode == 0
    day1 = {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith("a.mp4")}
    (out / "sub").write_text("a file where day 2's subfolder would go")
    result = veil("anonymize", str(tmp_path / "day2"), "-o", f"{out}/")
    assert result.returncode == 8, result.stderr
    outcomes = report(out)
    assert outcomes["a.mp4"]["status"] == "failed" and outcomes["a.mp4"]["exit_code"] == 5
    assert "was not made from a.mp4: not replaced" in str(outcomes["a.mp4"]["reason"])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name.startswith("a.mp4")} == day1
    assert outcomes["sub/c.mp4"]["status"] == "failed"
    assert outcomes["b.mp4"]["status"] == "ok"
    assert verified(tmp_path / "day2" / "b.mp4", out / "b.mp4")


@pytest.mark.weights
def test_an_interrupted_batch_resumes(tmp_path: Path) -> None:
    """SIGKILL the batch mid-way: no partial file stays, and the re-run redoes only what was
    not finished (the files done before keep their bytes and their inode)."""
    clips(tmp_path / "in", [f"{i}.mp4" for i in range(6)], frames=120)
    out = tmp_path / "out"
    batch = start("anonymize", str(tmp_path / "in"), "-o", f"{out}/")
    first_file_done(out)
    batch.send_signal(signal.SIGKILL)
    batch.wait()
    done = {p.name: os.stat(p) for p in out.glob("[!.]*.mp4")}
    assert 1 <= len(done) < 6, "the batch was not interrupted mid-way"
    time.sleep(0.5)  # the children die with the batch (their parent-death signal)
    result = veil("anonymize", str(tmp_path / "in"), "-o", f"{out}/")
    assert result.returncode == 0, result.stderr
    outcomes = report(out)
    for name, before in done.items():
        if outcomes[name]["status"] == "skipped":
            after = os.stat(out / name)
            assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sum(o["status"] == "skipped" for o in outcomes.values()) >= len(done) - 1
    assert sum(o["status"] == "ok" for o in outcomes.values()) >= 6 - len(done)
    for i in range(6):
        assert verified(tmp_path / "in" / f"{i}.mp4", out / f"{i}.mp4")
    assert not partials(out)


@pytest.mark.weights
def test_a_stopped_batch_stops_its_files_and_says_what_is_done(tmp_path: Path) -> None:
    """SIGTERM (or Ctrl-C): no further file starts, the running one stops and removes its
    partial files, the report lists what finished."""
    clips(tmp_path / "in", [f"{i}.mp4" for i in range(6)], frames=120)
    out = tmp_path / "out"
    batch = start("anonymize", str(tmp_path / "in"), "-o", f"{out}/")
    first_file_done(out)
    batch.send_signal(signal.SIGTERM)
    _, stderr = batch.communicate(timeout=60)
    assert batch.returncode == 130, stderr
    finished = sorted(p.name for p in out.glob("[!.]*.mp4"))
    assert 1 <= len(finished) < 6
    assert f"{len(finished)} of 6 files finished" in stderr and "resume" in stderr
    assert "no output was written" not in stderr
    assert sorted(report(out)) == finished
    assert not partials(out)


# --------------------------------------------------------------------------------------------
# On a Dask distributed cluster: a scheduler and two workers, real processes on loopback


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path)
    yield running
    running.stop()


def _running_file(worker: subprocess.Popen[bytes], timeout: float = 120) -> str:
    """The name of the file ``worker`` runs, once its ``veil`` child has started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(worker.pid).children():
            argv = child.cmdline()
            if "anonymize" in argv:
                return Path(argv[argv.index("anonymize") + 1]).name
        time.sleep(0.02)
    raise AssertionError("the worker never started a file")


@pytest.mark.weights
def test_a_cluster_batch_survives_a_worker_killed_mid_file(
    tmp_path: Path, cluster: Cluster
) -> None:
    sources = clips(tmp_path / "in", [f"{i}.mp4" for i in range(6)], frames=100)
    out = tmp_path / "out"
    address = cluster.start()
    batch = start("batch", str(tmp_path / "in"), "-o", str(out), "--cluster", address)
    victim, survivor = cluster.workers
    killed = _running_file(victim)
    time.sleep(0.3)  # mid-file
    finished = {p.name: os.stat(p) for p in out.glob("[!.]*.mp4")}
    victim.kill()
    _, stderr = batch.communicate(timeout=600)
    assert batch.returncode == 0, stderr
    outcomes = report(out)
    assert sorted(outcomes) == [f"{i}.mp4" for i in range(6)]
    assert all(o["status"] == "ok" for o in outcomes.values()), outcomes
    for source in sources:
        assert verified(source, out / source.name)
    # written once: what was finished before the kill was not written again
    for name, before in finished.items():
        after = os.stat(out / name)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not partials(out)
    # the survivor took the killed worker's file
    assert str(outcomes[killed]["worker"]).endswith(f":{survivor.pid}")


@pytest.mark.weights
def test_a_cluster_whose_head_is_gone_fails_clearly_and_a_rerun_resumes(
    tmp_path: Path, cluster: Cluster
) -> None:
    sources = clips(tmp_path / "in", [f"{i}.mp4" for i in range(6)], frames=100)
    (tmp_path / "in" / "bad.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    address = cluster.start()
    batch = start("batch", str(tmp_path / "in"), "-o", str(out), "--cluster", address)
    first_file_done(out)
    assert cluster.scheduler is not None
    cluster.scheduler.kill()
    _, stderr = batch.communicate(timeout=300)
    assert batch.returncode == 9, stderr
    assert "is gone" in stderr and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
    cluster.stop()
    address = cluster.start()
    result = veil("batch", str(tmp_path / "in"), "-o", str(out), "--cluster", address)
    assert result.returncode == 8, result.stderr  # the bad file, reported once more
    outcomes = report(out)
    assert outcomes["bad.mp4"]["status"] == "failed" and outcomes["bad.mp4"]["exit_code"] == 3
    assert any(o["status"] == "skipped" for o in outcomes.values())
    for source in sources:
        assert verified(source, out / source.name)
    assert not partials(out)


@pytest.mark.weights
def test_a_file_failing_on_every_try_is_reported_not_retried_forever(
    tmp_path: Path, cluster: Cluster
) -> None:
    clips(tmp_path / "in", ["a.mp4"], frames=10)
    address = cluster.start()
    result = veil(
        "batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--cluster", address,
        "--retries", "1", "--detector", "grpc://127.0.0.1:1",
    )  # fmt: skip
    assert result.returncode == 8, result.stderr
    outcome = report(tmp_path / "out")["a.mp4"]
    assert outcome["status"] == "failed"
    assert "UNAVAILABLE" in str(outcome["reason"]) and "on each of 2 tries" in str(
        outcome["reason"]
    )
