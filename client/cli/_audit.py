"""The audit commands: ``veil keygen``, ``verify``, ``review`` (a report page, or the review
workstation with ``--serve``), ``edit`` and ``diff``. They read and amend records and
manifests; none of them detects anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from veil.core import ConfigError
from veil.mask import Style

from ._options import add_overwrite_arg
from ._settings import config_table

COMMANDS = ("keygen", "verify", "review", "edit", "diff")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing manifests")
    p.add_argument("-o", "--output", type=Path, required=True, help="private key (KEY and KEY.pub)")

    p = sub.add_parser("verify", help="check an output against its (signed) manifest")
    p.add_argument("output", type=Path, help="the output video")
    p.add_argument("manifest", type=Path, help="its manifest (OUT.manifest.json)")
    p.add_argument("--input", type=Path, help="the input: check its hash and copied streams")
    p.add_argument(
        "--public-key",
        type=Path,
        metavar="F",
        help="the key the manifest must be signed with (default: the key named in the manifest)",
    )
    p.add_argument("--record", type=Path, help="the record (default: OUT.veil.json if present)")
    p.add_argument(
        "--require-signature",
        action="store_true",
        help="an unsigned manifest fails (without it: exit 0, 'integrity verified, not signed'; "
        "--public-key requires a signature too)",
    )

    p = sub.add_parser(
        "review",
        help="review a record: one self-contained HTML page (-o), or the review workstation "
        "in the browser (--serve)",
    )
    p.add_argument("input", type=Path, help="input video (the one the record was made for)")
    p.add_argument("record", type=Path, help="detection record")
    p.add_argument("-o", "--output", type=Path, help="report (.html)")
    serve = p.add_argument_group("the review workstation (--serve)")
    serve.add_argument(
        "--serve",
        action="store_true",
        help="a local web app: step through the video with its masks, correct the record "
        "(appended to its edit log), re-render, sign off",
    )
    serve.add_argument(
        "--listen",
        default="127.0.0.1:8470",
        metavar="HOST:PORT",
        help="where the app listens (default 127.0.0.1:8470; elsewhere, every request needs "
        "the session's token, in the printed URL)",
    )
    serve.add_argument(
        "--render-to",
        type=Path,
        metavar="OUT",
        help="where the app renders the reviewed video (default: IN's name + .reviewed, beside "
        "the record)",
    )
    serve.add_argument(
        "--sign-key", type=Path, metavar="KEY", help="sign manifests, and sign-offs, with this key"
    )
    p.add_argument(
        "--unmasked",
        action="store_true",
        help="thumbnails show faces UNMASKED (authorised reviewers only)",
    )
    p.add_argument(
        "--thumbnails", type=int, default=6, metavar="N", help="thumbnails per track (default 6)"
    )
    add_overwrite_arg(p)

    p = sub.add_parser("edit", help="add reviewer edits to a record (appended to its log)")
    p.add_argument("record", type=Path, help="detection record (rewritten unless -o)")
    p.add_argument("-o", "--output", type=Path, help="write the edited record here instead")
    add_overwrite_arg(p)
    p.add_argument(
        "--add-box",
        action="append",
        default=[],
        metavar="FRAME[-LAST]:x0,y0,x1,y1",
        help="a manual box keyframe (repeatable; all form one track, linear between "
        "keyframes; FIRST-LAST holds one box over a range)",
    )
    p.add_argument("--track", type=int, help="add the boxes to this track (default: a new one)")
    p.add_argument(
        "--suppress",
        action="append",
        type=int,
        default=[],
        metavar="TRACK",
        help="drop a false-positive track and all its masks (repeatable)",
    )
    p.add_argument(
        "--grow",
        action="append",
        default=[],
        metavar="TRACK:FACTOR",
        help="grow a track's masks, e.g. 3:0.3 for 30%% (repeatable)",
    )
    p.add_argument("--who", required=True, help="who decides (name or id)")
    p.add_argument("--why", required=True, help="why (kept in the record's edit log)")

    p = sub.add_parser("diff", help="what changed between two records")
    p.add_argument("a", type=Path, help="record A (before)")
    p.add_argument("b", type=Path, help="record B (after)")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace, config: dict[str, Any]) -> int:
    from veil.job import (
        Record,
        add_edits,
        describe,
        diff,
        keygen,
        parse_box_spec,
        parse_grow_spec,
        verify,
    )
    from veil.media import check_paths, replacing

    if args.command == "keygen":
        private, public = keygen(args.output)
        print(f"{private}: private key (keep it secret)\n{public}: public key (give to verifiers)")
    elif args.command == "verify":
        result = verify(
            args.output,
            args.manifest,
            input=args.input,
            public_key=args.public_key,
            record=args.record,
            require_signature=args.require_signature,
        )
        for check in result.checks:
            mark = {True: "ok    ", False: "FAILED", None: "note  "}[check.ok]
            print(f"{mark}  {check.name}: {check.detail}")
        if not result.ok:
            names = ", ".join(c.name for c in result.failed)
            print(f"veil: verify failed: {names}", file=sys.stderr)
            return 7
        signed = "and signature verified" if result.signed else "verified, not signed"
        print(f"{args.output}: integrity {signed}")
    elif args.command == "review" and args.serve:
        return _review_app(args, config)
    elif args.command == "review":
        from veil.review import write_report

        if args.output is None:
            raise ConfigError("veil review writes a report (-o REPORT.html) or serves (--serve)")

        style = Style.from_json(config_table(config, "style"))
        reads = [("input", args.input), ("record", args.record)]
        check_paths(reads, [("report", args.output)], overwrite=args.overwrite)
        with replacing([args.output], overwrite=args.overwrite):
            write_report(
                args.input,
                args.record,
                args.output,
                unmasked=args.unmasked,
                style=style,
                thumbnails=args.thumbnails,
            )
        print(f"{args.output}: review report" + (" (UNMASKED thumbnails)" if args.unmasked else ""))
    elif args.command == "edit":
        _check_edit_output(args)
        record = Record.load(args.record)
        boxes = [k for spec in args.add_box for k in parse_box_spec(spec)]
        if args.track is not None and not boxes:
            raise ConfigError("--track names the track --add-box boxes go to; no --add-box given")
        entries = add_edits(
            record,
            who=args.who,
            why=args.why,
            add_boxes=boxes,
            track=args.track,
            suppress=args.suppress,
            grow=[parse_grow_spec(g) for g in args.grow],
        )
        target = args.output or args.record
        sha = record.write(target)
        for entry in entries:
            print(f"edit {describe(entry)}")
        print(f"{target}: {len(record.edits)} edits in the log, sha256 {sha}")
    elif args.command == "diff":
        changes = diff(Record.load(args.a), Record.load(args.b))
        if args.json:
            print(json.dumps(changes.document, indent=1))
        elif changes.identical:
            print("the records mask the same areas with the same settings and edits")
        else:
            print("\n".join(changes.lines))
        return 0 if changes.identical else 1
    return 0


def _review_app(args: argparse.Namespace, config: dict[str, Any]) -> int:
    """``veil review IN REC --serve``: the review workstation until Ctrl-C."""
    from veil.job import manifest_path
    from veil.media import check_paths
    from veil.review import ReviewSession, serve

    if args.output is not None:
        raise ConfigError("--serve and -o: the app writes no report; run them apart")
    output = args.render_to or args.record.with_name(
        f"{args.input.stem}.reviewed{args.input.suffix}"
    )
    check_paths(
        [("input", args.input)],
        [("record", args.record), ("output", output), ("manifest", manifest_path(output))],
        overwrite=True,  # the app's own render, replaced by each render; never the input
    )
    session = ReviewSession(
        args.input,
        args.record,
        output,
        sign_key=args.sign_key,
        style=Style.from_json(config_table(config, "style")),
    )
    server = serve(session, args.listen)
    print(f"veil review: {server.url}  (Ctrl-C to stop; renders go to {output})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: how the app is meant to stop
        print("veil review: stopped; every edit is in the record", flush=True)
    finally:
        server.server_close()
        session.close()
    return 0


def _check_edit_output(args: argparse.Namespace) -> None:
    """``veil edit`` rewrites its record in place (the edit log grows; nothing else changes).
    With ``-o`` it writes a new record file: not over an existing file unless --overwrite, and
    never over a file that is not JSON (a video, say), --overwrite or not."""
    from veil.media import check_paths, same_file

    if args.output is None or same_file(args.output, args.record):
        return
    writes = [("edited record", args.output)]
    check_paths([("record", args.record)], writes, overwrite=args.overwrite)
    try:
        with args.output.open("rb") as fh:
            head = fh.read(64).lstrip()
    except (FileNotFoundError, IsADirectoryError):
        return
    except OSError:
        head = b"{"  # writing there will say what is wrong
    if head and not head.startswith(b"{"):
        raise ConfigError(
            f"{args.output}: exists and is not a JSON record; veil edit replaces only records"
        )
