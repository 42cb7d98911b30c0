"""The record's header blocks, typed: the input a record was made for and the detector that
made it. A detection run builds them; a render reads the input block back to refuse any
other file.

A :class:`~veil.job.Record` keeps each block as the JSON object its file holds, so a record
read, edited and written again keeps every byte of them (a record from an older veil may
carry detector fields this one does not know). ``tests/test_schemas.py`` checks these classes
against ``record.schema.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from veil.core import DetectorInfo, RecordError
from veil.media import Input

from ._documents import JsonObject


@dataclass(frozen=True, kw_only=True)
class InputIdentity:
    """The record's ``input`` block: the file (name, size, sha256) and its container, the
    picture stream veil masked (``video``, as ``VideoInfo.to_json`` describes it), every
    stream's packet digests, and the picture streams left out at the user's request
    (``--drop-stream``; None: the input had none to leave out)."""

    name: str
    size: int
    sha256: str
    container: str
    video: JsonObject
    streams: tuple[JsonObject, ...]
    dropped_streams: tuple[JsonObject, ...] | None = None

    @classmethod
    def of(cls, path: Path, source: Input, sha256: str) -> InputIdentity:
        """The block for ``source`` (opened from ``path``, whose sha256 is given) once it has
        been demuxed to the end: its stream digests are then final."""
        return cls(
            name=path.name,
            size=path.stat().st_size,
            sha256=sha256,
            container=source.container.format.name,
            video=source.info.to_json(),
            streams=tuple(d.to_json() for d in source.digests.values()),
            dropped_streams=tuple(source.dropped_json()) if source.dropped else None,
        )

    @classmethod
    def from_json(cls, block: JsonObject) -> InputIdentity:
        try:
            dropped = block.get("dropped_streams")
            return cls(
                name=block["name"],
                size=block["size"],
                sha256=block["sha256"],
                container=block["container"],
                video=block["video"],
                streams=tuple(block["streams"]),
                dropped_streams=None if dropped is None else tuple(dropped),
            )
        except KeyError as exc:
            raise RecordError(f"the record's input block has no {exc.args[0]!r}") from None

    @property
    def dropped_indices(self) -> list[int]:
        """The input stream indices left out of every output made from this record."""
        return [int(s["index"]) for s in self.dropped_streams or ()]

    def to_json(self) -> JsonObject:
        block = {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "container": self.container,
            "video": self.video,
            "streams": list(self.streams),
        }
        if self.dropped_streams is not None:
            block["dropped_streams"] = list(self.dropped_streams)
        return block


@dataclass(frozen=True, kw_only=True)
class PresetChoice:
    """The preset a run's settings came from, and the settings changed from it
    (``detector.NAME``, ``tracker.NAME``): what the record's detector block says of it."""

    preset: str
    preset_overrides: tuple[str, ...] = ()

    def to_json(self) -> JsonObject:
        block: JsonObject = {"preset": self.preset}
        if self.preset_overrides:
            block["preset_overrides"] = list(self.preset_overrides)
        return block


@dataclass(frozen=True, kw_only=True)
class DetectorBlock:
    """The record's ``detector`` block: the detector as it describes itself (``info``: model,
    weights sha256, backend, thresholds, options, licence, transport), the preset its
    settings came from (None: not from a preset), and the detection stride.

    With a stride above 1 the block also states the rule that decided which frames between
    two key frames were detected (``stride_agree_iou``) and how many frames the detector saw,
    so ``veil render`` and a reader know the frames between were interpolated by rule.
    """

    info: DetectorInfo
    preset: PresetChoice | None = None
    stride: int = 1
    stride_agree_iou: float | None = None
    frames_detected: int | None = None

    def to_json(self) -> JsonObject:
        block = self.info.to_json()
        if self.preset is not None:
            block |= self.preset.to_json()
        block["stride"] = self.stride
        if self.stride_agree_iou is not None:
            block["stride_agree_iou"] = self.stride_agree_iou
        if self.frames_detected is not None:
            block["frames_detected"] = self.frames_detected
        return block
