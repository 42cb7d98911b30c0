"""Frames on the wire: an RGB image already scaled to the detector's input
(``fit_size(display, max_side)``), with the display size its boxes come back in.

:func:`frame_message` builds a ``veil.v1.Frame`` (the hybrid client); :func:`read_frame`
checks one against the contract and decodes it (the server): the sizes first, then the size
a PNG or JPEG header declares, before anything is decompressed (no decompression bomb), then
the pixels. RAW and PNG are lossless, so the server detects on the very pixels the client
scaled and a hybrid run's record equals on-prem's; JPEG is not, and the record says so.
"""

from __future__ import annotations

import struct
from enum import StrEnum

import cv2
import numpy as np

from veil.core import DetectorError, Image, fit_size
from veil.v1 import detection_pb2 as pb

from ._errors import WireError

__all__ = ["MAX_DISPLAY_SIDE", "Encoding", "frame_message", "read_frame"]

MAX_DISPLAY_SIDE = 1 << 16
"""The largest display width or height a frame may declare."""


class Encoding(StrEnum):
    """How frames travel in hybrid mode. RAW and PNG are lossless; JPEG is not."""

    RAW = "raw"
    PNG = "png"
    JPEG = "jpeg"

    @property
    def lossless(self) -> bool:
        return self is not Encoding.JPEG


def frame_message(
    image: Image,
    display_size: tuple[int, int],
    *,
    index: int,
    encoding: Encoding = Encoding.PNG,
    jpeg_quality: int = 90,
) -> pb.Frame:
    """A ``veil.v1.Frame`` carrying ``image`` (RGB uint8, already scaled)."""
    height, width = image.shape[:2]
    if encoding is Encoding.RAW:
        data, kind = np.ascontiguousarray(image, np.uint8).tobytes(), pb.IMAGE_ENCODING_RAW
    else:
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        if encoding is Encoding.PNG:
            ok, buffer = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
            kind = pb.IMAGE_ENCODING_PNG
        else:
            ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
            kind = pb.IMAGE_ENCODING_JPEG
        if not ok:
            raise DetectorError(f"cannot encode a {width}x{height} frame as {encoding.value}")
        data = buffer.tobytes()
    return pb.Frame(
        index=index,
        encoding=kind,
        data=data,
        width=width,
        height=height,
        display_width=display_size[0],
        display_height=display_size[1],
    )


def read_frame(
    frame: pb.Frame, *, max_side: int, max_image_side: int
) -> tuple[Image, tuple[int, int]]:
    """The RGB image ``frame`` carries and its display size; :class:`WireError` when the
    frame is not ``fit_size(display, max_side)``, has a side over ``max_image_side``, or its
    data is not the image it declares."""
    where = f"frame {frame.index}"
    width, height = frame.width, frame.height
    display = (frame.display_width, frame.display_height)
    if not (0 < width <= max_image_side and 0 < height <= max_image_side):
        raise WireError(
            f"{where}: image {width}x{height} is outside 1..{max_image_side} pixels a side"
        )
    if not (0 < display[0] <= MAX_DISPLAY_SIDE and 0 < display[1] <= MAX_DISPLAY_SIDE):
        raise WireError(f"{where}: display size {display[0]}x{display[1]} is not valid")
    expected = fit_size(display[0], display[1], max_side)
    if (width, height) != expected:
        raise WireError(
            f"{where}: a {display[0]}x{display[1]} frame must be sent scaled to "
            f"{expected[0]}x{expected[1]} (fit_size with max_side {max_side}), not {width}x{height}"
        )
    data = frame.data
    if frame.encoding == pb.IMAGE_ENCODING_RAW:
        if len(data) != width * height * 3:
            raise WireError(
                f"{where}: RAW data has {len(data)} bytes, {width}x{height}x3 = "
                f"{width * height * 3} expected"
            )
        return np.frombuffer(data, np.uint8).reshape(height, width, 3), display
    if frame.encoding not in (pb.IMAGE_ENCODING_PNG, pb.IMAGE_ENCODING_JPEG):
        raise WireError(f"{where}: encoding must be RAW, PNG or JPEG")
    kind = pb.ImageEncoding.Name(frame.encoding).removeprefix("IMAGE_ENCODING_")
    if _header_size(data) != (width, height):
        raise WireError(f"{where}: the data is not a {width}x{height} {kind} image")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape != (height, width, 3):
        raise WireError(f"{where}: the {kind} data does not decode to {width}x{height} RGB")
    return np.ascontiguousarray(bgr[:, :, ::-1]), display


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG declares, read before decoding (no decompression bomb)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:2] == b"\xff\xd8":
        at = 2
        while at + 4 <= len(data):
            if data[at] != 0xFF:
                return None
            marker = data[at + 1]
            length = int.from_bytes(data[at + 2 : at + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                if at + 9 > len(data):
                    return None
                height, width = struct.unpack(">HH", data[at + 5 : at + 9])
                return int(width), int(height)
            at += 2 + length
    return None
