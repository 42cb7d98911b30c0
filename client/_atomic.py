"""Output files written atomically: the partial name each is written under, beside its final
name, and the check a job makes before any work that it can write there at all."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from ._errors import OutputError

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
    name = f".{final.stem}.veil-partial-{pid}{final.suffix}"
    if len(os.fsencode(name)) <= name_max(final.parent):
        return final.with_name(name)
    digest = hashlib.sha256(os.fsencode(final.name)).hexdigest()[:16]
    return final.with_name(f".{digest}.veil-partial-{pid}{final.suffix}")


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
