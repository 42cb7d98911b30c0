"""Many files at once: ``veil batch``, and ``veil anonymize`` given several inputs or a
folder. Each file runs as its own ``veil anonymize`` with the options this run was given, here
(``--jobs``) or on a Dask cluster (``--cluster``); ``OUTDIR/veil-batch.json`` reports them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from veil.core import ConfigError

from ._options import add_per_file_args


def is_batch(args: argparse.Namespace) -> bool:
    """``veil anonymize`` with several inputs, a folder, or a folder (``DIR/``) to write to."""
    output = str(args.output)
    return (  # os.path.isdir: False for a name too long to exist, where Path.is_dir raises
        len(args.input) > 1
        or os.path.isdir(args.input[0])
        or output.endswith(("/", os.sep))
        or os.path.isdir(args.output)
    )


def _per_file_options(args: argparse.Namespace) -> list[str]:
    """The per-file options ``args`` sets, as ``veil anonymize`` arguments for each file
    (paths absolute: a cluster's workers run elsewhere)."""
    reference = argparse.ArgumentParser(add_help=False)
    add_per_file_args(reference)
    reference.add_argument("--config", type=Path)
    options: list[str] = []
    for action in reference._actions:
        value = getattr(args, action.dest, None)
        if value is None or value == action.default or not action.option_strings:
            continue
        flag = action.option_strings[-1]
        if action.nargs == 0:
            options.append(flag)
            continue
        for one in value if isinstance(value, list) else [value]:
            options += [flag, str(one.absolute() if isinstance(one, Path) else one)]
    return options


def run(args: argparse.Namespace) -> int:
    """Many files (``veil.batch``): plan, skip what is done, run, report; exit 0 only when every
    file is ok or skipped (8 otherwise)."""
    from tqdm import tqdm

    from veil.batch import frame_count, plan, run_local, serve_metrics, table, write_report

    given = [
        name
        for name in ("record", "no_record", "manifest", "overwrite")
        if getattr(args, name, None)
    ]
    if given:
        raise ConfigError(
            "in a batch each output's record and manifest sit beside it, and files done "
            "before are skipped, not replaced: drop --"
            + ", --".join(g.replace("_", "-") for g in given)
        )
    if args.jobs < 1:
        raise ConfigError(f"--jobs {args.jobs} must be at least 1")
    cluster = getattr(args, "cluster", None)
    if cluster and args.jobs != 1:
        raise ConfigError("--jobs is for this machine; on a cluster, its workers set the pace")
    items = plan(args.input, args.output, include=args.include, exclude=args.exclude)
    options = _per_file_options(args)
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"-o {args.output}: cannot be the batch's output folder ({exc})") from exc
    metrics = serve_metrics(args.metrics, len(items))[0] if args.metrics else None
    total = sum(frame_count(item.input) for item in items)
    start = time.monotonic()
    with tqdm(
        total=total or None,
        unit="frame",
        desc=f"0/{len(items)} files",
        disable=args.quiet or not sys.stderr.isatty(),
    ) as bar:

        def on_done(outcome: Any) -> None:
            bar.update(outcome.frames or frame_count(Path(outcome.input)))
            bar.set_description(f"{len(done) + 1}/{len(items)} files")
            done.append(outcome)
            if metrics is not None:
                metrics(outcome)

        done: list[Any] = []
        try:
            if cluster:
                from veil.batch import run_cluster

                outcomes = run_cluster(items, options, cluster, args.retries, on_done)
            else:
                outcomes = run_local(items, options, args.jobs, on_done)
        except KeyboardInterrupt as exc:
            write_report(args.output, done, time.monotonic() - start)
            exc.add_note(
                f"{len(done)} of {len(items)} files finished (veil-batch.json); run the same "
                "command again to resume"
            )
            raise
    report = write_report(args.output, outcomes, time.monotonic() - start)
    if not args.quiet:
        print(table(outcomes, args.output))
        print(f"report: {report}")
    return 8 if any(o.status == "failed" for o in outcomes) else 0
