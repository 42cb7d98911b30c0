"""The review report's page: a ``Review`` rendered into ``templates/report.html`` from the
fragments in ``templates/parts.html`` and the charts of ``_charts``.

Pictures first (the tiles, the timeline, the tracks with thumbnails, the frames that deserve
a look), then the edit log, the residual risk, the parameters and hashes. The page's
Content-Security-Policy (in the template) allows nothing but inline styles and ``data:``
images, so the file can be archived and mailed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from veil import __version__
from veil.job import action_text, ranges

from ._charts import COLOURS, FLAG_COLOURS, Timeline, binned, overlay, sparkline
from ._flags import LOW_SCORE, Flag, Reason
from ._review import Review
from ._templates import Fragments, Markup, asset, fill_page, join
from ._tracks import TrackView

_parts = Fragments("parts.html")


def render(review: Review) -> str:
    """The report's HTML."""
    record = review.record
    inp = record.input
    title = f"veil review · {review.input_name}"
    return fill_page(
        "report.html",
        version=__version__,
        title=title,
        css=asset("report.css"),
        record_sha=record.sha256()[:16],
        input_sha=str(inp.get("sha256", ""))[:16],
        model=record.detector.get("model"),
        preset=record.detector.get("preset", ""),
        veil_version=record.veil_version,
        banner=_parts("banner_unmasked" if review.unmasked else "banner_masked"),
        tiles=_tiles(review),
        timeline=_timeline(review),
        legend=_legend(),
        tracks=join(_track_card(review, view) for view in review.tracks) or _parts("no_tracks"),
        flags=_flags(review),
        edits=_edits(record.edits),
        risk=Markup() if review.risk_block is None else _risk(review),
        params=_parameters(review),
    )


def _chip(text: str, colour: str) -> Markup:
    return _parts("chip", text=text, colour=colour)


def _facts(items: Iterable[tuple[str, Any]]) -> Markup:
    return _parts("facts", items=join(_parts("fact", name=k, value=v) for k, v in items))


def _time(review: Review, frame: int) -> str:
    """A frame's time (minutes:seconds) from its pts, or its number when that is unknown."""
    pts = review.record.frames[frame].pts
    if pts is None or not review.time_base:
        return f"frame {frame}"
    num, den = (int(x) for x in review.time_base.split("/"))
    seconds = pts * num / den
    return f"{int(seconds // 60)}:{seconds % 60:05.2f}"


def _tiles(review: Review) -> Markup:
    record, n, flags = review.record, len(review.finals), review.flags
    with_faces = sum(1 for v in review.faces if v)
    suppressed = len(review.applied.suppressed)
    live = len([t for t in review.tracks if not t.suppressed])
    flagged = review.flagged_frames
    duration = f" · {n / review.rate:.1f} s" if review.rate else ""
    tiles = [
        ("", f"{n}", f"frames{duration}"),
        (
            "",
            f"{live}",
            ("face track" if live == 1 else "face tracks")
            + " masked"
            + (f" · {suppressed} suppressed" if suppressed else ""),
        ),
        ("", f"{with_faces / max(n, 1):.0%}", f"of frames have a face ({with_faces})"),
        (
            "warn" if flagged else "",
            f"{flagged}",
            f"frames flagged ({len(flags)} run{'s' * (len(flags) != 1)})",
        ),
        (
            "bad" if record.policy else "",
            f"{review.summary['frames_masked_by_policy']}",
            "frames masked whole by policy",
        ),
        ("warn" if record.edits else "", f"{len(record.edits)}", "reviewer edits"),
    ]
    return join(
        _parts("tile", kind=kind, number=number, label=label) for kind, number, label in tiles
    )


def _timeline(review: Review) -> Markup:
    n = len(review.finals)
    timeline = Timeline(n)
    faces = review.faces
    top = max(2, max(faces, default=0))
    timeline.series("faces", binned([float(v) for v in faces]), float(top), "#2563eb", 54)
    if review.risk:
        values = [review.risk.get(i, 0.0) for i in range(n)]
        timeline.series("residual risk", binned(values), 1.0, "#be123c", 34, "{:.1f}")
    if review.near:
        values = [review.near.get(i, 0.0) for i in range(n)]
        timeline.series("near misses", binned(values), 1.0, "#be123c", 34, "{:.1f}")
    timeline.flags(review.flags)
    for view in review.tracks:
        timeline.track(view)
    timeline.axis(review.rate)
    return timeline.svg()


def _legend() -> Markup:
    origins = [
        _parts("legend_origin", colour=c, label=k) for k, c in COLOURS.items() if k != "suppressed"
    ]
    reasons = [_parts("legend_flag", colour=c, label=k) for k, c in FLAG_COLOURS.items()]
    return join([*origins, _parts("legend_suppressed"), *reasons])


