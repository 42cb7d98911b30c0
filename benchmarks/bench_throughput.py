"""Throughput of veil against the decode+encode ceiling and deface, on the same files, in one run.

Usage (``make bench`` runs the defaults)::

    .venv/bin/python benchmarks/bench_throughput.py [--sizes 1280x720,1920x1080] [--seconds 6]
        [--presets fast,balanced,thorough] [--strides 1,3] [--no-deface] [--rss] [--json F]
        [--repeat N]

What it does, per clip size:

1. makes a ground-truth clip (real faces from a WIDER photo, a moving camera, real speech) with
   ``../shared/tools/make_clip.py`` into ``.cache/bench/`` (once; nothing is committed);
2. runs, each as its own process on the same file, one after another:
   ``decode`` (PyAV decode only), ``ceiling`` (PyAV decode + the very encoder settings veil uses,
   audio copied: no anonymiser can beat it), ``veil <preset>`` (``veil anonymize``, record
   included), and ``deface`` 1.5.0 with its defaults (from ``.deface-venv``, ``make deface-env``);
3. prints frames/s (wall), CPU seconds per frame (user+sys of the process: steadier than wall
   time on a shared box), peak RSS, the ratios veil/ceiling and veil/deface, the leak rate of
   each output (``veil_eval.score_video``: pixel scoring, the same judge for every tool) and
   luma PSNR against the input outside the faces (pixels outside every GT face box grown 1.5x:
   what an anonymiser should leave alone).

``--rss`` adds the memory check: ``veil anonymize`` on the 720p clip and on the same clip
repeated to 60 s (packets remuxed with shifted timestamps, audio included), peak RSS of each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

if TYPE_CHECKING:
    from veil_eval import GtClip

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CACHE = ROOT / ".cache" / "bench"
VEIL = ROOT / ".venv" / "bin" / "veil"
PY = ROOT / ".venv" / "bin" / "python"
DEFACE = ROOT / ".deface-venv" / "bin" / "deface"
IMAGE = (
    SHARED
    / "data/stills/widerface/WIDER_val/images/12--Group/12_Group_Group_12_Group_Group_12_10.jpg"
)
ANN = SHARED / "data/stills/widerface/annotations.json"
AUDIO = SHARED / "data/audio/116-288045-0000.flac"
#: Camera poses (cx, cy, zoom, roll) cycled every 1.5 s: pans, zooms, a roll.
POSES = ((0.5, 0.5, 1.0, 0), (0.42, 0.35, 1.8, 0), (0.7, 0.6, 1.8, -15), (0.6, 0.45, 1.3, 10))


@dataclass
class Row:
    clip: str
    tool: str
    frames: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    leak_rate: float | None = None
    psnr_outside: float | None = None
    note: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0

    @property
    def cpu_ms_per_frame(self) -> float:
        return 1e3 * self.cpu_s / self.frames if self.frames else 0.0


def make_clip(size: str, seconds: float) -> Path:
    """The GT clip for ``size`` (``WxH``), made once into the cache."""
    out = CACHE / f"gt_{size}_{seconds:g}s.mp4"
    if out.exists() and out.with_suffix(".json").exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    keyframes = [
        {"t": round(1.5 * k, 3), "cx": cx, "cy": cy, "zoom": z, "rot": r}
        for k, (cx, cy, z, r) in enumerate(
            POSES[k % len(POSES)] for k in range(int(seconds / 1.5) + 2)
        )
    ]
    cmd = [
        str(PY), str(SHARED / "tools/make_clip.py"), "--image", str(IMAGE), "--ann", str(ANN),
        "--keyframes", json.dumps(keyframes), "--size", size, "--fps", "30",
        "--duration", str(seconds), "--audio", f"speech:{AUDIO}", "--out", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


def repeat_clip(src: Path, times: int) -> Path:
    """``src`` played ``times`` times in a row, by remuxing its packets (no re-encode)."""
    out = src.with_name(f"{src.stem}_x{times}.mp4")
    if out.exists():
        return out
    span: dict[int, int] = {}  # per stream: last dts + its duration - first dts
    with av.open(str(src)) as inp:
        first: dict[int, int] = {}
        for packet in inp.demux():
            if packet.dts is None or not packet.size:
                continue
            index = packet.stream.index
            first.setdefault(index, packet.dts)
            span[index] = packet.dts + (packet.duration or 0) - first[index]
    tmp = out.with_suffix(".part.mp4")
    with av.open(str(tmp), "w") as dst:
        with av.open(str(src)) as inp:
            streams = {s.index: dst.add_stream_from_template(s) for s in inp.streams}
        for k in range(times):
            with av.open(str(src)) as inp:
                for packet in inp.demux():
                    if not packet.size:
                        continue
                    shift = k * span[packet.stream.index]
                    if packet.pts is not None:
                        packet.pts += shift
                    if packet.dts is not None:
                        packet.dts += shift
                    packet.stream = streams[packet.stream.index]
                    dst.mux(packet)
    tmp.rename(out)
    return out


def run(cmd: list[str], *, env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Run ``cmd``; its wall seconds, CPU seconds (user+sys) and peak RSS in MB."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


_DECODE = """
import sys, av
with av.open(sys.argv[1]) as c:
    s = c.streams.video[0]; s.thread_type = "AUTO"
    for f in c.decode(s): pass
