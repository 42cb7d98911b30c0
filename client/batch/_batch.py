"""Many files in one command: an archive anonymised on this machine (``veil anonymize IN...
-o OUTDIR/``, ``--jobs N``) or spread over a Dask distributed cluster (``veil batch IN... -o
OUTDIR/ --cluster ADDRESS``, ``_cluster``).

Each file is one ``veil anonymize`` run in a process of its own (one bad or crashing file
stops nothing else), which writes its output, record and manifest atomically under their
final names. A file whose output and manifest exist and verify against the input is done:
a re-run skips it, so an interrupted batch resumes, and a cluster task retried after its
worker died finds the file done instead of writing it twice. Every file ends ``ok``,
``failed`` (exit code and reason) or ``skipped``, listed in ``OUTDIR/veil-batch.json``.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from queue import SimpleQueue
from typing import Any

import av

from veil.core import ConfigError, VeilError, split_address
from veil.job import default_record_path, manifest_path, verify, write_json_atomic
from veil.media import same_file, sha256_file

#: What a folder is searched for unless ``--include`` says otherwise (lower case).
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mxf", ".mts", ".m2ts", ".ts",
     ".mpg", ".mpeg", ".wmv", ".flv", ".3gp"}
)  # fmt: skip
REPORT = "veil-batch.json"


@dataclass(frozen=True)
class Item:
    """One file of a batch: where it is read and where its results go (absolute paths)."""

    input: Path
    output: Path

    @property
    def record(self) -> Path:
        return default_record_path(self.output)

    @property
    def manifest(self) -> Path:
        return manifest_path(self.output)


@dataclass
class Outcome:
    """How one file ended: ``ok``, ``failed`` or ``skipped`` (done and verified before)."""

    input: str
    output: str
    status: str
    exit_code: int | None = None
    reason: str = ""
    frames: int = 0
    seconds: float = 0.0
    worker: str = ""


def plan(
    inputs: Sequence[Path],
    outdir: Path,
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> list[Item]:
    """The files ``inputs`` name, each with its output under ``outdir``: a file as
    ``outdir/NAME``, a folder's files (recursively, hidden ones and ``outdir`` itself left
    out) at their path inside it. ``include`` globs (on the path inside the folder, or the
    name) replace the default video extensions; ``exclude`` globs drop files. Refuses
    (``ConfigError``) a missing input, nothing to do, and two files that would be written to
    one output, or an output that is an input, before anything runs."""
    outdir = Path(os.path.normpath(outdir.absolute()))
    found: list[tuple[Path, Path]] = []  # (input, path relative to outdir)
    for given in inputs:
        path = Path(os.path.normpath(given.absolute()))
        if os.path.isdir(path):  # os.path: False, not an error, for a name too long
            for file in _walk(path, outdir):
                relative = file.relative_to(path)
                if _wanted(relative, include, exclude):
                    found.append((file, relative))
        elif os.path.isfile(path):  # named: taken whatever its extension, unless excluded
            if not _matches(Path(path.name), exclude):
                found.append((path, Path(path.name)))
        else:
            raise ConfigError(f"{given}: no such file or folder")
    if not found:
        raise ConfigError(
            "no video files to anonymise in "
            + ", ".join(str(p) for p in inputs)
            + (" (--include/--exclude left none)" if include or exclude else "")
        )
    items: dict[str, Item] = {}
    clashes = []
    for file, relative in found:
        item = Item(file, outdir / relative)
        if item.input == item.output or same_file(item.input, item.output):
            raise ConfigError(f"{file}: its output would be the input itself; pick another -o")
        # names that differ in case only are one file on many filesystems (APFS, SMB, NTFS)
        key = str(item.output).casefold()
        known = items.get(key)
        if known is not None and known.input != file:
            clashes.append(f"{known.input} and {file} -> {item.output}")
        items.setdefault(key, item)
    if clashes:
        raise ConfigError(
            "two inputs would be written to one output (rename one, or run them apart): "
            + "; ".join(clashes)
        )
    return sorted(items.values(), key=lambda i: str(i.output))


def _walk(folder: Path, outdir: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and not same_file(here / d, outdir)
        )
        for name in sorted(files):
            if not name.startswith("."):
                yield here / name


def _matches(relative: Path, globs: Sequence[str]) -> bool:
    return any(
        fnmatch.fnmatch(relative.as_posix(), g) or fnmatch.fnmatch(relative.name, g) for g in globs
    )


def _wanted(relative: Path, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include:
        return _matches(relative, include) and not _matches(relative, exclude)
    return relative.suffix.lower() in VIDEO_EXTENSIONS and not _matches(relative, exclude)


def is_done(item: Item, *, signed: bool = False) -> bool:
    """Whether ``item``'s output, record and manifest exist and verify against its input
    (``signed``: with a good signature too)."""
    if not (item.output.is_file() and item.manifest.is_file()):
        return False
    try:
        checked = verify(
            item.output, item.manifest, input=item.input, record=item.record,
            require_signature=signed,
        )  # fmt: skip
    except (OSError, ValueError, VeilError):
        return False
    return checked.ok


_INPUT_SHA = re.compile(rb'"input(?:_sha256)?"\s*:\s*(?:\{[^{}]*?"sha256"\s*:\s*)?"([0-9a-f]{64})"')


def is_ours(item: Item) -> bool:
    """Whether what exists under ``item``'s output names (if anything) was made from its
    input by an earlier run (finished or stopped): only then may a batch replace it. A
    run writes its record first, then the output, then the manifest, so a file of this
    input's has its record, or its manifest, naming the input's sha256."""
    present = [p for p in (item.output, item.record, item.manifest) if os.path.lexists(p)]
    if not present:
        return True
    for path in (item.manifest, item.record):
        try:
            with path.open("rb") as fh:
                head = fh.read(1 << 16)
        except OSError:
            continue
        found = _INPUT_SHA.search(head)
        if found is not None:
            return found.group(1).decode() == sha256_file(item.input)
    return False


def frame_count(path: Path) -> int:
    """The frames ``path``'s video stream says it has (0 when it cannot tell): the progress
    bar's total, never a decision."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            if stream.duration and stream.average_rate and stream.time_base:
                return round(float(stream.duration * stream.time_base * stream.average_rate))
    except (av.FFmpegError, IndexError, OSError, ValueError):
        pass
    return 0