def _track_card(review: Review, view: TrackView) -> Markup:
    applied = review.applied
    shown = sorted(view.shown)
    scores = view.scores
    span = ranges(shown) if len(shown) < 12 else f"{shown[0]}-{shown[-1]}"
    facts = [f"frames {span}", ", ".join(f"{v} {k}" for k, v in sorted(view.origins.items()))]
    if scores:
        facts.append(f"score {min(scores):.2f}-{max(scores):.2f}")
    chips = []
    if view.suppressed:
        chips.append(_chip(f"SUPPRESSED · edit #{view.suppressed['id']}", "#4b5563"))
    if view.track in applied.added:
        chips.append(_chip(f"manual · edit #{applied.added[view.track]['id']}", COLOURS["manual"]))
    if view.track in applied.growth:
        chips.append(_chip(f"grown +{applied.growth[view.track]:.0%}", "#0f766e"))
    if scores and min(scores) < LOW_SCORE:
        chips.append(_chip("low confidence", FLAG_COLOURS[Reason.LOW_CONFIDENCE]))
    note = Markup()
    if view.suppressed:
        note = _parts("track_suppressed", who=view.suppressed["who"], why=view.suppressed["why"])
    thumbs = join(
        _parts(
            "thumb",
            track=view.track,
            frame=i,
            src=review.crops[(view.track, i)],
            time=_time(review, i),
        )
        for i in sorted(i for t, i in review.crops if t == view.track)
    )
    return _parts(
        "track_card",
        classes="card trk sup" if view.suppressed else "card trk",
        track=view.track,
        chips=join(chips, " "),
        facts=join(_parts("track_fact", text=x) for x in facts),
        note=note,
        sparkline=sparkline(view, len(review.finals)),
        thumbs=thumbs or _parts("no_thumbs"),
    )


def _flags(review: Review) -> Markup:
    if not review.flags:
        return _parts("no_flags")
    cards = join(
        _flag_card(review, flag, review.pictures.get(k)) for k, flag in enumerate(review.carded)
    )
    more = len(review.flags) - len(review.carded)
    return join(
        [
            _parts("flags", cards=cards),
            _parts("more_flags", more=more) if more > 0 else Markup(),
        ]
    )


def _flag_card(review: Review, flag: Flag, picture: str | None) -> Markup:
    span = f"frame {flag.first}" if flag.first == flag.last else f"frames {flag.first}-{flag.last}"
    pic = Markup()
    if picture:
        boxes = overlay(review.finals[flag.first].masks, review.width, review.height)
        pic = _parts("flag_picture", frame=flag.first, src=picture, overlay=boxes)
    return _parts("flag_card", picture=pic, chip=_chip(flag.reason, FLAG_COLOURS[flag.reason]),
        span=span, time=_time(review, flag.first), detail=flag.detail,
    )  # fmt: skip


def _edits(edits: list[dict[str, Any]]) -> Markup:
    if not edits:
        return _parts("no_edits")
    rows = join(
        _parts(
            "edit_row",
            kind="sup" if e["action"] == "suppress" else "",
            id=e["id"],
            what=action_text(e),
            who=e["who"],
            when=e["when"],
            why=e["why"],
            base=e["base_sha256"][:12],
        )
        for e in edits
    )
    return _parts("edits", rows=rows)


def _risk(review: Review) -> Markup:
    """The record's residual-risk block: the estimate first, then each part's counts."""
    block = review.risk_block or {}
    estimate = block.get("estimate") if isinstance(block.get("estimate"), dict) else None
    head = Markup()
    if estimate:
        level = str(estimate.get("level", "?"))
        colour = {"low": "#059669", "medium": "#d97706", "high": "#b91c1c"}.get(level, "#4b5563")
        share = estimate.get("review_share")
        head = _parts("risk_estimate", chip=_chip(f"residual risk: {level}", colour),
            frames=estimate.get("review_frames", "?"),
            share=f" ({share:.1%} of frames)" if isinstance(share, int | float) else "",
            basis=estimate.get("basis", ""),
        )  # fmt: skip
    facts: list[tuple[str, Any]] = []
    for key, value in block.items():
        if key == "estimate":
            continue
        if isinstance(value, dict):
            counts = ", ".join(
                f"{k.replace('_', ' ')} {v}" for k, v in value.items() if isinstance(v, int | float)
            )
            facts.append((key.replace("_", " "), counts or json.dumps(value)[:300]))
        elif not isinstance(value, list):
            facts.append((key.replace("_", " "), value))
    charted = bool(review.risk) or "near_threshold" in block
    note = _parts("risk_charted") if charted else Markup()
    return _parts("risk", estimate=head, facts=_facts(facts), note=note)


def _parameters(review: Review) -> Markup:
    record = review.record
    inp, video = record.input, record.input.get("video", {})
    streams = join(
        _parts(
            "stream_row",
            index=s["index"],
            type=s["type"],
            codec=s["codec"],
            packets=s["packets"],
            sha256=s["payload_sha256"],
        )
        for s in inp.get("streams", [])
    )
    input_facts = [
        ("name", inp.get("name")),
        ("size", f"{inp.get('size', 0):,} bytes"),
        ("sha256", inp.get("sha256")),
        ("container", inp.get("container")),
        (
            "video",
            f"{review.width} x {review.height}, {video.get('codec', '')}, "
            f"{video.get('average_rate', '')} fps, time base {review.time_base}",
        ),
    ]
    record_facts = [
        ("sha256", record.sha256()),
        ("veil version", record.veil_version),
        ("frames", len(review.finals)),
        ("masks by origin", json.dumps(review.summary["masks_by_origin"])),
        ("edits", len(record.edits)),
    ]
    detector_facts = sorted(
        (k, json.dumps(v) if isinstance(v, dict | list) else v) for k, v in record.detector.items()
    )
    shown = (
        "UNMASKED (authorised reviewers only)" if review.unmasked else "as the output renders them"
    )
    thumb_facts = [("shown", shown), ("style", json.dumps(review.style.to_json()))]
    return _parts(
        "parameters",
        input=_facts(input_facts),
        streams=streams,
        record=_facts(record_facts),
        detector=_facts(detector_facts),
        tracker=_facts(record.tracker.to_json().items()),
        thumbnails=_facts(thumb_facts),
    )
