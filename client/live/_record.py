"""The live record (``veil.live-record/1``): JSON Lines, one typed line per thing that
happened, flushed as frames go out, so a record cut short by a crash still says what went out.

Line 1 is the :class:`Header`; then events (``"event": NAME``), one :class:`FrameSent` or
:class:`FrameDropped` line per frame, and a :class:`Summary` line when the run ends, on
SIGINT/SIGTERM and errors too. The schema is ``protos/veil/v1/live-record.schema.json``
(``veil.v1``); the tests validate every line a run writes against it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

from veil import __version__
from veil.core import ConfigError, Mask, Offset

from ._config import LiveConfig
from ._policy import Mode
from ._stats import StatsSnapshot

__all__ = [
    "RECORD_SCHEMA",
    "DetectorBack",
    "DetectorFailed",
    "DetectorGone",
    "FrameDropped",
    "FrameSent",
    "Header",
    "RecordLine",
    "RecordWriter",
    "SinkOpened",
    "SourceConnected",
    "SourceLost",
    "StreamInfo",
    "Summary",
    "Timeline",
]

RECORD_SCHEMA = "veil.live-record/1"


@dataclass(frozen=True, kw_only=True)
class Header:
    """Line 1: what ran, on what (credentials removed from the URLs), with which settings."""

    source: str
    sink: str
    config: LiveConfig
    detector: dict[str, Any]  # the detector's identity (DetectorInfo.to_json, + the preset)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": RECORD_SCHEMA,
            "veil_version": __version__,
            "source": self.source,
            "sink": self.sink,
            "live": self.config.to_json(),
            "detector": self.detector,
            "style": self.config.style.to_json(),
            "weak_style_settings": self.config.style.weak_settings,
        }


@dataclass(frozen=True, kw_only=True)
class StreamInfo:
    index: int
    type: str
    codec: str | None
    time_base: Fraction | None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "type": self.type,
            "codec": self.codec,
            "time_base": str(self.time_base),
        }


@dataclass(frozen=True, kw_only=True)
class SourceConnected:
    """A session of the source began (the first, or a reconnect): its streams, video first."""

    session: int
    rate: Fraction | None
    streams: tuple[StreamInfo, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "source_connected",
            "session": self.session,
            "rate": str(self.rate) if self.rate else None,
            "streams": [s.to_json() for s in self.streams],
        }


@dataclass(frozen=True, kw_only=True)
class SourceLost:
    session: int
    reason: str
    retry_in_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "source_lost",
            "session": self.session,
            "reason": self.reason,
            "retry_in_s": self.retry_in_s,
        }


@dataclass(frozen=True, kw_only=True)
class Timeline:
    """Seconds added to a later session's timestamps, so the sink's clock only moves on."""

    session: int
    offset_s: float

    def to_json(self) -> dict[str, Any]:
        return {"event": "timeline", "session": self.session, "offset_s": self.offset_s}


@dataclass(frozen=True, kw_only=True)
class SinkOpened:
    sink: str
    format: str
    encoder: dict[str, Any]  # LiveEncoder.to_json
    tracker: dict[str, Any]  # the live tracker's TrackerConfig.to_json

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "sink_opened",
            "sink": self.sink,
            "format": self.format,
            "encoder": self.encoder,
            "tracker": self.tracker,
        }


@dataclass(frozen=True, kw_only=True)
class DetectorFailed:
    """The first failure of a run of them (the detector is retried with backoff)."""

    frame: int
    error: str

    def to_json(self) -> dict[str, Any]:
        return {"event": "detector_error", "frame": self.frame, "error": self.error}


@dataclass(frozen=True, kw_only=True)
class DetectorGone:
    """The first frame masked whole because the detector was gone longer than the delay."""

    frame: int
    gone_s: float
    error: str

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "detector_gone",
            "frame": self.frame,
            "gone_s": round(self.gone_s, 3),
            "error": self.error,
        }


@dataclass(frozen=True, kw_only=True)
class DetectorBack:
    frame: int
    down_s: float

    def to_json(self) -> dict[str, Any]:
        return {"event": "detector_back", "frame": self.frame, "down_s": round(self.down_s, 3)}


@dataclass(frozen=True, kw_only=True)
class FrameSent:
    """A frame that went out: how its masks were decided, and where they were."""

    frame: int
    pts: int | None
    out_pts: int
    session: int
    mode: Mode
    latency_s: float
    stride: int
    #: the camera's translation since the frame before, stored pixels ((0, 0): none measured)
    motion: Offset
    masks: tuple[Mask, ...]
    policy: str | None  # why it was masked whole (mode policy)

    def to_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "frame": self.frame,
            "pts": self.pts,
            "out_pts": self.out_pts,
            "session": self.session,
            "mode": self.mode.value,
            "latency_ms": round(self.latency_s * 1000, 1),
            "stride": self.stride,
            "masks": [m.to_json() for m in self.masks],
        }
        if self.motion != (0.0, 0.0):
            line["motion"] = list(self.motion)
        if self.policy:
            line["policy"] = self.policy
        return line


@dataclass(frozen=True, kw_only=True)
class FrameDropped:
    """A frame never sent (never sent unmasked): ``lag`` or ``ingest queue full``."""

    frame: int
    pts: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"frame": self.frame, "pts": self.pts, "dropped": self.reason}


@dataclass(frozen=True, kw_only=True)
class Summary:
    """The last line: the run's counters (``LiveStats``) and how it ended."""

    stats: StatsSnapshot
    ended: str

    def body(self) -> dict[str, Any]:
        """What ``run_live`` returns."""
        return self.stats.to_json() | {"ended": self.ended}

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.body()}


RecordLine = (
    Header
    | SourceConnected
    | SourceLost
    | Timeline
    | SinkOpened
    | DetectorFailed
    | DetectorGone
    | DetectorBack
    | FrameSent
    | FrameDropped
    | Summary
)


class RecordWriter:
    """The record as JSON Lines, flushed line by line (None: no record kept)."""

    def __init__(self, path: Path | None) -> None:
        self._fh: TextIO | None = None
        if path is not None:
            try:
                self._fh = path.open("w", encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"{path}: cannot write the record ({exc})") from exc

    def write(self, line: RecordLine) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(line.to_json(), separators=(",", ":")) + "\n")
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
