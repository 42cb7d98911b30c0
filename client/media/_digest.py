"""Proof that a stream was not touched: per-stream packet counts and payload hashes of an
input and of the file written from it (compared before an output is committed, recorded in
its manifest, checked again by ``veil verify``), and the whole file's SHA-256."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

#: Bytes read at a time when hashing a file.
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """The SHA-256 of the file at ``path``, read in 1 MiB chunks (records and manifests name
    inputs and outputs by it)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def adts_header_size(payload: bytes) -> int:
    """Bytes of ADTS framing an AAC packet starts with (7, or 9 with a CRC); 0 if none.

    ADTS is AAC's self-describing framing, which MPEG-TS carries; MP4, MOV and Matroska hold
    the bare AAC frames and describe them once (AudioSpecificConfig), so their muxers strip
    it (FFmpeg's ``aac_adtstoasc``) and the MPEG-TS muxer adds it. The AAC frame after it is
    the same bytes either way.
    """
    if len(payload) < 7 or payload[0] != 0xFF or payload[1] & 0xF6 != 0xF0:
        return 0
    length = ((payload[3] & 0x03) << 11) | (payload[4] << 3) | (payload[5] >> 5)
    if length != len(payload):
        return 0
    return 7 if payload[1] & 0x01 else 9


@dataclass
class StreamDigest:
    """Packet count and payload hash of one stream: proof that a stream was not touched.

    An AAC stream also gets the hash of its AAC frames less any ADTS framing
    (``aac_frames_sha256``): what stays the same when a container requires the framing
    changed (:func:`adts_header_size`).
    """

    index: int
    kind: str
    codec: str
    time_base: Fraction
    packets: int = 0
    #: the earliest pts, in seconds (None: no packet had one)
    start: Fraction | None = None
    _sha: Any = field(default_factory=hashlib.sha256, repr=False)
    _frames: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.codec == "aac":
            self._frames = hashlib.sha256()

    @classmethod
    def of(cls, stream: av.stream.Stream) -> StreamDigest:
        """An empty digest of ``stream``: no packets yet."""
        return cls(
            index=stream.index,
            kind=stream.type,
            codec=stream.codec_context.name if stream.codec_context else "none",
            time_base=stream.time_base or Fraction(1, 1),
        )

    def add(self, packet: av.Packet) -> None:
        payload = bytes(packet)
        self.packets += 1
        self._sha.update(payload)
        if self._frames is not None:
            self._frames.update(payload[adts_header_size(payload) :])
        if packet.pts is not None and packet.time_base:
            at = packet.pts * packet.time_base
            self.start = at if self.start is None else min(self.start, at)

    @property
    def payload_sha256(self) -> str:
        return str(self._sha.hexdigest())

    @property
    def aac_frames_sha256(self) -> str | None:
        return None if self._frames is None else str(self._frames.hexdigest())

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "type": self.kind,
            "codec": self.codec,
            "time_base": str(self.time_base),
            "packets": self.packets,
            "payload_sha256": self.payload_sha256,
        }
        if self._frames is not None:
            out["aac_frames_sha256"] = self.aac_frames_sha256
        return out


def packet_digests(container: av.container.InputContainer) -> dict[int, StreamDigest]:
    """Every stream's :class:`StreamDigest`, from its packets (nothing decoded; empty flush
    packets skipped, as ``Input.demux`` skips them)."""
    digests = {s.index: StreamDigest.of(s) for s in container.streams}
    for packet in container.demux():
        if packet.size:
            digests[packet.stream.index].add(packet)
    return digests
