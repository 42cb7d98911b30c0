"""Output files written atomically: the partial name each is written under, beside its final
name, and the checks a job makes before any work: that it can write there at all, that no
file it writes is one it reads or another it writes, that it replaces nothing unless asked,
and that a job killed earlier (SIGKILL) left no partial file behind."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from veil.core import ConfigError, OutputError, OutputExists

logger = logging.getLogger(__name__)

#: NAME_MAX where the filesystem does not say (Linux, macOS and Windows all allow 255).
_NAME_MAX = 255


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, ``folder``'s filesystem allows."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return _NAME_MAX


def partial_path(final: Path) -> Path:
    """Where ``final`` is written before it is complete: the same folder and extension (FFmpeg
    picks the container from it), a hidden name with this process's id. A name that would
    not fit in the filesystem's NAME_MAX uses a hash of the final name instead of its stem,
    so any output name the filesystem allows can be written."""
    pid = os.getpid()
    short, hashed = _partial_prefixes(final)
    name = f"{short}{pid}{final.suffix}"
    if len(os.fsencode(name)) <= name_max(final.parent):
        return final.with_name(name)
    return final.with_name(f"{hashed}{pid}{final.suffix}")


def _partial_prefixes(final: Path) -> tuple[str, str]:
    """The partial names of ``final`` up to the process id: by its stem, and by its hash."""
    digest = hashlib.sha256(os.fsencode(final.name)).hexdigest()[:16]
    return f".{final.stem}.veil-partial-", f".{digest}.veil-partial-"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True where that cannot be told)."""
    if pid == os.getpid() or os.name != "posix":  # Windows' os.kill would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # EPERM: alive, another user's
        return True
    return True


def sweep_partials(final: Path) -> list[Path]:
    """Remove the partial files of ``final`` that a process no longer running left behind (a
    job killed by SIGKILL or a power cut cannot clean up); returns what was removed. The
    partial file of a running job, this one's included, is kept."""
    prefixes = _partial_prefixes(final)
    suffix = final.suffix
    removed = []
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return []
    for entry in entries:
        name = entry.name
        prefix = next((p for p in prefixes if name.startswith(p)), None)
        if prefix is None or not name.endswith(suffix):
            continue
        pid = name[len(prefix) : len(name) - len(suffix)]
        if not (pid.isascii() and pid.isdigit()) or _alive(int(pid)):
            continue
        path = final.with_name(name)
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("%s: cannot remove a stale partial file (%s)", path, exc)
            continue
        logger.warning(
            "%s: removed a partial file left by process %s, which no longer runs", path, pid
        )
        removed.append(path)
    return removed


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same real path (``./a``, symlinks), or the
    same device and inode (hard links, case-insensitive names)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def check_paths(
    reads: Sequence[tuple[str, Path]],
    writes: Sequence[tuple[str, Path]],
    *,
    overwrite: bool,
) -> None:
    """Before any work: refuse (exit 2) when two of the files a job reads and writes (each
    named by its role, e.g. ``("input", path)``) are one file, or when a file it writes exists
    and ``overwrite`` is false. Then remove the partial files of those it writes that a killed
    job left behind (:func:`sweep_partials`)."""
    named = [*reads, *writes]
    for k, (role_a, a) in enumerate(named):
        for role_b, b in named[k + 1 :]:
            if same_file(a, b):
                same = "" if str(a) == str(b) else f" ({a})"
                raise ConfigError(
                    f"{b}: the {role_b} would be the same file as the {role_a}{same}; "
                    f"give the {role_b} another name"
                )
    if not overwrite:
        for role, path in writes:
            if os.path.lexists(path) and not path.is_dir():  # a folder: check_writable says
                raise OutputExists(
                    f"{path}: the {role} exists; give --overwrite (-y) to replace it"
                )
    for _, path in writes:
        sweep_partials(path)


@contextlib.contextmanager
def replacing(paths: Sequence[Path], *, overwrite: bool) -> Iterator[None]:
    """Run a job asked to replace ``paths`` (``overwrite``): if it fails, however it fails,
    the old files under those names are removed too, so nothing stale stays under an output's
    name (an old unmasked copy, a record or manifest of a file no longer there). The
    exception gets a note that says so (the CLI prints it on the error line)."""
    old = [p for p in paths if overwrite and os.path.lexists(p) and not p.is_dir()]
    try:
        yield
    except BaseException as exc:
        gone = []
        for path in old:
            try:
                path.unlink(missing_ok=True)
            except OSError as err:
                logger.error("%s: cannot remove the old file (%s)", path, err.strerror or err)
                continue
            gone.append(str(path))
        if gone:
            were = "was" if len(gone) == 1 else "were"
            exc.add_note(
                f"the old {', '.join(gone)} {were} removed: a failed run leaves nothing under "
                "the output's name"
            )
        raise


def check_writable(path: Path, *, hint: str = "") -> None:
    """Raise :class:`OutputError` (one line that names the problem, then ``hint``) unless a
    file can be written at ``path``: its folder exists and takes new files, and its name fits.

    The check creates and removes the partial file the job would write, so it asks the
    filesystem itself (read-only mounts, permissions as root, quotas on names alike).
    """
    folder = path.parent
    hint = f" ({hint})" if hint else ""
    size, limit = len(os.fsencode(path.name)), name_max(folder)
    if size > limit:
        raise OutputError(
            f"{folder / path.name[:32]}…: the file name is {size} bytes, longer than the "
            f"{limit} this filesystem allows{hint}"
        )
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, not a file name{hint}")
    probe = partial_path(path)
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write there: {_why(folder, exc)}{hint}") from exc
    os.close(fd)
    probe.unlink(missing_ok=True)


def _why(folder: Path, exc: OSError) -> str:
    shown = folder if str(folder) else Path(".")
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        if not folder.exists():
            return f"the folder {shown} does not exist"
        if not folder.is_dir():
            return f"{shown} is not a folder"
        return f"the folder {shown} does not take new files"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to create files in {shown}"
    if exc.errno == errno.EROFS:
        return f"{shown} is on a read-only filesystem"
    return f"{exc.strerror or exc}"


def write_atomic(path: Path, chunks: Iterable[bytes]) -> str:
    """Write ``chunks`` under a temp name, fsync, then rename; returns their sha256.

    Nothing is left behind if writing (or producing a chunk) fails: ``path`` is either the
    whole new file or untouched.
    """
    digest = hashlib.sha256()
    tmp = partial_path(path)
    try:
        with tmp.open("wb") as fh:
            for chunk in chunks:
                digest.update(chunk)
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest()
