"""GPU path check: onnxruntime CUDA/TensorRT and NVENC against the CPU path, one run.

Made for a lent NVIDIA machine with no network (``benchmarks/gpu_check.sh`` sets it up from
carried wheels) but runs on any GPU host with veil importable. On a 1080p clip made from the
bundled sample (a real face, upscaled; audio copied), it times, each on the same file:
decode alone, the decode+encode ceilings (libx264 with veil's settings, and h264_nvenc), and
``veil.anonymize`` (balanced) with the CPU and, where the onnxruntime build has them, the CUDA
and TensorRT providers, each with libx264 and with NVENC. It checks that the record names the
provider really used and the manifest the encoder, and that NVENC output repeats byte for byte
and equals ``veil.render`` of its record. Prints a table and writes JSON to ``$OUT`` if set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import av
import onnxruntime as ort

import veil
from veil import DetectionConfig, EncoderSettings

ROOT = Path(__file__).resolve().parents[1]
WORK = Path(os.environ.get("TMPDIR", "/tmp")) / "veil-gpu"
FRAMES = int(os.environ.get("GPU_CHECK_FRAMES", "200"))


def make_clip(size: tuple[int, int]) -> Path:
    """The bundled sample scaled to ``size`` (video re-encoded, audio copied)."""
    dst = WORK / f"sample_{size[0]}x{size[1]}.mp4"
    with av.open(str(ROOT / "samples" / "astronaut.mp4")) as src, av.open(str(dst), "w") as out:
        vin, ain = src.streams.video[0], src.streams.audio[0]
        video = out.add_stream("libx264", rate=vin.average_rate, options={"crf": "18"})
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        audio = out.add_stream_from_template(ain)
        count = 0
        for packet in src.demux():
            if packet.stream is ain and packet.size:
                packet.stream = audio
                out.mux(packet)
            elif packet.stream is vin and count < FRAMES:
                for frame in packet.decode():
                    big = frame.reformat(*size, "yuv420p", interpolation="BICUBIC")
                    big.pts, big.time_base = frame.pts, frame.time_base
                    out.mux(video.encode(big))
                    count += 1
        out.mux(video.encode(None))
    return dst


def timed(label: str, fn, frames: int) -> dict:
    start = time.perf_counter()
    extra = fn() or {}
    seconds = time.perf_counter() - start
    row = {"run": label, "seconds": round(seconds, 2), "fps": round(frames / seconds, 1), **extra}
    print(json.dumps(row), flush=True)
    return row


def decode_only(clip: Path) -> None:
    with av.open(str(clip)) as src:
        src.streams.video[0].thread_type = "AUTO"
        for _ in src.decode(video=0):
            pass


def ceiling(clip: Path, encoder: EncoderSettings) -> None:
    """Decode + encode with veil's own encoder settings, no anonymisation."""
    out_path = WORK / f"ceiling_{encoder.codec}.mp4"
    with av.open(str(clip)) as src, av.open(str(out_path), "w") as out:
        vin = src.streams.video[0]
        vin.thread_type = "AUTO"
        codec = encoder.codec_for(out_path)
        video = out.add_stream(codec, rate=vin.average_rate, options=encoder.options(codec))
        video.width, video.height, video.pix_fmt = vin.width, vin.height, "yuv420p"
        for frame in src.decode(vin):
            out.mux(video.encode(frame))
        out.mux(video.encode(None))


def nvenc_opens() -> str:
    """ "yes", or why h264_nvenc cannot open here (Hopper data-centre GPUs have no NVENC)."""
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.open(str(WORK / "probe.mp4"), "w") as out:
            video = out.add_stream("h264_nvenc", rate=25)
            video.width, video.height, video.pix_fmt = 256, 256, "yuv420p"
            frame = av.VideoFrame(256, 256, "yuv420p")
            frame.pts = 0
            out.mux(video.encode(frame))
            out.mux(video.encode(None))
        return "yes"
    except av.error.FFmpegError as exc:
        return f"no: {exc}"


def main() -> int:
    WORK.mkdir(parents=True, exist_ok=True)
    try:
        gpu = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except FileNotFoundError:
        gpu = "none (no nvidia-smi)"
    providers = ort.get_available_providers()
    info = {
        "gpu": gpu,
        "cpus": os.cpu_count(),
        "onnxruntime": ort.__version__,
        "providers": providers,
        "pyav": av.__version__,
        "ffmpeg": str(av.ffmpeg_version_info),
        "nvenc_in_ffmpeg": "h264_nvenc" in av.codecs_available,
    }
    info["nvenc_opens"] = nvenc_opens()
    print(json.dumps(info), flush=True)
    clip = make_clip((1920, 1080))
    frames = FRAMES
    x264 = EncoderSettings()
    nvenc = replace(x264, codec="h264_nvenc")
    rows = [timed("decode", lambda: decode_only(clip), frames)]
    rows.append(timed("ceiling libx264", lambda: ceiling(clip, x264), frames))
    encoders = [x264]
    if info["nvenc_opens"] == "yes":
        encoders.append(nvenc)
        rows.append(timed("ceiling h264_nvenc", lambda: ceiling(clip, nvenc), frames))
    wanted = [("cpu", "CPUExecutionProvider")]
    if "CUDAExecutionProvider" in providers:
        wanted.append(("cuda", "CUDAExecutionProvider"))
    if "TensorrtExecutionProvider" in providers:
        wanted.append(("tensorrt", "TensorrtExecutionProvider"))
    checks = []
    for provider, ep in wanted:
        config = DetectionConfig.from_preset("balanced", detector={"provider": provider})
        for encoder in encoders:
            out = WORK / f"veil_{provider}_{encoder.codec or 'libx264'}.mp4"

            def job(
                out: Path = out,
                config: DetectionConfig = config,
                encoder: EncoderSettings = encoder,
            ) -> dict:
                result = veil.anonymize(clip, out, config=config, encoder=encoder, overwrite=True)
                return {
                    "execution_provider": result.record.detector["execution_provider"],
                    "codec": result.manifest["encoder"]["codec"] if result.manifest else None,
                    "tracks": result.record.summary()["tracks"],
                }

            row = timed(f"veil balanced {provider} {encoder.codec or 'libx264'}", job, frames)
            checks.append(row["execution_provider"] == ep)
            rows.append(row)
    # Determinism with the last encoder: twice the same bytes, anonymize == render(record).
    last = encoders[-1]
    first = WORK / f"veil_cpu_{last.codec or 'libx264'}.mp4"
    again = WORK / "again.mp4"
    rendered = WORK / "render.mp4"
    veil.anonymize(
        clip, again, config=DetectionConfig.from_preset("balanced"), encoder=last, overwrite=True
    )
    veil.render(clip, veil.default_record_path(first), rendered, encoder=last, overwrite=True)
    determinism = {
        "encoder": last.codec or "libx264",
        "repeats": first.read_bytes() == again.read_bytes(),
        "anonymize_equals_render": first.read_bytes() == rendered.read_bytes(),
        "providers_recorded": all(checks),
    }
    print(json.dumps(determinism), flush=True)
    print("\n| run | frames/s | ratio to ceiling libx264 |\n|---|---|---|")
    base = rows[1]["fps"]
    for row in rows:
        print(f"| {row['run']} | {row['fps']} | {row['fps'] / base:.2f}x |")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.json").write_text(
            json.dumps({"machine": info, "rows": rows, "determinism": determinism}, indent=1)
        )
    return 0 if all(v for k, v in determinism.items() if k != "encoder") else 1


if __name__ == "__main__":
    sys.exit(main())
