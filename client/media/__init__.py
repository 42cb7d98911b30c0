"""TODO."""

from ._atomic import check_paths, check_writable, partial_path, replacing, same_file
from ._frames import Frames
from ._media import (
    DecodedFrame,
    EncoderSettings,
    Input,
    Output,
    Picture,
    VideoInfo,
    add_copy_stream,
    add_video_stream,
    muxer_options,
    packet_digests,
    probe,
    sample_aspect,
    sha256_file,
    video_info,
)

__all__ = [
    "DecodedFrame",
    "EncoderSettings",
    "Frames",
    "Input",
    "Output",
    "Picture",
    "VideoInfo",
    "add_copy_stream",
    "add_video_stream",
    "check_paths",
    "check_writable",
    "muxer_options",
    "packet_digests",
    "partial_path",
    "probe",
    "replacing",
    "same_file",
    "sample_aspect",
    "sha256_file",
    "video_info",
]
