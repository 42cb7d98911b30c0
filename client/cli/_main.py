"""``veil``'s entry point: parse, set up logging, run the command, and turn every veil error
into its exit code and one ``veil: error:`` line (never a traceback). SIGTERM unwinds like
Ctrl-C, so partial outputs are removed on the way out.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from veil.core import VeilError
from veil.mask import load_config

from . import _audit, _batch, _jobs, _live, _service
from ._parser import build_parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = (
        logging.ERROR
        if args.quiet
        else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    )
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(args)
    except VeilError as exc:
        print(f"veil: error: {exc}{_notes(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        # a batch keeps the files it finished (its note says so); a single job writes nothing
        batch = isinstance(getattr(args, "input", None), list)
        done = "" if batch else "; no output was written"
        print(f"veil: interrupted{done}{_notes(exc)}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else {}
    if args.command == "models":
        return _service.run_models(args)
    if args.command == "serve":
        return _service.run_serve(args, config)
    if args.command == "live":
        return _live.run(args, config)
    if args.command in _audit.COMMANDS:
        return _audit.run(args, config)
    if args.command == "batch" or (args.command == "anonymize" and _batch.is_batch(args)):
        return _batch.run(args)
    return _jobs.run(args, config)


def _notes(exc: BaseException) -> str:
    """What was added to ``exc`` on its way out (e.g. old outputs removed), for its line."""
    return "".join(f"; {note}" for note in getattr(exc, "__notes__", ()))


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
