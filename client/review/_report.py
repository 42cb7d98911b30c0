"""The review report: one self-contained HTML page about one record and its input.

``build_report`` gathers the ``Review`` (``_review``: flags, tracks, pictures) and renders it
(``_page``, from the templates in ``templates/``). Thumbnails are cut from the frames *as the
output renders them* (masks drawn, reviewer edits applied), unless the report is made
``unmasked`` for authorised reviewers, which the page then says in red at the top. No
script, no external resource, so the file can be archived and mailed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil.job import Record
from veil.mask import Style
from veil.media import write_atomic

from ._flags import Flag
from ._page import render
from ._review import gather


@dataclass(frozen=True, kw_only=True)
class Report:
    html: str
    flags: list[Flag]
    thumbnails: int


def build_report(
    input_path: Path,
    record: Record,
    *,
    document: dict[str, Any] | None = None,
    unmasked: bool = False,
    style: Style | None = None,
    thumbnails: int = 6,
) -> Report:
    """The report's HTML for ``record`` and its input (decodes the input once)."""
    review = gather(
        input_path, record, document=document or {}, unmasked=unmasked,
        style=style or Style(), thumbnails=thumbnails,
    )  # fmt: skip
    return Report(html=render(review), flags=review.flags, thumbnails=len(review.crops))


def write_report(
    input_path: Path | str,
    record_path: Path | str,
    output: Path | str,
    *,
    unmasked: bool = False,
    style: Style | None = None,
    thumbnails: int = 6,
) -> Report:
    """Write the review report for ``record_path`` to ``output`` (atomically)."""
    record_path = Path(record_path)
    record = Record.load(record_path)
    try:
        document = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        document = {}
    report = build_report(
        Path(input_path),
        record,
        document=document,
        unmasked=unmasked,
        style=style,
        thumbnails=thumbnails,
    )
    write_atomic(Path(output), [report.html.encode()])
    return report
