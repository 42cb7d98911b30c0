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
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from veil import Style, TrackerConfig
from veil.job import validate
from veil.live import LiveConfig, run_live

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


# --------------------------------------------------------------------------------------------
# one ``veil live`` run over loopback, and what it let through

MIN_FACE_PX = 20
#: covered share of a face box by the frame's rendered masks (record boxes grown by the style
#: margin). Not 1.0: WIDER GT boxes are loose (shared/data/README.md), and a detector's tight
#: box grown by the margin covers ~0.85-0.95 of one; the pixel check below catches the rest.
MIN_COVER = 0.8
#: a masked face keeps at most this share of its source's fine structure (|Laplacian|)
MAX_STRUCTURE = 0.5


@dataclass
class Run:
    published: Path
    received: Path
    record: list[dict[str, Any]]
    latencies: list[float]
    summary: dict[str, Any]

    @property
    def frames(self) -> dict[int, dict[str, Any]]:
        """Record lines of frames sent, by output pts."""
        return {line["out_pts"]: line for line in self.record if "mode" in line}

    def events(self, name: str) -> list[dict[str, Any]]:
        return [line for line in self.record if line.get("event") == name]


def read_record(path: Path) -> list[dict[str, Any]]:
    """The lines of a live record, each checked against ``live-record.schema.json`` (every
    line a run writes must validate)."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for number, line in enumerate(lines, 1):
        validate(line, "live-record", f"{path}:{number}")
    return lines


def wait_for(predicate: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def source_lost(record: Path) -> bool:
    return record.exists() and '"source_lost"' in record.read_text()


def live_in_process(
    tmp: Path,
    clip: Path,
    detector: Any,
    *,
    delay_s: float,
    loops: int = 1,
    tracker: TrackerConfig | None = None,
) -> Run:
    """``clip`` published at its native rate through ``veil live`` (in this process, with
    ``detector``; ``tracker``: a preset's ``tracker_for_run``, default ``TrackerConfig()``)."""
    published = make_ts(clip, tmp / "published.ts", loops=loops)
    receiver = Receiver(tmp / "received.ts")
    receiver.start()
    port = free_udp_port()
    record = tmp / "live.jsonl"
    stop = threading.Event()
    result: dict[str, Any] = {}

    def go() -> None:
        try:
            result["summary"] = run_live(
                f"udp://127.0.0.1:{port}",
                f"udp://127.0.0.1:{receiver.port}",
                detector=detector,
                config=LiveConfig(
                    delay_s=delay_s, read_timeout_s=1.0, tracker=tracker or TrackerConfig()
                ),
                record=record,
                stop=stop,
            )
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=go, name="veil-live-test")
    thread.start()
    try:
        assert wait_udp_bound(port, 60), "veil live never listened on its UDP source"
        publisher = Publisher(published, port)
        publisher.start()
        publisher.join()
        # the source goes silent: veil notices (read timeout), flushes its decoder, reconnects
        wait_for(lambda: source_lost(record), 30)
    finally:
        stop.set()  # what SIGINT/SIGTERM do in the CLI
        thread.join(60)
        receiver.wait_idle(0.5, 10)
        receiver.stop_event.set()
        receiver.join()
    assert not thread.is_alive(), "veil live did not stop"
    if "error" in result:
        raise result["error"]
    lat = latencies(published, publisher.sent, receiver.out, receiver.received)
    return Run(published, receiver.out, read_record(record), lat, result["summary"])


def grown(box: Sequence[float], margin: float) -> tuple[float, float, float, float]:
    w, h = box[2] - box[0], box[3] - box[1]
    return (box[0] - margin * w, box[1] - margin * h, box[2] + margin * w, box[3] + margin * h)


def covered_share(face: Sequence[float], masks: Sequence[Sequence[float]]) -> float:
    """Share of the ``face`` box covered by the union of ``masks`` (rasterised at 1 px)."""
    x0, y0 = int(np.floor(face[0])), int(np.floor(face[1]))
    x1, y1 = int(np.ceil(face[2])), int(np.ceil(face[3]))
    if x1 <= x0 or y1 <= y0:
        return 1.0
    covered = np.zeros((y1 - y0, x1 - x0), bool)
    for m in masks:
        a0, b0 = max(0, int(np.floor(m[0])) - x0), max(0, int(np.floor(m[1])) - y0)
        a1, b1 = min(x1 - x0, int(np.ceil(m[2])) - x0), min(y1 - y0, int(np.ceil(m[3])) - y0)
        if a1 > a0 and b1 > b0:
            covered[b0:b1, a0:a1] = True
    return float(covered.mean())


def structure(luma: np.ndarray, box: Sequence[float]) -> float:
    """Mean |Laplacian| of the (slightly smoothed) luma in ``box``: how much fine structure
    a region has. A masked face keeps little of its source's."""
    x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
    x1, y1 = min(luma.shape[1], int(np.ceil(box[2]))), min(luma.shape[0], int(np.ceil(box[3])))
    region = luma[y0:y1, x0:x1].astype(np.float32)
    if region.size < 16:
        return 0.0
    # edges at the scale of eyes and mouths, not the encoder's pixel-level noise
    region = cv2.GaussianBlur(region, (0, 0), 1.5)
    return float(np.abs(cv2.Laplacian(region, cv2.CV_32F)).mean())


def luma_frames(path: Path) -> Iterator[tuple[int, np.ndarray]]:
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            yield int(frame.pts), frame.to_ndarray(format="gray")


def check_masked(
    run: Run, faces: Callable[[int], list[Sequence[float]]], style: Style | None = None
) -> dict[str, Any]:
    """Every face (``faces(source_frame_index)``, boxes >= 20 px tall) in every frame that
    came back: covered by the record's masks, and without structure in the pixels."""
    style = style or Style()
    published = [pts for pts, _ in frames_pts(run.published)]
    first = published[0]
    step = (published[-1] - first) / max(1, len(published) - 1)
    lines = run.frames
    leaks: list[str] = []
    checked = 0
    received = luma_frames(run.received)
    wanted = {pts for pts, _ in frames_pts(run.received)}
    for pts, source in luma_frames(run.published):
        if pts not in wanted:
            continue
        got_pts, out = next(received)
        assert got_pts == pts
        line = lines.get(pts)
        assert line is not None, f"frame pts {pts} went out but the record does not list it"
        boxes = [grown(m["box"], style.margin) for m in line["masks"]]
        index = round((pts - first) / step)
        for face in faces(index):
            if face[3] - face[1] < MIN_FACE_PX:
                continue
            checked += 1
            share = covered_share(face, boxes)
            before, after = structure(source, face), structure(out, face)
            kept = after / before if before > 1.0 else 0.0
            if share < MIN_COVER or kept > MAX_STRUCTURE:
                leaks.append(
                    f"frame {index} ({line['mode']}): face {[round(v) for v in face]} "
                    f"covered {share:.2f}, structure kept {kept:.2f}"
                )
    return {"faces_checked": checked, "leaks": leaks}


def frames_pts(path: Path) -> list[tuple[int, None]]:
    with av.open(str(path)) as c:
        return sorted((int(p.pts), None) for p in c.demux(video=0) if p.size and p.pts is not None)


def gt_faces(clip_json: Path) -> Callable[[int], list[Sequence[float]]]:
    gt = json.loads(clip_json.read_text())
    # DESIGN's face instance: >= 20 px tall (checked in check_masked), >= 60 % visible
    faces = [
        [f["bbox"] for f in frame["faces"] if not f["ignore"] and f["visible"] >= 0.6]
        for frame in gt["frames"]
    ]
    return lambda i: faces[i] if i < len(faces) else []