def run_file(item: Item, options: Sequence[str], cpus: Sequence[int] = ()) -> Outcome:
    """Anonymise ``item`` in a child ``veil anonymize`` (``options``: its per-file options),
    which dies with this process and runs on ``cpus`` (empty: every core this process may
    use). A file already done is ``skipped``, not redone; files under its output's names
    that are not this input's are never replaced (the file fails, exit 5); whatever goes
    wrong, the file ends ``failed`` with the reason, and the batch goes on."""
    outcome = Outcome(str(item.input), str(item.output), "skipped", worker=_host())
    try:
        if is_done(item, signed="--sign-key" in options):
            return outcome
        if not is_ours(item):
            outcome.status, outcome.exit_code = "failed", 5
            outcome.reason = (
                f"{item.output} (or its record or manifest) exists and was not made from "
                f"{item.input.name}: not replaced; move it, or choose another output folder"
            )
            return outcome
        item.output.parent.mkdir(parents=True, exist_ok=True)
        return _child_run(item, options, cpus, outcome)
    except (OSError, ValueError, VeilError) as exc:
        outcome.status, outcome.reason = "failed", f"{type(exc).__name__}: {exc}"
        return outcome


def _child_run(
    item: Item, options: Sequence[str], cpus: Sequence[int], outcome: Outcome
) -> Outcome:
    argv = [sys.executable, "-m", "veil.batch", str(os.getpid()), ",".join(map(str, cpus))]
    argv += ["anonymize", str(item.input), "-o", str(item.output), "--overwrite", "-q"]
    start = time.monotonic()
    with subprocess.Popen(
        [*argv, *options], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as child:
        with _RUNNING_LOCK:
            _RUNNING.add(child)
            if _STOPPING.is_set():  # the batch was stopped as this file started
                child.terminate()
        try:
            _, stderr = child.communicate()
        finally:
            with _RUNNING_LOCK:
                _RUNNING.discard(child)
    outcome.seconds = round(time.monotonic() - start, 2)
    outcome.exit_code = child.returncode
    # stopped just after its files were complete: done all the same
    if child.returncode == 0 or is_done(item):
        outcome.status = "ok"
        outcome.frames = _frames_of(item.record)
        return outcome
    outcome.status = "failed"
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("veil:")]
    if child.returncode < 0:
        number = -child.returncode
        name = signal.Signals(number).name if number in signal.valid_signals() else number
        outcome.reason = f"killed by signal {name}"
    else:
        outcome.reason = (errors or lines or [f"exit code {child.returncode}"])[-1]
        outcome.reason = outcome.reason.removeprefix("veil: error: ")
    return outcome