"""

#: Decode + encode with veil's own encoder settings (EncoderSettings), audio copied as packets.
_CEILING = """
import sys, av
from pathlib import Path
from veil.media import EncoderSettings
enc = EncoderSettings(preset=sys.argv[3], codec=sys.argv[4] or None)
out_path = Path(sys.argv[2])
with av.open(sys.argv[1]) as c, av.open(str(out_path), "w", options={"fflags": "+bitexact"}) as o:
    v = c.streams.video[0]; v.thread_type = "AUTO"
    codec = enc.codec_for(out_path)
    vs = o.add_stream(codec, rate=v.average_rate, options=enc.options(codec))
    vs.width, vs.height, vs.pix_fmt = v.codec_context.width, v.codec_context.height, "yuv420p"
    vs.time_base = v.time_base; vs.codec_context.time_base = v.time_base
    copies = {s.index: o.add_stream_from_template(s) for s in c.streams if s.index != v.index}
    for packet in c.demux():
        if packet.stream.index != v.index:
            if packet.size:
                packet.stream = copies[packet.stream.index]; o.mux(packet)
            continue
        for frame in v.decode(packet):
            fresh = frame.reformat(format="yuv420p")
            fresh.pict_type = av.video.frame.PictureType.NONE
            for p in vs.encode(fresh): o.mux(p)
    for p in vs.encode(None): o.mux(p)
