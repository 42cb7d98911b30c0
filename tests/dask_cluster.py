"""A real Dask distributed cluster on loopback: a scheduler and worker processes, started
with Dask's own command line from this interpreter's environment (tests/test_batch.py,
benchmarks/bench_batch.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


class Cluster:
    """A scheduler and ``workers`` single-threaded worker processes (no nanny: a worker
    killed stays dead, its tasks go to the others), logs in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def start(self, workers: int = 2) -> str:
        """Start it; returns the scheduler's address once every worker has joined."""
        bin_dir = Path(sys.executable).parent
        file = self.folder / "scheduler.json"
        file.unlink(missing_ok=True)
        with (self.folder / "scheduler.log").open("ab") as log:
            self.scheduler = subprocess.Popen(
                [bin_dir / "dask", "scheduler", "--scheduler-file", file, "--host",
                 "127.0.0.1", "--port", "0", "--no-dashboard"],
                stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        address = None
        while address is None and time.monotonic() < deadline:
            try:  # the scheduler writes the file in place: it may be read half written
                address = json.loads(file.read_text())["address"]
            except (OSError, ValueError, KeyError):
                time.sleep(0.1)
        assert address is not None, "the scheduler never wrote its address"
        for i in range(workers):
            command = [bin_dir / "dask", "worker", address, "--nthreads", "1", "--no-nanny",
                       "--no-dashboard", "--host", "127.0.0.1", "--name", f"w{i}"]  # fmt: skip
            with (self.folder / f"worker{i}.log").open("ab") as log:
                self.workers.append(subprocess.Popen(command, stdout=log, stderr=log))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=60)
        return address

    def stop(self) -> None:
        """Kill every process of it still running."""
        for process in [*self.workers, self.scheduler]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        self.workers, self.scheduler = [], None