def _frames_of(record: Path) -> int:
    try:
        return len(json.loads(record.read_bytes())["frames"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0  # --no-record is refused in a batch; a record unreadable here counts none


def _host() -> str:
    return f"{os.uname().nodename}:{os.getpid()}" if hasattr(os, "uname") else str(os.getpid())


def core_sets(jobs: int, cores: Sequence[int]) -> list[list[int]]:
    """``cores`` shared among ``jobs`` files at once: disjoint sets as even as they come, or
    one core each, round the cores, when there are more jobs than cores."""
    cores = sorted(cores)
    if jobs >= len(cores):
        return [[cores[i % len(cores)]] for i in range(jobs)]
    return [cores[i * len(cores) // jobs : (i + 1) * len(cores) // jobs] for i in range(jobs)]


Report = Callable[[Outcome], None]
# the per-file processes running now (``run_local`` stops them when the batch is stopped)
_RUNNING: set[subprocess.Popen[str]] = set()
_RUNNING_LOCK = threading.Lock()
_STOPPING = threading.Event()


def run_local(
    items: Sequence[Item], options: Sequence[str], jobs: int, on_done: Report
) -> list[Outcome]:
    """Anonymise ``items``, ``jobs`` at once, each child on its own share of the cores."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux: the children share every core
        cores = []
    free: SimpleQueue[list[int]] = SimpleQueue()
    for cpus in core_sets(jobs, cores) if cores else [[] for _ in range(jobs)]:
        free.put(cpus)

    def one(item: Item) -> Outcome | None:
        if _STOPPING.is_set():
            return None
        cpus = free.get()
        try:
            return run_file(item, options, cpus)
        finally:
            free.put(cpus)

    outcomes: list[Outcome] = []
    _STOPPING.clear()
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="veil-batch")
    futures = [pool.submit(one, item) for item in items]
    try:
        for future in as_completed(futures):
            outcome = future.result()
            assert outcome is not None  # only a stopped batch starts no file
            outcomes.append(outcome)
            on_done(outcome)
    except BaseException:  # Ctrl-C, SIGTERM: start no more files, stop the running ones
        pool.shutdown(wait=False, cancel_futures=True)
        with _RUNNING_LOCK:
            _STOPPING.set()
            for child in _RUNNING:
                child.terminate()  # each removes its partial files on the way out
        pool.shutdown()
        # files that finished as the batch was stopped are done all the same
        finished = [
            f.result() for f in futures if f.done() and not f.cancelled() and not f.exception()
        ]
        for late in finished:
            if late is not None and late.status == "ok" and late not in outcomes:
                on_done(late)
        raise
    pool.shutdown()
    return outcomes


def write_report(outdir: Path, outcomes: Sequence[Outcome], seconds: float) -> Path:
    """``OUTDIR/veil-batch.json``: every file's outcome and the totals (written atomically)."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "failed", "skipped")}
    document: dict[str, Any] = {
        "schema": "veil-batch/1",
        "seconds": round(seconds, 2),
        "files": len(outcomes),
        **counts,
        "frames": sum(o.frames for o in outcomes),
        "outcomes": [asdict(o) for o in sorted(outcomes, key=lambda o: o.output)],
    }
    path = outdir / REPORT
    write_json_atomic(path, document)
    return path


def table(outcomes: Sequence[Outcome], outdir: Path) -> str:
    """The report as a terminal table: one line a file, failures with their reason."""
    lines = []
    for o in sorted(outcomes, key=lambda o: o.output):
        name = os.path.relpath(o.output, outdir)
        detail = o.reason if o.status == "failed" else f"{o.frames} frames, {o.seconds:.1f} s"
        if o.status == "skipped":
            detail = "done before (verified)"
        code = "" if o.exit_code in (None, 0) else f" [exit {o.exit_code}]"
        lines.append(f"{o.status:<8} {name}{code}  {detail}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "failed", "skipped")}
    lines.append(
        f"{len(outcomes)} files: {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['skipped']} skipped"
    )
    return "\n".join(lines)


def serve_metrics(address: str, files: int) -> tuple[Report, Any]:
    """Serve the batch's progress on ``address`` (HOST:PORT) as Prometheus metrics; returns
    what counts each file's outcome, and the HTTP server (it serves until the process
    ends). prometheus-client is imported here only (a thin edge runs batches without it)."""
    try:
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
    except ImportError as exc:
        raise ConfigError(
            f"--metrics needs prometheus-client ({exc}); install veil[server]"
        ) from exc
    host, port = split_address(address, "--metrics", default_host="0.0.0.0")
    registry = CollectorRegistry()
    Gauge("veil_batch_files", "Files in the batch", registry=registry).set(files)
    ended = Counter(
        "veil_batch_files_done", "Files finished, by how", ["status"], registry=registry
    )
    frames = Counter("veil_batch_frames", "Frames of the files anonymised", registry=registry)
    for status in ("ok", "failed", "skipped"):
        ended.labels(status)
    try:
        server, _ = start_http_server(port, host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"--metrics {address}: {exc}") from exc

    def count(outcome: Outcome) -> None:
        ended.labels(outcome.status).inc()
        frames.inc(outcome.frames)

    return count, server