"""


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def psnr_outside(clip: GtClip, src: Path, out: Path) -> float | None:
    """Luma PSNR of ``out`` against ``src`` over pixels outside every GT face's surroundings
    (its box grown 1.5x: ``GtFace.surroundings``, where masking is not collateral)."""
    sse, n = 0.0, 0
    with av.open(str(src)) as a, av.open(str(out)) as b:
        pairs = zip(a.decode(video=0), b.decode(video=0), strict=False)
        for i, (fa, fb) in enumerate(pairs):
            ya = fa.to_ndarray(format="gray").astype(np.float64)
            yb = fb.to_ndarray(format="gray").astype(np.float64)
            if ya.shape != yb.shape:
                return None
            keep = np.ones(ya.shape, bool)
            for face in clip.frames[i] if i < len(clip.frames) else []:
                x0, y0, x1, y1 = face.surroundings
                keep[
                    max(0, int(y0)) : max(0, math.ceil(y1)), max(0, int(x0)) : max(0, math.ceil(x1))
                ] = False
            d = (ya - yb)[keep]
            sse += float(np.dot(d, d))
            n += d.size
    if n == 0:
        return None
    mse = sse / n
    return float("inf") if mse == 0 else 10 * math.log10(255**2 / mse)


def same_size(src: Path, out: Path) -> Path:
    """``out``, or a lossless copy scaled back to ``src``'s size when the tool changed it
    (deface writes through imageio, which scales 1080 rows to 1088: a loss it really has)."""
    with av.open(str(src)) as a, av.open(str(out)) as b:
        va, vb = a.streams.video[0].codec_context, b.streams.video[0].codec_context
        if (va.width, va.height) == (vb.width, vb.height):
            return out
    fixed = out.with_name(out.stem + ".rescaled.mkv")
    with av.open(str(out)) as b, av.open(str(fixed), "w") as o:
        vs = o.add_stream("libx264", rate=b.streams.video[0].average_rate, options={"qp": "0"})
        vs.width, vs.height, vs.pix_fmt = va.width, va.height, "yuv444p"
        for frame in b.decode(video=0):
            scaled = frame.reformat(va.width, va.height, "yuv444p", interpolation="BICUBIC")
            scaled.pts = None
            for packet in vs.encode(scaled):
                o.mux(packet)
        for packet in vs.encode(None):
            o.mux(packet)
    return fixed


def judge(row: Row, gt: Path, src: Path, out: Path) -> None:
    from veil_eval import GtClip, score_video

    clip = GtClip.load(gt)
    scored = same_size(src, out)
    if scored != out:
        row.note = "output scaled by the tool; scored after scaling back"
    out = scored
    try:
        row.leak_rate = score_video(clip, out, src).leak_rate()
    except ValueError as exc:  # frame count mismatch: say so, never guess
        row.note = f"not scored: {exc}"
    row.psnr_outside = psnr_outside(clip, src, out)


def bench_clip(src: Path, args: argparse.Namespace, rows: list[Row]) -> None:
    """Every row on ``src``, in ``args.repeat`` rounds (each round runs every row once, in
    order, so that a slow spell of a shared box hits all rows alike); each row reports the
    median round's wall time and CPU time, and the largest RSS."""
    name = src.stem
    gt = src.with_suffix(".json")
    frames = count_frames(src)
    work = CACHE / "out"
    work.mkdir(parents=True, exist_ok=True)

    plan: list[tuple[str, list[str], Path | None]] = [
        ("decode", [str(PY), "-c", _DECODE, str(src)], None)
    ]
    out = work / f"{name}.ceiling.mp4"
    plan.append(
        (
            f"ceiling ({args.encoder_preset})",
            [str(PY), "-c", _CEILING, str(src), str(out), args.encoder_preset, args.codec],
            out,
        )
    )
    for preset in args.presets:
        # The preset as users run it, then (balanced) each extra stride asked for.
        for stride in [None, *args.strides] if preset == "balanced" else [None]:
            label = "" if stride is None else f"-s{stride}"
            out = work / f"{name}.veil-{preset}{label}.mp4"
            cmd = [str(VEIL), "-q", "anonymize", str(src), "-o", str(out), "-y",
                   "--preset", preset, "--encoder-preset", args.encoder_preset,
                   "--provider", args.provider]  # fmt: skip
            if stride is not None:
                cmd += ["--stride", str(stride)]
            if args.codec:
                cmd += ["--codec", args.codec]
            plan.append(
                (f"veil {preset}" + ("" if stride is None else f" stride {stride}"), cmd, out)
            )
    if not args.no_deface:
        if not DEFACE.exists():
            print("  deface: not installed (make deface-env); skipped", flush=True)
        else:
            out = work / f"{name}.deface.mp4"
            plan.append(("deface 1.5.0 (defaults)", [str(DEFACE), str(src), "-o", str(out)], out))

    print(f"{name}: {frames} frames, {args.repeat} round(s)", flush=True)
    runs: dict[str, list[tuple[float, float, float]]] = {tool: [] for tool, _, _ in plan}
    for k in range(args.repeat):
        for tool, cmd, _ in plan:
            runs[tool].append(run(cmd))
            wall, cpu, _ = runs[tool][-1]
            print(
                f"  [{k + 1}] {tool:<22} {frames / wall:6.2f} fps  "
                f"{1e3 * cpu / frames:6.1f} ms CPU/frame",
                flush=True,
            )
    for tool, _, out in plan:
        walls = sorted(r[0] for r in runs[tool])
        cpus = sorted(r[1] for r in runs[tool])
        middle = len(walls) // 2
        row = Row(name, tool, frames, walls[middle], cpus[middle], max(r[2] for r in runs[tool]))
        if out is not None and not args.no_score:
            judge(row, gt, src, out)  # outputs repeat byte for byte: any round's will do
        rows.append(row)
        _save(rows, args.json)


