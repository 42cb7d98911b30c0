"""One output timeline over the source's sessions: a reconnected source restarts its clock and
may renumber its streams; the sink must see time only move forward, each stream in its place.
"""

from __future__ import annotations

import logging
from fractions import Fraction

import av

from ._inbox import Connected, SourcePacket
from ._record import RecordWriter, SourceConnected, StreamInfo, Timeline

logger = logging.getLogger(__name__)

__all__ = ["Sessions"]


class Sessions:
    """The source's sessions: the first one's streams and rate (the sink is opened from
    them), and for each session the output stream of each input stream and the seconds added
    to its timestamps."""

    def __init__(self, source: str, record: RecordWriter) -> None:
        self._source = source
        self._record = record
        self.first: Connected | None = None
        self.rate = Fraction(30)  # the first session's frame rate, once known
        self._video_tb: dict[int, Fraction | None] = {}
        self._maps: dict[int, dict[int, int]] = {}
        self._offsets: dict[int, Fraction] = {}
        self._last_out_s = Fraction(0)  # the latest time sent, any stream
        self._last_pts: int | None = None  # the last video pts sent

    def connected(self, item: Connected) -> None:
        """A session began: recorded, and its streams matched to the first session's."""
        video = item.video
        self._video_tb[item.session] = video.time_base
        rate = video.average_rate or video.guessed_rate or video.base_rate
        streams = [
            StreamInfo(
                index=video.index,
                type="video",
                codec=video.codec_context.name,
                time_base=video.time_base,
            )
        ]
        streams += [
            StreamInfo(
                index=s.index,
                type=s.type,
                codec=s.codec_context.name if s.codec_context else None,
                time_base=s.time_base,
            )
            for s in item.others
        ]
        self._record.write(SourceConnected(session=item.session, rate=rate, streams=tuple(streams)))
        if self.first is None:
            self.first = item
            if rate:
                self.rate = Fraction(rate)
            self._maps[item.session] = {s.index: s.index for s in item.others}
            self._offsets[item.session] = Fraction(0)
            return
        # a reconnect: streams are matched to the first session's by type, in order
        mapping: dict[int, int] = {}
        for kind in {s.type for s in item.others}:
            old = [s for s in self.first.others if s.type == kind]
            new = [s for s in item.others if s.type == kind]
            for a, b in zip(old, new, strict=False):
                mapping[b.index] = a.index
            for extra in new[len(old) :]:
                logger.warning(
                    "%s: stream #%d (%s) appeared on reconnect and is not sent",
                    self._source,
                    extra.index,
                    kind,
                )
        self._maps[item.session] = mapping

    def _offset(self, session: int, t: Fraction) -> Fraction:
        """Seconds added to a session's timestamps: 0 for the first; later sessions continue
        one frame after the last thing sent, so the sink sees time only move forward."""
        if session not in self._offsets:
            self._offsets[session] = self._last_out_s + 1 / self.rate - t
            offset_s = float(self._offsets[session])
            self._record.write(Timeline(session=session, offset_s=offset_s))
        return self._offsets[session]

    def stream_of(self, item: SourcePacket) -> int | None:
        """The output stream of a copied packet (None: its stream has no match in the first
        session)."""
        return self._maps.get(item.session, {}).get(item.stream)

    def shift(self, item: SourcePacket) -> None:
        """Moves a copied packet's timestamps onto the output timeline."""
        packet = item.packet
        tb = packet.time_base
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is not None and tb is not None:
            offset = self._offset(item.session, ts * tb)
            if offset:
                shift = round(offset / tb)
                if packet.pts is not None:
                    packet.pts += shift
                if packet.dts is not None:
                    packet.dts += shift
            self._last_out_s = max(self._last_out_s, (ts * tb) + offset)

    def out_pts(self, frame: av.VideoFrame, session: int, time_base: Fraction) -> int:
        """The output pts of a video frame, in ``time_base``: its own time on the output
        timeline, always after the last one's."""
        tb = frame.time_base or self._video_tb.get(session) or Fraction(1, 90000)
        if frame.pts is None:
            t = self._last_out_s + 1 / self.rate
        else:
            t = frame.pts * tb + self._offset(session, frame.pts * tb)
        pts = round(t / time_base)
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        self._last_out_s = max(self._last_out_s, pts * time_base)
        return pts
