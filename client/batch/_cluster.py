"""A batch's files on a Dask distributed cluster (``veil batch IN... -o OUTDIR/ --cluster
ADDRESS``): each file one task, run by a worker exactly as ``--jobs`` runs it here
(``_batch.run_file``). Why Dask, what faults do: docs/batch.md."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import CancelledError

from veil.core import ConfigError, VeilError

from ._batch import Item, Outcome, Report, run_file

#: ``veil anonymize`` exit codes worth another try on another worker: the detector (pool)
#: failed, or the process was killed (a signal: negative).
RETRYABLE = frozenset({6})
#: How long the cluster's scheduler is waited for at the start.
START_TIMEOUT = "60s"


class BatchError(VeilError):
    """The batch as a whole cannot go on (the cluster is gone); what is done stays done."""

    exit_code = 9


class Retry(Exception):
    """A file's failure another try may mend (the cluster retries the task)."""


def cluster_task(item: Item, options: Sequence[str]) -> Outcome:
    """One file on a cluster worker; raises :class:`Retry` where trying again may help."""
    outcome = run_file(item, options)
    if outcome.status == "failed" and (
        outcome.exit_code in RETRYABLE or (outcome.exit_code or 0) < 0
    ):
        raise Retry(outcome.reason)
    return outcome


def run_cluster(
    items: Sequence[Item], options: Sequence[str], address: str, retries: int, on_done: Report
) -> list[Outcome]:
    """Anonymise ``items`` on the Dask distributed cluster whose scheduler is at ``address``.

    Each file is one task with ``retries`` further tries where it failed in a way another
    try may mend; a worker that dies mid-file (killed, out of memory) has its task run again
    elsewhere by the scheduler, up to its ``allowed-failures`` (then the file is reported
    failed). Paths must name the same files on every worker (shared storage)."""
    try:
        from distributed import Client
        from distributed import as_completed as completed
    except ImportError as exc:
        raise ConfigError(
            f"--cluster needs Dask distributed ({exc}); install veil[cluster]"
        ) from exc
    # distributed's own log of a lost scheduler (a traceback a second) is replaced by ours
    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:  # the scheduler may still be starting (a Job beside its Deployment)
        client = Client(address, timeout=START_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise BatchError(f"cannot reach the cluster's scheduler at {address}: {exc}") from exc
    outcomes: list[Outcome] = []
    try:
        futures = {
            client.submit(
                cluster_task, item, list(options), key=f"veil-{item.output}", retries=retries,
                pure=False,
            ): item
            for item in items
        }  # fmt: skip
        for future in completed(futures, loop=client.loop):
            item = futures[future]
            try:
                outcome = future.result()
            except Retry as exc:
                outcome = _failed(item, f"{exc} (on each of {retries + 1} tries)")
            except (Exception, CancelledError) as exc:
                if client.status != "running":  # the scheduler is gone: every task with it
                    raise OSError(f"lost the connection: {type(exc).__name__}") from exc
                # KilledWorker: the file ended every worker it ran on (allowed-failures)
                outcome = _failed(item, f"{type(exc).__name__}: {exc}")
            outcomes.append(outcome)
            on_done(outcome)
    except (OSError, TimeoutError) as exc:
        raise BatchError(
            f"the cluster's scheduler at {address} is gone ({exc}); {len(outcomes)} of "
            f"{len(items)} files finished; run the same command again to resume"
        ) from exc
    finally:
        client.close(timeout=5)
    return outcomes


def _failed(item: Item, reason: str) -> Outcome:
    return Outcome(str(item.input), str(item.output), "failed", reason=reason)
