"""A loopback stage for ``veil live`` tests and benchmarks: publish a clip as MPEG-TS over UDP
at its native rate, receive what comes back, and read both ends afterwards with PyAV.

Both ends are plain sockets that move bytes (no FFmpeg in the way): the publisher sends a
TS file made from the clip beforehand, datagram by datagram, each when its packets are due;
the receiver writes every datagram it gets to a file and notes when it came. ``av.Packet.pos``
(the byte offset of a packet in a file) then ties each packet on either side to the wall
clock, which gives the latency the whole chain added.
"""

from __future__ import annotations

import bisect
import socket
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av

DATAGRAM = 7 * 188  # 1316 bytes: seven TS packets, the usual UDP payload


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def udp_bound(port: int) -> bool:
    """Whether some process has a UDP socket bound to ``port`` (Linux: /proc/net/udp)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local = line.split()[1]
            if int(local.rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_udp_bound(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if udp_bound(port):
            return True
        time.sleep(0.05)
    return False


def make_ts(clip: Path, out: Path, *, loops: int = 1) -> Path:
    """Remux ``clip`` (video + audio packets, nothing re-encoded) into MPEG-TS, ``loops``
    times back to back with timestamps continuing."""
    with av.open(str(clip)) as src, av.open(str(out), "w", format="mpegts") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams
                   if s.type in ("video", "audio")}  # fmt: skip
        duration = Fraction(src.duration or 0, 1_000_000)
        for loop in range(loops):
            src.seek(0)
            shift = loop * duration
            for packet in src.demux(*[src.streams[i] for i in streams]):
                if not packet.size:
                    continue
                tb = packet.time_base
                delta = round(shift / tb)
                if packet.pts is not None:
                    packet.pts += delta
                if packet.dts is not None:
                    packet.dts += delta
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    return out


@dataclass
class Timeline:
    """When each byte of a TS file left or arrived: datagram start offsets and wall times."""

    offsets: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def at(self, pos: int) -> float | None:
        k = bisect.bisect_right(self.offsets, pos) - 1
        return self.times[k] if k >= 0 else None


def _schedule(ts: Path) -> list[tuple[int, float]]:
    """(byte offset, media time in seconds) of every packet of ``ts``, in file order."""
    out = []
    with av.open(str(ts)) as c:
        for packet in c.demux():
            t = packet.dts if packet.dts is not None else packet.pts
            if packet.pos is None or packet.pos < 0 or t is None:
                continue
            out.append((int(packet.pos), float(t * packet.time_base)))
    return out


class Publisher(threading.Thread):
    """Sends a TS file to 127.0.0.1:``port`` at its native rate."""

    def __init__(self, ts: Path, port: int, *, lead_s: float = 0.3) -> None:
        super().__init__(name="publisher", daemon=True)
        self.data = ts.read_bytes()
        self.port = port
        self.schedule = _schedule(ts)
        self.lead_s = lead_s  # send this much ahead of media time (a real muxer's buffering)
        self.sent = Timeline()
        self.stop_event = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            offsets = [p for p, _ in self.schedule]
            t0 = min(t for _, t in self.schedule[:50])
            start = time.monotonic() + 0.05
            for pos in range(0, len(self.data), DATAGRAM):
                if self.stop_event.is_set():
                    break
                k = bisect.bisect_right(offsets, pos + DATAGRAM - 1) - 1
                due = start + (max(self.schedule[max(k, 0)][1], t0) - t0) - self.lead_s
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                sock.sendto(self.data[pos : pos + DATAGRAM], ("127.0.0.1", self.port))
                self.sent.offsets.append(pos)
                self.sent.times.append(time.monotonic())
        finally:
            sock.close()
            self.done.set()


class Receiver(threading.Thread):
    """Writes every datagram arriving at 127.0.0.1:``port`` to ``out`` and notes the time."""

    def __init__(self, out: Path) -> None:
        super().__init__(name="receiver", daemon=True)
        self.out = out
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.received = Timeline()
        self.stop_event = threading.Event()
        self.last = 0.0

    def run(self) -> None:
        written = 0
        with self.out.open("wb") as fh:
            while not self.stop_event.is_set():
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    continue
                self.received.offsets.append(written)
                self.last = time.monotonic()
                self.received.times.append(self.last)
                fh.write(data)
                written += len(data)
        self.sock.close()

    def wait_idle(self, idle_s: float, timeout_s: float) -> None:
        """Wait until nothing arrived for ``idle_s`` (at most ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.last and time.monotonic() - self.last > idle_s:
                return
            time.sleep(0.05)


def packets(ts: Path) -> list[tuple[str, int | None, int, bytes]]:
    """(stream type, pts, byte offset, payload) of every packet of ``ts``."""
    out = []
    with av.open(str(ts)) as c:
        for p in c.demux():
            if p.size:
                out.append((p.stream.type, p.pts, int(p.pos if p.pos is not None else -1),
                            bytes(p)))  # fmt: skip
    return out


def latencies(published: Path, pub: Timeline, received: Path, rec: Timeline) -> list[float]:
    """Seconds from the datagram that finished each video frame leaving the publisher to the
    datagram that finished it arriving back, for every frame that came back."""

    def ends(path: Path, line: Timeline) -> dict[int, float]:
        found: dict[int, float] = {}
        with av.open(str(path)) as c:
            for p in c.demux(video=0):
                if p.size and p.pts is not None and p.pos is not None and p.pos >= 0:
                    t = line.at(int(p.pos) + p.size * 188 // 184)  # ~ its last TS packet
                    if t is not None:
                        found[int(p.pts)] = t
        return found

    sent, came = ends(published, pub), ends(received, rec)
    return sorted(came[k] - sent[k] for k in came if k in sent)