def bench_rss(src: Path, rows: list[Row]) -> None:
    """Peak RSS of one veil job on ``src`` (10 s) and on it repeated to 60 s."""
    long = repeat_clip(src, 6)
    work = CACHE / "out"
    for clip in (src, long):
        out = work / f"{clip.stem}.rss.mp4"
        cmd = [str(VEIL), "-q", "anonymize", str(clip), "-o", str(out), "-y", "--preset", "fast"]
        wall, cpu, rss = run(cmd)
        frames = count_frames(clip)
        rows.append(Row(clip.stem, "veil fast (memory)", frames, wall, cpu, rss))
        print(f"  {clip.stem}: {frames} frames, peak RSS {rss:.0f} MB", flush=True)


def _save(rows: list[Row], path: Path | None) -> None:
    """Every row so far, after each row: a late failure loses nothing measured."""
    if path is not None:
        path.write_text(json.dumps([asdict(r) | {"fps": r.fps} for r in rows], indent=1))


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    lines = [
        "| clip | tool | fps | CPU ms/frame | x ceiling | x deface | leak rate (>=20 px) "
        "| PSNR outside faces (dB) | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        same = [r for r in rows if r.clip == row.clip]
        ceiling = next((r for r in same if r.tool.startswith("ceiling")), None)
        deface = next((r for r in same if r.tool.startswith("deface")), None)
        veil = row.tool.startswith("veil") and "memory" not in row.tool
        x_ceiling = row.fps / ceiling.fps if veil and ceiling else None
        x_deface = row.fps / deface.fps if veil and deface else None
        lines.append(
            f"| {row.clip} | {row.tool} | {row.fps:.2f} | {row.cpu_ms_per_frame:.1f} "
            f"| {_fmt(x_ceiling, '.2f')} | {_fmt(x_deface, '.2f')} | {_fmt(row.leak_rate, '.4f')} "
            f"| {_fmt(row.psnr_outside, '.2f')} | {row.peak_rss_mb:.0f} |"
            + (f" {row.note}" if row.note else "")
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1280x720,1920x1080")
    parser.add_argument("--seconds", type=float, default=6.0, help="clip length (default 6)")
    parser.add_argument("--presets", default="fast,balanced,thorough")
    parser.add_argument(
        "--strides", default="1", help="extra detection strides for balanced (its own: 2)"
    )
    parser.add_argument(
        "--encoder-preset", default="veryfast", help="x264 preset for veil and ceiling"
    )
    parser.add_argument(
        "--codec", default="", help="encoder for veil and ceiling (default libx264)"
    )
    parser.add_argument(
        "--provider", default="cpu", help="onnxruntime provider: cpu, cuda, tensorrt"
    )
    parser.add_argument("--no-deface", action="store_true")
    parser.add_argument("--no-score", action="store_true", help="skip leak rate and PSNR")
    parser.add_argument(
        "--rss", action="store_true", help="also peak RSS for a 10 s and a 60 s input"
    )
    parser.add_argument("--json", type=Path, help="write the rows here too")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of every row; the median is reported"
    )
    args = parser.parse_args()
    args.presets = [p for p in args.presets.split(",") if p]
    args.strides = [int(s) for s in args.strides.split(",") if s]
    if not VEIL.exists():
        print("no .venv: run `make setup models` first", file=sys.stderr)
        return 2
    rows: list[Row] = []
    print(f"cores: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()}", flush=True)
    for size in args.sizes.split(","):
        bench_clip(make_clip(size, args.seconds), args, rows)
    try:
        if args.rss:
            bench_rss(make_clip("1280x720", 10.0), rows)
            _save(rows, args.json)
    finally:
        print()
        print(table(rows))
    print(f"\nload average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
