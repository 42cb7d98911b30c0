"""How the masked video is encoded: the settings a file output records in its manifest
(:class:`EncoderSettings`), checked once against the encoder and container, and what a live
sink adds to them (:class:`LiveEncoder`)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import av.error

from veil.core import ConfigError, OutputError

from ._probe import VideoInfo

#: Encoders by output container when the user names none.
_DEFAULT_CODEC = {".webm": "libvpx-vp9"}
#: NVENC's own speed presets (h264_nvenc, hevc_nvenc), fastest first.
_NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
#: x264's (and x265's) speed presets, fastest first.
_X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


@dataclass(frozen=True, kw_only=True)
class EncoderSettings:
    """How the masked video is encoded. Recorded in every render manifest.

    ``threads`` is fixed (not "all cores") because x264's output depends on its thread
    count: the same settings give the same bytes on every machine.
    """

    codec: str | None = None  # None: libx264, or libvpx-vp9 for .webm
    preset: str = "veryfast"
    crf: int = 18
    pix_fmt: str | None = None  # None: follow the source (see ``pix_fmt_for``)
    threads: int = 4

    def __post_init__(self) -> None:
        """Every value checked once, here (``ConfigError``); a ``codec`` named by its format
        (``h264``) becomes the encoder FFmpeg picks for it (``libx264``)."""
        if not isinstance(self.crf, int) or isinstance(self.crf, bool):
            raise ConfigError(f"encoder crf {self.crf!r} must be a whole number")
        if not isinstance(self.threads, int) or not 1 <= self.threads <= 64:
            raise ConfigError(
                f"encoder threads {self.threads!r} must be 1..64 (fixed, not auto: x264's "
                "bytes depend on it)"
            )
        if self.preset not in _X264_PRESETS + _NVENC_PRESETS:
            raise ConfigError(
                f"encoder preset {self.preset!r} is not a preset name: x264 and x265 take "
                f"{', '.join(_X264_PRESETS)}; NVENC also p1..p7"
            )
        if self.pix_fmt is not None:
            try:
                av.VideoFormat(self.pix_fmt)
            except (ValueError, TypeError):
                raise ConfigError(
                    f"encoder pix_fmt {self.pix_fmt!r} is not a pixel format"
                ) from None
        if self.codec is not None:
            object.__setattr__(self, "codec", _video_encoder(self.codec))
            self._check_codec(self.codec)

    def _check_codec(self, codec: str) -> None:
        """The settings ``codec`` takes: its CRF range, its preset names, the pixel format."""
        crf_range = _crf_range(codec)
        if crf_range is not None and not crf_range[0] <= self.crf <= crf_range[1]:
            low, high = crf_range
            raise ConfigError(f"crf {self.crf} is out of range for {codec}: {low}..{high}")
        if codec in ("libx264", "libx265") and self.preset not in _X264_PRESETS:
            raise ConfigError(
                f"encoder preset {self.preset!r} is not one of {codec}'s: "
                f"{', '.join(_X264_PRESETS)}"
            )
        formats = pixel_formats(codec)
        if self.pix_fmt is not None and formats and self.pix_fmt not in formats:
            raise ConfigError(
                f"{codec} cannot encode pix_fmt {self.pix_fmt}; it takes {', '.join(formats)}"
            )

    def check(self, output: Path) -> str:
        """Check these settings against ``output``'s container, before any work; returns the
        codec. ``ConfigError`` for a codec the container cannot hold (or settings the codec
        does not take), ``OutputError`` for a file name FFmpeg knows no container for."""
        codec = self.codec_for(output)
        try:
            guess = av.open(str(output), "w")  # the container, from the name; opens no file
        except ValueError:
            raise OutputError(
                f"{output}: no container format for the extension {output.suffix or '(none)'!r}"
                " (use .mp4, .mkv, .mov or .webm)"
            ) from None
        fmt = guess.format.name
        guess.close()
        with av.open(io.BytesIO(), "w", format=fmt) as trial:
            try:
                trial.add_stream(codec)
            except (av.error.FFmpegError, ValueError) as exc:
                raise ConfigError(
                    f"codec {codec} cannot go in a {output.suffix} file ({exc}); "
                    f"{_DEFAULT_CODEC.get(output.suffix.lower(), 'libx264')} can"
                ) from None
        if self.codec is None:
            self._check_codec(codec)
        formats = pixel_formats(codec)
        if self.pix_fmt is None and formats and not any(f.startswith("yuv") for f in formats):
            raise ConfigError(
                f"{codec} takes no YUV pixel format, and veil keeps the source's YUV family "
                f"unless told: set [encoder] pix_fmt in --config to one of {', '.join(formats)}"
            )
        return codec

    def codec_for(self, output: Path) -> str:
        return self.codec or _DEFAULT_CODEC.get(output.suffix.lower(), "libx264")

    def options(self, codec: str) -> dict[str, str]:
        if codec in ("libx264", "libx265"):
            return {"crf": str(self.crf), "preset": self.preset, "threads": str(self.threads)}
        if codec.startswith("libvpx"):
            return {
                "crf": str(self.crf + 13),
                "b": "0",
                "deadline": "good",
                "cpu-used": "4",
                "threads": str(self.threads),
                "row-mt": "1",
            }
        if codec.endswith("_nvenc"):
            # NVENC (GPU): constant quality at ``crf`` (its -cq), presets p1 (fastest) to p7;
            # an x264 preset name maps to p4. Bytes repeat on the same GPU and driver only.
            preset = self.preset if self.preset in _NVENC_PRESETS else "p4"
            return {"preset": preset, "rc": "vbr", "cq": str(self.crf), "b": "0"}
        return {"threads": str(self.threads)}

    def pix_fmt_for(self, source: VideoInfo) -> str:
        """The encoder's pixel format: the one asked for, else the source's family.

        Chroma subsampling, bit depth (8 or 10) and full range follow the source, so pixels
        outside the masks are not resampled; a frame with an odd side cannot be subsampled
        and gets 4:4:4, as do RGB and palette sources (GIF).
        """
        if self.pix_fmt is not None:
            return self.pix_fmt
        fmt = av.VideoFormat(source.pix_fmt)
        deep = max(c.bits for c in fmt.components) > 8
        odd = source.width % 2 or source.height % 2
        if fmt.is_rgb or len(fmt.components) < 3 or fmt.name.startswith("pal") or odd:
            chroma = "444"
        else:
            sx, sy = 64 // fmt.chroma_width(64), 64 // fmt.chroma_height(64)
            chroma = {(2, 2): "420", (2, 1): "422"}.get((sx, sy), "444")
        if deep:
            return f"yuv{chroma}p10le"
        full = source.color_range == 2 or fmt.name.startswith("yuvj")
        return f"yuv{'j' if full else ''}{chroma}p"

    def to_json(self, output: Path, pix_fmt: str) -> dict[str, Any]:
        codec = self.codec_for(output)
        return {
            "codec": codec,
            "options": self.options(codec),
            "pix_fmt": pix_fmt,
            "ffmpeg": str(av.ffmpeg_version_info),
            "pyav": av.__version__,
        }


def _video_encoder(name: str) -> str:
    """The FFmpeg encoder ``name`` names (a format name picks FFmpeg's default encoder)."""
    try:
        codec = av.codec.Codec(name, "w")
    except (ValueError, TypeError):
        raise ConfigError(
            f"codec {name!r} is not an encoder in this FFmpeg build ({av.ffmpeg_version_info}); "
            "try libx264, libx265 or libvpx-vp9"
        ) from None
    if codec.type != "video":
        raise ConfigError(f"codec {name!r} is an {codec.type} encoder, not a video encoder")
    return str(codec.name)


def pixel_formats(codec: str) -> list[str]:
    """The pixel formats encoder ``codec`` takes (empty: it does not say)."""
    return sorted(f.name for f in av.codec.Codec(codec, "w").video_formats or ())


def _crf_range(codec: str) -> tuple[int, int] | None:
    """The ``crf`` values ``codec`` takes (None: it has no constant-quality mode veil sets).

    ``crf`` is on x264's scale everywhere: libvpx gets ``crf + 13`` (its 0..63 scale, so
    0..50 here) and NVENC takes it as its ``cq`` (0..51).
    """
    if codec in ("libx264", "libx265") or codec.endswith("_nvenc"):
        return (0, 51)
    if codec.startswith("libvpx"):
        return (0, 50)
    return None


@dataclass(frozen=True, kw_only=True)
class LiveEncoder:
    """How live video is encoded: ``EncoderSettings`` plus what live needs.

    x264 ``ultrafast`` + ``tune=zerolatency`` (no B-frames, no frame look-ahead, sliced
    threads: a frame in is a packet out), a keyframe every ``keyframe_s`` seconds so a
    receiver joining late (or after a lost datagram) recovers quickly.
    """

    base: EncoderSettings = field(
        default_factory=lambda: EncoderSettings(
            preset="ultrafast", crf=23, threads=2, pix_fmt="yuv420p"
        )
    )
    tune: str = "zerolatency"
    keyframe_s: float = 1.0

    @property
    def codec(self) -> str:
        """libx264 unless asked otherwise (a live sink's container has no default encoder)."""
        return self.base.codec or "libx264"

    @property
    def pix_fmt(self) -> str:
        """8-bit 4:2:0 unless asked otherwise: what every live receiver and player decodes."""
        return self.base.pix_fmt or "yuv420p"

    def options(self, codec: str) -> dict[str, str]:
        options = self.base.options(codec)
        if codec in ("libx264", "libx265") and self.tune:
            options["tune"] = self.tune
        return options

    def to_json(self, codec: str) -> dict[str, Any]:
        return {
            "codec": codec,
            "options": self.options(codec),
            "pix_fmt": self.pix_fmt,
            "keyframe_s": self.keyframe_s,
            "ffmpeg": str(av.ffmpeg_version_info),
            "pyav": av.__version__,
        }
