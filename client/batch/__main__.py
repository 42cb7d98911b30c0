"""A batch's per-file process (``run_file`` starts it): ``python -m veil.batch``."""

from __future__ import annotations

import os
import signal
import sys


def child(argv: list[str]) -> int:
    """``python -m veil.batch PARENT_PID CPUS anonymize ...``: a batch's per-file process.
    Dies with the process that started it (Linux; a worker killed mid-file leaves no
    writer behind to finish the file a second time) and runs on ``CPUS`` (comma-separated,
    empty: all), so ``--jobs N`` children do not fight over the cores."""
    parent, cpus, rest = int(argv[0]), argv[1], argv[2:]
    if sys.platform == "linux":
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before prctl took
            return 130
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    from veil.cli import main

    return main(rest)


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
